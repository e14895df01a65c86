//! The official evaluation transform, bit for bit: DETR's size rule, PIL's antialiased fixed-point
//! bilinear resize, `ToTensor` and `Normalize` — plus the map from attention-grid cells back to the
//! pixels of the original image.
//!
//! The resize is written here rather than taken from a resizing crate because only PIL's exact
//! coefficient rounding (22-bit fixed point, u8 intermediate after the horizontal pass) reproduces the
//! official inputs with zero differing values.

use std::path::Path;

use super::decode::{self, RgbImage};
use super::error::Result;

/// ImageNet normalisation used by the official transform.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The official evaluation sizes: shorter side 800, longer side at most 1333.
pub const EVAL_SIZE: usize = 800;
pub const EVAL_MAX_SIZE: usize = 1333;

/// DETR's `get_size_with_aspect_ratio` for an image of `(w, h)`; returns `(out_w, out_h)`.
#[must_use]
pub fn target_size(w: usize, h: usize, size: usize, max_size: Option<usize>) -> (usize, usize) {
    let mut size = size;
    let (min_s, max_s) = (w.min(h) as f64, w.max(h) as f64);
    if let Some(max_size) = max_size
        && max_s / min_s * size as f64 > max_size as f64
    {
        size = round_half_even(max_size as f64 * min_s / max_s) as usize;
    }
    if (w <= h && w == size) || (h <= w && h == size) {
        return (w, h);
    }
    if w < h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    }
}

/// Python 3's `round()`: halves go to the even neighbour.
#[must_use]
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }
}

/// PIL's bilinear filter.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point taps for resampling `in_size` → `out_size` (PIL `precompute_coeffs` +
/// `normalize_coeffs_8bpc`): per output, the first input index and its integer weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax).map(|x| triangle((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&w| {
                    let w = if total == 0.0 { w } else { w / total };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL `Image.resize((out_w, out_h), BILINEAR)` on an RGB image: horizontal pass first (kept as
/// u8), then vertical; a pass whose size is unchanged is skipped.
#[must_use]
pub fn resize_bilinear(img: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let mut cur = img.clone();
    if out_w != cur.width {
        let coeffs = coefficients(cur.width, out_w);
        let mut data = vec![0u8; out_w * cur.height * 3];
        for y in 0..cur.height {
            let row = &cur.data[y * cur.width * 3..(y + 1) * cur.width * 3];
            for (x, (start, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                    for (t, &w) in k.iter().enumerate() {
                        acc += i32::from(row[(start + t) * 3 + c]) * w;
                    }
                    data[(y * out_w + x) * 3 + c] = clip8(acc);
                }
            }
        }
        cur = RgbImage { width: out_w, height: cur.height, data };
    }
    if out_h != cur.height {
        let coeffs = coefficients(cur.height, out_h);
        let w = cur.width;
        let mut data = vec![0u8; w * out_h * 3];
        for (y, (start, k)) in coeffs.iter().enumerate() {
            for i in 0..w * 3 {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (t, &wt) in k.iter().enumerate() {
                    acc += i32::from(cur.data[(start + t) * w * 3 + i]) * wt;
                }
                data[y * w * 3 + i] = clip8(acc);
            }
        }
        cur = RgbImage { width: w, height: out_h, data };
    }
    cur
}

/// `ToTensor` + `Normalize` in f32: CHW values `(v/255 − mean)/std`.
#[must_use]
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0.0f32; 3 * n];
    for c in 0..3 {
        for p in 0..n {
            let v = f32::from(img.data[p * 3 + c]) / 255.0;
            out[c * n + p] = (v - MEAN[c]) / STD[c];
        }
    }
    out
}

/// The grid cell along one axis whose features look at input pixel `p` (0-based): the cell whose
/// receptive-field centre is nearest.
///
/// Every convolution of a ResNet backbone pads symmetrically ((k − 1) / 2 for a k × k kernel), so
/// output index `i` of a stride-`s` convolution is centred on input index `s·i`, and feature cell
/// `c` of the whole backbone on input pixel `stride·c`: the cell reads the image *around* the
/// top-left corner of the naive `stride × stride` tile `[stride·c, stride·(c + 1))`, not that
/// tile. Pixel `p` therefore belongs to cell `round(p / stride)`, clamped to the grid
/// (`tests/demo.rs` checks this on the demo model by perturbing the input).
#[must_use]
pub fn cell_of(p: usize, stride: usize, cells: usize) -> usize {
    let s = stride.max(1);
    ((p + s / 2) / s).min(cells.saturating_sub(1))
}

/// The input pixels `[start, end)` along one axis that cell `c` covers (see [`cell_of`]): the
/// `stride` pixels centred on `stride·c`, clipped to the input of `len` pixels; the last cell also
/// takes the pixels beyond its half-stride, up to the edge (they are nearest to it).
#[must_use]
pub fn cell_extent(c: usize, stride: usize, cells: usize, len: usize) -> (usize, usize) {
    let s = stride.max(1);
    let start = (c * s).saturating_sub(s / 2).min(len);
    let end = if c + 1 >= cells { len } else { (c * s + s - s / 2).min(len) };
    (start, end.max(start))
}

/// Where an attention grid lies over its image, for resampling it: a point at normalised image
/// position `u` ∈ [0, 1] (per axis) has grid coordinate `u · span − origin`, where cell `c`'s
/// centre is at `c`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridPlacement {
    /// The image's extent in cells, (width, height).
    pub span: [f32; 2],
    /// Distance of cell 0's centre from the image's top-left edge, in cells.
    pub origin: f32,
}

impl GridPlacement {
    /// Where the features look (see [`cell_of`]): cell `c` centred on input pixel `stride·c`, so
    /// the image spans `input / stride` cells from cell 0's centre on its edge.
    #[must_use]
    pub fn receptive(input: (usize, usize), stride: usize) -> Self {
        let s = stride.max(1) as f32;
        Self { span: [input.0 as f32 / s, input.1 as f32 / s], origin: 0.0 }
    }

    /// The grid stretched over the image as `gw × gh` equal tiles, cell centres in the tiles'
    /// middles: the official renderer's placement (half a cell right and below where the features
    /// look, at any input size a multiple of the stride).
    #[must_use]
    pub fn tiles(gw: usize, gh: usize) -> Self {
        Self { span: [gw as f32, gh as f32], origin: 0.5 }
    }

    /// Grid coordinates (x, y) of normalised image position (u, v).
    #[must_use]
    pub fn grid_coords(&self, u: f32, v: f32) -> (f32, f32) {
        (u * self.span[0] - self.origin, v * self.span[1] - self.origin)
    }
}

/// How the attention grid lies over the original image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridMapping {
    /// Image as shown to the user (after EXIF orientation), (width, height).
    pub original: (usize, usize),
    /// Network input (width, height).
    pub input: (usize, usize),
    /// Attention grid (h, w).
    pub grid: (usize, usize),
    /// Backbone stride in input pixels (32; 16 or 8 with dilated stages).
    pub stride: usize,
}

impl GridMapping {
    /// The rectangle `(x0, y0, x1, y1)` in original-image pixels that grid cell `(row, col)` covers:
    /// the input pixels whose nearest receptive-field centre it is ([`cell_extent`]), scaled back.
    #[must_use]
    pub fn cell_rect(&self, row: usize, col: usize) -> (f64, f64, f64, f64) {
        let sx = self.original.0 as f64 / self.input.0 as f64;
        let sy = self.original.1 as f64 / self.input.1 as f64;
        let (x0, x1) = cell_extent(col, self.stride, self.grid.1, self.input.0);
        let (y0, y1) = cell_extent(row, self.stride, self.grid.0, self.input.1);
        (x0 as f64 * sx, y0 as f64 * sy, x1 as f64 * sx, y1 as f64 * sy)
    }

    /// The grid cell `(row, col)` under original-image pixel `(x, y)`, if inside the image.
    #[must_use]
    pub fn cell_at(&self, x: f64, y: f64) -> Option<(usize, usize)> {
        if x < 0.0 || y < 0.0 || x >= self.original.0 as f64 || y >= self.original.1 as f64 {
            return None;
        }
        let ix = x * self.input.0 as f64 / self.original.0 as f64;
        let iy = y * self.input.1 as f64 / self.original.1 as f64;
        Some((cell_of(iy as usize, self.stride, self.grid.0), cell_of(ix as usize, self.stride, self.grid.1)))
    }

    /// Where the grid lies over the image, for resampling it.
    #[must_use]
    pub fn placement(&self) -> GridPlacement {
        GridPlacement::receptive(self.input, self.stride)
    }
}

/// A network-ready image.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// (3, height, width) normalised values.
    pub chw: Vec<f32>,
    /// Network input (width, height).
    pub input_size: (usize, usize),
    /// The decoded (and oriented) image, for display.
    pub original: RgbImage,
    /// EXIF orientation found in the file.
    pub exif_orientation: u8,
    /// Whether it was applied.
    pub oriented: bool,
}

impl Prepared {
    /// The grid mapping for a model of `stride`, given the grid the forward pass returned.
    #[must_use]
    pub fn mapping(&self, grid: (usize, usize), stride: usize) -> GridMapping {
        GridMapping { original: (self.original.width, self.original.height), input: self.input_size, grid, stride }
    }
}

/// Options of the preprocessing.
#[derive(Debug, Clone, Copy)]
pub struct PreprocessOptions {
    /// Shorter side (800 in the official evaluation).
    pub size: usize,
    /// Longer side cap (1333).
    pub max_size: Option<usize>,
    /// Apply EXIF orientation (PIL, hence the official pipeline, does not).
    pub apply_orientation: bool,
}

impl Default for PreprocessOptions {
    fn default() -> Self {
        Self { size: EVAL_SIZE, max_size: Some(EVAL_MAX_SIZE), apply_orientation: true }
    }
}

/// Resizes and normalises an already decoded image.
#[must_use]
pub fn prepare_image(img: RgbImage, opts: &PreprocessOptions) -> (Vec<f32>, (usize, usize), RgbImage) {
    let (w, h) = target_size(img.width, img.height, opts.size, opts.max_size);
    let resized = if (w, h) == (img.width, img.height) { None } else { Some(resize_bilinear(&img, w, h)) };
    let chw = normalize(resized.as_ref().unwrap_or(&img));
    (chw, (w, h), img)
}

/// Decodes, resizes and normalises an image file.
pub fn prepare_file(path: &Path, opts: &PreprocessOptions) -> Result<Prepared> {
    let d = decode::decode_file(path, opts.apply_orientation)?;
    let (chw, input_size, original) = prepare_image(d.image, opts);
    Ok(Prepared { chw, input_size, original, exif_orientation: d.exif_orientation, oriented: d.oriented })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(500.5), 500.0);
        assert_eq!(round_half_even(501.5), 502.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }

    #[test]
    fn bunting_size() {
        assert_eq!(target_size(500, 389, 800, Some(1333)), (1028, 800));
        assert_eq!(target_size(2666, 1001, 800, Some(1333)), (1331, 500));
    }

    #[test]
    fn same_size_is_identity() {
        let img = RgbImage { width: 3, height: 2, data: (0..18).collect() };
        assert_eq!(resize_bilinear(&img, 3, 2), img);
    }

    #[test]
    fn grid_mapping_round_trips() {
        let m = GridMapping { original: (500, 389), input: (1028, 800), grid: (25, 33), stride: 32 };
        let (x0, y0, x1, y1) = m.cell_rect(3, 4);
        assert_eq!(m.cell_at((x0 + x1) / 2.0, (y0 + y1) / 2.0), Some((3, 4)));
        assert_eq!(m.cell_at(499.9, 388.9), Some((24, 32)));
        assert_eq!(m.cell_at(500.0, 10.0), None);
        // Cell (0, 0) is centred on the image's corner: its rectangle is half a stride wide.
        let (x0, y0, x1, y1) = m.cell_rect(0, 0);
        assert_eq!((x0, y0), (0.0, 0.0));
        assert!((x1 - 16.0 * 500.0 / 1028.0).abs() < 1e-9 && (y1 - 16.0 * 389.0 / 800.0).abs() < 1e-9);
    }

    #[test]
    fn cells_are_centred_on_multiples_of_the_stride() {
        // 128 pixels, stride 16, 8 cells: cell c covers [16c − 8, 16c + 8), the first and the last
        // clipped and extended to the edges.
        let owner: Vec<usize> = (0..128).map(|p| cell_of(p, 16, 8)).collect();
        assert_eq!(&owner[..9], &[0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((owner[23], owner[24]), (1, 2));
        assert!(owner[104..].iter().all(|&c| c == 7));
        assert_eq!(cell_extent(0, 16, 8, 128), (0, 8));
        assert_eq!(cell_extent(1, 16, 8, 128), (8, 24));
        assert_eq!(cell_extent(7, 16, 8, 128), (104, 128));
        for c in 0..8 {
            let (a, b) = cell_extent(c, 16, 8, 128);
            assert!((a..b).all(|p| cell_of(p, 16, 8) == c));
        }
        // An input that is not a multiple of the stride: 100 pixels at stride 32 give 4 cells
        // centred on 0, 32, 64, 96.
        assert_eq!(cell_extent(3, 32, 4, 100), (80, 100));
        assert_eq!(cell_of(79, 32, 4), 2);
    }
}
