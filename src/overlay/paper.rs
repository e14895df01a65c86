//! The official INTR figure renderer (`SuperImposeHeatmap` in the official `tools/visualization.py`)
//! on the CPU: the attention grid resized bicubically to the picture, min–max normalised, cut to
//! bytes, colour-mapped (OpenCV's JET), median-blurred (15 × 15), Gaussian-blurred (15 × 15,
//! σ = 2.6) and blended 50/50 over the photo scaled by 0.8.
//!
//! Like the official renderer, it stretches the grid over the picture as equal tiles, which puts
//! each cell half a cell right of and below the pixels its features look at
//! ([`crate::image::grid::cell_of`]); the explorer's own overlays place it where they look.
//!
//! The two blurs are order statistics and large kernels on 8-bit images at picture resolution, so
//! this look is computed once per map (in the background, by the explorer) rather than per frame
//! in the overlay shader. Every step follows OpenCV's definition: cubic a = −0.75 with half-pixel
//! centres and replicated edges, truncation to bytes as NumPy's `astype(uint8)`, replicated edges
//! for the median, reflect-101 edges for the Gaussian.

use rayon::prelude::*;

use crate::image::decode::RgbImage;
use crate::overlay::colormap::{Colormap, GridMap, GridPlacement, Interpolation, LUT_SIZE};

/// Side of both blur kernels of the official renderer, in pixels.
pub const KERNEL: usize = 15;
/// The official renderer draws on the photo scaled by this factor.
pub const IMAGE_SCALE: f64 = 0.8;

/// OpenCV's σ for a Gaussian kernel of `ksize` given σ = 0: 0.3·((ksize − 1)/2 − 1) + 0.8.
#[must_use]
pub fn auto_sigma(ksize: usize) -> f64 {
    0.3 * ((ksize as f64 - 1.0) * 0.5 - 1.0) + 0.8
}

/// Size of the official picture for a `w × h` photo: OpenCV's `resize(fx = fy = 0.8)` rounds.
#[must_use]
pub fn official_size(w: usize, h: usize) -> (usize, usize) {
    let s = |v: usize| ((v as f64 * IMAGE_SCALE).round() as usize).max(1);
    (s(w), s(h))
}

/// The colour-mapped heat map of one `gw × gh` attention grid at `w × h` pixels (RGB bytes).
///
/// `range` `None` is the official min–max of the resized map; `Some((lo, hi))` maps `lo..hi` to the
/// colormap instead (the explorer's shared normalisations). Values are cut to bytes by truncation.
#[must_use]
pub fn heatmap(
    map: &[f32],
    (gw, gh): (usize, usize),
    (w, h): (usize, usize),
    colormap: Colormap,
    range: Option<(f32, f32)>,
) -> Vec<u8> {
    // The official resize stretches the grid over the picture as equal tiles.
    let grid = GridMap::new(map, (gw, gh), GridPlacement::tiles(gw, gh));
    let resized: Vec<f32> = (0..h)
        .into_par_iter()
        .flat_map_iter(|y| {
            let v = (y as f32 + 0.5) / h as f32;
            (0..w).map(move |x| grid.sample((x as f32 + 0.5) / w as f32, v, Interpolation::Bicubic))
        })
        .collect();
    let (lo, hi) = range.unwrap_or_else(|| {
        resized.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    });
    let lut = colormap.lut();
    let span = hi - lo;
    let mut out = Vec::with_capacity(w * h * 3);
    for &v in &resized {
        // A flat map divides 0 by 0 in the official code; NumPy then casts NaN to 0.
        let t = if span > 0.0 { ((v - lo) / span).clamp(0.0, 1.0) } else { 0.0 };
        let byte = ((t * 255.0) as usize).min(LUT_SIZE - 1);
        out.extend_from_slice(&lut[byte]);
    }
    out
}

/// Median over a `k × k` window of every channel of an interleaved `w × h × channels` byte image,
/// edges replicated (OpenCV's `medianBlur`). Huang's sliding histogram: O(k) work per pixel.
#[must_use]
pub fn median_blur(src: &[u8], w: usize, h: usize, channels: usize, k: usize) -> Vec<u8> {
    let r = (k / 2) as isize;
    // The median is the (k²/2 + 1)-th smallest value: `below` counts values under the current guess.
    let rank = k * k / 2;
    let clampx = |x: isize| x.clamp(0, w as isize - 1) as usize;
    let clampy = |y: isize| y.clamp(0, h as isize - 1) as usize;
    let mut out = vec![0u8; src.len()];
    out.par_chunks_mut(w * channels).enumerate().for_each(|(y, row)| {
        let rows: Vec<usize> = (-r..=r).map(|d| clampy(y as isize + d)).collect();
        for c in 0..channels {
            let at = |yy: usize, x: usize| src[(yy * w + x) * channels + c] as usize;
            let mut hist = [0u32; 256];
            for &yy in &rows {
                for d in -r..=r {
                    hist[at(yy, clampx(d))] += 1;
                }
            }
            let (mut med, mut below) = (0usize, 0usize);
            for x in 0..w {
                if x > 0 {
                    let (old, new) = (clampx(x as isize - r - 1), clampx(x as isize + r));
                    for &yy in &rows {
                        let (vo, vn) = (at(yy, old), at(yy, new));
                        hist[vo] -= 1;
                        hist[vn] += 1;
                        below = below + usize::from(vn < med) - usize::from(vo < med);
                    }
                }
                while below > rank {
                    med -= 1;
                    below -= hist[med] as usize;
                }
                while below + hist[med] as usize <= rank {
                    below += hist[med] as usize;
                    med += 1;
                }
                row[x * channels + c] = med as u8;
            }
        }
    });
    out
}

/// The normalised `k`-tap Gaussian of standard deviation `sigma` (OpenCV's `getGaussianKernel`).
#[must_use]
pub fn gaussian_kernel(k: usize, sigma: f64) -> Vec<f64> {
    let c = (k / 2) as f64;
    let taps: Vec<f64> = (0..k).map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f64 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Separable `k × k` Gaussian blur of an interleaved byte image, edges reflected without repeating
/// the edge pixel (OpenCV's default `BORDER_REFLECT_101`), rounded to bytes.
#[must_use]
pub fn gaussian_blur(src: &[u8], w: usize, h: usize, channels: usize, k: usize, sigma: f64) -> Vec<u8> {
    let taps = gaussian_kernel(k, sigma);
    let r = (k / 2) as isize;
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m < n { m } else { period - m }) as usize
    };
    let mut horizontal = vec![0f64; src.len()];
    horizontal.par_chunks_mut(w * channels).enumerate().for_each(|(y, row)| {
        for x in 0..w {
            for c in 0..channels {
                row[x * channels + c] = taps
                    .iter()
                    .enumerate()
                    .map(|(t, &g)| g * f64::from(src[(y * w + reflect(x as isize + t as isize - r, w)) * channels + c]))
                    .sum();
            }
        }
    });
    let mut out = vec![0u8; src.len()];
    out.par_chunks_mut(w * channels).enumerate().for_each(|(y, row)| {
        for (i, o) in row.iter_mut().enumerate() {
            let v: f64 = taps
                .iter()
                .enumerate()
                .map(|(t, &g)| g * horizontal[reflect(y as isize + t as isize - r, h) * w * channels + i])
                .sum();
            *o = v.round().clamp(0.0, 255.0) as u8;
        }
    });
    out
}

/// The official overlay colours of one map at `w × h`: heat map, then both blurs (RGB bytes).
#[must_use]
pub fn blurred_heatmap(
    map: &[f32],
    grid: (usize, usize),
    size: (usize, usize),
    colormap: Colormap,
    range: Option<(f32, f32)>,
) -> Vec<u8> {
    let (w, h) = size;
    let heat = heatmap(map, grid, size, colormap, range);
    let median = median_blur(&heat, w, h, 3, KERNEL);
    gaussian_blur(&median, w, h, 3, KERNEL, auto_sigma(KERNEL))
}

/// Bilinear resize of an RGB image with half-pixel centres (OpenCV's `INTER_LINEAR`), rounded.
#[must_use]
pub fn resize_bilinear(img: &RgbImage, w: usize, h: usize) -> RgbImage {
    let (sw, sh) = (img.width, img.height);
    let coord = |d: usize, scale: f64, n: usize| -> (usize, usize, f64) {
        let s = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        (i0, (i0 + 1).min(n - 1), s - i0 as f64)
    };
    let (fx, fy) = (sw as f64 / w as f64, sh as f64 / h as f64);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let (y0, y1, ty) = coord(y, fy, sh);
        for x in 0..w {
            let (x0, x1, tx) = coord(x, fx, sw);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| f64::from(img.data[(yy * sw + xx) * 3 + c]);
                let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
                let bottom = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
                data.push((top * (1.0 - ty) + bottom * ty).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    RgbImage { width: w, height: h, data }
}

/// The official figure of one map: the photo scaled by 0.8 with the blurred heat map blended over it
/// at `alpha` (0.5 officially), cut to bytes by truncation as the official code does.
#[must_use]
pub fn official_overlay(photo: &RgbImage, map: &[f32], grid: (usize, usize), alpha: f64) -> RgbImage {
    let (w, h) = official_size(photo.width, photo.height);
    let base = resize_bilinear(photo, w, h);
    let heat = blurred_heatmap(map, grid, (w, h), Colormap::JetOpenCv, None);
    let data = base
        .data
        .iter()
        .zip(&heat)
        .map(|(&b, &c)| (f64::from(b) * (1.0 - alpha) + f64::from(c) * alpha) as u8)
        .collect();
    RgbImage { width: w, height: h, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn median_blur_matches_a_brute_force_median_with_replicated_edges() {
        let (w, h, ch, k) = (23, 17, 3, 7);
        let src = noise(w * h * ch, 7);
        let fast = median_blur(&src, w, h, ch, k);
        let r = (k / 2) as isize;
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let mut win = Vec::new();
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                            let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                            win.push(src[(yy * w + xx) * ch + c]);
                        }
                    }
                    win.sort_unstable();
                    assert_eq!(fast[(y * w + x) * ch + c], win[win.len() / 2], "pixel ({x}, {y}) channel {c}");
                }
            }
        }
    }

    #[test]
    fn gaussian_matches_opencv_sigma_and_keeps_flat_images_flat() {
        assert!((auto_sigma(15) - 2.6).abs() < 1e-12);
        let g = gaussian_kernel(15, 2.6);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(g[7] > g[6] && (g[6] - g[8]).abs() < 1e-15);
        let flat = vec![77u8; 20 * 9 * 3];
        assert_eq!(gaussian_blur(&flat, 20, 9, 3, 15, 2.6), flat);
        // A single bright pixel spreads into the kernel's outer product.
        let mut dot = vec![0u8; 31 * 31];
        dot[15 * 31 + 15] = 255;
        let out = gaussian_blur(&dot, 31, 31, 1, 15, 2.6);
        let want = (255.0 * g[7] * g[7]).round() as u8;
        assert_eq!(out[15 * 31 + 15], want);
        assert_eq!(out[15 * 31 + 16], (255.0 * g[7] * g[8]).round() as u8);
    }

    #[test]
    fn reflect_101_edges_do_not_repeat_the_edge_pixel() {
        // A one-row ramp: reflect-101 mirrors around the edge pixel, so the blurred edge pixel is
        // pulled towards its neighbours' values, not held by copies of itself.
        let src: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
        let out = gaussian_blur(&src, 16, 1, 1, 3, 1.0);
        let g = gaussian_kernel(3, 1.0);
        let want0 = (g[0] * 10.0 + g[1] * 0.0 + g[2] * 10.0).round() as u8;
        assert_eq!(out[0], want0);
    }

    #[test]
    fn heatmap_spans_the_colormap_and_flat_maps_are_the_lowest_colour() {
        let map = [0.0f32, 0.1, 0.2, 0.9, 0.3, 0.0];
        let heat = heatmap(&map, (3, 2), (30, 20), Colormap::JetOpenCv, None);
        let lut = Colormap::JetOpenCv.lut();
        let px: Vec<[u8; 3]> = heat.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
        assert!(px.contains(&lut[0]) && px.contains(&lut[255]));
        let flat = heatmap(&[0.5; 6], (3, 2), (8, 8), Colormap::JetOpenCv, None);
        assert!(flat.chunks(3).all(|p| p == lut[0]));
    }

    #[test]
    fn official_overlay_scales_the_photo_and_blends_half_and_half() {
        let photo = RgbImage { width: 50, height: 40, data: vec![200; 50 * 40 * 3] };
        let out = official_overlay(&photo, &[0.0, 1.0, 0.0, 0.0], (2, 2), 0.5);
        assert_eq!((out.width, out.height), (40, 32));
        let map = [0.0, 1.0, 0.0, 0.0];
        let heat = blurred_heatmap(&map, (2, 2), (40, 32), Colormap::JetOpenCv, None);
        for (i, (&o, &c)) in out.data.iter().zip(&heat).enumerate() {
            assert_eq!(o, (100.0 + f64::from(c) * 0.5) as u8, "byte {i}");
        }
        // Near the peak (top right) the heat is red; far from it (bottom left) blue.
        let px = |x: usize, y: usize| &heat[(y * 40 + x) * 3..(y * 40 + x) * 3 + 3];
        assert!(px(30, 8)[0] > px(30, 8)[2], "{:?}", px(30, 8));
        assert!(px(5, 28)[2] > px(5, 28)[0], "{:?}", px(5, 28));
    }
}
