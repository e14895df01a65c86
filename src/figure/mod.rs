//! Publication figures of INTR attention overlays, composed without the GPU: one [`Figure`]
//! description (raster panels, labels, colour bar, scale bar, provenance) renders to SVG, PDF or PNG.
//!
//! The SVG is the single source: PNG is that SVG rasterised with resvg, PDF is it converted with
//! svg2pdf, and all three carry the provenance map so a figure can be re-made from its metadata
//! ([`read_provenance`]). Only the bundled DejaVu fonts are used, so output is identical on every
//! machine.

pub mod compose;
mod layout;
pub mod provenance;
mod raster;
mod readback;
pub mod sheet;
mod svg;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub use compose::{FigureOptions, View, compose};
pub use layout::{Layout, Rect, ScaleBarLayout, TextLine, fit_to_print, fit_to_width, layout};
pub use provenance::{Source, look_provenance};
pub use raster::{to_pdf, to_png};
pub use readback::{read_provenance, read_provenance_bytes};
pub use sheet::{SheetRow, compose_sheet};
pub use svg::to_svg;

/// One raster panel: the photo with its overlay already composited, as the app draws it.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// RGBA8 pixels, row-major, `width * height * 4` bytes, straight (not premultiplied) alpha.
    /// Translucent pixels are composited over the figure's white background.
    pub rgba: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// First line above the panel, e.g. "Painted Bunting · 62.4 % · rank 1"; cut with "…" if wider
    /// than the panel. Empty for none.
    pub title: String,
    /// Second line above the panel, e.g. "layer 6 · head 3". Empty for none.
    pub subtitle: String,
}

/// The colour scale of the overlays, drawn as a vertical bar at the right of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct ColourBar {
    /// sRGB colours; entry `i` is the colour of value `i / 255` of the normalised range.
    pub lut: [[u8; 3]; 256],
    /// The value at the bottom of the bar (LUT entry 0).
    pub lo: f32,
    /// The value at the top of the bar (LUT entry 255).
    pub hi: f32,
    /// What the colours mean, e.g. "attention, min–max of each map".
    pub label: String,
    /// The colormap's name, e.g. "viridis"; shown after the label. Empty for none.
    pub colormap: String,
}

/// A physical scale for the photo, drawn in the first panel's bottom-right corner.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleBar {
    /// Physical length of one pixel of the original photo, in `unit`.
    pub units_per_pixel: f64,
    /// The unit, e.g. "mm" or "µm".
    pub unit: String,
    /// Width of the original photo in pixels; the first panel shows the whole photo width.
    pub photo_width: u32,
}

/// A figure: a grid of panels with optional labels, colour bar, scale bar and provenance.
///
/// Lengths are SVG user units (CSS px): at 96 dpi one unit is one output pixel, and panels are
/// drawn at their native size when all panels have the same size.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Figure {
    /// Bold line at the top.
    pub title: Option<String>,
    /// A line under the title (the class, when the user gave the title).
    pub subtitle: Option<String>,
    /// The printed width in millimetres; `None`: the natural size, at most [`MAX_WIDTH_MM`].
    pub width_mm: Option<f32>,
    /// The scale panels are drawn at (their pixels kept whole); `None`: one unit per pixel. Set by
    /// [`fit_to_width`] so that a figure fits its width with its text at full size.
    pub panel_scale: Option<f32>,
    /// Text at the bottom, wrapped to the figure width.
    pub caption: Option<String>,
    /// A small grey line under the caption saying what made the figure (the model).
    pub footer: Option<String>,
    /// The panels, laid out row-major.
    pub panels: Vec<Panel>,
    /// Panels per row (at least 1).
    pub columns: usize,
    /// One label per row, drawn in a column at the left (e.g. class name and probability); empty for
    /// none. A label may contain `\n` for more lines.
    pub row_labels: Vec<String>,
    /// Letters a, b, c… in the panels' top-left corners.
    pub panel_letters: bool,
    /// The colour scale, if the panels carry a colour-mapped overlay.
    pub colour_bar: Option<ColourBar>,
    /// A physical scale bar on the first panel.
    pub scale_bar: Option<ScaleBar>,
    /// Everything needed to re-make the figure (app version, model and image sha256, class, layer,
    /// heads, normalisation, colormap, threshold, interpolation, …). Written to every format.
    pub provenance: BTreeMap<String, String>,
}

/// The widest a figure is printed unless asked otherwise: a journal's full page width.
pub const MAX_WIDTH_MM: f32 = 180.0;

/// An output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Scalable vector graphics: text stays text, panels are embedded PNGs.
    Svg,
    /// PDF 1.7, one page, text embedded with a subset of the bundled font.
    Pdf,
    /// PNG at a chosen resolution.
    Png,
}

impl Format {
    /// The file-name extension, without the dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Pdf => "pdf",
            Format::Png => "png",
        }
    }

    /// The format a path's extension names (case-insensitive), if any.
    #[must_use]
    pub fn from_path(p: &Path) -> Option<Format> {
        let ext = p.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(Format::Svg),
            "pdf" => Some(Format::Pdf),
            "png" => Some(Format::Png),
            _ => None,
        }
    }
}

/// Name and version written as the creator of every file.
#[must_use]
pub fn creator() -> String {
    format!("INTR Explorer {}", env!("CARGO_PKG_VERSION"))
}

/// Checks what [`to_svg`] cannot report itself (it draws a placeholder for a bad panel instead).
pub fn validate(fig: &Figure) -> Result<()> {
    if fig.panels.is_empty() {
        bail!("the figure has no panels");
    }
    for (i, p) in fig.panels.iter().enumerate() {
        if p.width == 0 || p.height == 0 {
            bail!("panel {}: empty image ({}×{})", i + 1, p.width, p.height);
        }
        let expected = u64::from(p.width) * u64::from(p.height) * 4;
        if p.rgba.len() as u64 != expected {
            bail!(
                "panel {}: {} RGBA bytes for {}×{} pixels (expected {expected})",
                i + 1,
                p.rgba.len(),
                p.width,
                p.height
            );
        }
    }
    if let Some(cb) = &fig.colour_bar
        && !(cb.lo.is_finite() && cb.hi.is_finite())
    {
        bail!("colour bar: the range {}..{} is not finite", cb.lo, cb.hi);
    }
    if let Some(sb) = &fig.scale_bar
        && !(sb.units_per_pixel.is_finite() && sb.units_per_pixel > 0.0 && sb.photo_width > 0)
    {
        bail!(
            "scale bar: {} {} per pixel of a {} px wide photo is not a usable scale",
            sb.units_per_pixel,
            sb.unit,
            sb.photo_width
        );
    }
    Ok(())
}

/// Renders `fig` as `format` and writes it to `path` atomically: the file appears complete or not at
/// all, and an existing file is replaced whole. `dpi` is used for PNG only.
pub fn write(fig: &Figure, path: &Path, format: Format, dpi: f32) -> Result<()> {
    let bytes = match format {
        Format::Svg => {
            validate(fig)?;
            to_svg(fig).into_bytes()
        }
        Format::Pdf => to_pdf(fig)?,
        Format::Png => to_png(fig, dpi)?,
    };
    crate::files::write_atomic(path, |tmp| {
        std::fs::write(tmp, &bytes).with_context(|| format!("{}: cannot write", tmp.display()))
    })
    .with_context(|| format!("cannot write the figure to {}", path.display()))
}
