//! The drawing toolkit of the synthetic dataset: a seeded random generator, polygon builders
//! (ellipses, bands, segments, tapered strips), anti-aliased filling with tiny-skia, and the
//! cluttered background (gradient, foliage blobs, and distractors that reuse the trait colours).

use std::f32::consts::TAU;

use anyhow::{Context, Result};
use tiny_skia::{Color, FillRule, GradientStop, LinearGradient, Paint, PathBuilder, Pixmap, Point, Transform};

/// Crown colour of the scarlet-capped species (also used by distractors).
pub const SCARLET: [u8; 3] = [200, 30, 30];
/// Crown colour of the azure-capped species (also used by distractors).
pub const AZURE: [u8; 3] = [30, 90, 210];
pub(super) const CREAM: [u8; 3] = [238, 222, 180];
pub(super) const SPOT: [u8; 3] = [88, 52, 28];
pub(super) const WHITE: [u8; 3] = [250, 250, 244];

/// SplitMix64: a tiny generator, reproducible across platforms.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub(super) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform integer in [lo, hi].
    pub(super) fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.int(0, items.len() - 1)]
    }
}

/// A seed for stream `b` of seed `a`: distinct pairs give unrelated streams.
#[must_use]
pub(super) fn derive_seed(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a ^ Rng::new(b ^ 0xD1B5_4A32_D192_ED03).next_u64());
    r.next_u64()
}

pub(super) type P = (f32, f32);
pub(super) type Poly = Vec<P>;

pub(super) fn rotated(p: P, deg: f32) -> P {
    let (s, c) = deg.to_radians().sin_cos();
    (p.0 * c - p.1 * s, p.0 * s + p.1 * c)
}

/// An ellipse centred at `c` with radii `rx`, `ry`, turned by `deg` (y points down).
pub(super) fn ellipse(c: P, rx: f32, ry: f32, deg: f32) -> Poly {
    const N: usize = 72;
    (0..N)
        .map(|k| {
            let t = k as f32 / N as f32 * TAU;
            let q = rotated((rx * t.cos(), ry * t.sin()), deg);
            (c.0 + q.0, c.1 + q.1)
        })
        .collect()
}

pub(super) fn circle(c: P, r: f32) -> Poly {
    ellipse(c, r, r, 0.0)
}

/// The band `u0 <= x <= u1` of an ellipse (in its own frame), shrunk vertically by `inset`.
pub(super) fn ellipse_band(c: P, rx: f32, ry: f32, deg: f32, u0: f32, u1: f32, inset: f32) -> Poly {
    const N: usize = 12;
    let half = |x: f32| ry * inset * (1.0 - (x / rx).powi(2)).max(0.0).sqrt();
    let xs: Vec<f32> = (0..=N).map(|k| u0 + (u1 - u0) * k as f32 / N as f32).collect();
    let top = xs.iter().map(|&x| (x, -half(x)));
    let bottom = xs.iter().rev().map(|&x| (x, half(x)));
    top.chain(bottom)
        .map(|q| {
            let q = rotated(q, deg);
            (c.0 + q.0, c.1 + q.1)
        })
        .collect()
}

/// The circular segment of a circle between angles `a0` and `a1` (degrees, y down), closed by its chord.
pub(super) fn circle_segment(c: P, r: f32, a0: f32, a1: f32) -> Poly {
    const N: usize = 48;
    (0..=N)
        .map(|k| {
            let t = (a0 + (a1 - a0) * k as f32 / N as f32).to_radians();
            (c.0 + r * t.cos(), c.1 + r * t.sin())
        })
        .collect()
}

/// A tapered strip from `a` (half-width `w0`) to `b` (half-width `w1`), with a rounded tip.
pub(super) fn taper(a: P, b: P, w0: f32, w1: f32) -> Poly {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = dx.hypot(dy).max(1e-6);
    let (ux, uy) = (dx / len, dy / len);
    let (nx, ny) = (-uy, ux);
    let mut poly = vec![(a.0 + nx * w0, a.1 + ny * w0), (b.0 + nx * w1, b.1 + ny * w1)];
    for k in 1..6 {
        let t = std::f32::consts::PI * k as f32 / 6.0;
        let (s, c) = t.sin_cos();
        poly.push((b.0 + (nx * c + ux * s) * w1, b.1 + (ny * c + uy * s) * w1));
    }
    poly.extend([(b.0 - nx * w1, b.1 - ny * w1), (a.0 - nx * w0, a.1 - ny * w0)]);
    poly
}

pub(super) fn jitter(rng: &mut Rng, c: [u8; 3], amount: f32) -> [u8; 3] {
    c.map(|v| (f32::from(v) + rng.range(-amount, amount)).clamp(0.0, 255.0) as u8)
}

pub(super) fn scale_light(c: [u8; 3], f: f32) -> [u8; 3] {
    c.map(|v| (f32::from(v) * f).clamp(0.0, 255.0) as u8)
}

pub(super) fn path(poly: &[P]) -> Option<tiny_skia::Path> {
    let mut pb = PathBuilder::new();
    let (first, rest) = poly.split_first()?;
    pb.move_to(first.0, first.1);
    for p in rest {
        pb.line_to(p.0, p.1);
    }
    pb.close();
    pb.finish()
}

pub(super) fn paint_poly(pixmap: &mut Pixmap, poly: &[P], color: [u8; 3], alpha: f32) {
    if let Some(p) = path(poly) {
        let mut paint = Paint::default();
        paint.set_color(Color::from_rgba8(color[0], color[1], color[2], (alpha.clamp(0.0, 1.0) * 255.0) as u8));
        paint.anti_alias = true;
        pixmap.fill_path(&p, &paint, FillRule::Winding, Transform::identity(), None);
    }
}

const SKY: [[u8; 3]; 3] = [[168, 198, 224], [204, 216, 228], [142, 174, 206]];
const FOLIAGE: [[u8; 3]; 4] = [[92, 122, 70], [122, 150, 92], [62, 90, 56], [140, 156, 110]];
const EARTH: [[u8; 3]; 4] = [[150, 126, 96], [118, 100, 76], [178, 160, 126], [146, 144, 136]];

/// Gradient, foliage blobs and distractors that reuse the trait colours, kept off `bird_box`.
pub(super) fn background(pixmap: &mut Pixmap, rng: &mut Rng, size: f32, bird_box: [f32; 4]) -> Result<()> {
    let top_palette: Vec<[u8; 3]> = SKY.iter().chain(FOLIAGE.iter()).copied().collect();
    let bottom_palette: Vec<[u8; 3]> = FOLIAGE.iter().chain(EARTH.iter()).copied().collect();
    let top = rng.pick(&top_palette);
    let top = jitter(rng, top, 14.0);
    let bottom = rng.pick(&bottom_palette);
    let bottom = jitter(rng, bottom, 14.0);
    let stops = vec![
        GradientStop::new(0.0, Color::from_rgba8(top[0], top[1], top[2], 255)),
        GradientStop::new(1.0, Color::from_rgba8(bottom[0], bottom[1], bottom[2], 255)),
    ];
    let shader = LinearGradient::new(
        Point::from_xy(0.0, 0.0),
        Point::from_xy(0.0, size),
        stops,
        tiny_skia::SpreadMode::Pad,
        Transform::identity(),
    )
    .context("background gradient")?;
    let paint = Paint { shader, anti_alias: true, ..Paint::default() };
    let rect = tiny_skia::Rect::from_xywh(0.0, 0.0, size, size).context("background rectangle")?;
    pixmap.fill_rect(rect, &paint, Transform::identity(), None);

    let blob_palette: Vec<[u8; 3]> = FOLIAGE.iter().chain(EARTH.iter()).copied().collect();
    for _ in 0..rng.int(8, 16) {
        let c = (rng.range(-0.1, 1.1) * size, rng.range(-0.1, 1.1) * size);
        let rx = rng.range(0.05, 0.22) * size;
        let ry = rx * rng.range(0.35, 1.0);
        let deg = rng.range(0.0, 180.0);
        let colour = rng.pick(&blob_palette);
        let colour = scale_light(jitter(rng, colour, 16.0), rng.range(0.75, 1.15));
        let alpha = rng.range(0.3, 0.8);
        paint_poly(pixmap, &ellipse(c, rx, ry, deg), colour, alpha);
    }

    let pad = 0.02 * size;
    for _ in 0..rng.int(3, 6) {
        let kind = rng.int(0, 3);
        let radius = rng.range(0.035, 0.075) * size;
        let deg = rng.range(0.0, 180.0);
        let mut centre = None;
        for _ in 0..40 {
            let c = (rng.range(0.02, 0.98) * size, rng.range(0.02, 0.98) * size);
            let inside = c.0 > bird_box[0] - pad
                && c.0 < bird_box[2] + pad
                && c.1 > bird_box[1] - pad
                && c.1 < bird_box[3] + pad;
            if !inside {
                centre = Some(c);
                break;
            }
        }
        let Some(c) = centre else { continue };
        let shade = rng.range(-10.0, 10.0);
        let tint = |col: [u8; 3]| col.map(|v| (f32::from(v) + shade).clamp(0.0, 255.0) as u8);
        match kind {
            0 => paint_poly(pixmap, &circle(c, radius), tint(SCARLET), 1.0),
            1 => paint_poly(pixmap, &circle(c, radius), tint(AZURE), 1.0),
            2 => {
                let (rx, ry) = (radius * 1.3, radius * 0.8);
                paint_poly(pixmap, &ellipse(c, rx, ry, deg), tint(CREAM), 1.0);
                for _ in 0..rng.int(3, 6) {
                    let t = rng.range(0.0, TAU);
                    let r = rng.range(0.0, 0.65);
                    let q = rotated((rx * r * t.cos(), ry * r * t.sin()), deg);
                    paint_poly(pixmap, &circle((c.0 + q.0, c.1 + q.1), 0.03 * size), SPOT, 1.0);
                }
            }
            _ => {
                let w = 0.022 * size;
                for side in [-1.4, 1.4] {
                    let o = rotated((side * w, 0.0), deg);
                    let d = rotated((0.0, radius), deg);
                    let a = (c.0 + o.0 - d.0, c.1 + o.1 - d.1);
                    let b = (c.0 + o.0 + d.0, c.1 + o.1 + d.1);
                    paint_poly(pixmap, &taper(a, b, w / 2.0, w / 2.0), tint(WHITE), 1.0);
                }
            }
        }
    }
    Ok(())
}
