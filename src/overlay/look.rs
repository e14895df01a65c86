//! The display settings shared by the window and the figures ([`Look`], with the official renderer
//! as the [`Look::paper_style`] preset), and one panel's pixels drawn with them: the CPU reference
//! of the window's shader, or the official renderer when its blur is on.

use serde::{Deserialize, Serialize};

use super::colormap::{self, Colormap, GridMap, Interpolation, Normalization, OverlayStyle};
use crate::image::RgbImage;

/// How overlays look: everything the window's display controls decide, remembered between runs,
/// and what `explain` draws figures with. The field order is the order of the figures' recorded
/// `look`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Look {
    pub colormap: Colormap,
    pub normalization: Normalization,
    pub threshold: f32,
    pub interpolation: Interpolation,
    pub opacity: f32,
    pub official_blur: bool,
}

impl Default for Look {
    fn default() -> Self {
        Self {
            colormap: Colormap::Viridis,
            normalization: Normalization::PerMap,
            threshold: 0.0,
            interpolation: Interpolation::Bilinear,
            opacity: 0.6,
            official_blur: false,
        }
    }
}

impl Look {
    /// The official renderer's look (`--paper-style`, the window's *Paper style*): bicubic, per-map
    /// min–max, OpenCV's JET, median and Gaussian blur, 50 % blend.
    #[must_use]
    pub fn paper_style() -> Self {
        Self {
            colormap: Colormap::JetOpenCv,
            normalization: Normalization::PerMap,
            threshold: 0.0,
            interpolation: Interpolation::Bicubic,
            opacity: 0.5,
            official_blur: true,
        }
    }
}

/// One panel's pixels (RGBA8): the photo with the map's overlay, as the window draws it.
#[must_use]
pub fn overlay_pixels(photo: &RgbImage, map: &GridMap<'_>, look: &Look, st: &OverlayStyle) -> Vec<u8> {
    if !look.official_blur {
        return colormap::render_overlay(&photo.data, photo.width, photo.height, map, st);
    }
    let (map, gw, gh) = (map.values, map.gw, map.gh);
    let range = (look.normalization != Normalization::PerMap).then_some((st.lo, st.hi));
    let heat = super::paper::blurred_heatmap(map, (gw, gh), (photo.width, photo.height), look.colormap, range);
    let a = st.opacity.clamp(0.0, 1.0);
    photo
        .data
        .chunks(3)
        .zip(heat.chunks(3))
        .flat_map(|(p, c)| {
            let mix = |k: usize| (f32::from(p[k]) * (1.0 - a) + f32::from(c[k]) * a).round().clamp(0.0, 255.0) as u8;
            [mix(0), mix(1), mix(2), 255]
        })
        .collect()
}

/// Describes the normalisation for the colour bar.
#[must_use]
pub fn scale_label(look: &Look) -> String {
    let mut s = format!("attention, {}", look.normalization.describe());
    if look.official_blur {
        s.push_str(", blurred as the official renderer");
    }
    s
}
