//! Direct convolution as a register-blocked GEMM with an AVX-512 micro-kernel (x86-64, detected at
//! run time), bias + residual + ReLU fused into the final store.
//!
//! Each output pixel is one GEMM row whose "A row" is read in place from the (zero-padded) NHWC
//! input through a per-pixel pointer plus per-tap offsets: no im2col, no intermediate output
//! passes, and strided or dilated convolutions cost nothing extra. For stride-1 taps of one kernel
//! row, the `k·cin` input values are contiguous, so each kernel row is one long K segment. The
//! weights (B) are packed once at load time into panels of [`NR`] output channels.
//!
//! Written here rather than taken from a crate because no GEMM crate can read A through per-row
//! pointers with tap offsets, which is what removes the copies; `gemm` (candle's own) stays the
//! portable fallback in [`super::conv`].

use rayon::prelude::*;

/// Output channels per micro-tile (`NV` 16-lane vectors).
pub const NR: usize = 64;
const NV: usize = NR / 16;
/// Output pixels per micro-tile.
pub const MR: usize = 6;
/// Micro-tiles per parallel work item.
const TILES_PER_TASK: usize = 8;

/// Weights (K × N, row-major) packed in panels of [`NR`] columns: panel q holds rows p = 0..K as
/// `data[(q·K + p)·NR + c]`, zero-padded past N.
#[derive(Debug, Clone)]
pub struct PackedB {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
    /// Bias padded to a multiple of NR.
    bias: Vec<f32>,
}

impl PackedB {
    /// Packs a (k, n) row-major matrix and its bias (n).
    #[must_use]
    pub fn new(w: &[f32], bias: &[f32], k: usize, n: usize) -> Self {
        Self::from_fn(k, n, bias, |p, c| w[p * n + c])
    }

    /// Packs the (k, n) matrix whose element (p, c) is `at(p, c)`, with bias (n) or none (empty).
    /// Large matrices (weights at load time) are packed on every core, one panel per task.
    pub fn from_fn(k: usize, n: usize, bias: &[f32], at: impl Fn(usize, usize) -> f32 + Sync) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        let fill = |(q, panel): (usize, &mut [f32])| {
            let width = NR.min(n - q * NR);
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (c, v) in row[..width].iter_mut().enumerate() {
                    *v = at(p, q * NR + c);
                }
            }
        };
        if k > 0 {
            if k * n >= 1 << 16 {
                data.par_chunks_mut(k * NR).enumerate().for_each(fill);
            } else {
                data.chunks_mut(k * NR).enumerate().for_each(fill);
            }
        }
        let mut b = vec![0.0f32; panels * NR];
        b[..bias.len()].copy_from_slice(bias);
        Self { k, n, data, bias: b }
    }
}

impl PackedB {
    /// The (k, n) row-major matrix back from the panels.
    #[must_use]
    pub fn unpack(&self) -> Vec<f32> {
        let mut w = vec![0.0f32; self.k * self.n];
        for q in 0..self.n.div_ceil(NR) {
            for p in 0..self.k {
                for c in 0..NR.min(self.n - q * NR) {
                    w[p * self.n + q * NR + c] = self.data[(q * self.k + p) * NR + c];
                }
            }
        }
        w
    }
}

/// Whether the AVX-512 kernel can run on this CPU.
#[must_use]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How to find each output pixel's inputs.
pub struct Geometry {
    /// Input pitch: pixels per input row (of the padded buffer, if padded).
    pub src_w: usize,
    pub cin: usize,
    pub stride: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// K segments: (offset in floats from the pixel's base, first B row, length).
    pub segments: Vec<(usize, usize, usize)>,
}

impl Geometry {
    /// Segments for a k×k kernel with dilation `d` over an input of row pitch `src_w`: one segment per
    /// kernel row when taps are contiguous (d = 1), else one per tap.
    #[must_use]
    pub fn conv(src_w: usize, cin: usize, k: usize, stride: usize, d: usize, out: (usize, usize)) -> Self {
        let mut segments = Vec::new();
        for ky in 0..k {
            if d == 1 {
                segments.push((ky * src_w * cin, ky * k * cin, k * cin));
            } else {
                for kx in 0..k {
                    segments.push(((ky * d * src_w + kx * d) * cin, (ky * k + kx) * cin, cin));
                }
            }
        }
        Self { src_w, cin, stride, out_h: out.0, out_w: out.1, segments }
    }
}

/// Splits segments into K chunks of at most `kc` values (splitting long segments).
fn chunks(segments: &[(usize, usize, usize)], kc: usize) -> Vec<Vec<(usize, usize, usize)>> {
    let mut pieces = Vec::new();
    for &(a, b, len) in segments {
        let mut s = 0;
        while s < len {
            let l = kc.min(len - s);
            pieces.push((a + s, b + s, l));
            s += l;
        }
    }
    let mut out: Vec<Vec<(usize, usize, usize)>> = Vec::new();
    let mut cur = Vec::new();
    let mut cur_len = 0;
    for p in pieces {
        if cur_len + p.2 > kc && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        cur_len += p.2;
        cur.push(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: every task writes a disjoint set of output rows; inputs are only read.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// What is added to the output before ReLU.
#[derive(Clone, Copy)]
pub enum Residual<'a> {
    None,
    /// A separate (out_h·out_w, n) map.
    Add(&'a [f32]),
    /// The output buffer's own contents on entry (the result replaces them).
    InPlace,
}

/// `out[o, :] = relu?(Σ_segments A_o · B + bias + residual[o, :])` for every output pixel `o`.
///
/// `src` is the (padded) NHWC input, `out` and a separate residual are (out_h·out_w, n) row-major.
pub fn run(src: &[f32], geo: &Geometry, b: &PackedB, residual: Residual, relu: bool, out: &mut [f32]) {
    let m = geo.out_h * geo.out_w;
    let n = b.n;
    assert_eq!(out.len(), m * n, "output size");
    if let Residual::Add(r) = residual {
        assert_eq!(r.len(), m * n, "residual size");
    }
    // Every A element any segment reads must lie inside `src` (the unsafe kernel relies on it).
    let last_base = ((geo.out_h - 1) * geo.stride * geo.src_w + (geo.out_w - 1) * geo.stride) * geo.cin;
    let reach = geo.segments.iter().map(|&(a, _, l)| a + l).max().unwrap_or(0);
    assert!(last_base + reach <= src.len(), "input too small for the geometry");
    assert!(geo.segments.iter().all(|&(_, bs, l)| bs + l <= b.k), "segments exceed K");
    // K chunk so that one chunk of all B panels stays in L2 (~384 KB).
    let kc = ((384 * 1024 / 4) / (n.div_ceil(NR) * NR)).clamp(64, 512);
    let tpt = TILES_PER_TASK;
    let chunks = chunks(&geo.segments, kc);
    // Partial sums must not overwrite a residual that is only added at the last chunk: they then go
    // to a per-task scratch buffer instead of the output.
    let scratch_partials = matches!(residual, Residual::InPlace) && chunks.len() > 1;
    let tiles = m.div_ceil(MR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let tasks = tiles.div_ceil(tpt);
    let panels = n.div_ceil(NR);
    (0..tasks).into_par_iter().for_each(|task| {
        // Capture the whole wrapper (not its raw-pointer field) so the closure stays Send.
        #[allow(clippy::redundant_locals)]
        let out_ptr = out_ptr;
        let t0 = task * tpt;
        let t1 = (t0 + tpt).min(tiles);
        let mut scratch = if scratch_partials { vec![0.0f32; (t1 - t0) * MR * n] } else { Vec::new() };
        let scratch_ptr = scratch.as_mut_ptr();
        let mut rows_of = Vec::with_capacity(t1 - t0);
        for t in t0..t1 {
            let r0 = t * MR;
            let rows = MR.min(m - r0);
            let mut a_rows = [std::ptr::null::<f32>(); MR];
            let mut c_rows = [std::ptr::null_mut::<f32>(); MR];
            let mut p_rows = [std::ptr::null_mut::<f32>(); MR];
            let mut res_rows = [std::ptr::null::<f32>(); MR];
            for r in 0..rows {
                let o = r0 + r;
                let (i, j) = (o / geo.out_w, o % geo.out_w);
                let base = ((i * geo.stride) * geo.src_w + j * geo.stride) * geo.cin;
                a_rows[r] = src[base..].as_ptr();
                // SAFETY: o < m and out has m·n elements.
                c_rows[r] = unsafe { out_ptr.0.add(o * n) };
                p_rows[r] = if scratch_partials {
                    // SAFETY: (t - t0)·MR + r < (t1 - t0)·MR rows of n values in `scratch`.
                    unsafe { scratch_ptr.add(((t - t0) * MR + r) * n) }
                } else {
                    c_rows[r]
                };
                match residual {
                    Residual::Add(res) => res_rows[r] = res[o * n..].as_ptr(),
                    Residual::InPlace => res_rows[r] = c_rows[r].cast_const(),
                    Residual::None => {}
                }
            }
            rows_of.push((rows, a_rows, c_rows, p_rows, res_rows));
        }
        for (ci, chunk) in chunks.iter().enumerate() {
            let first = ci == 0;
            let last = ci + 1 == chunks.len();
            let call = |ti: usize, q: usize| {
                let (rows, a_rows, c_rows, p_rows, res_rows) = &rows_of[ti];
                let tile = Tile {
                    a_rows,
                    c_rows,
                    p_rows,
                    res_rows: if matches!(residual, Residual::None) { None } else { Some(res_rows) },
                    panel: &b.data[q * b.k * NR..(q + 1) * b.k * NR],
                    bias: &b.bias[q * NR..(q + 1) * NR],
                    col0: q * NR,
                    cols: NR.min(n - q * NR),
                    first,
                    last,
                    relu,
                };
                // SAFETY: AVX-512 availability is checked by the caller through `available()`;
                // pointers are in bounds as asserted above.
                unsafe { dispatch(*rows, &tile, chunk) };
            };
            // Tile-major: the tile's A rows stay in L1 across all output-channel panels.
            for ti in 0..rows_of.len() {
                for q in 0..panels {
                    call(ti, q);
                }
            }
        }
    });
}

struct Tile<'a> {
    a_rows: &'a [*const f32; MR],
    /// Final output rows.
    c_rows: &'a [*mut f32; MR],
    /// Where partial sums between K chunks live (the output rows unless they hold the residual).
    p_rows: &'a [*mut f32; MR],
    res_rows: Option<&'a [*const f32; MR]>,
    panel: &'a [f32],
    bias: &'a [f32],
    col0: usize,
    cols: usize,
    first: bool,
    last: bool,
    relu: bool,
}

#[cfg(target_arch = "x86_64")]
unsafe fn dispatch(rows: usize, t: &Tile, chunk: &[(usize, usize, usize)]) {
    // SAFETY: forwarded from `run`.
    unsafe {
        match rows {
            6 => kernel::<6>(t, chunk),
            5 => kernel::<5>(t, chunk),
            4 => kernel::<4>(t, chunk),
            3 => kernel::<3>(t, chunk),
            2 => kernel::<2>(t, chunk),
            _ => kernel::<1>(t, chunk),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dispatch(_rows: usize, _t: &Tile, _chunk: &[(usize, usize, usize)]) {
    unreachable!("fastconv::available() is false off x86-64");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Indexing fixed-size register arrays by row keeps the accumulators in registers.
#[allow(clippy::needless_range_loop)]
unsafe fn kernel<const R: usize>(t: &Tile, chunk: &[(usize, usize, usize)]) {
    // SAFETY: the caller guarantees AVX-512F and in-bounds pointers (see `run`).
    unsafe {
        use std::arch::x86_64::*;
        let mut masks = [0 as __mmask16; NV];
        for (v, m) in masks.iter_mut().enumerate() {
            let cols = t.cols.saturating_sub(v * 16).min(16);
            *m = ((1u32 << cols) - 1) as u16;
        }
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        if !t.first {
            for r in 0..R {
                let c = t.p_rows[r].add(t.col0);
                for v in 0..NV {
                    acc[r][v] = _mm512_maskz_loadu_ps(masks[v], c.add(16 * v));
                }
            }
        }
        let bp = t.panel.as_ptr();
        for &(aoff, brow, len) in chunk {
            let mut b = bp.add(brow * NR);
            let mut a = [std::ptr::null::<f32>(); R];
            for r in 0..R {
                a[r] = t.a_rows[r].add(aoff);
            }
            for p in 0..len {
                let mut bv = [_mm512_setzero_ps(); NV];
                for v in 0..NV {
                    bv[v] = _mm512_loadu_ps(b.add(16 * v));
                }
                for r in 0..R {
                    let x = _mm512_set1_ps(*a[r].add(p));
                    for v in 0..NV {
                        acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
                    }
                }
                b = b.add(NR);
            }
        }
        if t.last {
            for v in 0..NV {
                let bias = _mm512_loadu_ps(t.bias.as_ptr().add(16 * v));
                for r in 0..R {
                    acc[r][v] = _mm512_add_ps(acc[r][v], bias);
                    if let Some(res) = t.res_rows {
                        let rp = res[r].add(t.col0 + 16 * v);
                        acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(masks[v], rp));
                    }
                    if t.relu {
                        acc[r][v] = _mm512_max_ps(acc[r][v], _mm512_setzero_ps());
                    }
                }
            }
        }
        for r in 0..R {
            let c = if t.last { t.c_rows[r] } else { t.p_rows[r] }.add(t.col0);
            for v in 0..NV {
                _mm512_mask_storeu_ps(c.add(16 * v), masks[v], acc[r][v]);
            }
        }
    }
}
