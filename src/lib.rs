//! INTR Explorer: see why an INTR (Interpretable Transformer) fine-grained classifier decided what
//! it did.
//!
//! The modules, from the bottom up (each imports only those above it in this list):
//! - [`error`], [`files`]: the engine's error type; atomic writes and hashing.
//! - [`kernels`]: the fast CPU paths (convolution, GEMM, attention).
//! - [`checkpoint`]: reading and writing model files (pickle as data, zip, safetensors).
//! - [`image`]: decoding, the official preprocessing, grid ↔ pixel mapping.
//! - [`intr`]: the network (config, backbone, transformer, model) with PyTorch's parameter names.
//! - [`probe`]: analyses on top of a forward pass (head evening, per-map statistics).
//! - [`session`]: the one layer both front ends use: open a model → analyse a photo → plain data.
//! - [`overlay`]: colormaps, value ranges, the CPU reference of the shader, the official renderer.
//! - [`figure`]: figures composed from analyses, written as SVG, PNG or PDF with provenance.
//! - [`batch`]: `explain`'s plan, checked up front, its per-photo records and summaries.
//! - [`demo`]: the generated dataset, training and evaluation of the bundled demo model.
//! - [`hub`]: the catalogue of official checkpoints and verified, resumable downloads from the Hub.
//! - [`gui`] (feature `gui`): the desktop explorer; [`cli`]: the command line.

pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod demo;
pub mod error;
pub mod figure;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gui")]
pub mod gui;
pub mod hub;
pub mod image;
pub mod intr;
pub mod kernels;
pub mod overlay;
pub mod probe;
pub mod session;

pub use error::{Error, Result};
