//! The SVG writer: draws a [`Figure`] where [`layout`] put everything. Text stays `<text>` (in the
//! bundled DejaVu Sans), each panel is an embedded PNG drawn pixel for pixel, and the provenance
//! goes into `<metadata>` and `<desc>`.

use std::fmt::Write as _;

use base64::Engine as _;

use super::layout::{self, ColourBarLayout, Layout, Rect, ScaleBarLayout, TextLine, layout};
use super::text::{self, escape};
use super::{Figure, Panel};

/// XML namespace of the provenance element in `<metadata>`.
pub(crate) const NAMESPACE: &str = "https://github.com/Imageomics/INTR";
/// Qualified name of the provenance element; its text is the provenance as a JSON object.
pub(crate) const PROVENANCE_TAG: &str = "intr:provenance";

const INK: &str = "#111111";
const MUTED: &str = "#555555";

/// An SVG document being written; writing into a `String` cannot fail.
struct Doc(String);

impl Doc {
    fn put(&mut self, args: std::fmt::Arguments) {
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }

    /// A `<text>` element; `attrs` is inserted verbatim after the position.
    fn text(&mut self, line: &TextLine, size: f32, attrs: &str) {
        if line.text.is_empty() {
            return;
        }
        self.put(format_args!(
            "<text x=\"{}\" y=\"{}\" font-size=\"{}\" {attrs}>{}</text>",
            num(line.x),
            num(line.y),
            num(size),
            escape(&line.text)
        ));
    }

    fn rect(&mut self, r: Rect, attrs: &str) {
        self.put(format_args!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {attrs}/>",
            num(r.0),
            num(r.1),
            num(r.2),
            num(r.3)
        ));
    }
}

/// A coordinate: integers without a fraction, others to 3 decimals.
fn num(v: f32) -> String {
    if (v - v.round()).abs() < 1e-4 {
        format!("{}", v.round() as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The provenance map as one JSON object (keys sorted).
pub(crate) fn provenance_json(fig: &Figure) -> String {
    serde_json::to_string(&fig.provenance).unwrap_or_else(|_| "{}".to_owned())
}

/// Renders the figure as a standalone SVG 1.1 document (CSS px units; 1 px per pixel at 96 dpi).
///
/// Never fails: a panel whose buffer does not match its size is drawn as a grey placeholder
/// ([`super::validate`] reports it as an error instead).
#[must_use]
pub fn to_svg(fig: &Figure) -> String {
    let l = layout(fig);
    let (w, h) = l.size;
    let json = provenance_json(fig);
    let mut d = Doc(String::with_capacity(4096 + fig.panels.iter().map(|p| p.rgba.len() / 2).sum::<usize>()));
    d.put(format_args!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    // Drawn in CSS px (96 per inch), printed at the width asked for, or at most a journal page.
    let natural_mm = w / 96.0 * 25.4;
    let printed_mm = fig.width_mm.filter(|m| m.is_finite() && *m > 0.0).unwrap_or(natural_mm.min(super::MAX_WIDTH_MM));
    let k = printed_mm / natural_mm;
    d.put(format_args!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" xmlns:xlink=\"http://www.w3.org/1999/xlink\" version=\"1.1\" \
         width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {2} {3}\" font-family=\"'{4}', sans-serif\">",
        num(w * k),
        num(h * k),
        num(w),
        num(h),
        text::FAMILY
    ));
    if let Some(title) = &fig.title {
        d.put(format_args!("<title>{}</title>", escape(title)));
    }
    let caption = fig.caption.as_deref().map(|c| format!("{c}\n")).unwrap_or_default();
    d.put(format_args!(
        "<desc>{}Made with {}. Provenance (JSON): {}</desc>",
        escape(&caption),
        super::creator(),
        escape(&json)
    ));
    d.put(format_args!(
        "<metadata><{PROVENANCE_TAG} xmlns:intr=\"{NAMESPACE}\">{}</{PROVENANCE_TAG}></metadata>",
        escape(&json)
    ));
    if let Some(cb) = &fig.colour_bar {
        gradient(&mut d, &cb.lut);
    }
    d.put(format_args!("<rect id=\"background\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>", num(w), num(h)));
    if let Some(title) = &l.title {
        d.text(title, layout::TITLE_SIZE, &format!("id=\"figure-title\" font-weight=\"bold\" fill=\"{INK}\""));
    }
    if let Some(subtitle) = &l.subtitle {
        d.text(subtitle, layout::PANEL_TITLE_SIZE, &format!("id=\"figure-subtitle\" fill=\"{INK}\""));
    }
    panels(&mut d, fig, &l);
    for line in l.row_labels.iter().flatten() {
        d.text(line, layout::ROW_LABEL_SIZE, &format!("class=\"row-label\" text-anchor=\"end\" fill=\"{INK}\""));
    }
    if let Some(sb) = &l.scale_bar {
        scale_bar(&mut d, sb);
    }
    if let Some(cb) = &l.colour_bar {
        colour_bar(&mut d, cb);
    }
    for line in &l.caption {
        d.text(line, layout::CAPTION_SIZE, &format!("class=\"caption\" fill=\"{INK}\""));
    }
    for line in &l.footer {
        d.text(line, layout::FOOTER_SIZE, "class=\"footer\" fill=\"#666666\"");
    }
    d.put(format_args!("</svg>"));
    d.0
}

/// The colour bar's gradient: one stop per LUT entry, bottom (entry 0) to top (entry 255).
fn gradient(d: &mut Doc, lut: &[[u8; 3]; 256]) {
    d.put(format_args!("<defs><linearGradient id=\"colour-bar-gradient\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">"));
    for (i, [r, g, b]) in lut.iter().enumerate() {
        d.put(format_args!("<stop offset=\"{:.4}\" stop-color=\"#{r:02x}{g:02x}{b:02x}\"/>", i as f32 / 255.0));
    }
    d.put(format_args!("</linearGradient></defs>"));
}

fn panels(d: &mut Doc, fig: &Figure, l: &Layout) {
    for (i, panel) in fig.panels.iter().enumerate() {
        d.put(format_args!("<g id=\"panel-{}\">", i + 1));
        if let Some(t) = l.panel_titles.get(i) {
            d.text(
                t,
                layout::PANEL_TITLE_SIZE,
                &format!("class=\"panel-title\" text-anchor=\"middle\" fill=\"{INK}\""),
            );
        }
        if let Some(t) = l.panel_subtitles.get(i) {
            let attrs = format!("class=\"panel-subtitle\" text-anchor=\"middle\" fill=\"{MUTED}\"");
            d.text(t, layout::PANEL_SUBTITLE_SIZE, &attrs);
        }
        let r = l.panel_rects[i];
        match encode_png(panel) {
            Some(png) => d.put(format_args!(
                "<image id=\"panel-{}-image\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" \
                 image-rendering=\"optimizeSpeed\" style=\"image-rendering:pixelated\" \
                 xlink:href=\"data:image/png;base64,{}\"/>",
                i + 1,
                num(r.0),
                num(r.1),
                num(r.2),
                num(r.3),
                base64::engine::general_purpose::STANDARD.encode(png)
            )),
            None => {
                d.rect(r, "fill=\"#cccccc\"");
                let (x, y, w, h) = r;
                d.put(format_args!(
                    "<path d=\"M{} {}L{} {}M{} {}L{} {}\" stroke=\"#888888\"/>",
                    num(x),
                    num(y),
                    num(x + w),
                    num(y + h),
                    num(x + w),
                    num(y),
                    num(x),
                    num(y + h)
                ));
            }
        }
        if let Some((rect, letter)) = l.letters.get(i) {
            d.put(format_args!("<g class=\"panel-letter\">"));
            d.rect(*rect, "rx=\"3\" fill=\"#000000\" fill-opacity=\"0.6\"");
            d.text(letter, layout::LETTER_SIZE, "font-weight=\"bold\" fill=\"#ffffff\"");
            d.put(format_args!("</g>"));
        }
        d.put(format_args!("</g>"));
    }
}

/// The panel as PNG bytes; `None` if its buffer does not match its size.
pub(crate) fn encode_png(panel: &Panel) -> Option<Vec<u8>> {
    let expected = u64::from(panel.width) * u64::from(panel.height) * 4;
    if panel.width == 0 || panel.height == 0 || panel.rgba.len() as u64 != expected {
        return None;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, panel.width, panel.height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().ok()?;
    writer.write_image_data(&panel.rgba).ok()?;
    writer.finish().ok()?;
    Some(out)
}

fn scale_bar(d: &mut Doc, sb: &ScaleBarLayout) {
    d.put(format_args!("<g id=\"scale-bar\">"));
    d.rect(sb.backdrop, "rx=\"3\" fill=\"#000000\" fill-opacity=\"0.6\"");
    d.rect(sb.bar, "fill=\"#ffffff\" stroke=\"#000000\" stroke-width=\"0.5\"");
    d.text(&sb.label, layout::SCALE_SIZE, "text-anchor=\"middle\" fill=\"#ffffff\"");
    d.put(format_args!("</g>"));
}

fn colour_bar(d: &mut Doc, cb: &ColourBarLayout) {
    let (x, y, w, h) = cb.bar;
    d.put(format_args!("<g id=\"colour-bar-group\">"));
    d.rect(cb.bar, "id=\"colour-bar\" fill=\"url(#colour-bar-gradient)\" stroke=\"#333333\" stroke-width=\"0.5\"");
    d.put(format_args!(
        "<path d=\"M{0} {1}h4M{0} {2}h4\" stroke=\"#333333\" stroke-width=\"1\"/>",
        num(x + w),
        num(y + 0.5),
        num(y + h - 0.5)
    ));
    d.text(&cb.hi, layout::TICK_SIZE, &format!("class=\"tick\" fill=\"{INK}\""));
    d.text(&cb.lo, layout::TICK_SIZE, &format!("class=\"tick\" fill=\"{INK}\""));
    for line in &cb.label {
        let rotate = format!(
            "class=\"colour-bar-label\" text-anchor=\"middle\" fill=\"{INK}\" transform=\"rotate(-90 {} {})\"",
            num(line.x),
            num(line.y)
        );
        d.text(line, cb.label_size, &rotate);
    }
    d.put(format_args!("</g>"));
}
