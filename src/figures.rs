//! Figures of attention views, composed without a GPU: each panel is the photo with one map's
//! overlay computed by the CPU reference of the window's shader ([`colormap::render_overlay`],
//! tested against the GPU within 1/255) or by the official renderer ([`paper`]) when the official
//! blur is on; labelled, with colour bar, scale bar and provenance ([`export::Figure`]). The
//! window's Export and the `explain` batch command both build their figures here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::colormap::{self, ABSOLUTE_MAX, Colormap, GridMap, Interpolation, Normalization, OverlayStyle};
use crate::export::{ColourBar, Figure, Panel, ScaleBar};
use crate::model::IntrOutput;
use crate::model::decode::RgbImage;
use crate::paper;

/// How overlays look: everything the window's display controls decide.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
}

/// The values of one map (a head, or the head mean).
#[must_use]
pub fn map_values(o: &IntrOutput, layer: usize, class: usize, head: Option<usize>) -> Vec<f32> {
    match head {
        Some(h) => o.map(layer, h, class).to_vec(),
        None => o.head_mean(layer, class),
    }
}

/// Min and max over every head and the head mean of `classes` at `layer`.
#[must_use]
pub fn range_over(o: &IntrOutput, layer: usize, classes: &[usize]) -> (f32, f32) {
    let maps: Vec<Vec<f32>> = classes
        .iter()
        .flat_map(|&c| (0..o.heads).map(Some).chain([None]).map(move |h| (c, h)))
        .map(|(c, h)| map_values(o, layer, c, h))
        .collect();
    colormap::value_range(maps.iter().map(Vec::as_slice))
}

/// The value range of one map under `norm`; `compared` are the classes sharing a scale.
#[must_use]
pub fn value_range(
    o: &IntrOutput,
    layer: usize,
    norm: Normalization,
    (class, head): (usize, Option<usize>),
    compared: &[usize],
) -> (f32, f32) {
    match norm {
        Normalization::PerMap => colormap::value_range([map_values(o, layer, class, head).as_slice()]),
        Normalization::SharedHeads => range_over(o, layer, &[class]),
        Normalization::SharedClasses => {
            let mut classes = compared.to_vec();
            if !classes.contains(&class) {
                classes.push(class);
            }
            range_over(o, layer, &classes)
        }
        Normalization::Absolute => (0.0, ABSOLUTE_MAX),
    }
}

/// The overlay style of `look` with the value range `(lo, hi)`.
#[must_use]
pub fn style(look: &Look, (lo, hi): (f32, f32)) -> OverlayStyle {
    OverlayStyle {
        colormap: look.colormap,
        interpolation: look.interpolation,
        lo,
        hi,
        threshold: look.threshold,
        opacity: look.opacity,
    }
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

/// One panel's pixels (RGBA8): the photo with the map's overlay, as the window draws it.
#[must_use]
pub fn overlay_pixels(photo: &RgbImage, map: &GridMap<'_>, look: &Look, st: &OverlayStyle) -> Vec<u8> {
    if !look.official_blur {
        return colormap::render_overlay(&photo.data, photo.width, photo.height, map, st);
    }
    let (map, gw, gh) = (map.values, map.gw, map.gh);
    let range = (look.normalization != Normalization::PerMap).then_some((st.lo, st.hi));
    let heat = paper::blurred_heatmap(map, (gw, gh), (photo.width, photo.height), look.colormap, range);
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
            let map = map_values(o, layer, c, h);
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
        panels,
        columns,
        row_labels,
        panel_letters: opts.letters,
        colour_bar,
        scale_bar,
        provenance,
    }
}

/// What a figure was made from, for its provenance: the model (file name and SHA-256), the SHA-256
/// of its class list and the photo (file name and SHA-256).
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub model: Option<(String, String)>,
    pub classes_sha256: String,
    pub image: String,
    pub image_sha256: String,
}

impl Source {
    /// Hashes the model file, the class list and the photo file.
    pub fn hash(model: Option<&Path>, names: &[String], image: &Path) -> anyhow::Result<Source> {
        Self::of_model(model, names)?.with_image(image)
    }

    /// The entries that do not depend on the photo: hashes the model file and the class list.
    pub fn of_model(model: Option<&Path>, names: &[String]) -> anyhow::Result<Source> {
        let model = match model {
            Some(m) => Some((file_name(m), crate::export::sha256_file(m)?)),
            None => None,
        };
        Ok(Source {
            model,
            classes_sha256: crate::export::sha256_hex(names.join("\n").as_bytes()),
            ..Default::default()
        })
    }

    /// This source with `image` as its photo (hashes the file).
    pub fn with_image(&self, image: &Path) -> anyhow::Result<Source> {
        Ok(Source { image: file_name(image), image_sha256: crate::export::sha256_file(image)?, ..self.clone() })
    }

    /// Adds the entries `app`, `model`, `model_sha256`, `classes_sha256`, `image`, `image_sha256`.
    pub fn add_to(&self, prov: &mut BTreeMap<String, String>) {
        prov.insert("app".into(), format!("intr-explorer {}", env!("CARGO_PKG_VERSION")));
        if let Some((name, sha)) = &self.model {
            prov.insert("model".into(), name.clone());
            prov.insert("model_sha256".into(), sha.clone());
        }
        prov.insert("classes_sha256".into(), self.classes_sha256.clone());
        prov.insert("image".into(), self.image.clone());
        prov.insert("image_sha256".into(), self.image_sha256.clone());
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The provenance entries describing how a figure of `view` was drawn.
#[must_use]
pub fn look_provenance(look: &Look, layer: usize, view: &View, names: &[String]) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let name = |c: &usize| names.get(*c).cloned().unwrap_or_default();
    let heads = |hs: &[usize], mean: bool| {
        let mut v: Vec<String> = hs.iter().map(|h| (h + 1).to_string()).collect();
        if mean {
            v.push("mean".into());
        }
        v.join(",")
    };
    let (classes, heads_s) = match view {
        View::Single { class, head } => (name(class), head.map_or("mean".into(), |h| (h + 1).to_string())),
        View::Gallery { class, heads: hs, mean } => (name(class), heads(hs, *mean)),
        View::Compare { classes, heads: hs, mean } => {
            (classes.iter().map(name).collect::<Vec<_>>().join(" | "), heads(hs, *mean))
        }
    };
    p.insert("view".into(), serde_json::to_string(view).unwrap_or_default());
    p.insert("class".into(), classes);
    p.insert("layer".into(), (layer + 1).to_string());
    p.insert("heads".into(), heads_s);
    p.insert("normalisation".into(), look.normalization.describe().to_string());
    p.insert("colormap".into(), look.colormap.name().to_string());
    p.insert("threshold".into(), look.threshold.to_string());
    p.insert("interpolation".into(), format!("{:?}", look.interpolation).to_lowercase());
    p.insert("opacity".into(), look.opacity.to_string());
    p.insert("official_blur".into(), look.official_blur.to_string());
    p.insert("look".into(), serde_json::to_string(look).unwrap_or_default());
    p
}
