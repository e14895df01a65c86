//! INTR Explorer: see why an INTR (Interpretable Transformer) fine-grained classifier decided what
//! it did.
//!
//! - [`model`]: the engine — official checkpoints, bit-exact preprocessing, the forward pass on
//!   candle, logits and every cross-attention map. No UI dependency.
//! - [`classes`]: class-name lists.
//! - [`cli`]: the command-line interface.

pub mod classes;
pub mod colormap;
pub mod cli;
pub mod model;
