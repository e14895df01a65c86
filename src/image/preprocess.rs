//! The official evaluation transform, bit for bit: DETR's size rule, PIL's antialiased fixed-point
//! bilinear resize, `ToTensor` and `Normalize` — plus the map from attention-grid cells back to the
//! pixels of the original image.
//!
//! The resize is written here rather than taken from a resizing crate because only PIL's exact
//! coefficient rounding (22-bit fixed point, u8 intermediate after the horizontal pass) reproduces the
//! official inputs with zero differing values.

use std::path::Path;

use super::decode::{self, RgbImage};
use super::grid::GridMapping;
use crate::error::Result;

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
    use rayon::prelude::*;
    // Output rows are independent: both passes run on every core, with the same integer arithmetic.
    let horizontal = (out_w != img.width).then(|| {
        let coeffs = coefficients(img.width, out_w);
        let mut data = vec![0u8; out_w * img.height * 3];
        if out_w > 0 {
            data.par_chunks_mut(out_w * 3).enumerate().for_each(|(y, out)| {
                let row = &img.data[y * img.width * 3..(y + 1) * img.width * 3];
                for (x, (start, k)) in coeffs.iter().enumerate() {
                    for c in 0..3 {
                        let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                        for (t, &w) in k.iter().enumerate() {
                            acc += i32::from(row[(start + t) * 3 + c]) * w;
                        }
                        out[x * 3 + c] = clip8(acc);
                    }
                }
            });
        }
        RgbImage { width: out_w, height: img.height, data }
    });
    let cur = horizontal.as_ref().unwrap_or(img);
    if out_h == cur.height {
        return horizontal.unwrap_or_else(|| img.clone());
    }
    let coeffs = coefficients(cur.height, out_h);
    let w = cur.width;
    let mut data = vec![0u8; w * out_h * 3];
    if w > 0 {
        data.par_chunks_mut(w * 3).zip(coeffs.par_iter()).for_each(|(out, (start, k))| {
            for (i, o) in out.iter_mut().enumerate() {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (t, &wt) in k.iter().enumerate() {
                    acc += i32::from(cur.data[(start + t) * w * 3 + i]) * wt;
                }
                *o = clip8(acc);
            }
        });
    }
    RgbImage { width: w, height: out_h, data }
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
}
