//! The fonts of exported figures: DejaVu Sans and DejaVu Sans Bold, compiled into the binary and the
//! only fonts the SVG parser ever sees, so a figure has the same glyphs and text widths on every
//! machine. Also measures text for the layout.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use resvg::usvg;
use usvg::fontdb;

/// The family every text element of a figure names.
pub const FAMILY: &str = "DejaVu Sans";

// Licence: assets/fonts/LICENSE.txt (Bitstream Vera / DejaVu, free to embed and redistribute).
const REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// The font database holding only the bundled fonts; built once, shared by every parse.
fn database() -> Arc<fontdb::Database> {
    static DB: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = fontdb::Database::new();
        db.load_font_data(REGULAR.to_vec());
        db.load_font_data(BOLD.to_vec());
        // Generic names resolve to the bundled family too, so no text can reach for a system font.
        db.set_serif_family(FAMILY);
        db.set_sans_serif_family(FAMILY);
        db.set_monospace_family(FAMILY);
        db.set_cursive_family(FAMILY);
        db.set_fantasy_family(FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// SVG parsing options that use only the bundled fonts.
#[must_use]
pub fn options() -> usvg::Options<'static> {
    usvg::Options { fontdb: database(), font_family: FAMILY.to_owned(), ..usvg::Options::default() }
}

/// Parses an SVG document made by this module into a render tree.
pub fn parse(svg: &str) -> Result<usvg::Tree> {
    usvg::Tree::from_str(svg, &options()).context("the figure's SVG could not be parsed")
}

/// Width in px of `text` set in the bundled family at `size` px, as the renderer will lay it out.
///
/// Falls back to an estimate (0.62 em per character, DejaVu's average) if shaping fails.
#[must_use]
pub fn text_width(text: &str, size: f32, bold: bool) -> f32 {
    if text.trim().is_empty() {
        return 0.0;
    }
    measure(text, size, bold).unwrap_or_else(|| estimate(text, size))
}

fn estimate(text: &str, size: f32) -> f32 {
    text.chars().count() as f32 * size * 0.62
}

fn measure(text: &str, size: f32, bold: bool) -> Option<f32> {
    let weight = if bold { "bold" } else { "normal" };
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\" height=\"100\">\
         <text x=\"0\" y=\"50\" font-family=\"{FAMILY}\" font-size=\"{size}\" font-weight=\"{weight}\">{}</text></svg>",
        escape(text)
    );
    let tree = usvg::Tree::from_str(&svg, &options()).ok()?;
    let width = tree.root().abs_bounding_box().width();
    (width.is_finite() && width >= 0.0).then_some(width)
}

/// The largest prefix of `text` (ending in "…" when cut) that fits in `max_width` px.
#[must_use]
pub fn ellipsise(text: &str, size: f32, bold: bool, max_width: f32) -> String {
    if text_width(text, size, bold) <= max_width {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    // Binary search over the number of characters kept; widths grow with the prefix length.
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().collect::<String>().trim_end().to_owned() + "…";
        if text_width(&candidate, size, bold) <= max_width {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return "…".to_owned();
    }
    chars[..lo].iter().collect::<String>().trim_end().to_owned() + "…"
}

/// Splits `text` into lines no wider than `max_width` px, breaking at spaces (and at explicit
/// newlines); a single word wider than the limit gets a line of its own.
#[must_use]
pub fn wrap(text: &str, size: f32, max_width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() { word.to_owned() } else { format!("{line} {word}") };
            if line.is_empty() || text_width(&candidate, size, false) <= max_width {
                line = candidate;
            } else {
                lines.push(std::mem::replace(&mut line, word.to_owned()));
            }
        }
        lines.push(line);
    }
    lines
}

/// Escapes text for XML content and attribute values; drops characters XML 1.0 cannot hold.
#[must_use]
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}
