//! Attention display on the CPU: colormap lookup tables, map normalisation, grid interpolation,
//! threshold and blending. The GPU overlay (`shaders/overlay.wgsl`) mirrors this code operation for
//! operation, so the window, the CLI and exported figures show the same pixels.
//!
//! NOTE: keep in sync with `shaders/overlay.wgsl` (sampling positions, bicubic kernel, LUT
//! interpolation, threshold and blend).

use serde::{Deserialize, Serialize};

pub use crate::image::grid::GridPlacement;

/// Colormaps offered for attention overlays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum)]
pub enum Colormap {
    /// Perceptually uniform, colour-blind safe (the default).
    #[default]
    Viridis,
    /// Perceptually uniform, optimised for colour-vision deficiency.
    Cividis,
    Magma,
    Inferno,
    /// Improved rainbow (Google's Turbo).
    Turbo,
    /// Matplotlib's classic rainbow (not perceptually uniform).
    Jet,
    /// OpenCV's `COLORMAP_JET`, the exact colours of the INTR paper's figures (the official renderer
    /// uses `cv2.applyColorMap`); close to matplotlib's jet but with the breaks at 1/8, 3/8, 5/8, 7/8.
    #[value(name = "jet-opencv")]
    JetOpenCv,
    /// ColorBrewer's diverging red–blue (colour-blind safe): blue for negative, white at the middle,
    /// red for positive. The contrast of two classes' attention is drawn with it.
    #[value(name = "red-blue")]
    RedBlue,
}

impl Colormap {
    pub const ALL: [Colormap; 8] = [
        Colormap::Viridis,
        Colormap::Cividis,
        Colormap::Magma,
        Colormap::Inferno,
        Colormap::Turbo,
        Colormap::Jet,
        Colormap::JetOpenCv,
        Colormap::RedBlue,
    ];

    /// Display name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Cividis => "cividis",
            Colormap::Magma => "magma",
            Colormap::Inferno => "inferno",
            Colormap::Turbo => "turbo",
            Colormap::Jet => "jet",
            Colormap::JetOpenCv => "jet (OpenCV, paper)",
            Colormap::RedBlue => "red-blue diverging",
        }
    }

    /// 256 sRGB colours, entry i for value i/255.
    #[must_use]
    pub fn lut(self) -> [[u8; 3]; LUT_SIZE] {
        let mut out = [[0u8; 3]; LUT_SIZE];
        for (i, c) in out.iter_mut().enumerate() {
            *c = match self {
                Colormap::Jet => jet(i as f64 / (LUT_SIZE - 1) as f64),
                Colormap::JetOpenCv => jet_opencv(i),
                Colormap::RedBlue => {
                    // colorous runs red → blue; entry 0 is the most negative value: blue.
                    let c = colorous::RED_BLUE.eval_rational(LUT_SIZE - 1 - i, LUT_SIZE);
                    [c.r, c.g, c.b]
                }
                other => {
                    let g = match other {
                        Colormap::Viridis => colorous::VIRIDIS,
                        Colormap::Cividis => colorous::CIVIDIS,
                        Colormap::Magma => colorous::MAGMA,
                        Colormap::Inferno => colorous::INFERNO,
                        _ => colorous::TURBO,
                    };
                    let c = g.eval_rational(i, LUT_SIZE);
                    [c.r, c.g, c.b]
                }
            };
        }
        out
    }
}

/// Entries of every lookup table. NOTE: keep in sync with `LUT_SIZE` in `shaders/overlay.wgsl`.
pub const LUT_SIZE: usize = 256;

/// Matplotlib's `jet` (piecewise linear segments).
fn jet(t: f64) -> [u8; 3] {
    let seg = |pts: &[(f64, f64)]| -> f64 {
        for w in pts.windows(2) {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            if t <= x1 {
                return y0 + (y1 - y0) * ((t - x0) / (x1 - x0)).clamp(0.0, 1.0);
            }
        }
        pts[pts.len() - 1].1
    };
    let r = seg(&[(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)]);
    let g = seg(&[(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)]);
    let b = seg(&[(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)]);
    [r, g, b].map(|v| (v * 255.0).round() as u8)
}

/// OpenCV's `COLORMAP_JET` (GNU Octave's jet) at entry `i`: four linear ramps of slope 4 per unit,
/// `min(4x + up, -4x + down)` clamped to [0, 1] at x = i/255. Every ramp entry is an exact half
/// byte; OpenCV's `convertTo` rounds those half to even, so the arithmetic here is done in
/// half-bytes (integers) and rounded the same way.
fn jet_opencv(i: usize) -> [u8; 3] {
    let i = i as i64;
    // (2·255·up, 2·255·down) for red, green, blue.
    let ramps: [(i64, i64); 3] = [(-765, 2295), (-255, 1785), (255, 1275)];
    ramps.map(|(up, down)| {
        let halves = (8 * i + up).min(-8 * i + down).clamp(0, 510);
        let (q, r) = (halves / 2, halves % 2);
        // A remainder is exactly one half: round to the even neighbour.
        (q + i64::from(r == 1 && q % 2 == 1)) as u8
    })
}

/// How attention values are mapped to [0, 1] before colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum)]
pub enum Normalization {
    /// Each map's own min–max (the official renderer).
    #[default]
    PerMap,
    /// One min–max over all heads of the class.
    SharedHeads,
    /// One min–max over all compared classes and their heads.
    SharedClasses,
    /// Absolute attention probability on the fixed scale 0 to 0.25 (`ABSOLUTE_MAX`), comparable
    /// across images.
    Absolute,
}

/// Upper end of the absolute scale: uniform attention over a 25×33 grid is 0.0012, a sharp peak a few
/// tenths; values above are saturated.
pub const ABSOLUTE_MAX: f32 = 0.25;

impl Normalization {
    pub const ALL: [Normalization; 4] =
        [Normalization::PerMap, Normalization::SharedHeads, Normalization::SharedClasses, Normalization::Absolute];

    /// What the colour bar says the colours mean.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Normalization::PerMap => "min–max of each map",
            Normalization::SharedHeads => "min–max shared by the class's heads",
            Normalization::SharedClasses => "min–max shared by the compared classes",
            Normalization::Absolute => "attention probability",
        }
    }
}

/// How the attention grid is resampled to the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum)]
pub enum Interpolation {
    /// Shows the true grid cells.
    Nearest,
    #[default]
    Bilinear,
    /// Keys cubic (a = −0.75, as OpenCV and PyTorch). Its small over- and undershoots are cut by the
    /// normalisation's clamp to [0, 1].
    Bicubic,
}

impl Interpolation {
    pub const ALL: [Interpolation; 3] = [Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic];

    /// Shader code of the mode. NOTE: keep in sync with `shaders/overlay.wgsl`.
    #[must_use]
    pub fn code(self) -> u32 {
        match self {
            Interpolation::Nearest => 0,
            Interpolation::Bilinear => 1,
            Interpolation::Bicubic => 2,
        }
    }
}

/// Everything that decides how one map looks, once its value range is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayStyle {
    pub colormap: Colormap,
    pub interpolation: Interpolation,
    /// Value shown as the first LUT colour.
    pub lo: f32,
    /// Value shown as the last LUT colour.
    pub hi: f32,
    /// Normalised values below this are transparent (0 = off).
    pub threshold: f32,
    /// Overlay opacity in [0, 1].
    pub opacity: f32,
}

/// Min and max of a set of maps (for the shared normalisations).
#[must_use]
pub fn value_range<'a>(maps: impl IntoIterator<Item = &'a [f32]>) -> (f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for m in maps {
        for &v in m {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi { (0.0, 1.0) } else { (lo, hi) }
}

/// Keys cubic convolution weight (a = −0.75).
fn cubic(x: f32) -> f32 {
    const A: f32 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// One attention map as the display resamples it: `gw × gh` values, row-major, and where the grid
/// lies over the image.
#[derive(Debug, Clone, Copy)]
pub struct GridMap<'a> {
    pub values: &'a [f32],
    pub gw: usize,
    pub gh: usize,
    pub placement: GridPlacement,
}

impl<'a> GridMap<'a> {
    /// A `gw × gh` map and where it lies.
    #[must_use]
    pub fn new(values: &'a [f32], (gw, gh): (usize, usize), placement: GridPlacement) -> Self {
        Self { values, gw, gh, placement }
    }

    /// The map value at normalised image position (u, v) ∈ [0, 1]²: cell (i, j)'s value at grid
    /// coordinates (j, i) (see [`GridPlacement::grid_coords`]); edges are clamped.
    #[must_use]
    pub fn sample(&self, u: f32, v: f32, mode: Interpolation) -> f32 {
        let (gw, gh) = (self.gw as i32, self.gh as i32);
        let at = |x: i32, y: i32| self.values[(y.clamp(0, gh - 1) * gw + x.clamp(0, gw - 1)) as usize];
        let (gx, gy) = self.placement.grid_coords(u, v);
        match mode {
            Interpolation::Nearest => at((gx + 0.5).floor() as i32, (gy + 0.5).floor() as i32),
            Interpolation::Bilinear => {
                let (x0, y0) = (gx.floor(), gy.floor());
                let (fx, fy) = (gx - x0, gy - y0);
                let (x0, y0) = (x0 as i32, y0 as i32);
                let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
                let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
                top * (1.0 - fy) + bottom * fy
            }
            Interpolation::Bicubic => {
                let (x0, y0) = (gx.floor(), gy.floor());
                let (fx, fy) = (gx - x0, gy - y0);
                let (x0, y0) = (x0 as i32, y0 as i32);
                let mut acc = 0.0;
                for dy in -1..=2 {
                    let wy = cubic(dy as f32 - fy);
                    let mut row = 0.0;
                    for dx in -1..=2 {
                        row += at(x0 + dx, y0 + dy) * cubic(dx as f32 - fx);
                    }
                    acc += row * wy;
                }
                acc
            }
        }
    }
}

/// The overlay colour (sRGB, 0–1) and alpha for one attention value.
#[must_use]
pub fn shade(value: f32, style: &OverlayStyle, lut: &[[u8; 3]; LUT_SIZE]) -> ([f32; 3], f32) {
    let span = (style.hi - style.lo).max(1e-12);
    let t = ((value - style.lo) / span).clamp(0.0, 1.0);
    if t < style.threshold {
        return ([0.0; 3], 0.0);
    }
    let x = t * (LUT_SIZE - 1) as f32;
    let i = (x.floor() as usize).min(LUT_SIZE - 2);
    let f = x - i as f32;
    let c = std::array::from_fn(|k| {
        let a = f32::from(lut[i][k]) / 255.0;
        let b = f32::from(lut[i + 1][k]) / 255.0;
        a + (b - a) * f
    });
    (c, style.opacity)
}

/// Blends the overlay over an RGB image of `w × h` pixels (sRGB bytes) and returns RGBA bytes.
/// `map` is the attention grid over the whole image.
#[must_use]
pub fn render_overlay(image: &[u8], w: usize, h: usize, map: &GridMap<'_>, style: &OverlayStyle) -> Vec<u8> {
    let lut = style.colormap.lut();
    let mut out = vec![0u8; w * h * 4];
    for y in 0..h {
        for x in 0..w {
            let u = (x as f32 + 0.5) / w as f32;
            let v = (y as f32 + 0.5) / h as f32;
            let value = map.sample(u, v, style.interpolation);
            let (c, a) = shade(value, style, &lut);
            let p = (y * w + x) * 3;
            let o = (y * w + x) * 4;
            for k in 0..3 {
                let base = f32::from(image[p + k]) / 255.0;
                out[o + k] = ((base * (1.0 - a) + c[k] * a) * 255.0).round().clamp(0.0, 255.0) as u8;
            }
            out[o + 3] = 255;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luts_start_and_end_where_the_references_do() {
        let v = Colormap::Viridis.lut();
        assert_eq!(v[0], [68, 1, 84]);
        assert_eq!(v[255], [253, 231, 37]);
        let j = Colormap::Jet.lut();
        assert_eq!(j[0], [0, 0, 128]);
        assert_eq!(j[255], [128, 0, 0]);
        // OpenCV's table (colormap.cpp): red starts at entry 96 with 1.5/255, green at 32 with 0.5/255,
        // blue falls from 1 at entry 96 with 253.5/255; entry 0 is dark blue, 255 dark red.
        let o = Colormap::JetOpenCv.lut();
        assert_eq!(o[0], [0, 0, 128]);
        assert_eq!(o[255], [128, 0, 0]);
        assert_eq!((o[95][0], o[96][0], o[97][0]), (0, 2, 6));
        assert_eq!((o[31][1], o[32][1], o[33][1]), (0, 0, 4));
        assert_eq!((o[95][2], o[96][2], o[159][2], o[160][2]), (255, 254, 2, 0));
        assert_eq!(o[128], [130, 255, 126]);
        for cm in Colormap::ALL {
            assert_ne!(cm.lut()[0], cm.lut()[255], "{cm:?}");
        }
    }

    fn tiles(values: &[f32], gw: usize, gh: usize) -> GridMap<'_> {
        GridMap::new(values, (gw, gh), GridPlacement::tiles(gw, gh))
    }

    #[test]
    fn sampling_hits_cell_values_at_cell_centres() {
        let map = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]; // 3 wide, 2 high
        for mode in Interpolation::ALL {
            for (i, &want) in map.iter().enumerate() {
                let (x, y) = (i % 3, i / 3);
                let got = tiles(&map, 3, 2).sample((x as f32 + 0.5) / 3.0, (y as f32 + 0.5) / 2.0, mode);
                assert!((got - want).abs() < 1e-5, "{mode:?} cell {i}: {got}");
            }
        }
        // Between two cells bilinear is the average; nearest is one of them.
        let mid = tiles(&map, 3, 2).sample(1.0 / 3.0, 0.25, Interpolation::Bilinear);
        assert!((mid - 0.5).abs() < 1e-5);
    }

    #[test]
    fn receptive_placement_centres_cells_on_multiples_of_the_stride() {
        // 48 × 32 input at stride 16: a 3 × 2 grid whose cell (i, j) is centred on pixel (16j, 16i).
        let map = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let g = GridMap::new(&map, (3, 2), GridPlacement::receptive((48, 32), 16));
        for mode in Interpolation::ALL {
            for (i, &want) in map.iter().enumerate() {
                let (x, y) = ((i % 3) as f32 * 16.0, (i / 3) as f32 * 16.0);
                let got = g.sample(x / 48.0, y / 32.0, mode);
                assert!((got - want).abs() < 1e-5, "{mode:?} cell {i}: {got}");
            }
        }
        // Nearest: pixels up to half a stride right of a centre still show that cell, as
        // `grid::cell_of` assigns them (pixel 23 → cell 1, pixel 24 → cell 2).
        let px = |p: f32| g.sample((p + 0.5) / 48.0, 0.1, Interpolation::Nearest);
        assert_eq!((px(7.0), px(8.0), px(23.0), px(24.0), px(47.0)), (0.0, 1.0, 1.0, 2.0, 2.0));
        for p in 0..48 {
            assert_eq!(px(p as f32), crate::image::grid::cell_of(p, 16, 3) as f32, "pixel {p}");
        }
    }

    #[test]
    fn bicubic_is_continuous_across_cell_rows() {
        let map: Vec<f32> = (0..35).map(|i| ((i * 37) % 11) as f32).collect();
        for k in 0..200 {
            let u = k as f32 / 200.0;
            let a = tiles(&map, 7, 5).sample(u, 0.3, Interpolation::Bicubic);
            let b = tiles(&map, 7, 5).sample(u, 0.3 - 1e-6, Interpolation::Bicubic);
            assert!((a - b).abs() < 1e-3, "u {u}: {a} vs {b}");
        }
    }

    #[test]
    fn bicubic_overshoot_is_cut_by_the_normalisation() {
        let map = [0.0, 0.0, 1.0, 1.0];
        let style = OverlayStyle {
            colormap: Colormap::Viridis,
            interpolation: Interpolation::Bicubic,
            lo: 0.0,
            hi: 1.0,
            threshold: 0.0,
            opacity: 1.0,
        };
        let lut = style.colormap.lut();
        for k in 0..100 {
            let v = tiles(&map, 4, 1).sample(k as f32 / 100.0, 0.5, Interpolation::Bicubic);
            assert!((-0.2..=1.2).contains(&v), "{v}");
            let (c, _) = shade(v, &style, &lut);
            assert!(c.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }

    #[test]
    fn threshold_and_opacity() {
        let style = OverlayStyle {
            colormap: Colormap::Viridis,
            interpolation: Interpolation::Nearest,
            lo: 0.0,
            hi: 1.0,
            threshold: 0.5,
            opacity: 0.6,
        };
        let lut = style.colormap.lut();
        assert_eq!(shade(0.2, &style, &lut).1, 0.0);
        let (c, a) = shade(1.0, &style, &lut);
        assert_eq!(a, 0.6);
        assert!((c[0] - 253.0 / 255.0).abs() < 1e-6);
        let img = vec![0u8; 3];
        let out = render_overlay(&img, 1, 1, &tiles(&[1.0], 1, 1), &style);
        assert_eq!(
            out,
            vec![(253.0f32 * 0.6).round() as u8, (231.0f32 * 0.6).round() as u8, (37.0f32 * 0.6).round() as u8, 255]
        );
    }
}
