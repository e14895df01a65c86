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
use crate::intr::model::softmax;
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
    /// Per head (+ mean), `first`'s attention minus `second`'s on one symmetric scale, drawn with
    /// the diverging red–blue colormap: where the two classes look differently.
    Contrast { first: usize, second: usize, heads: Vec<usize>, mean: bool },
}

/// The contrast of two classes' maps: `first − second`, cell by cell.
#[must_use]
pub fn contrast_map(o: &IntrOutput, layer: usize, (first, second): (usize, usize), head: Option<usize>) -> Vec<f32> {
    let (a, b) = (o.map_values(layer, first, head), o.map_values(layer, second, head));
    a.iter().zip(&b).map(|(x, y)| x - y).collect()
}

/// The symmetric range `(−m, m)` of contrast maps, `m` their largest magnitude (never 0).
#[must_use]
pub fn contrast_range<'a>(maps: impl IntoIterator<Item = &'a [f32]>) -> (f32, f32) {
    let m = maps.into_iter().flatten().map(|v| v.abs()).filter(|v| v.is_finite()).fold(0.0f32, f32::max);
    let m = if m > 0.0 { m } else { 1e-6 };
    (-m, m)
}

/// The look of a contrast: the diverging colormap, nothing thresholded away.
#[must_use]
pub fn contrast_look(look: &Look) -> Look {
    Look { colormap: crate::overlay::colormap::Colormap::RedBlue, threshold: 0.0, ..*look }
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
    /// The photo's out-of-domain score; when flagged, the footer says so.
    pub out_of_domain: Option<crate::probe::ood::OutOfDomain>,
    /// The plain photo as the first panel (galleries and single views).
    pub photo_panel: bool,
    /// Per head of the last decoder layer, the class logits with that head attending evenly; when
    /// given, each head panel of the last layer says what its class's probability would become.
    pub evened: Vec<Vec<f32>>,
    /// The figure's printed width in millimetres; `None`: its natural size, at most
    /// [`super::MAX_WIDTH_MM`] (a journal page).
    pub width_mm: Option<f32>,
    /// Names given to heads ("head 3 · crown" on the panels).
    pub head_names: crate::session::head_names::HeadNames,
}

/// The line under the figure: the model, and a warning when the photo may be outside what it knows.
fn footer(opts: &FigureOptions) -> Option<String> {
    let ood = opts
        .out_of_domain
        .filter(|o| o.flagged)
        .map(|o| format!("out of domain? score {:.2}: the model hardly decides between its two best classes", o.score));
    match (opts.model.as_ref().map(|m| format!("Model: {m}")), ood) {
        (Some(m), Some(o)) => Some(format!("{m} · {o}")),
        (m, o) => m.or(o),
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
    let head_name = |c: usize, h: Option<usize>| {
        h.map_or("mean of heads".to_string(), |h| opts.head_names.label(names.get(c).map_or("", String::as_str), h))
    };
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
        View::Contrast { first, second, heads, mean } => {
            let mut v: Vec<Cell> = heads.iter().map(|&h| (*first, Some(h))).collect();
            if *mean {
                v.push((*first, None));
            }
            let n = v.len().max(1);
            (v, n.min(5), vec![*first, *second])
        }
    };
    let contrast = match view {
        View::Contrast { first, second, .. } => Some((*first, *second)),
        _ => None,
    };
    let contrast_maps: Vec<Vec<f32>> = match contrast {
        Some(pair) => cells.iter().map(|&(_, h)| contrast_map(o, layer, pair, h)).collect(),
        None => Vec::new(),
    };
    let contrast_scale = contrast.map(|_| contrast_range(contrast_maps.iter().map(Vec::as_slice)));
    let diff_look = contrast_look(&opts.look);
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
        .enumerate()
        .map(|(i, &(c, h))| {
            let range = contrast_scale
                .or(shared)
                .unwrap_or_else(|| value_range(o, layer, opts.look.normalization, (c, h), &shared_with));
            bar_range = Some(bar_range.map_or(range, |(lo, hi)| (lo.min(range.0), hi.max(range.1))));
            let look = if contrast.is_some() { &diff_look } else { &opts.look };
            let st = style(look, range);
            let map = contrast_maps.get(i).cloned().unwrap_or_else(|| o.map_values(layer, c, h));
            let rgba = overlay_pixels(&base, &GridMap::new(&map, (gw, gh), o.placement()), look, &st);
            // What the class owes to where this head looks (last layer only): now → if evened.
            let evening = h
                .filter(|_| layer + 1 == o.layers)
                .and_then(|h| opts.evened.get(h))
                .and_then(|l| softmax(l).get(c).copied())
                .map(|p| format!("if evened {:.0} → {:.0} %", probs[c] * 100.0, p * 100.0));
            let with_evening = |s: String| match &evening {
                Some(e) => format!("{s} · {e}"),
                None => s,
            };
            let (title, subtitle) = if !opts.labels {
                (String::new(), String::new())
            } else {
                match view {
                    View::Compare { .. } => (head_name(c, h), evening.clone().unwrap_or_default()),
                    View::Contrast { .. } => (head_name(c, h), String::new()),
                    // The layer is in the figure's class line.
                    View::Gallery { .. } => (head_name(c, h), evening.clone().unwrap_or_default()),
                    View::Single { .. } => {
                        (class_title(c), with_evening(format!("layer {} · {}", layer + 1, head_name(c, h))))
                    }
                }
            };
            Panel { rgba, width: base.width as u32, height: base.height as u32, title, subtitle }
        })
        .collect();
    // A row label is the class's name and, on a line of its own, its probability and rank: a long
    // name wraps, and neither is ever cut.
    let row_labels = if compare && opts.labels {
        compared
            .iter()
            .map(|&c| {
                format!("{}\n{:.1} % · rank {}", names.get(c).map_or("?", String::as_str), probs[c] * 100.0, rank(c))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut panels = panels;
    let mut columns = columns;
    if opts.photo_panel && !compare {
        let title = if opts.labels { "photo".to_string() } else { String::new() };
        let rgba = base.data.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        panels.insert(
            0,
            Panel { rgba, width: base.width as u32, height: base.height as u32, title, subtitle: String::new() },
        );
        columns = (columns + 1).min(if matches!(view, View::Single { .. }) { 2 } else { 5 });
    }
    let per_map = opts.look.normalization == Normalization::PerMap && !compare;
    // Per-map scales differ between panels: the bar then states the normalised scale.
    let blur = if opts.look.official_blur { ", official blur" } else { "" };
    let (lo, hi, label) = if let (Some((a, b)), Some((lo, hi))) = (contrast, contrast_scale) {
        let name = |c: usize| names.get(c).map_or("?", String::as_str);
        (lo, hi, format!("attention of {} minus {}{blur}", name(a), name(b)))
    } else if per_map && cells.len() > 1 {
        (0.0, 1.0, format!("0 = each map's min, 1 = its max{blur}"))
    } else if compare && opts.look.normalization != Normalization::Absolute {
        let (lo, hi) = bar_range.unwrap_or((0.0, 1.0));
        (lo, hi, format!("attention, one scale for all rows{blur}"))
    } else {
        let (lo, hi) = bar_range.unwrap_or((0.0, 1.0));
        (lo, hi, scale_label(&opts.look))
    };
    let bar_look = if contrast.is_some() { &diff_look } else { &opts.look };
    let colour_bar =
        Some(ColourBar { lut: bar_look.colormap.lut(), lo, hi, label, colormap: bar_look.colormap.name().to_string() });
    let scale_bar = opts.scale.as_ref().map(|(per_px, unit)| ScaleBar {
        units_per_pixel: *per_px,
        unit: unit.clone(),
        photo_width: photo.width as u32,
    });
    // A gallery names its class once, in the title; a title the user gives comes first and the
    // class stays, under it.
    let class_line = match view {
        View::Gallery { class, .. } if opts.labels => Some(format!("{} · layer {}", class_title(*class), layer + 1)),
        View::Contrast { .. } if opts.labels => {
            Some(format!("layer {} · per head, the first class's attention minus the second's", layer + 1))
        }
        _ => None,
    };
    let (title, subtitle) = match (&opts.title, class_line) {
        (Some(t), class) => (Some(t.clone()), class),
        // A contrast's two classes are too long for one bold line: its title says what it is.
        (None, Some(class)) if contrast.is_some() => {
            (Some("Where the two classes look differently".into()), Some(class))
        }
        (None, class) => (class, None),
    };
    // A contrast's legend names both classes; the caption wraps, so long names never widen it.
    let caption = match (view, opts.labels) {
        (View::Contrast { first, second, .. }, true) => {
            let named = |c: usize| format!("{} ({:.1} %)", names.get(c).map_or("?", String::as_str), probs[c] * 100.0);
            let legend =
                format!("Red: {} looks more; blue: {} looks more; white: alike.", named(*first), named(*second));
            Some(match &opts.caption {
                Some(c) => format!("{legend} {c}"),
                None => legend,
            })
        }
        _ => opts.caption.clone(),
    };
    let mut fig = Figure {
        title,
        subtitle,
        width_mm: opts.width_mm,
        panel_scale: None,
        caption,
        footer: footer(opts),
        panels,
        columns,
        row_labels,
        panel_letters: opts.letters,
        colour_bar,
        scale_bar,
        provenance,
    };
    // A figure asked to print at a width, or wider than a page, is fitted with its text at full
    // size; a grid of one class's panels may take more rows.
    crate::figure::fit_to_print(&mut fig, opts.width_mm, !compare);
    fig
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figure::{layout, to_svg};

    /// A result of one layer, two heads and two classes on a 3×4 grid, over a `w × h` photo.
    fn result(w: usize, h: usize) -> (RgbImage, IntrOutput) {
        let (gh, gw) = (3, 4);
        let attention: Vec<f32> = (0..2 * 2 * gh * gw).map(|i| 1.0 + (i % 5) as f32).collect();
        let o = IntrOutput {
            logits: vec![2.0, 0.5],
            attention,
            layers: 1,
            heads: 2,
            classes: 2,
            grid: (gh, gw),
            input: (w, h),
            stride: w / gw,
            timings: Default::default(),
        };
        (RgbImage { width: w, height: h, data: vec![90; w * h * 3] }, o)
    }

    fn names() -> Vec<String> {
        vec![
            "Speckled Scarlet-capped Barwing Bandtail with a very long distinguishing end".into(),
            "Azure-capped Plainwing Plaintail".into(),
        ]
    }

    #[test]
    fn comparison_row_labels_and_the_colour_bar_caption_wrap_instead_of_being_cut() {
        let (photo, o) = result(48, 36);
        let view = View::Compare { classes: vec![0, 1], heads: vec![0, 1], mean: true };
        let opts = FigureOptions { labels: true, ..Default::default() };
        let fig = compose(&photo, &o, &names(), &view, &opts, Default::default());
        let l = layout(&fig);
        let first: String = l.row_labels[0].iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
        assert!(first.contains("very long distinguishing end") && first.contains("% · rank 1"), "{first}");
        assert!(!first.contains('…'), "{first}");
        let cb = l.colour_bar.expect("a colour bar");
        let caption: String = cb.label.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join(" ");
        assert_eq!(caption, format!("{} ({})", fig.colour_bar.unwrap().label, "viridis"));
    }

    #[test]
    fn a_title_adds_to_the_class_and_the_photo_panel_and_evening_are_offered() {
        let (photo, o) = result(48, 36);
        let view = View::Gallery { class: 0, heads: vec![0, 1], mean: true };
        let evened = vec![vec![0.0, 0.5], vec![2.0, 0.5]];
        let opts = FigureOptions {
            labels: true,
            title: Some("Figure 2".into()),
            photo_panel: true,
            evened,
            ..Default::default()
        };
        let fig = compose(&photo, &o, &names(), &view, &opts, Default::default());
        assert_eq!(fig.title.as_deref(), Some("Figure 2"));
        let sub = fig.subtitle.clone().unwrap_or_default();
        assert!(sub.starts_with("Speckled Scarlet-capped") && sub.contains("% · rank 1"), "{sub}");
        assert_eq!(fig.panels.len(), 4, "the photo, two heads, the mean");
        assert_eq!(fig.panels[0].title, "photo");
        assert!(fig.panels[0].rgba.chunks(4).all(|p| p == [90, 90, 90, 255]), "the photo as it is");
        // Head 1 evened drops class 0 from 82 % to 38 %; head 2 changes nothing.
        assert!(fig.panels[1].subtitle.contains("if evened 82 → 38 %"), "{}", fig.panels[1].subtitle);
        assert!(fig.panels[2].subtitle.contains("if evened 82 → 82 %"), "{}", fig.panels[2].subtitle);
        assert!(!fig.panels[3].subtitle.contains("evened"), "the mean is not a head");
    }

    #[test]
    fn a_contrast_is_red_where_the_first_class_looks_more_and_blue_where_the_second_does() {
        // One head; class 0 looks at the top-left cell, class 1 at the bottom-right one.
        let (gh, gw) = (2, 2);
        let o = IntrOutput {
            logits: vec![1.0, 0.5],
            attention: vec![0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7],
            layers: 1,
            heads: 1,
            classes: 2,
            grid: (gh, gw),
            input: (32, 32),
            stride: 16,
            timings: Default::default(),
        };
        let photo = RgbImage { width: 32, height: 32, data: vec![128; 32 * 32 * 3] };
        let view = View::Contrast { first: 0, second: 1, heads: vec![0], mean: false };
        let opts =
            FigureOptions { labels: true, look: Look { opacity: 1.0, ..Default::default() }, ..Default::default() };
        let fig = compose(&photo, &o, &names(), &view, &opts, Default::default());
        let bar = fig.colour_bar.as_ref().unwrap();
        assert!((bar.lo + 0.6).abs() < 1e-6 && (bar.hi - 0.6).abs() < 1e-6, "symmetric: {} {}", bar.lo, bar.hi);
        assert!(bar.colormap.starts_with("red-blue"), "{}", bar.colormap);
        let px = |x: usize, y: usize| {
            let p = &fig.panels[0].rgba[(y * 32 + x) * 4..];
            (i32::from(p[0]), i32::from(p[2]))
        };
        let ((r0, b0), (r1, b1)) = (px(2, 2), px(29, 29));
        assert!(r0 > b0 + 60, "first class's cell is red: {r0} {b0}");
        assert!(b1 > r1 + 60, "second class's cell is blue: {r1} {b1}");
        let caption = fig.caption.clone().unwrap_or_default();
        assert!(caption.starts_with("Red: Speckled") && caption.contains("blue: Azure"), "{caption}");
    }

    /// The `width` attribute of an SVG's root, in px.
    fn svg_width(svg: &str) -> f32 {
        let at = svg.find(" width=\"").expect("a width") + 8;
        svg[at..].split('"').next().unwrap().parse().unwrap()
    }

    #[test]
    fn figures_print_at_most_a_page_wide_unless_a_width_is_asked_for() {
        let (photo, o) = result(480, 360);
        let names = names();
        let wide = View::Gallery { class: 0, heads: vec![0, 1, 0, 1, 0, 1, 0, 1], mean: true };
        let page_px = crate::figure::MAX_WIDTH_MM / 25.4 * 96.0;
        let fig = compose(&photo, &o, &names, &wide, &FigureOptions::default(), Default::default());
        assert!((svg_width(&to_svg(&fig)) - page_px).abs() < 1.0, "a nine-panel figure fits the page");
        // By drawing its panels smaller, not its text: the SVG is printed at (about) its own size,
        // and its panels are still at least 120 px wide (in more rows).
        assert!((layout(&fig).size.0 - page_px).abs() < 1.0, "{}", layout(&fig).size.0);
        let drawn = layout(&fig).panel_rects[0].2;
        assert!(drawn >= 120.0 && fig.columns < 5, "{drawn} px in {} columns", fig.columns);
        let opts = FigureOptions { width_mm: Some(85.0), ..Default::default() };
        let fig = compose(&photo, &o, &names, &wide, &opts, Default::default());
        assert!((svg_width(&to_svg(&fig)) - 85.0 / 25.4 * 96.0).abs() < 1.0);
        // A figure narrower than the page keeps its natural size.
        let small = View::Single { class: 0, head: None };
        let fig = compose(&photo, &o, &names, &small, &FigureOptions::default(), Default::default());
        assert!((svg_width(&to_svg(&fig)) - layout(&fig).size.0).abs() < 0.01);
    }

    #[test]
    fn the_footer_names_the_model_and_warns_of_a_photo_outside_its_domain() {
        use crate::probe::ood::OutOfDomain;
        let (photo, o) = result(48, 36);
        let view = View::Single { class: 0, head: None };
        let model = Some("demo model".to_owned());
        let sure = FigureOptions {
            model: model.clone(),
            out_of_domain: Some(OutOfDomain { score: 0.01, flagged: false }),
            ..Default::default()
        };
        let fig = compose(&photo, &o, &names(), &view, &sure, Default::default());
        assert_eq!(fig.footer.as_deref(), Some("Model: demo model"));
        let unsure = FigureOptions {
            model,
            out_of_domain: Some(OutOfDomain { score: 0.94, flagged: true }),
            ..Default::default()
        };
        let fig = compose(&photo, &o, &names(), &view, &unsure, Default::default());
        let footer = fig.footer.unwrap_or_default();
        assert!(footer.starts_with("Model: demo model · out of domain? score 0.94"), "{footer}");
    }
}
