//! Figures of attention views, composed without a GPU: each panel is the photo with one map's
//! overlay as [`crate::overlay::look::overlay_pixels`] draws it (the CPU reference of the window's
//! shader, tested against the GPU within 1/255, or the official renderer when its blur is on);
//! labelled, with colour bar, scale bar and provenance ([`super::Figure`]). The window's Export and
//! the `explain` batch command both build their figures here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ColourBar, Figure, Panel, ScaleBar};
use crate::image::RgbImage;
use crate::intr::IntrOutput;
use crate::overlay::Look;
use crate::overlay::colormap::{ABSOLUTE_MAX, GridMap, Normalization};
use crate::overlay::look::{overlay_pixels, scale_label};
use crate::overlay::range::{range_over, style, value_range};

/// What a figure shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum View {
    /// One map: a head, or the mean of the heads (`None`).
    Single { class: usize, head: Option<usize> },
    /// The given heads of one class, then the head mean if `mean`.
    Gallery { class: usize, heads: Vec<usize>, mean: bool },
    /// Rows = classes, columns = the given heads (+ mean), one shared colour scale.
    Compare { classes: Vec<usize>, heads: Vec<usize>, mean: bool },
}

/// Figure settings besides the look.
#[derive(Debug, Clone, Default)]
pub struct FigureOptions {
    pub look: Look,
    /// Decoder layer (0-based).
    pub layer: usize,
    /// Panel width in pixels (`None`: the photo's own width).
    pub panel_width: Option<u32>,
    pub letters: bool,
    pub labels: bool,
    pub title: Option<String>,
    pub caption: Option<String>,
    /// Physical size of one photo pixel and its unit ("µm", "mm").
    pub scale: Option<(f64, String)>,
    /// Classes that share one scale under [`Normalization::SharedClasses`] (the window's comparison
    /// set), besides the classes the figure shows.
    pub shared_with: Vec<usize>,
    /// The model's name, written under the figure.
    pub model: Option<String>,
}

/// The photo resized to `width` pixels wide (aspect kept), or as it is.
#[must_use]
pub fn panel_photo(photo: &RgbImage, width: Option<u32>) -> RgbImage {
    let Some(w) = width.map(|w| w as usize).filter(|&w| w > 0 && w != photo.width) else { return photo.clone() };
    let h = ((photo.height as f64 * w as f64 / photo.width as f64).round() as usize).max(1);
    let buf = image::RgbImage::from_raw(photo.width as u32, photo.height as u32, photo.data.clone());
    match buf {
        Some(b) => {
            let r = image::imageops::resize(&b, w as u32, h as u32, image::imageops::FilterType::Triangle);
            RgbImage { width: w, height: h, data: r.into_raw() }
        }
        None => photo.clone(),
    }
}

/// One panel's (class, head or `None` for the mean).
type Cell = (usize, Option<usize>);

/// Builds the figure of `view` for one analysed photo.
#[must_use]
pub fn compose(
    photo: &RgbImage,
    o: &IntrOutput,
    names: &[String],
    view: &View,
    opts: &FigureOptions,
    provenance: BTreeMap<String, String>,
) -> Figure {
    let layer = opts.layer.min(o.layers.saturating_sub(1));
    let (gh, gw) = o.grid;
    let base = panel_photo(photo, opts.panel_width);
    let probs = o.probabilities();
    let ranking = o.ranking();
    let rank = |c: usize| ranking.iter().position(|&r| r == c).map_or(0, |p| p + 1);
    let class_title = |c: usize| {
        format!("{} · {:.1} % · rank {}", names.get(c).map_or("?", String::as_str), probs[c] * 100.0, rank(c))
    };
    let head_name = |h: Option<usize>| h.map_or("mean of heads".to_string(), |h| format!("head {}", h + 1));
    // (class, head) of every panel, row-major, and the grid's column count.
    let (cells, columns, compared): (Vec<Cell>, usize, Vec<usize>) = match view {
        View::Single { class, head } => (vec![(*class, *head)], 1, vec![*class]),
        View::Gallery { class, heads, mean } => {
            let mut v: Vec<Cell> = heads.iter().map(|&h| (*class, Some(h))).collect();
            if *mean {
                v.push((*class, None));
            }
            let n = v.len().max(1);
            (v, n.min(5), vec![*class])
        }
        View::Compare { classes, heads, mean } => {
            let mut v = Vec::new();
            for &c in classes {
                v.extend(heads.iter().map(|&h| (c, Some(h))));
                if *mean {
                    v.push((c, None));
                }
            }
            let per_row = heads.len() + usize::from(*mean);
            (v, per_row.max(1), classes.clone())
        }
    };
    let compare = matches!(view, View::Compare { .. });
    // The comparison shares one scale over its classes (as the window's comparison grid).
    let shared = compare.then(|| match opts.look.normalization {
        Normalization::Absolute => (0.0, ABSOLUTE_MAX),
        _ => range_over(o, layer, &compared),
    });
    // Classes sharing a scale under the shared-classes normalisation: the caller's set, then ours.
    let mut shared_with = opts.shared_with.clone();
    shared_with.extend(compared.iter().copied().filter(|k| !opts.shared_with.contains(k)));
    let mut bar_range: Option<(f32, f32)> = None;
    let panels: Vec<Panel> = cells
        .iter()
        .map(|&(c, h)| {
            let range = shared.unwrap_or_else(|| value_range(o, layer, opts.look.normalization, (c, h), &shared_with));
            bar_range = Some(bar_range.map_or(range, |(lo, hi)| (lo.min(range.0), hi.max(range.1))));
            let st = style(&opts.look, range);
            let map = o.map_values(layer, c, h);
            let rgba = overlay_pixels(&base, &GridMap::new(&map, (gw, gh), o.placement()), &opts.look, &st);
            let (title, subtitle) = if !opts.labels {
                (String::new(), String::new())
            } else {
                match view {
                    View::Compare { .. } => (head_name(h), String::new()),
                    View::Gallery { .. } => (head_name(h), format!("layer {}", layer + 1)),
                    View::Single { .. } => (class_title(c), format!("layer {} · {}", layer + 1, head_name(h))),
                }
            };
            Panel { rgba, width: base.width as u32, height: base.height as u32, title, subtitle }
        })
        .collect();
    let row_labels =
        if compare && opts.labels { compared.iter().map(|&c| class_title(c)).collect() } else { Vec::new() };
    let per_map = opts.look.normalization == Normalization::PerMap && !compare;
    // Per-map scales differ between panels: the bar then states the normalised scale.
    let blur = if opts.look.official_blur { ", official blur" } else { "" };
    let (lo, hi, label) = if per_map && cells.len() > 1 {
        (0.0, 1.0, format!("0 = each map's min, 1 = its max{blur}"))
    } else if compare && opts.look.normalization != Normalization::Absolute {
        let (lo, hi) = bar_range.unwrap_or((0.0, 1.0));
        (lo, hi, format!("attention, one scale for all rows{blur}"))
    } else {
        let (lo, hi) = bar_range.unwrap_or((0.0, 1.0));
        (lo, hi, scale_label(&opts.look))
    };
    let colour_bar = Some(ColourBar {
        lut: opts.look.colormap.lut(),
        lo,
        hi,
        label,
        colormap: opts.look.colormap.name().to_string(),
    });
    let scale_bar = opts.scale.as_ref().map(|(per_px, unit)| ScaleBar {
        units_per_pixel: *per_px,
        unit: unit.clone(),
        photo_width: photo.width as u32,
    });
    // A gallery names its class once, in the title, unless the user gave one.
    let title = match (view, &opts.title) {
        (_, Some(t)) => Some(t.clone()),
        (View::Gallery { class, .. }, None) if opts.labels => Some(class_title(*class)),
        _ => None,
    };
    Figure {
        title,
        caption: opts.caption.clone(),
        footer: opts.model.as_ref().map(|m| format!("Model: {m}")),
        panels,
        columns,
        row_labels,
        panel_letters: opts.letters,
        colour_bar,
        scale_bar,
        provenance,
    }
}
