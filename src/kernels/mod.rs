//! The fast CPU paths of inference: convolution over NHWC maps (with the `gemm` crate as the
//! portable fallback), the register-blocked AVX-512 GEMM that reads its A rows in place, and
//! multi-head attention on top of it. Chosen at run time by what the CPU supports.

pub mod attention;
pub mod conv;
pub mod packed_gemm;
pub mod training;

pub use packed_gemm::{Simd, available, simd};
