//! Tests of figure export: SVG structure, PNG pixels and resolution, PDF through poppler, provenance
//! round trips and atomic writing. All headless.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::layout::{format_length, format_tick, nice_length, panel_letter};
use super::*;

/// A 40×30 panel whose pixel (x, y) has a colour derived from (x, y, seed).
fn panel(seed: u8, title: &str, subtitle: &str) -> Panel {
    let (width, height) = (40u32, 30u32);
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            let checker = if (x / 4 + y / 4) % 2 == 0 { 0 } else { 60 };
            rgba.extend_from_slice(&[(x * 6) as u8, (y * 8) as u8 ^ seed, seed.wrapping_add(checker), 255]);
        }
    }
    Panel { rgba, width, height, title: title.to_owned(), subtitle: subtitle.to_owned() }
}

fn lut() -> [[u8; 3]; 256] {
    std::array::from_fn(|i| [i as u8, 255 - i as u8, 128])
}

fn provenance() -> BTreeMap<String, String> {
    [
        ("app_version", "0.1.0"),
        ("class", "Painted & <Bunting> \"quoted\" · é"),
        ("layer", "6"),
        ("heads", "0,3,7"),
        ("model_sha256", "ab12"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn figure() -> Figure {
    Figure {
        title: Some("Attention of <INTR> & friends".to_owned()),
        subtitle: None,
        width_mm: None,
        panel_scale: None,
        caption: Some("Each panel shows one head's cross-attention over the photo.".to_owned()),
        footer: Some("Model: tiny_postnorm_sine.pth".to_owned()),
        panels: vec![panel(10, "a&<b", "layer 6 · head 3"), panel(200, "Indigo Bunting · 20.1 %", "layer 6 · head 4")],
        columns: 2,
        row_labels: vec!["Class \"A\" & <B>".to_owned()],
        panel_letters: true,
        colour_bar: Some(ColourBar {
            lut: lut(),
            lo: 0.0,
            hi: 0.004_56,
            label: "attention, min–max of each map".to_owned(),
            colormap: "viridis".to_owned(),
        }),
        scale_bar: Some(ScaleBar { units_per_pixel: 0.05, unit: "mm".to_owned(), photo_width: 400 }),
        provenance: provenance(),
    }
}

fn inside(r: (f32, f32, f32, f32), x: f32, y: f32) -> bool {
    x >= r.0 && x < r.0 + r.2 && y >= r.1 && y < r.1 + r.3
}

/// Compares the pixels of every panel rectangle of `img` (rendered at 96 dpi) with the panels,
/// skipping what is drawn over them (letters, scale bar). With `reach` 0 each pixel must equal its
/// panel pixel within `tolerance`; with `reach` 1 it must lie within the range of the 3×3 panel
/// pixels around it (for renderers that resample images with a sub-pixel offset), and the outermost
/// pixels are skipped.
fn assert_panels_match(fig: &Figure, img: &image::RgbaImage, tolerance: u8, reach: u32) {
    let l = layout(fig);
    let mut covered: Vec<Rect> = l.letters.iter().map(|(r, _)| *r).collect();
    covered.extend(l.scale_bar.iter().map(|s| s.backdrop));
    for (p, &(px, py, pw, ph)) in fig.panels.iter().zip(&l.panel_rects) {
        assert_eq!((pw, ph), (p.width as f32, p.height as f32), "equal panels are drawn at native size");
        let at = |x: u32, y: u32| &p.rgba[((y * p.width + x) * 4) as usize..][..3];
        let mut checked = 0;
        for y in reach..p.height - reach {
            for x in reach..p.width - reach {
                let (fx, fy) = (px + x as f32, py + y as f32);
                if covered.iter().any(|&r| inside(r, fx + 0.5, fy + 0.5)) {
                    continue;
                }
                let got = img.get_pixel(fx as u32, fy as u32).0;
                for c in 0..3 {
                    let near = (y - reach..=y + reach).flat_map(|ny| (x - reach..=x + reach).map(move |nx| (nx, ny)));
                    let (lo, hi) = near.fold((255u8, 0u8), |(lo, hi), (nx, ny)| {
                        let v = at(nx, ny)[c];
                        (lo.min(v), hi.max(v))
                    });
                    let ok = got[c].saturating_add(tolerance) >= lo && got[c] <= hi.saturating_add(tolerance);
                    assert!(ok, "panel pixel ({x}, {y}) channel {c}: want {:?} (±{reach} px), got {got:?}", at(x, y));
                }
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} panel pixels were uncovered");
    }
}

#[test]
fn svg_has_escaped_text_colour_bar_and_provenance() {
    let fig = figure();
    let svg = to_svg(&fig);
    let tree = text::parse(&svg).unwrap_or_else(|e| panic!("usvg rejects the SVG: {e:#}"));
    let l = layout(&fig);
    assert_eq!((tree.size().width(), tree.size().height()), l.size);

    assert!(svg.contains("<text"), "text stays text");
    assert!(svg.contains(">a&amp;&lt;b</text>"), "panel title escaped");
    let cut = &l.panel_titles[1].text;
    assert!(cut.starts_with("Indi") && cut.ends_with('…'), "a long panel title is cut to the panel width: {cut}");
    assert!(svg.contains(&format!(">{cut}</text>")));
    assert!(svg.contains("Class &quot;A&quot; &amp; &lt;B&gt;"), "row label escaped");
    assert!(svg.contains("Attention of &lt;INTR&gt; &amp; friends"), "figure title escaped");
    assert!(
        svg.contains("class=\"footer\"") && svg.contains(">Model: tiny_postnorm_sine.pth</text>"),
        "the model is named"
    );
    assert!(svg.contains("id=\"colour-bar\""));
    assert!(svg.contains("id=\"scale-bar\""));
    // The 40 px panel shows a 400 px photo at 0.05 mm per pixel: 20 mm wide, so a 20 % bar is 5 mm.
    assert!(svg.contains(">5 mm</text>"), "{:?}", l.scale_bar);
    assert!(svg.contains(">4.56e-3</text>"), "hi tick in scientific notation");
    assert!(svg.contains("id=\"panel-2-image\"") && svg.contains("image-rendering=\"optimizeSpeed\""));
    assert!(svg.contains("data:image/png;base64,"));
    let json = serde_json::to_string(&fig.provenance).unwrap_or_default();
    let metadata = format!(
        "<metadata><intr:provenance xmlns:intr=\"https://github.com/Imageomics/INTR\">{}</intr:provenance></metadata>",
        text::escape(&json)
    );
    assert!(svg.contains(&metadata), "provenance in <metadata>");
    assert!(svg.contains("<desc>") && svg.contains(&text::escape(&json)));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("figure.svg");
    write(&fig, &path, Format::Svg, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), svg);
    assert_eq!(read_provenance(&path).unwrap_or_else(|e| panic!("{e:#}")), fig.provenance);
}

#[test]
fn png_holds_panel_pixels_scales_with_dpi_and_carries_provenance() {
    let fig = figure();
    let l = layout(&fig);
    let png = to_png(&fig, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    let img = image::load_from_memory(&png).unwrap_or_else(|e| panic!("{e}")).to_rgba8();
    assert_eq!((img.width() as f32, img.height() as f32), l.size);
    assert_panels_match(&fig, &img, 2, 0);
    // Without letters and scale bar every panel pixel is visible and exact.
    let bare = Figure { panel_letters: false, scale_bar: None, ..fig.clone() };
    let png_bare = to_png(&bare, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    let img_bare = image::load_from_memory(&png_bare).unwrap_or_else(|e| panic!("{e}")).to_rgba8();
    assert_panels_match(&bare, &img_bare, 2, 0);

    let double = to_png(&fig, 192.0).unwrap_or_else(|e| panic!("{e:#}"));
    let double = image::load_from_memory(&double).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(double.width(), 2 * img.width());
    assert_eq!(double.height(), 2 * img.height());

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("figure.png");
    write(&fig, &path, Format::Png, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(std::fs::read(&path).unwrap_or_default() == png, "the same figure gives the same bytes");
    assert_eq!(read_provenance(&path).unwrap_or_else(|e| panic!("{e:#}")), fig.provenance);
}

/// Runs `pdftoppm -png -r <dpi>` on `pdf` and decodes the single page it writes.
fn pdftoppm(pdf: &Path, dpi: u32) -> image::RgbaImage {
    let dir = pdf.parent().unwrap_or(Path::new("."));
    let prefix = dir.join(format!("page-{dpi}"));
    let status =
        Command::new("pdftoppm").args(["-png", "-r", &dpi.to_string()]).arg(pdf).arg(&prefix).status().unwrap_or_else(
            |e| panic!("pdftoppm could not be run ({e}); install poppler-utils, the PDF export test needs it"),
        );
    assert!(status.success(), "pdftoppm failed on {}: {status}", pdf.display());
    let page: PathBuf = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("page-{dpi}"))))
        .unwrap_or_else(|| panic!("pdftoppm wrote no page image"));
    assert!(std::fs::metadata(&page).map(|m| m.len()).unwrap_or(0) > 0, "empty page image");
    image::open(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display())).to_rgba8()
}

#[test]
fn pdf_renders_with_poppler_and_carries_provenance() {
    let fig = figure();
    let l = layout(&fig);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("figure.pdf");
    write(&fig, &path, Format::Pdf, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    let bytes = std::fs::read(&path).unwrap_or_default();
    assert!(bytes.starts_with(b"%PDF"));
    assert_eq!(read_provenance(&path).unwrap_or_else(|e| panic!("{e:#}")), fig.provenance);

    let page = pdftoppm(&path, 72);
    let (w, h) = (l.size.0 * 0.75, l.size.1 * 0.75);
    assert!(
        (page.width() as f32 - w).abs() <= 2.0 && (page.height() as f32 - h).abs() <= 2.0,
        "page {}×{} vs {w}×{h}",
        page.width(),
        page.height()
    );

    // At 96 dpi the panels land where they do in the PNG; poppler resamples images with a
    // sub-pixel offset, so each pixel is checked against its neighbourhood.
    let bare = Figure { panel_letters: false, scale_bar: None, ..fig.clone() };
    let path = dir.path().join("bare.pdf");
    write(&bare, &path, Format::Pdf, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    let page = pdftoppm(&path, 96);
    assert_panels_match(&bare, &page, 3, 1);
}

#[test]
fn write_into_missing_directory_fails_naming_the_path_and_leaves_nothing() {
    let fig = figure();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("missing").join("figure.png");
    let err = write(&fig, &path, Format::Png, 96.0).err().unwrap_or_else(|| panic!("writing succeeded"));
    assert!(format!("{err:#}").contains(&path.display().to_string()), "error names the path: {err:#}");
    assert_eq!(std::fs::read_dir(dir.path()).map(Iterator::count).unwrap_or(99), 0, "nothing left behind");
}

#[test]
fn write_over_existing_file_replaces_it_whole() {
    let fig = figure();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("figure.svg");
    std::fs::write(&path, vec![b'x'; 4 << 20]).unwrap_or_else(|e| panic!("{e}"));
    write(&fig, &path, Format::Svg, 96.0).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), to_svg(&fig));
    let count = std::fs::read_dir(dir.path()).map(Iterator::count).unwrap_or(0);
    assert_eq!(count, 1, "no temporary file left next to it");
}

#[test]
fn invalid_figures_are_errors_not_panics() {
    let mut fig = figure();
    fig.panels[1].rgba.pop();
    let err = to_png(&fig, 96.0).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("panel 2"), "{err}");
    assert!(to_svg(&fig).contains("fill=\"#cccccc\""), "a placeholder instead of the bad panel");
    assert!(to_png(&figure(), 0.0).is_err());
    assert!(to_pdf(&Figure::default()).is_err());
}

#[test]
fn unequal_panels_share_the_widest_cell_and_long_titles_are_cut() {
    let mut fig = figure();
    fig.panels[1] = Panel { rgba: vec![255; 80 * 20 * 4], width: 80, height: 20, ..fig.panels[1].clone() };
    fig.panels[0].title = "A very long class name that cannot possibly fit above forty pixels".to_owned();
    let l = layout(&fig);
    assert_eq!((l.panel_rects[0].2, l.panel_rects[0].3), (80.0, 60.0));
    assert_eq!((l.panel_rects[1].2, l.panel_rects[1].3), (80.0, 20.0));
    assert!(l.panel_titles[0].text.ends_with('…'));
    assert!(text::text_width(&l.panel_titles[0].text, 12.0, false) <= 80.0);
}

#[test]
fn numbers_lengths_and_letters_format() {
    assert_eq!(format_tick(0.0), "0");
    assert_eq!(format_tick(1.0), "1");
    assert_eq!(format_tick(0.5), "0.5");
    assert_eq!(format_tick(62.437), "62.4");
    assert_eq!(format_tick(0.012_34), "0.0123");
    assert_eq!(format_tick(0.001_234_5), "1.23e-3");
    assert_eq!(format_tick(-2.5e-5), "-2.5e-5");
    assert_eq!(format_tick(1234.7), "1235");
    assert_eq!(nice_length(0.8), 1.0);
    assert_eq!(nice_length(3.5), 5.0);
    assert_eq!(nice_length(0.03), 0.02);
    assert_eq!(format_length(0.2, "mm"), "200 µm");
    assert_eq!(format_length(2000.0, "µm"), "2 mm");
    assert_eq!(format_length(5.0, "mm"), "5 mm");
    assert_eq!(panel_letter(0), "a");
    assert_eq!(panel_letter(25), "z");
    assert_eq!(panel_letter(26), "aa");
    assert_eq!(Format::from_path(Path::new("x/Fig.PDF")), Some(Format::Pdf));
    assert_eq!(Format::from_path(Path::new("fig.jpg")), None);
    assert_eq!(Format::Png.extension(), "png");
}

#[test]
fn sha256_file_streams_the_known_digest() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("abc.txt");
    std::fs::write(&path, b"abc").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        crate::files::sha256_file(&path).unwrap_or_default(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let missing = dir.path().join("missing.bin");
    let err = crate::files::sha256_file(&missing).err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(err.contains(&missing.display().to_string()));
}
