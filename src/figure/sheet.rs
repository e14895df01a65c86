//! Specimen sheets: one class's heads over several photos (INTR's Figure 1 layout). Rows are
//! photos, columns are the heads and their mean; each row carries the photo's name and what the
//! model gives the class there. The window's Sheet and `explain --sheet` both build them here.

use std::collections::BTreeMap;

use super::compose::{FigureOptions, panel_photo};
use super::{ColourBar, Figure, Panel};
use crate::image::RgbImage;
use crate::intr::IntrOutput;
use crate::overlay::colormap::{ABSOLUTE_MAX, GridMap, Normalization};
use crate::overlay::look::{overlay_pixels, scale_label};
use crate::overlay::range::{range_over, style, value_range};

/// Most photos on one sheet; a longer run writes more sheets.
pub const SHEET_ROWS: usize = 24;

/// A sheet has many narrow panels: unless asked otherwise, photos are drawn at most this wide
/// (never enlarged).
pub const SHEET_PANEL_WIDTH: u32 = 240;

/// One photo of a sheet: the photo (already at panel size) and the sheet's class alone at the
/// sheet's layer ([`IntrOutput::only`]: layer 0, class 0).
#[derive(Debug, Clone)]
pub struct SheetRow {
    /// The photo's name (file name).
    pub name: String,
    /// The class's probability and rank on this photo.
    pub probability: f32,
    pub rank: usize,
    pub photo: RgbImage,
    pub output: IntrOutput,
}

impl SheetRow {
    /// The row of `class` at `layer` of an analysed photo, its photo resized to `panel_width`
    /// (`None`: at most [`SHEET_PANEL_WIDTH`]).
    #[must_use]
    pub fn new(
        name: String,
        photo: &RgbImage,
        o: &IntrOutput,
        layer: usize,
        class: usize,
        panel_width: Option<u32>,
    ) -> Self {
        let probs = o.probabilities();
        let rank = o.ranking().iter().position(|&c| c == class).map_or(0, |p| p + 1);
        let width = panel_width.unwrap_or_else(|| (photo.width as u32).min(SHEET_PANEL_WIDTH));
        Self {
            name,
            probability: probs.get(class).copied().unwrap_or(0.0),
            rank,
            photo: panel_photo(photo, Some(width)),
            output: o.only(layer, class),
        }
    }

    /// [`SheetRow::new`] for an analysed photo, named by its file name.
    #[must_use]
    pub fn of_analysis(a: &crate::session::Analysis, layer: usize, class: usize, panel_width: Option<u32>) -> Self {
        let name = a
            .image_path
            .file_name()
            .map_or_else(|| a.image_path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Self::new(name, &a.image, &a.output, layer, class, panel_width)
    }
}

/// The provenance of a sheet of `class` over `rows`: the look, layer, class and heads, the model
/// and class list (`source`, of no one photo), the photos by name, and the head names drawn.
pub fn sheet_provenance(
    look: &crate::overlay::Look,
    (layer, class, heads): (usize, usize, &[usize]),
    names: &[String],
    rows: &[SheetRow],
    source: &super::Source,
    head_names: &crate::session::head_names::HeadNames,
) -> anyhow::Result<BTreeMap<String, String>> {
    let view = super::View::Gallery { class, heads: heads.to_vec(), mean: true };
    let mut prov = super::look_provenance(look, layer, &view, names);
    // Not a view `remake` can draw from one photo.
    prov.remove("view");
    prov.insert("sheet_photos".into(), rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(" | "));
    source.add_to(&mut prov);
    prov.remove("image");
    prov.remove("image_sha256");
    if !head_names.is_empty() {
        prov.insert("head_names".into(), serde_json::to_string(head_names)?);
    }
    Ok(prov)
}

/// The sheet of `class` (its name) over `rows`: the given heads (0-based) and their mean. Under
/// per-map normalisation each map has its own scale, under shared heads each photo one, under
/// shared classes the whole sheet one, and absolute is absolute.
#[must_use]
pub fn compose_sheet(
    rows: &[SheetRow],
    class: &str,
    heads: &[usize],
    layer: usize,
    opts: &FigureOptions,
    provenance: BTreeMap<String, String>,
) -> Figure {
    let norm = opts.look.normalization;
    let cells: Vec<Option<usize>> = heads.iter().map(|&h| Some(h)).chain([None]).collect();
    let sheet_range = (norm == Normalization::SharedClasses).then(|| {
        let ranges: Vec<(f32, f32)> = rows.iter().map(|r| range_over(&r.output, 0, &[0])).collect();
        ranges.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| (lo.min(r.0), hi.max(r.1)))
    });
    let mut panels = Vec::with_capacity(rows.len() * cells.len());
    for (r, row) in rows.iter().enumerate() {
        let o = &row.output;
        let (gh, gw) = o.grid;
        for &h in &cells {
            let range = match norm {
                Normalization::SharedClasses => sheet_range.unwrap_or((0.0, 1.0)),
                Normalization::Absolute => (0.0, ABSOLUTE_MAX),
                _ => value_range(o, 0, norm, (0, h), &[]),
            };
            let map = o.map_values(0, 0, h);
            let rgba = overlay_pixels(
                &row.photo,
                &GridMap::new(&map, (gw, gh), o.placement()),
                &opts.look,
                &style(&opts.look, range),
            );
            // Column headings on the first row only: the head's number, its name under it (the
            // panels of a sheet are narrow).
            let (title, subtitle) = if r == 0 && opts.labels {
                match h {
                    Some(h) => {
                        ((h + 1).to_string(), opts.head_names.name(class, h).map(str::to_string).unwrap_or_default())
                    }
                    None => ("mean".to_string(), String::new()),
                }
            } else {
                (String::new(), String::new())
            };
            panels.push(Panel {
                rgba,
                width: row.photo.width as u32,
                height: row.photo.height as u32,
                title,
                subtitle,
            });
        }
    }
    let row_labels = if opts.labels {
        rows.iter().map(|r| format!("{}\n{:.1} % · rank {}", r.name, r.probability * 100.0, r.rank)).collect()
    } else {
        Vec::new()
    };
    let blur = if opts.look.official_blur { ", official blur" } else { "" };
    let (lo, hi, label) = match norm {
        Normalization::PerMap => (0.0, 1.0, format!("0 = each map's min, 1 = its max{blur}")),
        Normalization::SharedHeads => (0.0, 1.0, format!("0 = each photo's min over its heads, 1 = its max{blur}")),
        Normalization::SharedClasses => {
            let (lo, hi) = sheet_range.unwrap_or((0.0, 1.0));
            (lo, hi, format!("attention, one scale for the whole sheet{blur}"))
        }
        Normalization::Absolute => (0.0, ABSOLUTE_MAX, scale_label(&opts.look)),
    };
    let colour_bar = Some(ColourBar {
        lut: opts.look.colormap.lut(),
        lo,
        hi,
        label,
        colormap: opts.look.colormap.name().to_string(),
    });
    let count = if rows.len() == 1 { "1 photo".to_string() } else { format!("{} photos", rows.len()) };
    let class_line = opts.labels.then(|| format!("{class} · layer {} · {count}", layer + 1));
    let columns_line = opts.labels.then(|| "columns: heads, then their mean".to_string());
    let (title, subtitle) = match (&opts.title, class_line) {
        (Some(t), Some(class)) => (Some(t.clone()), Some(format!("{class} · columns: heads, then their mean"))),
        (Some(t), None) => (Some(t.clone()), None),
        (None, class) => (class, columns_line),
    };
    // The names in full (the panels are too narrow for them), before the caption.
    let named: Vec<String> =
        heads.iter().filter_map(|&h| opts.head_names.name(class, h).map(|n| format!("{} = {n}", h + 1))).collect();
    let caption = match (named.is_empty() || !opts.labels, &opts.caption) {
        (true, c) => c.clone(),
        (false, None) => Some(format!("Heads: {}.", named.join(", "))),
        (false, Some(c)) => Some(format!("Heads: {}. {c}", named.join(", "))),
    };
    let mut fig = Figure {
        title,
        subtitle,
        width_mm: opts.width_mm,
        panel_scale: None,
        caption,
        footer: opts.model.as_ref().map(|m| format!("Model: {m}")),
        panels,
        columns: cells.len(),
        row_labels,
        // A letter on every panel of a sheet would hide the photos; rows and columns are named.
        panel_letters: false,
        colour_bar,
        scale_bar: None,
        provenance,
    };
    super::fit_to_print(&mut fig, opts.width_mm, false);
    fig
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A photo whose one class attends, with head h, to cell (row r, column h) of a 3×4 grid.
    fn analysed(r: usize) -> (RgbImage, IntrOutput) {
        let (gh, gw, heads) = (3, 4, 2);
        let mut attention = vec![0.0f32; heads * 2 * gh * gw];
        for h in 0..heads {
            for c in 0..2 {
                attention[((h * 2) + c) * gh * gw + r * gw + h] = 1.0;
            }
        }
        let o = IntrOutput {
            logits: vec![1.0, 0.0],
            attention,
            layers: 1,
            heads,
            classes: 2,
            grid: (gh, gw),
            input: (64, 48),
            stride: 16,
            timings: Default::default(),
        };
        (RgbImage { width: 64, height: 48, data: vec![80; 64 * 48 * 3] }, o)
    }

    #[test]
    fn a_sheet_has_a_row_per_photo_and_a_column_per_head_and_the_mean_with_names() {
        let rows: Vec<SheetRow> = (0..3)
            .map(|r| {
                let (photo, o) = analysed(r);
                SheetRow::new(format!("bird{r}.jpg"), &photo, &o, 0, 0, Some(32))
            })
            .collect();
        let mut names = crate::session::head_names::HeadNames::default();
        names.heads.insert(2, "crown".into());
        let opts = FigureOptions { labels: true, head_names: names, ..Default::default() };
        let fig = compose_sheet(&rows, "Crowned Bird", &[0, 1], 0, &opts, BTreeMap::new());
        assert_eq!((fig.panels.len(), fig.columns), (9, 3));
        assert_eq!(fig.row_labels.len(), 3);
        assert!(fig.row_labels[1].starts_with("bird1.jpg\n73.1 % · rank 1"), "{}", fig.row_labels[1]);
        let titles: Vec<&str> = fig.panels.iter().take(3).map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["1", "2", "mean"]);
        assert_eq!(fig.panels[1].subtitle, "crown");
        assert_eq!(fig.caption.as_deref(), Some("Heads: 2 = crown."));
        assert!(fig.panels[3..].iter().all(|p| p.title.is_empty()), "headings on the first row only");
        assert_eq!(fig.title.as_deref(), Some("Crowned Bird · layer 1 · 3 photos"));
        // Panels at the asked width; each row's head-1 panel is brightest where that photo's head
        // 1 looks (row r of the grid), so rows are not copies of one another.
        assert!(fig.panels.iter().all(|p| p.width == 32 && p.height == 24));
        let brightest_row = |p: &Panel| {
            let lum = |y: usize| (0..32).map(|x| u32::from(p.rgba[(y * 32 + x) * 4 + 1])).sum::<u32>();
            (0..24).max_by_key(|&y| lum(y)).unwrap() / 8
        };
        assert_eq!((0..3).map(|r| brightest_row(&fig.panels[r * 3])).collect::<Vec<_>>(), [0, 1, 2]);
        crate::figure::validate(&fig).unwrap();
    }
}
