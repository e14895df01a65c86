//! How attention maps are drawn: colormaps and the CPU reference of the window's shader
//! ([`colormap`]), the display settings shared by the window and the figures ([`look`]), value ranges
//! under each normalisation ([`range`]), and the official renderer ([`paper`]).

pub mod colormap;
pub mod look;
pub mod paper;
pub mod range;

pub use look::Look;
