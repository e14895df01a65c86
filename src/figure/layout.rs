//! Where every element of a figure goes, in SVG user units (CSS px, 1 px at 96 dpi), plus the
//! number formats of tick and scale labels. Pure geometry: the SVG writer only draws what this
//! decides, and tests use it to find panels in rendered output.

use super::text::{ellipsise, text_width, wrap};
use super::{Figure, ScaleBar};

/// An axis-aligned rectangle: (x, y, width, height), origin at the top-left, y down.
pub type Rect = (f32, f32, f32, f32);

/// One line of text at a position: `x` is where the text is anchored (its start, centre or end,
/// as the element it belongs to documents), `y` its baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct TextLine {
    /// The text, already cut with "…" to its space.
    pub text: String,
    /// Anchor x.
    pub x: f32,
    /// Baseline y.
    pub y: f32,
}

/// The scale bar on the first panel.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleBarLayout {
    /// The dark box behind bar and label.
    pub backdrop: Rect,
    /// The white bar itself.
    pub bar: Rect,
    /// The length label, centred on `x`.
    pub label: TextLine,
}

/// The colour bar at the right of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct ColourBarLayout {
    /// The gradient rectangle; the top is `hi`, the bottom `lo`.
    pub bar: Rect,
    /// Tick label of the top value, starting at `x`.
    pub hi: TextLine,
    /// Tick label of the bottom value, starting at `x`.
    pub lo: TextLine,
    /// What the colours mean, rotated 90° anticlockwise about (`x`, `y`) and centred there.
    /// The rotated label's lines (wrapped, never cut), drawn at `label_size` px.
    pub label: Vec<TextLine>,
    pub label_size: f32,
}

/// The complete geometry of a figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// (width, height) of the whole figure.
    pub size: (f32, f32),
    /// Where each panel's image is drawn, in the order of [`Figure::panels`].
    pub panel_rects: Vec<Rect>,
    /// The figure title, starting at `x`.
    pub title: Option<TextLine>,
    /// The line under the title, starting at `x`.
    pub subtitle: Option<TextLine>,
    /// Each panel's title, centred on `x`; the text is empty when the panel has none.
    pub panel_titles: Vec<TextLine>,
    /// Each panel's subtitle, centred on `x`; the text is empty when the panel has none.
    pub panel_subtitles: Vec<TextLine>,
    /// Each panel's letter box and letter (starting at `x`); empty without panel letters.
    pub letters: Vec<(Rect, TextLine)>,
    /// The lines of each row label, ending at `x`; empty without row labels.
    pub row_labels: Vec<Vec<TextLine>>,
    /// The colour bar, if the figure has one.
    pub colour_bar: Option<ColourBarLayout>,
    /// The scale bar, if the figure has one and it fits in the first panel.
    pub scale_bar: Option<ScaleBarLayout>,
    /// The caption's lines, each starting at `x`.
    pub caption: Vec<TextLine>,
    /// The footer's lines (the model), each starting at `x`.
    pub footer: Vec<TextLine>,
}

pub(crate) const MARGIN: f32 = 16.0;
pub(crate) const TITLE_SIZE: f32 = 18.0;
pub(crate) const PANEL_TITLE_SIZE: f32 = 12.0;
pub(crate) const PANEL_SUBTITLE_SIZE: f32 = 11.0;
pub(crate) const ROW_LABEL_SIZE: f32 = 13.0;
pub(crate) const LETTER_SIZE: f32 = 14.0;
pub(crate) const TICK_SIZE: f32 = 11.0;
pub(crate) const BAR_LABEL_SIZE: f32 = 12.0;
pub(crate) const SCALE_SIZE: f32 = 11.0;
pub(crate) const CAPTION_SIZE: f32 = 12.0;

const TITLE_GAP: f32 = 10.0;
const HEADER_GAP: f32 = 4.0;
const COLUMN_GAP: f32 = 12.0;
const ROW_GAP: f32 = 12.0;
const ROW_LABEL_GAP: f32 = 12.0;
const ROW_LABEL_MAX: f32 = 240.0;
const BAR_GAP: f32 = 16.0;
const BAR_WIDTH: f32 = 14.0;
/// Tick mark length plus the space before the tick label.
const TICK_SPACE: f32 = 7.0;
const CAPTION_GAP: f32 = 12.0;
/// Font size and gap above of the footer line (the model).
pub(crate) const FOOTER_SIZE: f32 = 10.0;
const FOOTER_GAP: f32 = 6.0;
/// Captions wrap to at least this width, widening a narrow figure.
const CAPTION_MIN_WRAP: f32 = 480.0;

/// Height of one line of text at `size` px.
fn line_height(size: f32) -> f32 {
    (size * 1.25).ceil()
}

/// Distance from the top of a line to its baseline (DejaVu Sans ascends 0.93 em).
fn ascent(size: f32) -> f32 {
    (size * 0.93).ceil()
}

/// The drawn size of each panel: native (times the figure's panel scale) when all panels have one
/// size, else scaled to the widest.
fn drawn_sizes(fig: &Figure) -> Vec<(f32, f32)> {
    let k = fig.panel_scale.filter(|k| k.is_finite() && *k > 0.0).unwrap_or(1.0);
    let first = fig.panels.first().map(|p| (p.width, p.height));
    if fig.panels.iter().all(|p| Some((p.width, p.height)) == first) {
        return fig.panels.iter().map(|p| (p.width as f32 * k, p.height as f32 * k)).collect();
    }
    let cell = fig.panels.iter().map(|p| p.width).max().unwrap_or(1) as f32 * k;
    fig.panels.iter().map(|p| (cell, (p.height as f32 * cell / p.width.max(1) as f32).round().max(1.0))).collect()
}

/// Panels are not drawn narrower than this when a figure is fitted to a width: their titles need
/// the room.
const MIN_FITTED_CELL: f32 = 120.0;

/// Fits `fig` into `width` (SVG px) with its text at full size: the panels are drawn smaller or
/// larger (their pixels kept whole), and with `reflow` a grid of panels takes fewer columns (more
/// rows) where its panels would otherwise be drawn narrower than [`MIN_FITTED_CELL`].
pub fn fit_to_width(fig: &mut Figure, width: f32, reflow: bool) {
    let n = fig.panels.len().max(1);
    let most = fig.columns.clamp(1, n);
    fig.panel_scale = None;
    let cell_w = drawn_sizes(fig).iter().map(|s| s.0).fold(1.0, f32::max);
    // The scale that makes `cols` columns fill `width`, whatever else the figure holds.
    let scale_for = |fig: &mut Figure, cols: usize| {
        fig.columns = cols;
        let gaps = (cols - 1) as f32 * COLUMN_GAP;
        let other = layout(fig).size.0 - (cols as f32 * cell_w + gaps);
        (width - other - gaps) / (cols as f32 * cell_w)
    };
    let tries: Vec<usize> = if reflow { (1..=most).rev().collect() } else { vec![most] };
    let mut chosen = (most, 1.0f32);
    for cols in tries {
        let k = scale_for(fig, cols);
        chosen = (cols, k);
        if k * cell_w >= MIN_FITTED_CELL || k >= 1.0 {
            break;
        }
    }
    fig.columns = chosen.0;
    fig.panel_scale = Some(chosen.1.clamp(0.05, 8.0));
}

/// Fits `fig` to the printed width it is asked for (`width_mm`), or to a journal page
/// ([`super::MAX_WIDTH_MM`]) when its natural size is wider; a figure narrower than the page keeps
/// its natural size. With `reflow`, a figure made narrower may take more rows ([`fit_to_width`]).
pub fn fit_to_print(fig: &mut Figure, width_mm: Option<f32>, reflow: bool) {
    let px = |mm: f32| mm / 25.4 * 96.0;
    let natural = layout(fig).size.0;
    let page = px(super::MAX_WIDTH_MM);
    let target = width_mm.map(px).or_else(|| (natural > page).then_some(page));
    if let Some(width) = target {
        fit_to_width(fig, width, reflow && width < natural);
    }
}

/// Computes where everything of `fig` goes.
#[must_use]
pub fn layout(fig: &Figure) -> Layout {
    let n = fig.panels.len();
    let columns = fig.columns.clamp(1, n.max(1));
    let rows = n.div_ceil(columns).max(1);
    let sizes = drawn_sizes(fig);
    let cell_w = sizes.iter().map(|s| s.0).fold(1.0, f32::max);
    let row_h: Vec<f32> =
        (0..rows).map(|r| sizes.iter().skip(r * columns).take(columns).map(|s| s.1).fold(1.0, f32::max)).collect();

    let has_title = fig.panels.iter().any(|p| !p.title.trim().is_empty());
    let has_subtitle = fig.panels.iter().any(|p| !p.subtitle.trim().is_empty());
    let title_h = if has_title { line_height(PANEL_TITLE_SIZE) } else { 0.0 };
    let subtitle_h = if has_subtitle { line_height(PANEL_SUBTITLE_SIZE) } else { 0.0 };
    let header_h = if has_title || has_subtitle { title_h + subtitle_h + HEADER_GAP } else { 0.0 };

    // Row labels: one column at the left, as wide as the widest line (capped).
    let label_lines: Vec<Vec<String>> = (0..rows)
        .map(|r| fig.row_labels.get(r).map(|l| l.lines().map(|s| s.trim().to_owned()).collect()).unwrap_or_default())
        .map(|lines: Vec<String>| lines.iter().flat_map(|s| wrap(s, ROW_LABEL_SIZE, ROW_LABEL_MAX)).collect())
        .collect();
    let label_w = label_lines.iter().flatten().map(|s| text_width(s, ROW_LABEL_SIZE, false).ceil()).fold(0.0, f32::max);
    let grid_x = if label_w > 0.0 { MARGIN + label_w + ROW_LABEL_GAP } else { MARGIN };

    let mut y = MARGIN;
    let mut min_width = 0.0f32;
    let title = fig.title.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(|t| {
        min_width = text_width(t, TITLE_SIZE, true).ceil() + 2.0 * MARGIN;
        let line = TextLine { text: t.to_owned(), x: MARGIN, y: MARGIN + ascent(TITLE_SIZE) };
        y += line_height(TITLE_SIZE) + TITLE_GAP;
        line
    });
    let subtitle = fig.subtitle.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(|t| {
        min_width = min_width.max(text_width(t, PANEL_TITLE_SIZE, false).ceil() + 2.0 * MARGIN);
        let line = TextLine { text: t.to_owned(), x: MARGIN, y: y - TITLE_GAP / 2.0 + ascent(PANEL_TITLE_SIZE) };
        y += line_height(PANEL_TITLE_SIZE) + TITLE_GAP / 2.0;
        line
    });

    let mut row_top = Vec::with_capacity(rows);
    for h in &row_h {
        row_top.push(y);
        y += header_h + h + ROW_GAP;
    }
    let grid_top = row_top[0] + header_h;
    let grid_bottom = y - ROW_GAP;
    let grid_w = columns as f32 * cell_w + (columns - 1) as f32 * COLUMN_GAP;

    let mut panel_rects = Vec::with_capacity(n);
    let mut panel_titles = Vec::with_capacity(n);
    let mut panel_subtitles = Vec::with_capacity(n);
    for (i, (panel, &(w, h))) in fig.panels.iter().zip(&sizes).enumerate() {
        let (r, c) = (i / columns, i % columns);
        let x = grid_x + c as f32 * (cell_w + COLUMN_GAP) + ((cell_w - w) / 2.0).floor();
        let top = row_top[r];
        panel_rects.push((x, top + header_h, w, h));
        let centre = x + w / 2.0;
        let text = ellipsise(panel.title.trim(), PANEL_TITLE_SIZE, false, w);
        panel_titles.push(TextLine { text, x: centre, y: top + ascent(PANEL_TITLE_SIZE) });
        let text = ellipsise(panel.subtitle.trim(), PANEL_SUBTITLE_SIZE, false, w);
        panel_subtitles.push(TextLine { text, x: centre, y: top + title_h + ascent(PANEL_SUBTITLE_SIZE) });
    }

    let letters = if fig.panel_letters { letter_boxes(&panel_rects) } else { Vec::new() };

    let lh = line_height(ROW_LABEL_SIZE);
    let row_labels = label_lines
        .into_iter()
        .enumerate()
        .filter(|_| label_w > 0.0)
        .map(|(r, lines)| {
            let centre = row_top[r] + header_h + row_h[r] / 2.0;
            let top = (centre - lines.len() as f32 * lh / 2.0).round();
            let x = grid_x - ROW_LABEL_GAP;
            let at = |k: usize| top + k as f32 * lh + ascent(ROW_LABEL_SIZE);
            lines.into_iter().enumerate().map(|(k, text)| TextLine { text, x, y: at(k) }).collect()
        })
        .collect();

    let mut right = grid_x + grid_w;
    let mut bottom = grid_bottom;
    let colour_bar = fig.colour_bar.as_ref().map(|cb| {
        let (bar, hi, lo, (label, label_size), width) =
            colour_bar_layout(cb, right + BAR_GAP, grid_top, grid_bottom - grid_top);
        right += BAR_GAP + width;
        bottom = bottom.max(bar.1 + bar.3 + (TICK_SIZE * 0.3).ceil());
        ColourBarLayout { bar, hi, lo, label, label_size }
    });

    let scale_bar = fig.scale_bar.as_ref().and_then(|sb| panel_rects.first().and_then(|r| scale_bar_layout(sb, *r)));

    let mut width = (right + MARGIN).max(min_width).ceil();
    let mut paragraph = |text: Option<&str>, size: f32, gap: f32| {
        let mut lines = Vec::new();
        if let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) {
            let natural = text_width(text, size, false).ceil();
            let wrap_w = (width - 2.0 * MARGIN).max(natural.min(CAPTION_MIN_WRAP));
            width = width.max(wrap_w + 2.0 * MARGIN);
            let top = bottom + gap;
            let lh = line_height(size);
            for (k, line) in wrap(text, size, wrap_w).into_iter().enumerate() {
                lines.push(TextLine { text: line, x: MARGIN, y: top + k as f32 * lh + ascent(size) });
            }
            bottom = top + lines.len() as f32 * lh;
        }
        lines
    };
    let caption = paragraph(fig.caption.as_deref(), CAPTION_SIZE, CAPTION_GAP);
    let footer = paragraph(fig.footer.as_deref(), FOOTER_SIZE, FOOTER_GAP);

    Layout {
        size: (width, (bottom + MARGIN).ceil()),
        panel_rects,
        title,
        subtitle,
        panel_titles,
        panel_subtitles,
        letters,
        row_labels,
        colour_bar,
        scale_bar,
        caption,
        footer,
    }
}

/// The letter of panel `i`: a…z, then aa, ab, …
#[must_use]
pub fn panel_letter(i: usize) -> String {
    let mut i = i;
    let mut out = Vec::new();
    loop {
        out.push(char::from(b'a' + (i % 26) as u8));
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    out.iter().rev().collect()
}

fn letter_boxes(panel_rects: &[Rect]) -> Vec<(Rect, TextLine)> {
    let pad = 4.0;
    let h = line_height(LETTER_SIZE) + 2.0;
    panel_rects
        .iter()
        .enumerate()
        .map(|(i, &(x, y, _, _))| {
            let text = panel_letter(i);
            let w = text_width(&text, LETTER_SIZE, true).ceil() + 2.0 * pad;
            let (bx, by) = (x + pad, y + pad);
            let line = TextLine { text, x: bx + pad, y: by + 1.0 + ascent(LETTER_SIZE) };
            ((bx, by, w, h), line)
        })
        .collect()
}

/// The smallest size the colour bar's label shrinks to before it takes another line.
const BAR_LABEL_MIN: f32 = 9.0;

/// Bar, tick labels, rotated label (lines and size) and total width of the colour bar column
/// starting at `x`. The label runs along the bar; a long one first shrinks, then wraps.
fn colour_bar_layout(
    cb: &super::ColourBar,
    x: f32,
    y: f32,
    h: f32,
) -> (Rect, TextLine, TextLine, (Vec<TextLine>, f32), f32) {
    let hi = format_tick(cb.hi);
    let lo = format_tick(cb.lo);
    let tick_w = text_width(&hi, TICK_SIZE, false).max(text_width(&lo, TICK_SIZE, false)).ceil();
    let tick_x = x + BAR_WIDTH + TICK_SPACE;
    // Tick labels are centred vertically on the bar's top and bottom edges.
    let centre = (TICK_SIZE * 0.36).round();
    let hi = TextLine { text: hi, x: tick_x, y: y + centre };
    let lo = TextLine { text: lo, x: tick_x, y: y + h + centre };
    let text = match cb.colormap.trim() {
        "" => cb.label.trim().to_owned(),
        name => format!("{} ({name})", cb.label.trim()),
    };
    let room = h.max(BAR_LABEL_SIZE);
    let size = (BAR_LABEL_SIZE * room / text_width(&text, BAR_LABEL_SIZE, false).max(1.0))
        .clamp(BAR_LABEL_MIN, BAR_LABEL_SIZE);
    let lines = wrap(&text, size, room);
    // Rotated anticlockwise, the glyphs' tops face the bar: each line's baseline sits one ascent
    // further right.
    let first_x = tick_x + tick_w + 8.0 + ascent(size);
    let lh = line_height(size);
    let label: Vec<TextLine> = lines
        .into_iter()
        .enumerate()
        .map(|(k, text)| TextLine { text, x: first_x + k as f32 * lh, y: (y + h / 2.0).round() })
        .collect();
    let last_x = label.last().map_or(first_x, |l| l.x);
    let width = last_x + (size * 0.25).ceil() - x;
    ((x, y, BAR_WIDTH, h), hi, lo, (label, size), width)
}

/// The scale bar in the bottom-right corner of the first panel `rect`; `None` if it cannot fit.
fn scale_bar_layout(sb: &ScaleBar, rect: Rect) -> Option<ScaleBarLayout> {
    let (px, py, pw, ph) = rect;
    if !(sb.units_per_pixel.is_finite() && sb.units_per_pixel > 0.0 && sb.photo_width > 0) {
        return None;
    }
    // The panel shows the whole photo width, so one drawn px covers photo_width / pw photo px.
    let units_per_px = sb.units_per_pixel * f64::from(sb.photo_width) / f64::from(pw);
    let length = nice_length(0.2 * f64::from(pw) * units_per_px);
    let bar_w = (length / units_per_px) as f32;
    let text = format_length(length, sb.unit.trim());
    let pad = 4.0;
    let label_h = line_height(SCALE_SIZE);
    let bar_h = 4.0;
    let bw = (bar_w.max(text_width(&text, SCALE_SIZE, false)) + 2.0 * pad).ceil();
    let bh = pad + label_h + 3.0 + bar_h + pad;
    if bw > pw || bh > ph {
        return None;
    }
    let inset = 6.0f32.min((pw - bw) / 2.0).min((ph - bh) / 2.0).max(0.0).floor();
    let (bx, by) = (px + pw - inset - bw, py + ph - inset - bh);
    let cx = bx + bw / 2.0;
    Some(ScaleBarLayout {
        backdrop: (bx, by, bw, bh),
        bar: (cx - bar_w / 2.0, by + pad + label_h + 3.0, bar_w, bar_h),
        label: TextLine { text, x: cx, y: by + pad + ascent(SCALE_SIZE) },
    })
}

/// The round length (1, 2 or 5 × 10^k) closest to `target` on a log scale.
#[must_use]
pub fn nice_length(target: f64) -> f64 {
    if !(target.is_finite() && target > 0.0) {
        return 1.0;
    }
    let k = target.log10().floor();
    [k - 1.0, k, k + 1.0]
        .iter()
        .flat_map(|&e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powf(e)))
        .min_by(|a, b| (a / target).ln().abs().total_cmp(&(b / target).ln().abs()))
        .unwrap_or(1.0)
}

/// A scale-bar label such as "1 mm" or "200 µm": sub-millimetre lengths switch to µm and lengths of
/// 1000 µm or more to mm.
#[must_use]
pub fn format_length(length: f64, unit: &str) -> String {
    let (value, unit) = match unit {
        "mm" if length < 1.0 => (length * 1000.0, "µm"),
        "µm" | "μm" | "um" if length >= 1000.0 => (length / 1000.0, "mm"),
        _ => (length, unit),
    };
    // Round to 6 decimals to drop binary noise (0.1 * 3), then trim.
    let text = trim_zeros(format!("{value:.6}"));
    if unit.is_empty() { text } else { format!("{text} {unit}") }
}

/// A tick label with 3 significant digits (4 for values from 1000 to 9999); scientific notation
/// below 0.01 and from 10 000 up.
#[must_use]
pub fn format_tick(v: f32) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(0.01..1.0e4).contains(&a) {
        let s = format!("{v:.2e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            return format!("{}e{exp}", trim_zeros(mantissa.to_owned()));
        }
        return s;
    }
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}
