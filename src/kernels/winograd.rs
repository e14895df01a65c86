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
//! Tiles are processed in bands of tile rows whose transformed inputs and products stay within a
//! few MB, so the transform buffers never cost more than a fraction of one feature map.

use rayon::prelude::*;

use super::conv::{recycle, take_buffer};
use super::packed_gemm::{self, Geometry, PackedB, Residual};

/// `G` of F(2×2, 3×3): `U = G g Gᵀ`.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
/// Transformed values (inputs and products) one band holds at most.
const BAND_VALUES: usize = 2 << 20;
/// Channels transformed together (one array of this many lanes per patch position).
const LANES: usize = 8;

/// Whether 3×3 convolutions use Winograd where they can: unless `INTR_WINOGRAD` is `0` or `off`
/// (to measure or check the direct kernels), on every packed path.
#[must_use]
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        packed_gemm::available()
            && !std::env::var("INTR_WINOGRAD").is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off"))
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
        // [ci][co][ξ], filled on every core, then packed per ξ.
        let mut t = vec![0.0f32; cin * cout * 16];
        if cout > 0 {
            t.par_chunks_mut(cout * 16).enumerate().for_each(|(ci, row)| {
                for co in 0..cout {
                    let mut gg = [[0.0f64; 3]; 4];
                    for (r, gr) in G.iter().enumerate() {
                        for kx in 0..3 {
                            gg[r][kx] = (0..3).map(|ky| gr[ky] * g(ci, co, ky, kx)).sum();
                        }
                    }
                    for r in 0..4 {
                        for (s, gs) in G.iter().enumerate() {
                            let u: f64 = (0..3).map(|kx| gg[r][kx] * gs[kx]).sum();
                            #[allow(clippy::cast_possible_truncation)]
                            {
                                row[co * 16 + r * 4 + s] = u as f32;
                            }
                        }
                    }
                }
            });
        }
        let u = (0..16).map(|xi| PackedB::from_fn(cin, cout, &[], |ci, co| t[(ci * cout + co) * 16 + xi])).collect();
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
    pub fn run(&self, x: &[f32], h: usize, w: usize, bias: &[f32], residual: Residual, relu: bool, out: &mut [f32]) {
        self.run_in_bands(x, (h, w), bias, residual, relu, out, BAND_VALUES);
    }

    /// [`Winograd::run`] with bands of at most `band_values` transformed values (tests split small
    /// maps into several bands with it).
    #[allow(clippy::too_many_arguments)]
    fn run_in_bands(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        bias: &[f32],
        residual: Residual,
        relu: bool,
        out: &mut [f32],
        band_values: usize,
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
        let band_rows = (band_values / (16 * (cin + cout) * tw)).clamp(1, th);
        for r0 in (0..th).step_by(band_rows) {
            let r1 = (r0 + band_rows).min(th);
            let tiles = (r1 - r0) * tw;
            // V: [tile][ξ][ci]; each tile's 16 rows of cin values are contiguous.
            let mut v = take_buffer(tiles * 16 * cin);
            if cin > 0 {
                v.par_chunks_mut(16 * cin).enumerate().for_each(|(k, vt)| {
                    input_tile(x, (h, w, cin), (r0 + k / tw, k % tw), vt);
                });
            } else {
                v.fill(0.0);
            }
            // M: [ξ][tile][co], one product per ξ; V_ξ's rows are 16·cin apart.
            let mut m = take_buffer(16 * tiles * cout);
            for (xi, mx) in m.chunks_exact_mut(tiles * cout).enumerate() {
                let geo = Geometry {
                    src_w: 16 * tiles,
                    cin,
                    stride: 16,
                    out_h: 1,
                    out_w: tiles,
                    segments: vec![(xi * cin, 0, cin)],
                };
                packed_gemm::run(&v, &geo, &self.u[xi], Residual::None, false, mx);
            }
            recycle(v);
            let (y0, y1) = (2 * r0, (2 * r1).min(h));
            let band = &mut out[y0 * w * cout..y1 * w * cout];
            let in_place = matches!(residual, Residual::InPlace);
            band.par_chunks_mut(2 * w * cout).enumerate().for_each(|(k, rows)| {
                let res = match residual {
                    Residual::Add(r) => Some(&r[(y0 + 2 * k) * w * cout..][..rows.len()]),
                    _ => None,
                };
                for tj in 0..tw {
                    output_tile(&m, (tiles, cout, w), k * tw + tj, tj, bias, res, in_place, relu, rows);
                }
            });
            recycle(m);
        }
    }
}

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
    for c0 in (0..c).step_by(LANES) {
        let n = LANES.min(c - c0);
        let mut d = [[[0.0f32; LANES]; 4]; 4];
        for (drow, prow) in d.iter_mut().zip(&px) {
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
            for l in 0..n {
                vt[(r * 4) * c + c0 + l] = tr[0][l] - tr[2][l];
                vt[(r * 4 + 1) * c + c0 + l] = tr[1][l] + tr[2][l];
                vt[(r * 4 + 2) * c + c0 + l] = tr[2][l] - tr[1][l];
                vt[(r * 4 + 3) * c + c0 + l] = tr[1][l] - tr[3][l];
            }
        }
    }
}

/// `Y = Aᵀ M A` of band tile `k` (column `tj`) plus bias and residual, ReLU, into the up to two
/// output rows `rows` (each `w·cout` values; a residual `res` laid out the same, or with
/// `in_place` the rows' own values).
#[allow(clippy::too_many_arguments)]
fn output_tile(
    m: &[f32],
    (tiles, cout, w): (usize, usize, usize),
    k: usize,
    tj: usize,
    bias: &[f32],
    res: Option<&[f32]>,
    in_place: bool,
    relu: bool,
    rows: &mut [f32],
) {
    let nrows = rows.len() / (w * cout);
    let ncols = (w - 2 * tj).min(2);
    for c0 in (0..cout).step_by(LANES) {
        let n = LANES.min(cout - c0);
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
                let at = (a * w + 2 * tj + b) * cout + c0;
                for l in 0..n {
                    let r = match res {
                        Some(r) => r[at + l],
                        None if in_place => rows[at + l],
                        None => 0.0,
                    };
                    let v = yb[l] + r;
                    rows[at + l] = if relu { v.max(0.0) } else { v };
                }
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
            // One band, and bands of a single tile row.
            for band in [BAND_VALUES, 1] {
                let mut plain = vec![0.0f32; h * w * cout];
                wg.run_in_bands(&x, (h, w), &bias, Residual::None, false, &mut plain, band);
                let mut added = vec![0.0f32; h * w * cout];
                wg.run_in_bands(&x, (h, w), &bias, Residual::Add(&residual), true, &mut added, band);
                let mut in_place = residual.clone();
                wg.run_in_bands(&x, (h, w), &bias, Residual::InPlace, true, &mut in_place, band);
                for (o, e) in want.iter().enumerate() {
                    let fused = (e + f64::from(residual[o])).max(0.0);
                    for (label, got, e) in [("plain", plain[o], *e), ("added", added[o], fused), ("in place", in_place[o], fused)] {
                        assert!((f64::from(got) - e).abs() < 1e-5, "case {idx}, band {band}, {label}, value {o}: {got} vs {e}");
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
