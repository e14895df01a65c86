//! `explain` on the command line: its flags, checked by their parsers; then the plan is checked
//! against the model ([`crate::batch::Plan`]) before any photo is read, and run.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::{ModelArgs, count, pixels, positive, unit_interval};
use crate::batch::plan::{Heads, Output, Remake, Scale, Shard, Width};
use crate::batch::remake::Recipe;
use crate::batch::{self, Plan, Request};
use crate::figure::{Format, View};
use crate::overlay::Look;
use crate::overlay::colormap::{Colormap, Interpolation, Normalization};
use crate::session::{Session, inputs};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Photos and folders of photos (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Which class to explain: top1, top3 (one figure each), or a class name (CUB spellings such
    /// as `Painted_Bunting` or `016.Painted_Bunting` work too).
    #[arg(long, default_value = "top1")]
    pub class: String,
    /// Decoder layer, 1-based (default: the last).
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    pub layer: Option<usize>,
    /// Heads to show: `all` or a comma list of 1-based heads (`1,4`); the head mean is always added.
    #[arg(long, default_value = "all")]
    pub heads: Heads,
    /// Also write a comparison figure of these classes (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<String>,
    /// Also write, for each explained class, a figure of where it looks differently from another
    /// class: `runner-up` (the photo's best other class, its closest look-alike) or a class name
    /// (where that is the class explained, its runner-up).
    /// Per head, the first class's attention minus the second's, on one symmetric red–blue scale.
    #[arg(long)]
    pub contrast: Option<String>,
    /// Also write a specimen sheet per explained class: its heads and their mean (columns) on
    /// every photo that explains it (rows), 24 photos to a sheet (`sheet__CLASS.svg`).
    #[arg(long)]
    pub sheet: bool,
    #[arg(long, value_enum, default_value_t = Colormap::Viridis)]
    pub colormap: Colormap,
    #[arg(long, value_enum, default_value_t = Normalization::PerMap)]
    pub normalisation: Normalization,
    #[arg(long, value_enum, default_value_t = Interpolation::Bilinear)]
    pub interpolation: Interpolation,
    /// Overlay opacity, 0–1.
    #[arg(long, default_value_t = 0.6, value_parser = unit_interval, allow_negative_numbers = true)]
    pub opacity: f32,
    /// Normalised values below this are transparent, 0–1.
    #[arg(long, default_value_t = 0.0, value_parser = unit_interval, allow_negative_numbers = true)]
    pub threshold: f32,
    /// The official renderer's look: OpenCV JET, bicubic, median + Gaussian blur, 50 % blend.
    #[arg(long)]
    pub paper_style: bool,
    /// The official renderer's median + Gaussian blur with any colormap and normalisation (the
    /// threshold does not apply).
    #[arg(long)]
    pub official_blur: bool,
    #[arg(long, value_enum, default_value_t = Format::Svg)]
    pub format: Format,
    /// Resolution of PNG output.
    #[arg(long, default_value_t = 150.0, value_parser = positive, allow_negative_numbers = true)]
    pub dpi: f32,
    /// Panel width in pixels (default: the photo's width, at most 480).
    #[arg(long, value_parser = pixels, allow_negative_numbers = true)]
    pub panel_width: Option<u32>,
    /// Scale bar: size of one photo pixel, e.g. `0.05mm` or `12µm` (also `um`).
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<Scale>,
    /// Figure title (default: the class, for a figure of one class's heads).
    #[arg(long)]
    pub title: Option<String>,
    /// Figure caption.
    #[arg(long)]
    pub caption: Option<String>,
    /// The printed width of the figures, e.g. `180mm`, `8.5cm` or `7in` (default: their natural
    /// size, at most 180 mm, a journal's page width). PNG pixels = width × --dpi.
    #[arg(long)]
    pub width: Option<Width>,
    /// Put the plain photo before the attention panels.
    #[arg(long)]
    pub photo_panel: bool,
    /// No class, probability, layer or head labels on the figures.
    #[arg(long)]
    pub no_labels: bool,
    /// No panel letters.
    #[arg(long)]
    pub no_letters: bool,
    /// Output folder.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Process only shard K of N (`K/N`, 1-based): photos K, K+N, K+2N… of the sorted list.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Redo photos whose outputs exist.
    #[arg(long)]
    pub force: bool,
    /// Print the peak resident memory at the end (Linux).
    #[arg(long)]
    pub report_peak_rss: bool,
}

impl ExplainArgs {
    fn look(&self) -> Look {
        if self.paper_style {
            return Look::paper_style();
        }
        Look {
            colormap: self.colormap,
            normalization: self.normalisation,
            threshold: self.threshold,
            interpolation: self.interpolation,
            opacity: self.opacity,
            official_blur: self.official_blur,
        }
    }

    /// The command that re-makes a figure of this run, around the figure's own view.
    fn remake(&self, model: &Path) -> Remake {
        let config = &self.model.config;
        Recipe {
            model: model.to_path_buf(),
            classes: self.model.classes.clone(),
            nheads: config.nheads,
            dilation: config.dilation,
            config: config.config.clone(),
            no_exif_orientation: self.model.no_exif_orientation,
            heads: self.heads.to_string(),
            look: self.look(),
            format: self.format,
            dpi: self.dpi,
            panel_width: self.panel_width,
            scale: self.scale.as_ref().map(ToString::to_string),
            title: self.title.clone(),
            caption: self.caption.clone(),
            width: self.width.as_ref().map(ToString::to_string),
            photo_panel: self.photo_panel,
            labels: !self.no_labels,
            letters: !self.no_letters,
            out: self.out.clone(),
        }
        .remake()
    }
}

/// The session and the checked plan of `a`, before any photo is read.
fn plan_of(a: &ExplainArgs) -> Result<(Session, Plan)> {
    let files = inputs::expand_nonempty(&a.inputs)?;
    let s = super::open_session(&a.model.spec()?)?;
    let request = Request {
        class: a.class.clone(),
        layer: a.layer,
        heads: a.heads.clone(),
        compare: a.compare.clone(),
        contrast: a.contrast.clone(),
        sheet: a.sheet,
        shard: a.shard.unwrap_or(Shard::ALL),
        output: Output {
            look: a.look(),
            format: a.format,
            dpi: a.dpi,
            panel_width: a.panel_width,
            scale: a.scale.clone(),
            title: a.title.clone(),
            caption: a.caption.clone(),
            out: a.out.clone(),
            force: a.force,
            remake: a.remake(s.path()),
            photo_panel: a.photo_panel,
            width_mm: a.width.as_ref().map(|w| w.mm),
            labels: !a.no_labels,
            letters: !a.no_letters,
        },
    };
    let plan = Plan::new(request, files, &s)?;
    if let (crate::batch::plan::ClassPick::One(c), Some(crate::batch::plan::ContrastPick::Class(k))) =
        (plan.classes, plan.contrast)
        && c == k
    {
        eprintln!(
            "note: --contrast {}: that is the class explained; each photo's runner-up is contrasted with it instead",
            s.class_names()[k]
        );
    }
    Ok((s, plan))
}

/// Makes the figure of `view` that the recorded command `a` made, and writes only it, to `dest`.
pub fn remake(
    a: &ExplainArgs,
    view: &View,
    head_names: Option<crate::session::head_names::HeadNames>,
    dest: &Path,
) -> Result<i32> {
    let (s, mut plan) = plan_of(a)?;
    // The names the figure was drawn with, not those given since.
    plan.head_names = head_names.unwrap_or_default();
    batch::remake_figure(&plan, &s, a.model.preprocess_options(), view, dest)?;
    eprintln!("wrote {}", dest.display());
    Ok(0)
}

/// Runs `explain`: exit code 1 if any photo failed.
pub fn explain(a: &ExplainArgs) -> Result<i32> {
    let (s, plan) = plan_of(a)?;
    let pb = indicatif::ProgressBar::new(plan.mine.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "explaining {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let outcome = batch::run(
        &plan,
        &s,
        a.model.preprocess_options(),
        |k, stem| {
            pb.set_position(k as u64);
            pb.set_message(stem.to_string());
        },
        |msg| pb.suspend(|| eprintln!("error: {msg}")),
    )?;
    pb.finish_and_clear();
    let count = |n: usize| if n == 1 { "1 photo".to_string() } else { format!("{n} photos") };
    let shard = if a.shard.is_some() { format!(" ({} in this shard)", outcome.in_shard) } else { String::new() };
    let sheets = match outcome.sheets {
        0 => String::new(),
        1 => "; 1 specimen sheet (sheet__…)".to_string(),
        n => format!("; {n} specimen sheets (sheet__…)"),
    };
    eprintln!(
        "{}{shard}: {} made, {} reused (same photo and options), {} failed{sheets}; summary in {}",
        count(outcome.photos),
        outcome.made,
        outcome.reused,
        outcome.failed,
        plan.output.out.join("summary.csv").display()
    );
    if a.report_peak_rss
        && let Some(b) = super::output::peak_rss_bytes()
    {
        eprintln!("peak RSS: {:.1} MB", b as f64 / 1e6);
    }
    Ok(i32::from(outcome.failed > 0))
}
