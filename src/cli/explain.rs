//! `explain` on the command line: its flags, checked by their parsers; then the plan is checked
//! against the model ([`crate::batch::Plan`]) before any photo is read, and run.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use super::{ModelArgs, count, pixels, positive, unit_interval};
use crate::batch::plan::{Heads, Output, Remake, Scale, Shard, Width};
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
            official_blur: false,
        }
    }

    /// The command that re-makes a figure of this run, around the figure's own view.
    fn remake(&self, model: &std::path::Path) -> Remake {
        let mut head: Vec<String> = vec!["explain".into(), "--model".into(), model.display().to_string()];
        if let Some(c) = &self.model.classes {
            head.extend(["--classes".into(), c.display().to_string()]);
        }
        // How the model and photos are read, so that a re-made figure reads them the same way.
        let config = &self.model.config;
        if let Some(n) = config.nheads {
            head.extend(["--nheads".into(), n.to_string()]);
        }
        if let Some(d) = config.dilation {
            head.extend(["--dilation".into(), d.to_string()]);
        }
        if let Some(f) = &config.config {
            head.extend(["--config".into(), f.display().to_string()]);
        }
        if self.model.no_exif_orientation {
            head.push("--no-exif-orientation".into());
        }
        let mut tail: Vec<String> = Vec::new();
        let mut push = |k: &str, v: String| tail.extend([k.to_string(), v]);
        push("--heads", self.heads.to_string());
        if self.paper_style {
            push("--paper-style", String::new());
        } else {
            push("--colormap", value_name(&self.colormap));
            push("--normalisation", value_name(&self.normalisation));
            push("--interpolation", value_name(&self.interpolation));
            push("--opacity", self.opacity.to_string());
            push("--threshold", self.threshold.to_string());
        }
        push("--format", self.format.extension().to_string());
        push("--dpi", self.dpi.to_string());
        if let Some(w) = self.panel_width {
            push("--panel-width", w.to_string());
        }
        if let Some(sc) = &self.scale {
            push("--scale", sc.to_string());
        }
        if let Some(t) = self.title.as_ref().filter(|t| !t.is_empty()) {
            push("--title", t.clone());
        }
        if let Some(c) = self.caption.as_ref().filter(|c| !c.is_empty()) {
            push("--caption", c.clone());
        }
        if let Some(w) = &self.width {
            push("--width", w.to_string());
        }
        if self.photo_panel {
            push("--photo-panel", String::new());
        }
        push("--out", self.out.display().to_string());
        Remake { head, tail }
    }
}

/// The command-line spelling of an option's value.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// The session and the checked plan of `a`, before any photo is read.
fn plan_of(a: &ExplainArgs) -> Result<(Session, Plan)> {
    let files = inputs::expand_nonempty(&a.inputs)?;
    let s = Session::open(&a.model.spec()?)?;
    let request = Request {
        class: a.class.clone(),
        layer: a.layer,
        heads: a.heads.clone(),
        compare: a.compare.clone(),
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
        },
    };
    let plan = Plan::new(request, files, &s)?;
    Ok((s, plan))
}

/// Makes the figure of `view` that the recorded command `a` made, and writes only it, to `dest`.
pub fn remake(a: &ExplainArgs, view: &View, dest: &Path) -> Result<i32> {
    let (s, plan) = plan_of(a)?;
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
    eprintln!(
        "{} photos ({} in this shard): {} made, {} reused (same photo and options), {} failed; summary in {}",
        outcome.photos,
        outcome.in_shard,
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
