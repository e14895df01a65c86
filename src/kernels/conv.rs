//! Fast CPU convolutions on NHWC feature maps (batch 1), built on the `gemm` crate.
//!
//! candle's CPU `conv2d` spends more than half its time copying (im2col). Here a 1×1 convolution
//! is a single matrix product over the pixels, and a stride-1 k×k convolution is k² products
//! accumulated into one "wide" output over *shifted views* of a zero-padded input: pixel (i, j)
//! of tap (ky, kx) lives at row `(i + ky·d)·Wp + j + kx·d` of the padded buffer, so every tap is a
//! plain strided matrix with no copy. Only strided k×k convolutions (the stem and the first block of
//! a stage) fall back to an explicit im2col.
//! Bias (folded batch norm), the residual add and ReLU are fused into one pass over the output.

use rayon::prelude::*;

use std::sync::Mutex;

use super::packed_gemm;
use super::winograd::{self, Winograd};

/// Feature-map buffers kept for reuse. A full-size forward pass allocates hundreds of MB in
/// short-lived maps; fresh allocations of that size come from the kernel as untouched pages whose
/// first-touch faults cost as much as a large convolution. Reusing buffers avoids them.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Most memory the pool keeps, in f32 values (1 GB).
const POOL_MAX_VALUES: usize = 256 << 20;

/// A buffer of `len` values with unspecified (but initialised) contents.
#[must_use]
pub fn take_buffer(len: usize) -> Vec<f32> {
    let reused = POOL.lock().ok().and_then(|mut pool| {
        // Smallest buffer that fits.
        let fits = |v: &Vec<f32>| v.capacity() >= len;
        let best = pool.iter().enumerate().filter(|(_, v)| fits(v)).min_by_key(|(_, v)| v.capacity()).map(|(i, _)| i);
        best.map(|i| pool.swap_remove(i))
    });
    match reused {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, 0.0);
            }
            v
        }
        None => {
            // Capacity rounded up to a size class (at most 1/32 more), so that maps of nearly the
            // same size (a stem output and the first block's shortcut differ by a rounding of
            // the grid) reuse one buffer instead of keeping both.
            let mut v = Vec::with_capacity(size_class(len));
            v.resize(len, 0.0);
            v
        }
    }
}

/// `len` rounded up to its top five bits (a relative step of at most 1/32).
fn size_class(len: usize) -> usize {
    if len < 64 {
        return len;
    }
    let step = 1usize << (usize::BITS - len.leading_zeros() - 5);
    len.div_ceil(step) * step
}

/// Returns a buffer to the pool (dropped instead if the pool is full).
pub fn recycle(v: Vec<f32>) {
    if v.capacity() < 4096 {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if held + v.capacity() <= POOL_MAX_VALUES {
            pool.push(v);
        }
    }
}

/// Frees every pooled buffer.
pub fn release_buffers() {
    if let Ok(mut pool) = POOL.lock() {
        pool.clear();
    }
}

/// A feature map in NHWC layout (batch 1): `data[(i * w + j) * c + ch]`. Its buffer returns to the
/// pool when dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Fmap {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Drop for Fmap {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.data));
    }
}

impl Fmap {
    /// Converts a CHW tensor's values to NHWC.
    #[must_use]
    pub fn from_chw(c: usize, h: usize, w: usize, chw: &[f32]) -> Self {
        let mut data = take_buffer(c * h * w);
        data.par_chunks_mut(w * c).enumerate().for_each(|(i, row)| {
            for j in 0..w {
                for ch in 0..c {
                    row[j * c + ch] = chw[(ch * h + i) * w + j];
                }
            }
        });
        Self { h, w, c, data }
    }

    /// The values in CHW order.
    #[must_use]
    pub fn to_chw(&self) -> Vec<f32> {
        let (h, w, c) = (self.h, self.w, self.c);
        let mut out = vec![0.0f32; c * h * w];
        out.par_chunks_mut((h * w).max(1)).enumerate().for_each(|(ch, plane)| {
            for (p, v) in plane.iter_mut().enumerate() {
                *v = self.data[p * c + ch];
            }
        });
        out
    }
}

/// A convolution with its batch norm folded in: `y = conv(x, weight) + bias`.
#[derive(Debug, Clone)]
pub struct ConvKernel {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
    /// (k·k·cin, cout) row-major; row `(ky·k + kx)·cin + ci`. Empty when `packed` or `winograd` holds
    /// the weights.
    pub weight: Vec<f32>,
    /// (cout)
    pub bias: Vec<f32>,
    /// The weights packed for the AVX-512 or AVX2 kernel, when this CPU has one.
    pub packed: Option<packed_gemm::PackedB>,
    /// Stride-1, padding-1 3×3 kernels on a packed path: the weights in the Winograd domain
    /// (`weight` and `packed` are then empty).
    pub winograd: Option<Winograd>,
}

impl ConvKernel {
    /// Repacks an OIHW weight (PyTorch layout) into the GEMM layout.
    #[must_use]
    pub fn from_oihw(
        oihw: &[f32],
        bias: Vec<f32>,
        shape: (usize, usize, usize),
        geometry: (usize, usize, usize),
    ) -> Self {
        Self::from_oihw_scaled(oihw, None, bias, shape, geometry)
    }

    /// Like [`ConvKernel::from_oihw`], each output channel `o`'s weights multiplied by `scale[o]`
    /// (in f64, rounded once: folding a frozen batch norm) on the way. Reads the PyTorch layout
    /// straight into the kernels' layout, on every core, with no intermediate copy.
    #[must_use]
    pub fn from_oihw_scaled(
        oihw: &[f32],
        scale: Option<&[f64]>,
        bias: Vec<f32>,
        shape: (usize, usize, usize),
        geometry: (usize, usize, usize),
    ) -> Self {
        use rayon::prelude::*;
        let (cout, cin, k) = shape;
        let (stride, pad, dilation) = geometry;
        let (kk, rows) = (k * k, k * k * cin);
        // GEMM row p = (ky·k + kx)·cin + i, column o  ←  oihw[((o·cin + i)·k + ky)·k + kx].
        let at = |p: usize, o: usize| {
            let v = oihw[(o * cin + p % cin) * kk + p / cin];
            #[allow(clippy::cast_possible_truncation)]
            scale.map_or(v, |s| (f64::from(v) * s[o]) as f32)
        };
        if k == 3 && stride == 1 && pad == 1 && dilation == 1 && winograd::enabled() {
            let g = |ci: usize, o: usize, ky: usize, kx: usize| {
                let v = f64::from(oihw[((o * cin + ci) * 3 + ky) * 3 + kx]);
                scale.map_or(v, |s| v * s[o])
            };
            let winograd = Some(Winograd::new(cin, cout, g));
            return Self { cin, cout, k, stride, pad, dilation, weight: Vec::new(), bias, packed: None, winograd };
        }
        let (weight, packed) = if packed_gemm::available() {
            (Vec::new(), Some(packed_gemm::PackedB::from_fn(rows, cout, &bias, at)))
        } else {
            let mut weight = vec![0.0f32; rows * cout];
            if cout > 0 {
                weight.par_chunks_mut(cout).enumerate().for_each(|(p, row)| {
                    for (o, v) in row.iter_mut().enumerate() {
                        *v = at(p, o);
                    }
                });
            }
            (weight, None)
        };
        Self { cin, cout, k, stride, pad, dilation, weight, bias, packed, winograd: None }
    }

    /// The weights in (k·k·cin, cout) layout, whichever form they are kept in.
    #[must_use]
    pub fn gemm_weight(&self) -> std::borrow::Cow<'_, [f32]> {
        match (&self.packed, &self.winograd) {
            (Some(p), _) => std::borrow::Cow::Owned(p.unpack()),
            (None, Some(wg)) => std::borrow::Cow::Owned(wg.direct_weights()),
            (None, None) => std::borrow::Cow::Borrowed(&self.weight),
        }
    }

    /// The same convolution without the packed paths (portable `gemm` code only).
    #[must_use]
    pub fn portable(mut self) -> Self {
        self.weight = self.gemm_weight().into_owned();
        self.packed = None;
        self.winograd = None;
        self
    }

    /// Output size for an input of `h × w`.
    #[must_use]
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let span = self.dilation * (self.k - 1) + 1;
        (
            (h + 2 * self.pad).saturating_sub(span) / self.stride + 1,
            (w + 2 * self.pad).saturating_sub(span) / self.stride + 1,
        )
    }
}

fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst[m×n] (row stride dst_rs) (+)= lhs[m×k] (row stride lhs_rs) · rhs[k×n] (row stride n)`.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds of every element the product touches; the unsafe call below relies on them.
    assert!(dst.len() >= (m - 1) * dst_rs + n, "dst too small");
    assert!(k == 0 || lhs.len() >= (m - 1) * lhs_rs + k, "lhs too small");
    assert!(rhs.len() >= k * n, "rhs too small");
    super::count_gemm(m, k, n);
    #[allow(clippy::cast_possible_wrap)]
    // SAFETY: all three matrices lie inside their slices (checked above); dst does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// `y = relu?(conv(x) + bias + residual?)`.
#[must_use]
pub fn conv2d(x: &Fmap, p: &ConvKernel, residual: Option<&Fmap>, relu: bool) -> Fmap {
    assert_eq!(x.c, p.cin, "channel mismatch");
    let (ho, wo) = p.out_size(x.h, x.w);
    let n = p.cout;
    let mut out = Fmap { h: ho, w: wo, c: n, data: take_buffer(ho * wo * n) };
    let res = residual.map_or(packed_gemm::Residual::None, |r| packed_gemm::Residual::Add(&r.data));
    if run_fast(x, p, res, relu, &mut out.data) {
        return out;
    }
    if p.k == 1 && p.pad == 0 {
        if p.stride == 1 {
            matmul(ho * wo, n, p.cin, &mut out.data, n, false, &x.data, p.cin, &p.weight);
        } else {
            let sub = subsample(x, p.stride, ho, wo);
            matmul(ho * wo, n, p.cin, &mut out.data, n, false, &sub, p.cin, &p.weight);
            recycle(sub);
        }
        epilogue(&mut out.data, wo, n, &p.bias, residual, relu, None);
    } else if p.stride == 1 {
        let (padded, wp) = pad_input(x, p.pad);
        let m_wide = (ho - 1) * wp + wo;
        let mut wide = take_buffer(ho * wp * n);
        let kk = p.cin;
        for ky in 0..p.k {
            for kx in 0..p.k {
                let t = ky * p.k + kx;
                let start = (ky * p.dilation * wp + kx * p.dilation) * kk;
                let rhs = &p.weight[t * kk * n..(t + 1) * kk * n];
                matmul(m_wide, n, kk, &mut wide, n, t > 0, &padded[start..], kk, rhs);
            }
        }
        epilogue(&mut out.data, wo, n, &p.bias, residual, relu, Some((&wide, wp)));
        recycle(wide);
        recycle(padded);
    } else {
        let cols = im2col(x, p, ho, wo);
        matmul(ho * wo, n, p.k * p.k * p.cin, &mut out.data, n, false, &cols, p.k * p.k * p.cin, &p.weight);
        recycle(cols);
        epilogue(&mut out.data, wo, n, &p.bias, residual, relu, None);
    }
    out
}

/// `relu?(conv(x) + bias + residual)`, written over `residual`'s buffer when the fast kernel runs
/// (saving one full-size map per residual block); otherwise as [`conv2d`].
#[must_use]
pub fn conv2d_add_into(x: &Fmap, p: &ConvKernel, mut residual: Fmap, relu: bool) -> Fmap {
    let (ho, wo) = p.out_size(x.h, x.w);
    assert_eq!((residual.h, residual.w, residual.c), (ho, wo, p.cout), "residual shape");
    if run_fast(x, p, packed_gemm::Residual::InPlace, relu, &mut residual.data) {
        return residual;
    }
    conv2d(x, p, Some(&residual), relu)
}

/// Runs `p` on `x` with its fast kernel — Winograd, or the packed kernel (zero-padding `x` first
/// if the convolution pads) — and says whether it had one.
fn run_fast(x: &Fmap, p: &ConvKernel, res: packed_gemm::Residual, relu: bool, out: &mut [f32]) -> bool {
    if let Some(wg) = &p.winograd {
        wg.run(&x.data, (x.h, x.w), &p.bias, res, relu, out);
        return true;
    }
    let Some(packed) = &p.packed else { return false };
    let (ho, wo) = p.out_size(x.h, x.w);
    let geo_for = |src_w| packed_gemm::Geometry::conv(src_w, p.cin, p.k, p.stride, p.dilation, (ho, wo));
    if p.pad > 0 {
        let (buf, wp) = pad_input(x, p.pad);
        packed_gemm::run(&buf, &geo_for(wp), packed, res, relu, out);
        recycle(buf);
    } else {
        packed_gemm::run(&x.data, &geo_for(x.w), packed, res, relu, out);
    }
    true
}

/// Adds bias and residual, applies ReLU; with `wide`, first takes row `i` of width `wo` from a wide
/// buffer of row pitch `wp` pixels.
#[allow(clippy::too_many_arguments)]
fn epilogue(
    out: &mut [f32],
    wo: usize,
    n: usize,
    bias: &[f32],
    residual: Option<&Fmap>,
    relu: bool,
    wide: Option<(&[f32], usize)>,
) {
    out.par_chunks_mut(wo * n).enumerate().for_each(|(i, row)| {
        if let Some((src, wp)) = wide {
            row.copy_from_slice(&src[i * wp * n..(i * wp + wo) * n]);
        }
        let res = residual.map(|r| &r.data[i * wo * n..(i + 1) * wo * n]);
        for (j, px) in row.chunks_exact_mut(n).enumerate() {
            match res {
                Some(r) => {
                    let r = &r[j * n..(j + 1) * n];
                    for ((v, b), rv) in px.iter_mut().zip(bias).zip(r) {
                        *v += b + rv;
                    }
                }
                None => {
                    for (v, b) in px.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
            }
            if relu {
                for v in px.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    });
}

fn subsample(x: &Fmap, s: usize, ho: usize, wo: usize) -> Vec<f32> {
    let c = x.c;
    let mut out = take_buffer(ho * wo * c);
    out.par_chunks_mut(wo * c).enumerate().for_each(|(i, row)| {
        for j in 0..wo {
            let src = ((i * s) * x.w + j * s) * c;
            row[j * c..(j + 1) * c].copy_from_slice(&x.data[src..src + c]);
        }
    });
    out
}

/// Zero-pads by `p` on every side; returns the buffer and its width in pixels.
fn pad_input(x: &Fmap, p: usize) -> (Vec<f32>, usize) {
    let (wp, hp, c) = (x.w + 2 * p, x.h + 2 * p, x.c);
    let mut buf = take_buffer(hp * wp * c);
    buf.par_chunks_mut(wp * c).enumerate().for_each(|(r, row)| {
        if r >= p && r < p + x.h {
            let i = r - p;
            row[..p * c].fill(0.0);
            row[p * c..(p + x.w) * c].copy_from_slice(&x.data[i * x.w * c..(i + 1) * x.w * c]);
            row[(p + x.w) * c..].fill(0.0);
        } else {
            row.fill(0.0);
        }
    });
    (buf, wp)
}

fn im2col(x: &Fmap, p: &ConvKernel, ho: usize, wo: usize) -> Vec<f32> {
    let c = x.c;
    let kk = p.k * p.k * c;
    let mut cols = take_buffer(ho * wo * kk);
    cols.par_chunks_mut(wo * kk).enumerate().for_each(|(i, rows)| {
        rows.fill(0.0);
        for j in 0..wo {
            let dst = &mut rows[j * kk..(j + 1) * kk];
            for ky in 0..p.k {
                let y = (i * p.stride + ky * p.dilation) as isize - p.pad as isize;
                if y < 0 || y >= x.h as isize {
                    continue;
                }
                for kx in 0..p.k {
                    let xx = (j * p.stride + kx * p.dilation) as isize - p.pad as isize;
                    if xx < 0 || xx >= x.w as isize {
                        continue;
                    }
                    let src = (y as usize * x.w + xx as usize) * c;
                    let t = (ky * p.k + kx) * c;
                    dst[t..t + c].copy_from_slice(&x.data[src..src + c]);
                }
            }
        }
    });
    cols
}

/// 3×3 max pooling, stride 2, padding 1 (padding never wins).
#[must_use]
pub fn maxpool_3x3_s2(x: &Fmap) -> Fmap {
    let (ho, wo, c) = ((x.h + 2 - 3) / 2 + 1, (x.w + 2 - 3) / 2 + 1, x.c);
    let mut data = take_buffer(ho * wo * c);
    data.par_chunks_mut(wo * c).enumerate().for_each(|(i, row)| {
        row.fill(f32::NEG_INFINITY);
        for j in 0..wo {
            let px = &mut row[j * c..(j + 1) * c];
            for dy in 0..3 {
                let y = (2 * i + dy) as isize - 1;
                if y < 0 || y >= x.h as isize {
                    continue;
                }
                for dx in 0..3 {
                    let xx = (2 * j + dx) as isize - 1;
                    if xx < 0 || xx >= x.w as isize {
                        continue;
                    }
                    let src = &x.data[(y as usize * x.w + xx as usize) * c..][..c];
                    for (v, s) in px.iter_mut().zip(src) {
                        *v = v.max(*s);
                    }
                }
            }
        }
    });
    Fmap { h: ho, w: wo, c, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pseudo;

    /// Direct (naive) convolution in NHWC, the reference for the fast paths.
    fn naive(x: &Fmap, p: &ConvKernel) -> Fmap {
        let weight = p.gemm_weight();
        let (ho, wo) = p.out_size(x.h, x.w);
        let mut out = Fmap { h: ho, w: wo, c: p.cout, data: vec![0.0; ho * wo * p.cout] };
        for i in 0..ho {
            for j in 0..wo {
                for o in 0..p.cout {
                    let mut acc = f64::from(p.bias[o]);
                    for ky in 0..p.k {
                        for kx in 0..p.k {
                            let y = (i * p.stride + ky * p.dilation) as isize - p.pad as isize;
                            let xx = (j * p.stride + kx * p.dilation) as isize - p.pad as isize;
                            if y < 0 || xx < 0 || y >= x.h as isize || xx >= x.w as isize {
                                continue;
                            }
                            for ci in 0..p.cin {
                                let v = x.data[(y as usize * x.w + xx as usize) * p.cin + ci];
                                let w = weight[((ky * p.k + kx) * p.cin + ci) * p.cout + o];
                                acc += f64::from(v) * f64::from(w);
                            }
                        }
                    }
                    out.data[(i * wo + j) * p.cout + o] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn every_conv_path_matches_the_naive_convolution() {
        // (cin, cout, k, stride, pad, dilation, h, w)
        let cases = [
            (5, 7, 1, 1, 0, 1, 6, 9),
            (5, 7, 1, 2, 0, 1, 7, 9),
            (4, 6, 3, 1, 1, 1, 5, 8),
            (4, 6, 3, 1, 2, 2, 6, 7),
            (4, 6, 3, 2, 1, 1, 7, 9),
            (3, 8, 7, 2, 3, 1, 11, 13),
            (40, 70, 3, 1, 1, 1, 9, 11),
            (700, 33, 1, 1, 0, 1, 5, 6),
            (64, 48, 3, 2, 1, 1, 13, 7),
        ];
        for (idx, &(cin, cout, k, stride, pad, dil, h, w)) in cases.iter().enumerate() {
            let oihw = pseudo(cout * cin * k * k, idx as u32);
            let bias = pseudo(cout, 100 + idx as u32);
            let p = ConvKernel::from_oihw(&oihw, bias, (cout, cin, k), (stride, pad, dil));
            let x = Fmap { h, w, c: cin, data: pseudo(h * w * cin, 200 + idx as u32) };
            let slow = naive(&x, &p);
            for (label, kern) in [("default", p.clone()), ("portable", p.clone().portable())] {
                let fast = conv2d(&x, &kern, None, false);
                assert_eq!((fast.h, fast.w), (slow.h, slow.w), "case {idx} {label}");
                for (a, b) in fast.data.iter().zip(&slow.data) {
                    assert!((a - b).abs() < 1e-5, "case {idx} {label}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn residual_and_relu_are_fused_correctly() {
        let p = ConvKernel::from_oihw(&pseudo(4 * 4 * 9, 1), pseudo(4, 2), (4, 4, 3), (1, 1, 1));
        let x = Fmap { h: 4, w: 5, c: 4, data: pseudo(80, 3) };
        let r = Fmap { h: 4, w: 5, c: 4, data: pseudo(80, 4) };
        let plain = naive(&x, &p);
        for kern in [p.clone(), p.clone().portable()] {
            let y = conv2d(&x, &kern, Some(&r), true);
            for ((a, b), c) in y.data.iter().zip(&plain.data).zip(&r.data) {
                assert!((a - (b + c).max(0.0)).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn writing_over_the_residual_matches_the_separate_residual() {
        // K = 700 (more than one K chunk) and a 3×3 case; the in-place path must use one chunk.
        for (idx, &(cin, cout, k, pad)) in [(700usize, 70usize, 1usize, 0usize), (24, 40, 3, 1)].iter().enumerate() {
            let p = ConvKernel::from_oihw(
                &pseudo(cout * cin * k * k, 10 + idx as u32),
                pseudo(cout, 20),
                (cout, cin, k),
                (1, pad, 1),
            );
            let x = Fmap { h: 5, w: 7, c: cin, data: pseudo(35 * cin, 30) };
            let r = Fmap { h: 5, w: 7, c: cout, data: pseudo(35 * cout, 40) };
            let want = conv2d(&x, &p, Some(&r), true);
            let got = conv2d_add_into(&x, &p, r.clone(), true);
            for (a, b) in got.data.iter().zip(&want.data) {
                assert!((a - b).abs() < 1e-5, "case {idx}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn maxpool_ignores_padding_and_layouts_round_trip() {
        let x = Fmap { h: 3, w: 3, c: 1, data: vec![-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0] };
        let y = maxpool_3x3_s2(&x);
        assert_eq!((y.h, y.w), (2, 2));
        assert_eq!(y.data, vec![-5.0, -4.0, -2.0, -1.0]);
        let chw = pseudo(2 * 3 * 4, 9);
        assert_eq!(Fmap::from_chw(2, 3, 4, &chw).to_chw(), chw);
    }
}
