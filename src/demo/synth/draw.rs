//! Rendering of one sample of the synthetic bird dataset: the bird of a given species (its parts
//! in a local frame), its random pose, compositing over the background of [`super::canvas`], and
//! the per-pixel part-label mask.
//!
//! Everything is a function of (species, size, seed). The pose, the background and the per-bird
//! jitter come from separate random streams that never depend on the species' traits, so two
//! species rendered with the same seed differ only where their discriminative part differs.

use std::f32::consts::TAU;

use anyhow::{Context, Result, ensure};
use tiny_skia::{FillRule, Mask, Pixmap, Transform};

use super::canvas::{
    CREAM, P, Poly, Rng, SPOT, WHITE, background, circle, circle_segment, derive_seed, ellipse, ellipse_band, jitter,
    paint_poly, path, rotated, scale_light, taper,
};
use super::species::{Part, Species};

pub use super::canvas::{AZURE, SCARLET};

/// Default image side in pixels.
pub const DEFAULT_SIZE: usize = 128;
/// Smallest supported image side.
pub const MIN_SIZE: usize = 32;
/// Largest supported image side.
pub const MAX_SIZE: usize = 2048;

const PLUMAGE: [u8; 3] = [118, 104, 60];
const WING: [u8; 3] = [74, 56, 34];
const BEAK: [u8; 3] = [236, 162, 30];
const PUPIL: [u8; 3] = [10, 10, 10];
const EYE_RING: [u8; 3] = [236, 232, 212];
const LEG: [u8; 3] = [66, 54, 44];

/// One rendered sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Species index (the class label).
    pub species: usize,
    /// Row-major RGB, `size * size * 3` bytes.
    pub rgb: Vec<u8>,
    /// Row-major [`Part`] labels, `size * size` bytes.
    pub labels: Vec<u8>,
    /// Image side in pixels.
    pub size: usize,
}

impl Sample {
    /// Number of pixels labelled `part`.
    #[must_use]
    pub fn part_pixels(&self, part: Part) -> usize {
        self.labels.iter().filter(|&&l| l == part.label()).count()
    }
}

/// An opaque filled polygon and its colour.
struct Fill {
    poly: Poly,
    color: [u8; 3],
}

fn fill(poly: Poly, color: [u8; 3]) -> Fill {
    Fill { poly, color }
}

/// Per-bird random choices, drawn in a fixed order whatever the species.
struct BirdJitter {
    light: f32,
    head_r: f32,
    tail_len: f32,
    tail_droop: f32,
    crown: [u8; 3],
    spots: Vec<(f32, f32, f32)>,
    /// Tail shape, an individual variation: a rounded fan or a long narrow wedge.
    tail_fan: bool,
}

impl BirdJitter {
    fn draw(rng: &mut Rng, crown_blue: bool) -> Self {
        let light = rng.range(0.85, 1.15);
        let head_r = rng.range(0.22, 0.25);
        let tail_len = rng.range(0.56, 0.66);
        let tail_droop = rng.range(2.0, 16.0);
        let scarlet = jitter(rng, SCARLET, 12.0);
        let azure = jitter(rng, AZURE, 12.0);
        let count = rng.int(4, 6);
        let mut spots: Vec<(f32, f32, f32)> = (0..8)
            .map(|_| {
                let t = rng.range(0.0, TAU);
                let r = rng.range(0.0, 1.0).sqrt() * 0.6;
                (r * t.cos(), r * t.sin(), rng.range(0.055, 0.075))
            })
            .collect();
        spots.truncate(count);
        let crown = if crown_blue { azure } else { scarlet };
        let tail_fan = rng.f32() < 0.5;
        Self { light, head_r, tail_len, tail_droop, crown, spots, tail_fan }
    }
}

/// The tail, attached under the rear of the body, pointing back and slightly down: a fan or a
/// wedge (the bird's own shape), with a white band across it for the banded species. The band lies
/// inside the tail's silhouette, so both values of the trait have the same mask.
fn tail(banded: bool, j: &BirdJitter, color: [u8; 3]) -> Vec<Fill> {
    let base = (-0.36, 0.02);
    let axis = 180.0 - j.tail_droop;
    let at = |deg: f32, len: f32| {
        let t = deg.to_radians();
        (base.0 + len * t.cos(), base.1 + len * t.sin())
    };
    let (half, len) = if j.tail_fan { (30.0, j.tail_len * 0.98) } else { (14.0, j.tail_len * 1.1) };
    // The tail's rounded edge at a fraction of its length, over `span` degrees either side of
    // the axis.
    let arc = |frac: f32, span: f32| -> Vec<P> {
        const N: usize = 24;
        (0..=N)
            .map(|k| {
                let a = axis - span + 2.0 * span * k as f32 / N as f32;
                let bulge = 1.0 + 0.05 * (std::f32::consts::PI * k as f32 / N as f32).sin();
                at(a, len * frac * bulge)
            })
            .collect()
    };
    let mut outline = vec![at(axis - 90.0, 0.07)];
    outline.extend(arc(1.0, half));
    outline.push(at(axis + 90.0, 0.07));
    let mut fills = vec![fill(outline, color)];
    if banded {
        // A broad band between 48 % and 78 % of the length, away from the tip and a little short of
        // the sides, so it never changes the outline.
        let mut band = arc(0.78, half - 4.0);
        band.extend(arc(0.48, half - 4.0).into_iter().rev());
        fills.push(fill(band, WHITE));
    }
    fills
}

/// The bird in its local frame: facing +x, y down, body about one unit long; parts in paint order.
fn bird(species: &Species, j: &BirdJitter) -> Vec<(Part, Vec<Fill>)> {
    let plumage = scale_light(PLUMAGE, j.light);
    let wing_colour = scale_light(WING, j.light);
    let body_tilt = -8.0;

    let leg = |x: f32| taper((x, 0.24), (x - 0.02, 0.54), 0.018, 0.016);
    let toe = |x: f32| taper((x - 0.09, 0.55), (x + 0.06, 0.55), 0.014, 0.012);
    let body = vec![
        fill(leg(0.0), LEG),
        fill(leg(0.12), LEG),
        fill(toe(-0.02), LEG),
        fill(toe(0.1), LEG),
        fill(ellipse((0.0, 0.0), 0.5, 0.33, body_tilt), plumage),
    ];

    let (bc, brx, bry, bdeg) = ((0.2, 0.1), 0.29, 0.19, -22.0);
    let mut breast = vec![fill(ellipse(bc, brx, bry, bdeg), CREAM)];
    if species.breast_spotted {
        for &(u, v, r) in &j.spots {
            let q = rotated((u * brx, v * bry), bdeg);
            breast.push(fill(circle((bc.0 + q.0, bc.1 + q.1), r), SPOT));
        }
    }

    let (wc, wrx, wry, wdeg) = ((-0.1, -0.08), 0.38, 0.17, body_tilt + 6.0);
    let mut wing = vec![fill(ellipse(wc, wrx, wry, wdeg), wing_colour)];
    if species.wing_bars {
        for u in [0.06, -0.12] {
            wing.push(fill(ellipse_band(wc, wrx, wry, wdeg, u, u + 0.065, 0.9), WHITE));
        }
    }

    let hc = (0.42, -0.28);
    let r = j.head_r;
    let head = vec![fill(circle(hc, r), plumage)];
    let crown = vec![fill(circle_segment(hc, r, -200.0, -8.0), j.crown)];
    let beak_base = hc.0 + r * 0.8;
    let beak =
        vec![fill(vec![(beak_base, hc.1 - 0.065), (hc.0 + r + 0.22, hc.1 + 0.0), (beak_base, hc.1 + 0.055)], BEAK)];
    let ec = (hc.0 + r * 0.42, hc.1 + r * 0.12);
    let eye = vec![fill(circle(ec, 0.052), EYE_RING), fill(circle(ec, 0.036), PUPIL)];

    vec![
        (Part::Tail, tail(species.tail_banded, j, wing_colour)),
        (Part::Body, body),
        (Part::Breast, breast),
        (Part::Wing, wing),
        (Part::Head, head),
        (Part::Crown, crown),
        (Part::Beak, beak),
        (Part::Eye, eye),
    ]
}

/// Maps the bird's local frame to pixels.
struct Pose {
    scale: f32,
    deg: f32,
    flip: f32,
    centre: P,
    offset: P,
}

impl Pose {
    fn map(&self, p: P) -> P {
        let q = rotated(((p.0 - self.centre.0) * self.flip * self.scale, (p.1 - self.centre.1) * self.scale), self.deg);
        (q.0 + self.offset.0, q.1 + self.offset.1)
    }
}

fn bounds(points: impl Iterator<Item = P>) -> [f32; 4] {
    points.fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, p| {
        [b[0].min(p.0), b[1].min(p.1), b[2].max(p.0), b[3].max(p.1)]
    })
}

/// A random pose such that `envelope` (local points) spans 80–94 % of the width lengthwise and
/// stays inside the image. Returns the pose and the pixel bounding box of the envelope.
fn choose_pose(rng: &mut Rng, envelope: &[P], size: f32) -> (Pose, [f32; 4]) {
    let frac = rng.range(0.8, 0.94);
    let deg = rng.range(-20.0, 20.0);
    let flip = if rng.f32() < 0.5 { -1.0 } else { 1.0 };
    let (ux, uy) = (rng.f32(), rng.f32());

    let local = bounds(envelope.iter().copied());
    let centre = ((local[0] + local[2]) / 2.0, (local[1] + local[3]) / 2.0);
    let mut pose = Pose { scale: frac * size / (local[2] - local[0]), deg, flip, centre, offset: (0.0, 0.0) };
    let margin = 0.03 * size;
    let room = size - 2.0 * margin;
    let b = bounds(envelope.iter().map(|&p| pose.map(p)));
    let fit = (room / (b[2] - b[0])).min(room / (b[3] - b[1])).min(1.0);
    pose.scale *= fit;
    let b = b.map(|v| v * fit);
    pose.offset = (margin - b[0] + ux * (room - (b[2] - b[0])), margin - b[1] + uy * (room - (b[3] - b[1])));
    let bbox = [b[0] + pose.offset.0, b[1] + pose.offset.1, b[2] + pose.offset.0, b[3] + pose.offset.1];
    (pose, bbox)
}

/// Renders one sample of `species` at `size × size` pixels, fully determined by the arguments.
pub fn render(species: &Species, size: usize, seed: u64) -> Result<Sample> {
    ensure!((MIN_SIZE..=MAX_SIZE).contains(&size), "image size {size} outside {MIN_SIZE}..={MAX_SIZE}");
    let side = u32::try_from(size).context("image size")?;
    let sz = size as f32;
    let mut pose_rng = Rng::new(derive_seed(seed, 1));
    let mut bg_rng = Rng::new(derive_seed(seed, 2));
    let mut bird_rng = Rng::new(derive_seed(seed, 3));

    let jit = BirdJitter::draw(&mut bird_rng, species.crown_blue);
    let parts = bird(species, &jit);
    // The outline does not depend on the species' traits, so neither does the pose.
    let envelope: Vec<P> =
        parts.iter().flat_map(|(_, fills)| fills.iter()).flat_map(|f| f.poly.iter().copied()).collect();
    let (pose, bird_box) = choose_pose(&mut pose_rng, &envelope, sz);

    let mut pixmap = Pixmap::new(side, side).context("allocating the image")?;
    background(&mut pixmap, &mut bg_rng, sz, bird_box)?;

    let mut labels = vec![Part::Background.label(); size * size];
    for (part, fills) in &parts {
        let mut mask = Mask::new(side, side).context("allocating a part mask")?;
        for f in fills {
            let poly: Poly = f.poly.iter().map(|&p| pose.map(p)).collect();
            paint_poly(&mut pixmap, &poly, f.color, 1.0);
            if let Some(p) = path(&poly) {
                mask.fill_path(&p, FillRule::Winding, true, Transform::identity());
            }
        }
        for (label, &coverage) in labels.iter_mut().zip(mask.data()) {
            if coverage >= 128 {
                *label = part.label();
            }
        }
    }

    let rgb = pixmap.pixels().iter().flat_map(|p| {
        let c = p.demultiply();
        [c.red(), c.green(), c.blue()]
    });
    Ok(Sample { species: species.index, rgb: rgb.collect(), labels, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::synth::species::all_species;

    #[test]
    fn deterministic_per_seed() {
        let species = all_species();
        let a = render(&species[5], 96, 42).unwrap();
        let b = render(&species[5], 96, 42).unwrap();
        assert_eq!(a, b);
        let c = render(&species[5], 96, 43).unwrap();
        assert_ne!(a.rgb, c.rgb);
        assert_ne!(a.labels, c.labels);
        assert_eq!(a.rgb.len(), 96 * 96 * 3);
        assert_eq!(a.labels.len(), 96 * 96);
    }

    #[test]
    fn parts_are_visible_and_bird_is_sized() {
        for (k, s) in all_species().iter().enumerate() {
            for seed in [0u64, 7, 1234] {
                let sample = render(s, 128, seed * 31 + k as u64).unwrap();
                for part in [Part::Tail, Part::Wing, Part::Breast, Part::Crown, Part::Head, Part::Beak, Part::Eye] {
                    assert!(sample.part_pixels(part) > 0, "{part:?} missing for species {k} seed {seed}");
                }
                let animal = sample.labels.iter().filter(|&&l| l != 0).count() as f32 / (128.0 * 128.0);
                assert!((0.08..=0.6).contains(&animal), "animal covers {animal} for species {k} seed {seed}");
            }
        }
    }

    #[test]
    fn other_traits_change_only_their_part() {
        let species = all_species();
        for (other, part) in [(1, Part::Tail), (2, Part::Wing), (4, Part::Crown), (8, Part::Breast)] {
            for seed in [9, 10, 11, 12] {
                let a = render(&species[0], 128, seed).unwrap();
                let b = render(&species[other], 128, seed).unwrap();
                assert_eq!(a.labels, b.labels, "masks differ for {part:?}");
                let n = 128;
                let near_part = |x: usize, y: usize| {
                    (y.saturating_sub(1)..(y + 2).min(n))
                        .any(|yy| (x.saturating_sub(1)..(x + 2).min(n)).any(|xx| a.labels[yy * n + xx] == part.label()))
                };
                let mut changed = 0;
                for i in 0..n * n {
                    if a.rgb[i * 3..i * 3 + 3] != b.rgb[i * 3..i * 3 + 3] {
                        changed += 1;
                        assert!(near_part(i % n, i / n), "pixel {i} changed for {part:?} away from it");
                    }
                }
                assert!(changed > 10, "{part:?} trait invisible");
            }
        }
    }

    #[test]
    fn sizes_from_64_to_512() {
        let s = &all_species()[11];
        for size in [64, 200, 512] {
            let sample = render(s, size, 3).unwrap();
            assert_eq!(sample.labels.len(), size * size);
            assert!(sample.part_pixels(Part::Crown) > 0);
        }
        assert!(render(s, 8, 3).is_err());
    }
}
