//! Multi-head attention on the CPU with the [`fastconv`] kernel and a vectorised softmax.
//!
//! Per head: scores = q_h · k_hᵀ (A read in place from the projected queries), softmax over keys in
//! place, then context = weights · v_h. candle's own CPU softmax runs at a fraction of memory speed
//! and its small-K batched matmuls are slow, which made attention the larger half of the encoder.

use rayon::prelude::*;

use super::conv::{recycle, take_buffer};
use super::packed_gemm::{self, Geometry, PackedB};

/// Attention of `q` (lq, d) — already scaled by 1/√dh — over `k`, `v` (lk, d) with `heads` heads.
/// Returns the context (lq, d) and, if `keep_weights`, the weights (heads, lq, lk); otherwise only one
/// head's weights exist at a time (encoder self-attention needs none of them afterwards).
#[must_use]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (lq, lk, d, heads): (usize, usize, usize, usize),
    keep_weights: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let dh = d / heads;
    let kept_heads = if keep_weights { heads } else { 1 };
    let mut weights = if keep_weights { vec![0.0f32; heads * lq * lk] } else { take_buffer(lq * lk) };
    debug_assert_eq!(weights.len(), kept_heads * lq * lk);
    let mut ctx = vec![0.0f32; lq * d];
    let mut ctx_h = take_buffer(lq * dh);
    for h in 0..heads {
        let kt = PackedB::from_fn(dh, lk, &[], |p, j| k[j * d + h * dh + p]);
        let slot = if keep_weights { h } else { 0 };
        let scores = &mut weights[slot * lq * lk..(slot + 1) * lq * lk];
        let geo = Geometry { src_w: lq, cin: d, stride: 1, out_h: 1, out_w: lq, segments: vec![(h * dh, 0, dh)] };
        packed_gemm::run(q, &geo, &kt, packed_gemm::Residual::None, false, scores);
        scores.par_chunks_mut(lk).for_each(softmax_row);
        let vh = PackedB::from_fn(lk, dh, &[], |j, c| v[j * d + h * dh + c]);
        let geo = Geometry { src_w: lq, cin: lk, stride: 1, out_h: 1, out_w: lq, segments: vec![(0, 0, lk)] };
        packed_gemm::run(scores, &geo, &vh, packed_gemm::Residual::None, false, &mut ctx_h);
        for i in 0..lq {
            ctx[i * d + h * dh..i * d + (h + 1) * dh].copy_from_slice(&ctx_h[i * dh..(i + 1) * dh]);
        }
    }
    recycle(ctx_h);
    if keep_weights {
        (ctx, Some(weights))
    } else {
        recycle(weights);
        (ctx, None)
    }
}

/// In-place softmax of one row.
fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if packed_gemm::simd() == packed_gemm::Simd::Avx512 {
        // SAFETY: AVX-512F is present; the kernel stays inside `row`.
        unsafe { softmax_avx512(row) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if packed_gemm::simd() == packed_gemm::Simd::Avx2 {
        // SAFETY: AVX2 + FMA are present; the kernel stays inside `row`.
        unsafe { softmax_avx2(row) };
        return;
    }
    softmax_scalar(row);
}

fn softmax_scalar(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Cephes `expf`: ln 2 split in a high and a low part for the range reduction, and the polynomial's
/// coefficients (highest first), shared by both vector widths.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// e^x for 16 lanes: Cephes `expf` range reduction and polynomial (about 1 ulp), 2ⁿ by `scalef`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.376_26)), _mm512_set1_ps(-87.336_55));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let r2 = _mm512_mul_ps(r, r);
    let p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

/// e^x for 8 lanes, x ≤ 0 (a softmax's shifted scores): [`exp16`]'s reduction and polynomial, 2ⁿ
/// built in the exponent bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp8_nonpositive(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(-87.336_55));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut p = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // n ∈ [−126, 0]: 2ⁿ is the normal float with exponent field n + 127.
    let two_n =
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    _mm256_mul_ps(p, two_n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let full = n - n % 8;
    let ptr = row.as_mut_ptr();
    // SAFETY: the vector loads and stores cover the whole 8-value chunks of `row`; the rest is
    // done on scalars.
    unsafe {
        let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(8) {
            vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(ptr.add(i)));
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
        let max = lanes.iter().chain(&row[full..]).copied().fold(f32::NEG_INFINITY, f32::max);
        let vm = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            let e = exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(ptr.add(i)), vm));
            _mm256_storeu_ps(ptr.add(i), e);
            vsum = _mm256_add_ps(vsum, e);
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), vsum);
        let mut sum: f32 = lanes.iter().sum();
        for v in &mut row[full..] {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        let vi = _mm256_set1_ps(inv);
        for i in (0..full).step_by(8) {
            _mm256_storeu_ps(ptr.add(i), _mm256_mul_ps(_mm256_loadu_ps(ptr.add(i)), vi));
        }
        for v in &mut row[full..] {
            *v *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_avx512(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let ptr = row.as_mut_ptr();
    let tail = n % 16;
    let mask: __mmask16 = if tail == 0 { 0 } else { ((1u32 << tail) - 1) as u16 };
    let full = n - tail;
    // SAFETY: all loads and stores are within `row` (full chunks, then a masked tail).
    unsafe {
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(ptr.add(i)));
        }
        if tail > 0 {
            vmax = _mm512_mask_max_ps(vmax, mask, vmax, _mm512_maskz_loadu_ps(mask, ptr.add(full)));
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        let mut vsum = _mm512_setzero_ps();
        for i in (0..full).step_by(16) {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(ptr.add(i)), max));
            _mm512_storeu_ps(ptr.add(i), e);
            vsum = _mm512_add_ps(vsum, e);
        }
        if tail > 0 {
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, ptr.add(full)), max));
            _mm512_mask_storeu_ps(ptr.add(full), mask, e);
            vsum = _mm512_mask_add_ps(vsum, mask, vsum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(vsum));
        for i in (0..full).step_by(16) {
            _mm512_storeu_ps(ptr.add(i), _mm512_mul_ps(_mm512_loadu_ps(ptr.add(i)), inv));
        }
        if tail > 0 {
            let x = _mm512_maskz_loadu_ps(mask, ptr.add(full));
            _mm512_mask_storeu_ps(ptr.add(full), mask, _mm512_mul_ps(x, inv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_scalar_definition_on_every_path_this_cpu_has() {
        type Softmax = fn(&mut [f32]);
        let mut paths: Vec<(&str, Softmax)> = vec![("scalar", softmax_scalar), ("default", softmax_row)];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): called only where the CPU has the instructions.
            if packed_gemm::Simd::Avx512.supported() {
                paths.push(("avx512", |r| unsafe { softmax_avx512(r) }));
            }
            if packed_gemm::Simd::Avx2.supported() {
                paths.push(("avx2", |r| unsafe { softmax_avx2(r) }));
            }
        }
        // Rows with tails of every length, and scores far below the maximum (underflow to 0).
        for n in [1usize, 7, 8, 9, 16, 33, 825] {
            let row: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.37 * (1 + i % 3) as f32).collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, |a, b| a.max(f64::from(b)));
            let sum: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            for (name, softmax) in &paths {
                let mut fast = row.clone();
                softmax(&mut fast);
                for (f, &v) in fast.iter().zip(&row) {
                    let want = (f64::from(v) - max).exp() / sum;
                    assert!((f64::from(*f) - want).abs() <= 1e-6 * want.max(1e-3), "{name}, n={n}: {f} vs {want}");
                }
            }
        }
    }
}
