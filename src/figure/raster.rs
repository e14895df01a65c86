//! PNG and PDF output: the figure's SVG rasterised with resvg, or converted to vector PDF with
//! svg2pdf; both carry the provenance (PNG text chunks, PDF Info dictionary).

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use pdf_writer::{Content, Finish, Name, Pdf, Rect as PdfRect, Ref, TextStr};
use resvg::tiny_skia;

use super::svg::provenance_json;
use super::{Figure, creator, text, to_svg, validate};

/// Keyword of the PNG iTXt chunk holding the whole provenance as JSON.
pub(crate) const PNG_PROVENANCE_KEY: &str = "intr-explorer provenance";
/// Prefix of the per-entry PNG iTXt chunks (`intr-explorer:<key>`), for tools that list chunks.
const PNG_ENTRY_PREFIX: &str = "intr-explorer:";
/// Custom key of the PDF Info dictionary holding the provenance as JSON.
pub(crate) const PDF_PROVENANCE_KEY: &[u8] = b"IntrExplorerProvenance";

/// The largest PNG side we render, in pixels (tiny-skia's and most viewers' practical limit).
const MAX_SIDE: f32 = 32_768.0;
/// SVG user units per inch (CSS px).
const CSS_DPI: f32 = 96.0;

/// Renders the figure to PNG at `dpi` (96 dpi: one SVG unit, and one panel pixel, per output pixel).
///
/// The PNG records the resolution (pHYs) and the provenance: one iTXt chunk with the whole map as
/// JSON (keyword "intr-explorer provenance"), one per entry ("intr-explorer:<key>"), plus the
/// standard "Software", "Title" and "Description".
pub fn to_png(fig: &Figure, dpi: f32) -> Result<Vec<u8>> {
    validate(fig)?;
    if !(dpi.is_finite() && dpi > 0.0) {
        bail!("{dpi} dpi is not a resolution");
    }
    let tree = text::parse(&to_svg(fig))?;
    let scale = dpi / CSS_DPI;
    let (w, h) = ((tree.size().width() * scale).round(), (tree.size().height() * scale).round());
    if w > MAX_SIDE || h > MAX_SIDE {
        bail!("{w}×{h} pixels at {dpi} dpi is too large; choose a lower resolution");
    }
    let (w, h) = (w.max(1.0) as u32, h.max(1.0) as u32);
    let mut pixmap = tiny_skia::Pixmap::new(w, h).with_context(|| format!("cannot allocate {w}×{h} pixels"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    // The background is opaque white, so premultiplied and straight colour agree: keep RGB.
    let rgb: Vec<u8> = pixmap.pixels().iter().flat_map(|p| [p.red(), p.green(), p.blue()]).collect();

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let per_metre = (dpi / 0.0254).round() as u32;
    encoder.set_pixel_dims(Some(png::PixelDimensions { xppu: per_metre, yppu: per_metre, unit: png::Unit::Meter }));
    for (keyword, text) in png_text(fig) {
        encoder.add_itxt_chunk(keyword, text).context("cannot add a PNG text chunk")?;
    }
    let mut writer = encoder.write_header().context("cannot write the PNG header")?;
    writer.write_image_data(&rgb).context("cannot encode the PNG")?;
    writer.finish().context("cannot finish the PNG")?;
    Ok(out)
}

/// The PNG text chunks: (keyword, text).
fn png_text(fig: &Figure) -> Vec<(String, String)> {
    let mut chunks = vec![("Software".to_owned(), creator())];
    if let Some(title) = fig.title.as_deref().filter(|t| !t.trim().is_empty()) {
        chunks.push(("Title".to_owned(), title.to_owned()));
    }
    if let Some(caption) = fig.caption.as_deref().filter(|t| !t.trim().is_empty()) {
        chunks.push(("Description".to_owned(), caption.to_owned()));
    }
    chunks.push((PNG_PROVENANCE_KEY.to_owned(), provenance_json(fig)));
    for (key, value) in &fig.provenance {
        let keyword = format!("{PNG_ENTRY_PREFIX}{key}");
        // PNG keywords are 1–79 Latin-1 bytes without leading, trailing or doubled spaces; entries
        // whose key cannot be one are still in the JSON chunk.
        let valid = keyword.len() <= 79
            && keyword.bytes().all(|b| (0x20..0x7f).contains(&b))
            && !keyword.ends_with(' ')
            && !keyword.contains("  ");
        if valid {
            chunks.push((keyword, value.clone()));
        }
    }
    chunks
}

/// Renders the figure to a one-page vector PDF whose page has the figure's size (1 px = 0.75 pt).
///
/// Text stays text (a subset of the bundled font is embedded). The Info dictionary holds Title,
/// Creator ("INTR Explorer <version>"), Producer, Subject (the caption), Keywords (the provenance
/// JSON) and the custom key `/IntrExplorerProvenance` (the same JSON), which [`super::read_provenance`]
/// reads. No dates are written.
pub fn to_pdf(fig: &Figure) -> Result<Vec<u8>> {
    validate(fig)?;
    let tree = text::parse(&to_svg(fig))?;
    let (chunk, svg_ref) = svg2pdf::to_chunk(&tree, svg2pdf::ConversionOptions::default())
        .map_err(|e| anyhow!("cannot convert the figure to PDF: {e}"))?;

    let mut alloc = Ref::new(1);
    let catalog_id = alloc.bump();
    let page_tree_id = alloc.bump();
    let page_id = alloc.bump();
    let content_id = alloc.bump();
    let info_id = alloc.bump();
    let mut map = HashMap::new();
    let chunk = chunk.renumber(|old| *map.entry(old).or_insert_with(|| alloc.bump()));
    let svg_id = *map.get(&svg_ref).context("svg2pdf returned no figure object")?;

    // The figure XObject is one point square; scale it to the page.
    let (w, h) = (tree.size().width() * 0.75, tree.size().height() * 0.75);
    let svg_name = Name(b"Figure");
    let mut pdf = Pdf::new();
    pdf.catalog(catalog_id).pages(page_tree_id);
    pdf.pages(page_tree_id).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(PdfRect::new(0.0, 0.0, w, h));
    page.parent(page_tree_id);
    page.contents(content_id);
    page.resources().x_objects().pair(svg_name, svg_id);
    page.finish();
    let mut content = Content::new();
    content.save_state();
    content.transform([w, 0.0, 0.0, h, 0.0, 0.0]);
    content.x_object(svg_name);
    content.restore_state();
    pdf.stream(content_id, &content.finish());
    pdf.extend(&chunk);

    let json = provenance_json(fig);
    let title = fig.title.clone().unwrap_or_else(|| "INTR Explorer figure".to_owned());
    let creator = creator();
    let mut info = pdf.document_info(info_id);
    info.title(TextStr(&title));
    info.creator(TextStr(&creator));
    info.producer(TextStr("intr-explorer export (svg2pdf, pdf-writer)"));
    if let Some(caption) = fig.caption.as_deref() {
        info.subject(TextStr(caption));
    }
    info.keywords(TextStr(&json));
    info.pair(Name(PDF_PROVENANCE_KEY), TextStr(&json));
    info.finish();
    Ok(pdf.finish())
}
