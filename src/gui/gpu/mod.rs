//! GPU rendering (wgpu only): the attention-overlay pipeline and headless rendering helpers. Knows
//! textures and colormaps, not classes or heads.

pub mod callback;
pub mod pipeline;
