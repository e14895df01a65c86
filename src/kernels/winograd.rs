//! Winograd F(2×2, 3×3) for the stride-1, padding-1, undilated 3×3 convolutions of the backbone:
//! 16 multiplications per 2×2 output tile instead of 36 (Lavin & Gray, 2016).
//!
//! Each 4×4 input patch `d` becomes `V = Bᵀ d B`, each 3×3 kernel `g` becomes `U = G g Gᵀ` (once, at
//! load time, in f64), the 16 products `M_ξ = V_ξ · U_ξ` over all tiles and channels are plain
//! matrix products on the packed kernels of [`super::packed_gemm`] (AVX-512 or AVX2 + FMA), and
//! `Y = Aᵀ M A` gives the outputs, with bias, residual and ReLU fused into that last pass. The
//! transforms of F(2×2, 3×3) only add, subtract and halve, so they round like a few extra
//! additions: the parity tests against the float64 reference hold at the same tolerance.
//!
//! Each core takes bands of tiles in turn and does all three steps for a band on its own, so that
//! the band's transformed inputs and products (about half a MB) stay in its L2 cache.

use rayon::prelude::*;

use super::packed_gemm::{self, Geometry, PackedB, Residual};

/// `G` of F(2×2, 3×3): `U = G g Gᵀ`.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
/// Transformed values (inputs and products) one band holds: within one core's L2 cache.
const BAND_VALUES: usize = 128 << 10;
/// Channels transformed together (one array of this many lanes per patch position).
const LANES: usize = 8;

/// Whether 3×3 convolutions use Winograd where they can: unless `INTR_WINOGRAD` is `0` or `off`
/// (to measure or check the direct kernels), on every packed path.
#[must_use]
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        packed_gemm::available()
            && !std::env::var("INTR_WINOGRAD")
                .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off"))
    })
}

/// A 3×3 kernel in the Winograd domain: the 16 matrices `U_ξ` (cin × cout), packed for the kernels.
#[derive(Debug, Clone)]
pub struct Winograd {
    cin: usize,
    cout: usize,
    /// `U_ξ` for ξ = 4·a + b, element (ci, co) = (G g_{co,ci} Gᵀ)[a][b].
    u: Vec<PackedB>,
}

impl Winograd {
    /// Transforms the kernel whose tap (ky, kx) from input channel `ci` to output channel `co` is
    /// `g(ci, co, ky, kx)` (in f64; each `U` value is rounded to f32 once).
    #[must_use]
    pub fn new(cin: usize, cout: usize, g: impl Fn(usize, usize, usize, usize) -> f64 + Sync) -> Self {
        // Per input channel, its 16 rows U_ξ[ci, ·] (laid out [ξ][co]), filled on every core; then
        // each U_ξ packed from contiguous rows.
        let rows: Vec<Vec<f32>> = (0..cin)
            .into_par_iter()
            .map(|ci| {
                let mut row = vec![0.0f32; 16 * cout];
                for co in 0..cout {
                    let k: [[f64; 3]; 3] = std::array::from_fn(|ky| std::array::from_fn(|kx| g(ci, co, ky, kx)));
                    let mut gg = [[0.0f64; 3]; 4];
                    for (ggr, gr) in gg.iter_mut().zip(&G) {
                        for (kx, v) in ggr.iter_mut().enumerate() {
                            *v = (0..3).map(|ky| gr[ky] * k[ky][kx]).sum();
                        }
                    }
                    for r in 0..4 {
                        for (s, gs) in G.iter().enumerate() {
                            let u: f64 = (0..3).map(|kx| gg[r][kx] * gs[kx]).sum();
                            #[allow(clippy::cast_possible_truncation)]
                            {
                                row[(r * 4 + s) * cout + co] = u as f32;
                            }
                        }
                    }
                }
                row
            })
            .collect();
        let u = (0..16).map(|xi| PackedB::from_fn(cin, cout, &[], |ci, co| rows[ci][xi * cout + co])).collect();
        Self { cin, cout, u }
    }

    /// The 3×3 kernel back, in the direct GEMM layout `((ky·3 + kx)·cin + ci, co)`: the inverse of
    /// `G g Gᵀ` (exact but for one rounding of each value). For cross-checks and the portable path.
    #[must_use]
    pub fn direct_weights(&self) -> Vec<f32> {
        let (cin, cout) = (self.cin, self.cout);
        let u: Vec<Vec<f32>> = self.u.iter().map(PackedB::unpack).collect();
        let mut w = vec![0.0f32; 9 * cin * cout];
        // Rows 0 and 3 of G pick g's first and last row; row 1 is half their sum with the middle.
        let undo = |v: [f64; 4]| [v[0], 2.0 * v[1] - v[0] - v[3], v[3]];
        for ci in 0..cin {
            for co in 0..cout {
                let at = |a: usize, b: usize| f64::from(u[a * 4 + b][ci * cout + co]);
                // T = G g (4×3) from U = T Gᵀ, then g from T.
                let t: Vec<[f64; 3]> = (0..4).map(|a| undo([at(a, 0), at(a, 1), at(a, 2), at(a, 3)])).collect();
                for kx in 0..3 {
                    let col = undo([t[0][kx], t[1][kx], t[2][kx], t[3][kx]]);
                    for (ky, v) in col.iter().enumerate() {
                        #[allow(clippy::cast_possible_truncation)]
                        {
                            w[((ky * 3 + kx) * cin + ci) * cout + co] = *v as f32;
                        }
                    }
                }
            }
        }
        w
    }

    /// `out = relu?(conv3x3(x) + bias + residual)` for an `h × w × cin` NHWC map `x`, padding 1,
    /// stride 1; `out` is `h × w × cout`.
    ///
    /// # Panics
    /// If the sizes disagree.
    pub fn run(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        bias: &[f32],
        residual: Residual,
        relu: bool,
        out: &mut [f32],
    ) {
        // Tiles per band: its V and M within about BAND_VALUES, but at least a few register tiles'
        // worth so that each U_ξ read serves enough tiles.
        let band = (BAND_VALUES / (16 * (self.cin + self.cout))).max(MIN_BAND_TILES);
        self.run_in_bands(x, (h, w), bias, residual, relu, out, band);
    }

    /// [`Winograd::run`] with bands of `band` tiles (tests split small maps into several bands).
    #[allow(clippy::too_many_arguments)]
    fn run_in_bands(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        bias: &[f32],
        residual: Residual,
        relu: bool,
        out: &mut [f32],
        band: usize,
    ) {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(x.len(), h * w * cin, "input size");
        assert_eq!(out.len(), h * w * cout, "output size");
        assert_eq!(bias.len(), cout, "bias size");
        if let Residual::Add(r) = residual {
            assert_eq!(r.len(), h * w * cout, "residual size");
        }
        if h == 0 || w == 0 || cout == 0 {
            return;
        }
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let total = th * tw;
        // As many bands as make every core's share equal (a multiple of the thread count).
        let threads = rayon::current_num_threads().max(1);
        let bands = total.div_ceil(band.clamp(1, total)).div_ceil(threads) * threads;
        let band = total.div_ceil(bands).max(1);
        let in_place = matches!(residual, Residual::InPlace);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..total.div_ceil(band)).into_par_iter().for_each(|bi| {
            #[allow(clippy::redundant_locals)]
            let out_ptr = out_ptr;
            let (k0, k1) = (bi * band, ((bi + 1) * band).min(total));
            let tiles = k1 - k0;
            SCRATCH.with_borrow_mut(|(v, m)| {
                // V: [tile][ξ][ci]; each tile's 16 rows of cin values are contiguous.
                v.resize(tiles * 16 * cin, 0.0);
                for (k, vt) in v.chunks_exact_mut(16 * cin).enumerate() {
                    input_tile(x, (h, w, cin), ((k0 + k) / tw, (k0 + k) % tw), vt);
                }
                // M: [ξ][tile][co], one product per ξ; V_ξ's rows are 16·cin apart.
                m.resize(16 * tiles * cout, 0.0);
                for (xi, mx) in m.chunks_exact_mut(tiles * cout).enumerate() {
                    let geo = Geometry {
                        src_w: 16 * tiles,
                        cin,
                        stride: 16,
                        out_h: 1,
                        out_w: tiles,
                        segments: vec![(xi * cin, 0, cin)],
                    };
                    packed_gemm::run_serial(v, &geo, &self.u[xi], Residual::None, false, mx);
                }
                let res = match residual {
                    Residual::Add(r) => Some(r),
                    _ => None,
                };
                for k in 0..tiles {
                    let tile = ((k0 + k) / tw, (k0 + k) % tw);
                    // SAFETY: `out` holds h·w·cout values and outlives the loop; tile (ti, tj)
                    // reads and writes only its own 2×2 output pixels, which no other tile (in
                    // this band or another) touches.
                    unsafe { output_tile(m, (tiles, cout, h, w), k, tile, bias, res, in_place, relu, out_ptr.0) };
                }
                // Bands of the largest maps stay a few MB; keep nothing larger between calls.
                if v.capacity() > SCRATCH_KEEP {
                    *v = Vec::new();
                }
                if m.capacity() > SCRATCH_KEEP {
                    *m = Vec::new();
                }
            });
        });
    }
}

// Each thread's transformed inputs and products, reused between bands and calls.
thread_local! {
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Largest scratch buffer (values) a thread keeps between bands.
const SCRATCH_KEEP: usize = 1 << 20;
/// Fewest tiles in a band (eight register tiles of the packed kernels).
const MIN_BAND_TILES: usize = 48;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the bands write disjoint output pixels (see `run_in_bands`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `V = Bᵀ d B` of the 4×4 patch of tile (ti, tj) (rows 2ti − 1 …, zero outside the map) into `vt`
/// (`[ξ][ci]`).
fn input_tile(x: &[f32], (h, w, c): (usize, usize, usize), (ti, tj): (usize, usize), vt: &mut [f32]) {
    let mut px: [[Option<&[f32]>; 4]; 4] = [[None; 4]; 4];
    for (dy, row) in px.iter_mut().enumerate() {
        let Some(y) = (2 * ti + dy).checked_sub(1).filter(|&y| y < h) else { continue };
        for (dx, p) in row.iter_mut().enumerate() {
            if let Some(xx) = (2 * tj + dx).checked_sub(1).filter(|&xx| xx < w) {
                *p = Some(&x[(y * w + xx) * c..][..c]);
            }
        }
    }
    // Whole lane groups with a constant width (plain vector moves), then the remainder.
    let full = c - c % LANES;
    for c0 in (0..full).step_by(LANES) {
        input_lanes(&px, c, c0, LANES, vt);
    }
    if full < c {
        input_lanes(&px, c, full, c - full, vt);
    }
}

/// [`input_tile`] for channels `c0 .. c0 + n` (n ≤ [`LANES`]).
#[inline(always)]
fn input_lanes(px: &[[Option<&[f32]>; 4]; 4], c: usize, c0: usize, n: usize, vt: &mut [f32]) {
    let mut d = [[[0.0f32; LANES]; 4]; 4];
    for (drow, prow) in d.iter_mut().zip(px) {
        for (dv, p) in drow.iter_mut().zip(prow) {
            if let Some(s) = p {
                dv[..n].copy_from_slice(&s[c0..c0 + n]);
            }
        }
    }
    // Bᵀ d: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3; then the same on the columns.
    let mut t = [[[0.0f32; LANES]; 4]; 4];
    for x in 0..4 {
        for l in 0..LANES {
            t[0][x][l] = d[0][x][l] - d[2][x][l];
            t[1][x][l] = d[1][x][l] + d[2][x][l];
            t[2][x][l] = d[2][x][l] - d[1][x][l];
            t[3][x][l] = d[1][x][l] - d[3][x][l];
        }
    }
    for (r, tr) in t.iter().enumerate() {
        let mut v = [[0.0f32; LANES]; 4];
        for l in 0..LANES {
            v[0][l] = tr[0][l] - tr[2][l];
            v[1][l] = tr[1][l] + tr[2][l];
            v[2][l] = tr[2][l] - tr[1][l];
            v[3][l] = tr[1][l] - tr[3][l];
        }
        for (s, vs) in v.iter().enumerate() {
            vt[(r * 4 + s) * c + c0..][..n].copy_from_slice(&vs[..n]);
        }
    }
}

/// `Y = Aᵀ M A` of band tile `k` (tile (ti, tj) of the map) plus bias and residual (`res`, laid out
/// as the output, or with `in_place` the output's own values), ReLU, into its up to 2×2 pixels of
/// the `h × w × cout` output at `out`.
///
/// # Safety
/// `out` must point to `h·w·cout` values that nothing else reads or writes at this tile's pixels.
#[allow(clippy::too_many_arguments)]
unsafe fn output_tile(
    m: &[f32],
    (tiles, cout, h, w): (usize, usize, usize, usize),
    k: usize,
    (ti, tj): (usize, usize),
    bias: &[f32],
    res: Option<&[f32]>,
    in_place: bool,
    relu: bool,
    out: *mut f32,
) {
    let nrows = (h - 2 * ti).min(2);
    let ncols = (w - 2 * tj).min(2);
    // SAFETY (both calls): forwarded from the caller.
    let full = cout - cout % LANES;
    for c0 in (0..full).step_by(LANES) {
        unsafe {
            output_lanes(m, (tiles, cout, w), k, (ti, tj), (nrows, ncols), (c0, LANES), bias, res, in_place, relu, out)
        };
    }
    if full < cout {
        unsafe {
            output_lanes(
                m,
                (tiles, cout, w),
                k,
                (ti, tj),
                (nrows, ncols),
                (full, cout - full),
                bias,
                res,
                in_place,
                relu,
                out,
            );
        };
    }
}

/// [`output_tile`] for channels `c0 .. c0 + n` (n ≤ [`LANES`]) of its `nrows × ncols` pixels.
///
/// # Safety
/// As [`output_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn output_lanes(
    m: &[f32],
    (tiles, cout, w): (usize, usize, usize),
    k: usize,
    (ti, tj): (usize, usize),
    (nrows, ncols): (usize, usize),
    (c0, n): (usize, usize),
    bias: &[f32],
    res: Option<&[f32]>,
    in_place: bool,
    relu: bool,
    out: *mut f32,
) {
    let mut bias_lanes = [0.0f32; LANES];
    bias_lanes[..n].copy_from_slice(&bias[c0..c0 + n]);
    let mut mm = [[[0.0f32; LANES]; 4]; 4];
    for (xi, mv) in mm.iter_mut().flatten().enumerate() {
        mv[..n].copy_from_slice(&m[(xi * tiles + k) * cout + c0..][..n]);
    }
    // Aᵀ M: rows m0 + m1 + m2, m1 − m2 − m3; then the same on the columns.
    let mut t = [[[0.0f32; LANES]; 4]; 2];
    for x in 0..4 {
        for l in 0..LANES {
            t[0][x][l] = mm[0][x][l] + mm[1][x][l] + mm[2][x][l];
            t[1][x][l] = mm[1][x][l] - mm[2][x][l] - mm[3][x][l];
        }
    }
    let mut y = [[[0.0f32; LANES]; 2]; 2];
    for (ya, ta) in y.iter_mut().zip(&t) {
        for l in 0..LANES {
            ya[0][l] = ta[0][l] + ta[1][l] + ta[2][l] + bias_lanes[l];
            ya[1][l] = ta[1][l] - ta[2][l] - ta[3][l] + bias_lanes[l];
        }
    }
    for (a, ya) in y.iter().enumerate().take(nrows) {
        for (b, yb) in ya.iter().enumerate().take(ncols) {
            let at = ((2 * ti + a) * w + 2 * tj + b) * cout + c0;
            // SAFETY: at + n ≤ h·w·cout (the pixel lies in the map); the caller owns it.
            let px = unsafe { std::slice::from_raw_parts_mut(out.add(at), n) };
            let mut r = [0.0f32; LANES];
            match res {
                Some(rs) => r[..n].copy_from_slice(&rs[at..at + n]),
                None if in_place => r[..n].copy_from_slice(px),
                None => {}
            }
            for ((o, yv), rv) in px.iter_mut().zip(yb).zip(&r) {
                let v = yv + rv;
                *o = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pseudo;

    #[test]
    fn winograd_matches_a_float64_convolution_in_every_band_split_with_residuals() {
        if !packed_gemm::available() {
            return;
        }
        // (cin, cout, h, w): odd and even sizes, one-pixel maps, partial panels and lanes.
        let cases = [(4, 6, 5, 8), (40, 70, 9, 11), (64, 64, 7, 6), (3, 130, 1, 1), (17, 9, 2, 13)];
        for (idx, &(cin, cout, h, w)) in cases.iter().enumerate() {
            let g = pseudo(cout * cin * 9, idx as u32);
            let bias = pseudo(cout, 10 + idx as u32);
            let x = pseudo(h * w * cin, 20 + idx as u32);
            let residual = pseudo(h * w * cout, 30 + idx as u32);
            let wg = Winograd::new(cin, cout, |ci, co, ky, kx| f64::from(g[((co * cin + ci) * 3 + ky) * 3 + kx]));
            let mut want = vec![0.0f64; h * w * cout];
            for i in 0..h {
                for j in 0..w {
                    for co in 0..cout {
                        let mut acc = f64::from(bias[co]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (Some(y), Some(xx)) = ((i + ky).checked_sub(1), (j + kx).checked_sub(1)) else {
                                    continue;
                                };
                                if y >= h || xx >= w {
                                    continue;
                                }
                                for ci in 0..cin {
                                    acc += f64::from(x[(y * w + xx) * cin + ci])
                                        * f64::from(g[((co * cin + ci) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                        want[(i * w + j) * cout + co] = acc;
                    }
                }
            }
            // One band, bands of one tile, and of seven (ending mid tile row).
            for band in [usize::MAX, 1, 7] {
                let mut plain = vec![0.0f32; h * w * cout];
                wg.run_in_bands(&x, (h, w), &bias, Residual::None, false, &mut plain, band);
                let mut added = vec![0.0f32; h * w * cout];
                wg.run_in_bands(&x, (h, w), &bias, Residual::Add(&residual), true, &mut added, band);
                let mut in_place = residual.clone();
                wg.run_in_bands(&x, (h, w), &bias, Residual::InPlace, true, &mut in_place, band);
                for (o, e) in want.iter().enumerate() {
                    let fused = (e + f64::from(residual[o])).max(0.0);
                    for (label, got, e) in
                        [("plain", plain[o], *e), ("added", added[o], fused), ("in place", in_place[o], fused)]
                    {
                        assert!(
                            (f64::from(got) - e).abs() < 1e-5,
                            "case {idx}, band {band}, {label}, value {o}: {got} vs {e}"
                        );
                    }
                }
            }
            // The kernel comes back from the Winograd domain to within rounding.
            let back = wg.direct_weights();
            for ci in 0..cin {
                for co in 0..cout {
                    for t in 0..9 {
                        let (a, b) = (back[(t * cin + ci) * cout + co], g[(co * cin + ci) * 9 + t]);
                        assert!((a - b).abs() < 1e-6, "case {idx}: weight {a} vs {b}");
                    }
                }
            }
        }
    }
}
