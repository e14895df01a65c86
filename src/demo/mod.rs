//! The bundled demo model's making: the generated fine-grained dataset ([`synth`]), training INTR
//! on it with candle ([`train`]) and measuring how faithful its attention is ([`eval`]).

pub mod eval;
pub mod synth;
pub mod train;
