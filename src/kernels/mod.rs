//! The fast CPU paths of inference: convolution over NHWC maps (with the `gemm` crate as the
//! portable fallback), the register-blocked GEMM that reads its A rows in place (AVX-512 or AVX2 +
//! FMA), and multi-head attention on top of it. Chosen at run time by what the CPU supports
//! ([`simd`]; `INTR_SIMD` forces a path).

pub mod attention;
pub mod conv;
pub mod packed_gemm;
pub mod training;
pub mod winograd;

pub use packed_gemm::{Simd, available, simd};

/// Multiply-adds (× 2) done by the inference kernels since the process started: what `bench
/// forward` divides by the time for GFLOP/s. Counted per GEMM call, whatever the path.
static FLOPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts the floating-point operations of an `m × k` by `k × n` product.
pub fn count_gemm(m: usize, k: usize, n: usize) {
    FLOPS.fetch_add(2 * (m as u64) * (k as u64) * (n as u64), std::sync::atomic::Ordering::Relaxed);
}

/// The operations counted so far.
#[must_use]
pub fn flops() -> u64 {
    FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Deterministic values in [−0.5, 0.5) (xorshift), for the kernels' tests.
#[cfg(test)]
pub(crate) fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}
