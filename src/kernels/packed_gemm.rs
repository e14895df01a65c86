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

/// The instruction set the packed kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F: 6 × 64 register tiles.
    Avx512,
    /// AVX2 + FMA: 6 × 16 register tiles over the same packed panels.
    Avx2,
    /// No packed kernels: the `gemm` crate (NEON on Arm, whatever the CPU has elsewhere).
    Portable,
}

impl Simd {
    /// The name `INTR_SIMD` takes and benchmarks print.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Portable => "portable",
        }
    }

    /// Whether this CPU can run the path.
    #[must_use]
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Simd::Avx512 => std::is_x86_feature_detected!("avx512f"),
                Simd::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
                Simd::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Simd::Portable
        }
    }

    /// Every path this CPU can run, fastest first.
    #[must_use]
    pub fn available_paths() -> Vec<Simd> {
        [Simd::Avx512, Simd::Avx2, Simd::Portable].into_iter().filter(|s| s.supported()).collect()
    }
}

/// The path in use, chosen once per process: `INTR_SIMD` (`avx512`, `avx2` or `portable`) when set
/// and this CPU supports it (otherwise a warning and the best path), else the best path.
#[must_use]
pub fn simd() -> Simd {
    static CHOSEN: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let best = Simd::available_paths()[0];
        let Some(asked) = std::env::var("INTR_SIMD").ok().filter(|v| !v.trim().is_empty()) else { return best };
        let wanted = match asked.trim().to_ascii_lowercase().as_str() {
            "avx512" | "avx-512" => Some(Simd::Avx512),
            "avx2" => Some(Simd::Avx2),
            "portable" | "none" => Some(Simd::Portable),
            _ => None,
        };
        match wanted {
            Some(s) if s.supported() => s,
            Some(s) => {
                eprintln!("warning: INTR_SIMD={asked}: this CPU has no {}; using {}", s.name(), best.name());
                best
            }
            None => {
                eprintln!("warning: INTR_SIMD={asked} is not one of avx512, avx2, portable; using {}", best.name());
                best
            }
        }
    })
}

/// Whether the packed kernels run on this CPU (AVX-512 or AVX2 + FMA, unless `INTR_SIMD=portable`).
#[must_use]
pub fn available() -> bool {
    simd() != Simd::Portable
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
    run_on(simd(), src, geo, b, residual, relu, out);
}

/// [`run`] on a given path (tests and benchmarks of each path in one process).
///
/// # Panics
/// If `path` is not supported by this CPU, or is [`Simd::Portable`] (which has no packed kernel).
pub fn run_on(path: Simd, src: &[f32], geo: &Geometry, b: &PackedB, residual: Residual, relu: bool, out: &mut [f32]) {
    run_with(path, src, geo, b, residual, relu, out, true);
}

/// [`run`] on the calling thread only: for callers that already split their work over the cores
/// and want each piece's data to stay in one core's caches.
pub fn run_serial(src: &[f32], geo: &Geometry, b: &PackedB, residual: Residual, relu: bool, out: &mut [f32]) {
    run_with(simd(), src, geo, b, residual, relu, out, false);
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    path: Simd,
    src: &[f32],
    geo: &Geometry,
    b: &PackedB,
    residual: Residual,
    relu: bool,
    out: &mut [f32],
    parallel: bool,
) {
    assert!(path != Simd::Portable && path.supported(), "the packed kernels cannot run on {}", path.name());
    let m = geo.out_h * geo.out_w;
    super::count_gemm(m, geo.segments.iter().map(|s| s.2).sum(), b.n);
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
    let task = |task: usize| {
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
                // SAFETY: the path is supported (asserted above); pointers are in bounds as asserted
                // above.
                unsafe { dispatch(path, *rows, &tile, chunk) };
            };
            // Tile-major: the tile's A rows stay in L1 across all output-channel panels.
            for ti in 0..rows_of.len() {
                for q in 0..panels {
                    call(ti, q);
                }
            }
        }
    };
    if parallel {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
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
unsafe fn dispatch(path: Simd, rows: usize, t: &Tile, chunk: &[(usize, usize, usize)]) {
    // SAFETY: forwarded from `run_on`, which checked that this CPU supports `path`.
    unsafe {
        if path == Simd::Avx2 {
            return match rows {
                6 => kernel_avx2::<6>(t, chunk),
                5 => kernel_avx2::<5>(t, chunk),
                4 => kernel_avx2::<4>(t, chunk),
                3 => kernel_avx2::<3>(t, chunk),
                2 => kernel_avx2::<2>(t, chunk),
                _ => kernel_avx2::<1>(t, chunk),
            };
        }
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

/// Columns of one AVX2 sub-tile: two 8-lane vectors.
const NR2: usize = 16;

/// The AVX2 + FMA micro-kernel: the tile's panel of [`NR`] columns in four sub-tiles of 16 (R × 2
/// accumulators, within AVX2's 16 registers), each over the whole K chunk; bias, residual and
/// ReLU fused into the final store as in the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel_avx2<const R: usize>(t: &Tile, chunk: &[(usize, usize, usize)]) {
    // SAFETY: the caller guarantees AVX2 + FMA and in-bounds pointers (see `run`).
    unsafe {
        use std::arch::x86_64::*;
        let bp = t.panel.as_ptr();
        for sub in 0..NR.div_ceil(NR2) {
            let s0 = sub * NR2;
            if s0 >= t.cols {
                break;
            }
            // Lane masks of this sub-tile's two vectors (all ones where the column exists).
            let mut masks = [_mm256_setzero_si256(); 2];
            for (v, m) in masks.iter_mut().enumerate() {
                let cols = t.cols.saturating_sub(s0 + 8 * v).min(8) as i32;
                *m = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            }
            // Masked moves are slow on some AVX2 CPUs (a masked store is microcoded on AMD's):
            // a full sub-tile uses plain ones.
            let full = t.cols >= s0 + NR2;
            let load = |p: *const f32, v: usize| {
                if full { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, masks[v]) }
            };
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if !t.first {
                for r in 0..R {
                    let c = t.p_rows[r].add(t.col0 + s0);
                    for v in 0..2 {
                        acc[r][v] = load(c.add(8 * v), v);
                    }
                }
            }
            for &(aoff, brow, len) in chunk {
                let mut b = bp.add(brow * NR + s0);
                let mut a = [std::ptr::null::<f32>(); R];
                for r in 0..R {
                    a[r] = t.a_rows[r].add(aoff);
                }
                for p in 0..len {
                    let b0 = _mm256_loadu_ps(b);
                    let b1 = _mm256_loadu_ps(b.add(8));
                    for r in 0..R {
                        let x = _mm256_broadcast_ss(&*a[r].add(p));
                        acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                        acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
                    }
                    b = b.add(NR);
                }
            }
            if t.last {
                for v in 0..2 {
                    let bias = _mm256_loadu_ps(t.bias.as_ptr().add(s0 + 8 * v));
                    for r in 0..R {
                        acc[r][v] = _mm256_add_ps(acc[r][v], bias);
                        if let Some(res) = t.res_rows {
                            let rp = res[r].add(t.col0 + s0 + 8 * v);
                            acc[r][v] = _mm256_add_ps(acc[r][v], load(rp, v));
                        }
                        if t.relu {
                            acc[r][v] = _mm256_max_ps(acc[r][v], _mm256_setzero_ps());
                        }
                    }
                }
            }
            for r in 0..R {
                let c = if t.last { t.c_rows[r] } else { t.p_rows[r] }.add(t.col0 + s0);
                for v in 0..2 {
                    if full {
                        _mm256_storeu_ps(c.add(8 * v), acc[r][v]);
                    } else {
                        _mm256_maskstore_ps(c.add(8 * v), masks[v], acc[r][v]);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn dispatch(_path: Simd, _rows: usize, _t: &Tile, _chunk: &[(usize, usize, usize)]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pseudo;

    #[test]
    fn every_packed_path_this_cpu_has_computes_the_same_convolution_as_a_naive_loop() {
        // (cin, n, k, stride, out_h, out_w): partial panels (n = 40, 70, 130), several K chunks
        // (cin·k·k > 512), stride 2, a single output row.
        let cases = [(5, 40, 3, 1, 4, 7), (64, 70, 3, 2, 3, 5), (300, 130, 3, 1, 2, 3), (700, 16, 1, 1, 1, 13)];
        let paths: Vec<Simd> = Simd::available_paths().into_iter().filter(|&p| p != Simd::Portable).collect();
        for (idx, &(cin, n, k, stride, oh, ow)) in cases.iter().enumerate() {
            let (h, w) = ((oh - 1) * stride + k, (ow - 1) * stride + k);
            let src = pseudo(h * w * cin, idx as u32);
            let kk = k * k * cin;
            let wgt = pseudo(kk * n, 50 + idx as u32);
            let bias = pseudo(n, 90 + idx as u32);
            let residual = pseudo(oh * ow * n, 130 + idx as u32);
            let b = PackedB::new(&wgt, &bias, kk, n);
            let geo = Geometry::conv(w, cin, k, stride, 1, (oh, ow));
            let mut want = vec![0.0f32; oh * ow * n];
            for i in 0..oh {
                for j in 0..ow {
                    for c in 0..n {
                        let mut acc = f64::from(bias[c]) + f64::from(residual[(i * ow + j) * n + c]);
                        for ky in 0..k {
                            for kx in 0..k {
                                for ci in 0..cin {
                                    let x = src[((i * stride + ky) * w + j * stride + kx) * cin + ci];
                                    acc += f64::from(x) * f64::from(wgt[((ky * k + kx) * cin + ci) * n + c]);
                                }
                            }
                        }
                        want[(i * ow + j) * n + c] = (acc as f32).max(0.0);
                    }
                }
            }
            for &path in &paths {
                let mut separate = vec![0.0f32; oh * ow * n];
                run_on(path, &src, &geo, &b, Residual::Add(&residual), true, &mut separate);
                let mut in_place = residual.clone();
                run_on(path, &src, &geo, &b, Residual::InPlace, true, &mut in_place);
                for (label, got) in [("separate residual", &separate), ("in place", &in_place)] {
                    for (a, e) in got.iter().zip(&want) {
                        assert!((a - e).abs() < 1e-4, "case {idx} on {}, {label}: {a} vs {e}", path.name());
                    }
                }
            }
        }
    }
}
