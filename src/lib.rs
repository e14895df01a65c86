//! INTR Explorer: see why an INTR (Interpretable Transformer) fine-grained classifier decided what
//! it did.
//!
//! - [`model`]: the engine — official checkpoints, bit-exact preprocessing, the forward pass on
//!   candle, logits and every cross-attention map. No UI dependency.
//! - [`classes`]: class-name lists.
//! - [`cli`]: the command-line interface.

#[cfg(feature = "gui")]
pub mod app;
pub mod assets;
pub mod classes;
pub mod cli;
pub mod colormap;
pub mod export;
pub mod figures;
pub mod inference;
pub mod model;
pub mod paper;
#[cfg(feature = "gui")]
pub mod render;
pub mod synth;
pub mod train;
