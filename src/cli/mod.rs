//! Command-line interface: clap arguments, validated by their parsers, into session and batch
//! calls. Each subcommand lives in its own module and returns `anyhow::Result`; `main` prints the
//! error chain once and exits 1, or 2 for a usage error ([`exit_code`]).

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($t)*)?
    }};
}

mod bench;
mod commands;
mod demo;
mod explain;
mod models;
mod output;

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::image::preprocess::PreprocessOptions;
use crate::intr::ConfigOverrides;
use crate::session::ModelSpec;

/// INTR Explorer: rank the classes of a photo with an INTR model and see where each class's
/// attention heads looked.
#[derive(Debug, Parser)]
#[command(name = "intr-explorer", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// With no subcommand: the desktop explorer.
#[derive(Debug, Args, Clone, Default)]
pub struct WindowArgs {
    /// Open the explorer on these files: a checkpoint and/or photos and folders of photos (default:
    /// the bundled demo model and its images).
    pub paths: Vec<PathBuf>,
    /// Class names for the model (as `--classes` of the subcommands).
    #[arg(long, short = 'c')]
    pub classes: Option<PathBuf>,
    /// Show this class first (a class name; CUB spellings work too), instead of the top class.
    #[arg(long)]
    pub class: Option<String>,
    /// Show this head first (1-based), instead of the mean of the heads.
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    pub head: Option<usize>,
    /// Show this decoder layer first (1-based), instead of the last.
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    pub layer: Option<usize>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the top classes of each image.
    Predict(PredictArgs),
    /// Write logits and every cross-attention map of one image to a safetensors file.
    Attention(AttentionArgs),
    /// Rank a class's heads: which of the last layer's heads the decision rests on, in order
    /// (greedy cumulative evening, as Prompt-CAM ranks heads).
    Heads(HeadsArgs),
    /// Name heads ("head 3 = crown"), per model and optionally per class: list, set, clear, export,
    /// import. Names show in the window, figures and summaries.
    HeadNames(HeadNamesArgs),
    /// Where each head looks, over a folder of photos with part annotations (CUB's keypoints or the
    /// generated birds' masks): a head × part table of hit rates with a suggested name per head.
    Parts(PartsArgs),
    /// Describe a checkpoint (configuration, classes, parameters, training args) without loading it.
    Inspect(InspectArgs),
    /// Convert a checkpoint to a weights-only safetensors file that carries its configuration.
    Convert(ConvertArgs),
    /// Benchmarks: `forward` times the full-size official model, `memory` measures `predict`'s peak
    /// memory on a full-size official-format checkpoint.
    Bench(bench::BenchArgs),
    /// Generate the fine-grained dataset of drawn birds (species differ in exactly one part).
    Synth(demo::SynthArgs),
    /// Train an INTR model on an ImageFolder dataset with candle (CPU), resumably.
    Train(demo::TrainArgs),
    /// Accuracy and attention faithfulness (object mass, part pointing, head diversity, deletion)
    /// on held-out generated images.
    Eval(demo::EvalArgs),
    /// Figures (SVG, PDF, PNG) and a summary (CSV, JSON) for many photos; shardable, resumable.
    Explain(Box<explain::ExplainArgs>),
    /// Re-make a figure from the provenance stored in it (SVG, PNG or PDF).
    Remake(RemakeArgs),
    /// List the official INTR checkpoints and which are downloaded.
    Models,
    /// Download an official checkpoint by name (`cub`), or any file of a Hub repository, into the
    /// Hugging Face cache: resumable, verified (size and SHA-256).
    Download(models::DownloadArgs),
}

#[derive(Debug, Args)]
pub struct RemakeArgs {
    /// A figure written by `explain`.
    pub figure: PathBuf,
    /// Where to write the figure: a file, or a folder to write it into under its own name (default:
    /// the figure itself, replaced). Nothing else of its batch is touched.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// Which model to use and how to read it.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint: an official INTR `.pth` or a `.safetensors` made by `convert` or `train`, or a
    /// catalogued official model by name (`cub`, `birds-525`, `butterfly`: see `models`; downloaded
    /// on first use) (default: the bundled demo model).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Class names: CUB `classes.txt`, one name per line, or a dataset folder (sorted sub-folders).
    #[arg(long, short = 'c')]
    pub classes: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Keep the pixel order stored in the file (ignore EXIF orientation), exactly as the official
    /// PIL pipeline does.
    #[arg(long)]
    pub no_exif_orientation: bool,
}

/// Explicit configuration for checkpoints that do not carry their training args.
#[derive(Debug, Args, Clone, Default)]
pub struct ConfigArgs {
    /// Number of attention heads (not recoverable from the weights).
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    pub nheads: Option<usize>,
    /// Whether the last ResNet stage is dilated (not recoverable from the weights).
    #[arg(long, value_name = "true|false")]
    pub dilation: Option<bool>,
    /// JSON file with any of: hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward,
    /// num_queries, pre_norm, position_embedding ("sine"|"learned"), dilation, dilation_stage3.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ModelArgs {
    /// The session's model specification.
    pub fn spec(&self) -> anyhow::Result<ModelSpec> {
        if let Some(m) = &self.model {
            models::ensure_downloaded(m)?;
        }
        Ok(ModelSpec { path: self.model.clone(), classes: self.classes.clone(), overrides: self.config.overrides()? })
    }

    /// How photos are read.
    #[must_use]
    pub fn preprocess_options(&self) -> PreprocessOptions {
        PreprocessOptions { apply_orientation: !self.no_exif_orientation, ..PreprocessOptions::default() }
    }
}

impl ConfigArgs {
    /// Flags win over the config file.
    pub fn overrides(&self) -> anyhow::Result<ConfigOverrides> {
        let flags = ConfigOverrides { nheads: self.nheads, dilation: self.dilation, ..Default::default() };
        Ok(match &self.config {
            Some(p) => flags.or(&ConfigOverrides::from_json_file(p)?),
            None => flags,
        })
    }
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// How many classes to show per image.
    #[arg(long, short = 'k', default_value_t = 5, value_parser = count, allow_negative_numbers = true)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the process's peak resident memory to stderr at the end (Linux).
    #[arg(long, hide = true)]
    pub report_peak_rss: bool,
    /// Image files and folders of images (searched recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The class whose heads to rank (a name, any case, CUB spellings accepted); default: the
    /// photo's top class.
    #[arg(long)]
    pub class: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Image file.
    pub image: PathBuf,
}

#[derive(Debug, Args)]
pub struct PartsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The annotated folder: CUB-200-2011's layout (images.txt, parts/parts.txt, parts/part_locs.txt,
    /// images/; image_class_labels.txt if present) or a generated dataset (`synth`: dataset.json, masks/).
    #[arg(long)]
    pub data: PathBuf,
    /// A CUB keypoint counts when it lies within this many photo pixels of a head's peak
    /// (default: one attention-grid cell).
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    pub radius: Option<f32>,
    /// Score at most this many photos (the first ones listed).
    #[arg(long, value_parser = count, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// Also draw the table as a figure (SVG, PDF or PNG by the extension).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Keep the suggested names as the model's head names (for every class).
    #[arg(long)]
    pub take_names: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HeadNamesArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(subcommand)]
    pub action: HeadNamesAction,
}

#[derive(Debug, Subcommand)]
pub enum HeadNamesAction {
    /// Print the model's head names.
    List,
    /// Name a head (1-based) for every class, or with --class for one.
    Set {
        head: usize,
        name: String,
        #[arg(long)]
        class: Option<String>,
    },
    /// Remove a head's name (for every class, or with --class for one).
    Clear {
        head: usize,
        #[arg(long)]
        class: Option<String>,
    },
    /// Write the model's head names to a JSON file (with the model's SHA-256).
    Export { file: PathBuf },
    /// Read head names exported for this model and keep them.
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image file.
    pub image: PathBuf,
    /// Output `.safetensors` file.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint to describe.
    pub model: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input checkpoint (`.pth` or `.safetensors`).
    pub input: PathBuf,
    /// Output `.safetensors` file.
    pub output: PathBuf,
    /// Class names to store in the output.
    #[arg(long, short = 'c')]
    pub classes: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A value in [0, 1] (opacity, threshold).
fn unit_interval(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to 1, got {s:?}")),
    }
}

/// A whole number from 1 (a count, a 1-based layer or head).
fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("expected a whole number from 1, got {s:?}")),
    }
}

/// A width in pixels, from 1.
fn pixels(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("expected a whole number of pixels from 1, got {s:?}")),
    }
}

/// A positive finite number (DPI).
fn positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

/// A usage error found after parsing: printed like clap's, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether `e` is a write to a closed pipe (the reader went away: not an error worth reporting).
#[must_use]
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The exit code of a failed run: 2 for a usage error (a bad flag value, a class, layer or head the
/// model does not have, no photos), 1 otherwise.
#[must_use]
pub fn exit_code(e: &anyhow::Error) -> i32 {
    let usage = e.chain().any(|c| {
        c.downcast_ref::<UsageError>().is_some()
            || matches!(c.downcast_ref::<crate::Error>(), Some(crate::Error::Request(_)))
    });
    if usage { 2 } else { 1 }
}

/// Makes a figure again from the command and view recorded in its provenance, and writes only
/// that figure (see [`RemakeArgs::out`]).
fn remake(a: &RemakeArgs) -> anyhow::Result<i32> {
    let fig = a.figure.display();
    let prov = crate::figure::read_provenance(&a.figure)?;
    let json = prov
        .get("remake_args")
        .ok_or_else(|| anyhow::anyhow!("{fig}: the figure's provenance has no command to re-make it"))?;
    let mut args: Vec<String> =
        serde_json::from_str(json).map_err(|e| anyhow::anyhow!("{fig}: the recorded command is damaged: {e}"))?;
    let view: crate::figure::View = prov
        .get("view")
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| anyhow::anyhow!("{fig}: the figure's provenance does not say which view it shows"))?;
    args.insert(0, "intr-explorer".into());
    let Some(Command::Explain(e)) = Cli::try_parse_from(&args)?.command else {
        anyhow::bail!("{fig}: the recorded command is not an `explain` run");
    };
    if let Some(photo) = e.inputs.iter().find(|p| !p.exists()) {
        anyhow::bail!(
            "{fig}: the photo it was made from, {}, is not there (a relative path is read from the folder \
             `explain` ran in: run `remake` from there)",
            photo.display()
        );
    }
    let dest = match &a.out {
        Some(o) if o.is_dir() => o.join(a.figure.file_name().unwrap_or_default()),
        Some(o) => o.clone(),
        None => a.figure.clone(),
    };
    let head_names = match prov.get("head_names") {
        Some(j) => Some(
            serde_json::from_str(j).map_err(|e| anyhow::anyhow!("{fig}: the recorded head names are damaged: {e}"))?,
        ),
        None => None,
    };
    explain::remake(&e, &view, head_names, &dest)
}

/// A first word that names no file and looks like a command (no dot, no slash) is a mistyped
/// subcommand: the error names the closest one.
fn mistyped_command(paths: &[PathBuf]) -> Option<UsageError> {
    let first = paths.first()?;
    let word = first.to_str()?;
    if Path::new(word).exists() || word.contains(['.', '/', '\\']) {
        return None;
    }
    let names: Vec<String> = Cli::command().get_subcommands().map(|c| c.get_name().to_string()).collect();
    let best = names
        .iter()
        .map(|n| (strsim::jaro_winkler(n, &word.to_lowercase()), n))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score >= 0.7);
    let hint = match best {
        Some((_, n)) => format!("; did you mean `{n}`?"),
        None => format!("; the commands are {}", names.join(", ")),
    };
    Some(UsageError(format!(
        "no such command `{word}`{hint} (a file to open would be a path that exists; see `intr-explorer --help`)"
    )))
}

/// The window, on what the command line named.
fn window(mut w: WindowArgs) -> anyhow::Result<i32> {
    // A catalogued model's name (`intr-explorer cub photo.jpg`) is the model, downloaded first.
    if let Some(first) = w.paths.first()
        && !first.exists()
        && crate::hub::catalogue::find(&first.to_string_lossy()).is_some()
    {
        models::ensure_downloaded(first)?;
        let name = w.paths.remove(0);
        w.paths.insert(0, crate::hub::catalogued_path(&name.to_string_lossy(), &crate::hub::HubEnv::from_env())?);
    }
    if let Some(e) = mistyped_command(&w.paths) {
        return Err(e.into());
    }
    #[cfg(feature = "gui")]
    {
        // A saved session opens the exact view it holds.
        if let Some(i) = w.paths.iter().position(|p| crate::session::saved::SavedSession::is_session_file(p)) {
            let session = Some(w.paths.remove(i));
            return crate::gui::run(crate::gui::Start { session, ..Default::default() }).map(|()| 0);
        }
        let (models, images): (Vec<PathBuf>, Vec<PathBuf>) =
            w.paths.into_iter().partition(|p| crate::gui::is_model_path(p));
        let model = models.into_iter().next();
        let model = (model.is_some() || w.classes.is_some()).then(|| ModelSpec {
            path: model,
            classes: w.classes,
            overrides: ConfigOverrides::default(),
        });
        let focus = crate::gui::worker::FocusRequest { class: w.class, head: w.head, layer: w.layer };
        crate::gui::run(crate::gui::Start { model, images, focus, session: None }).map(|()| 0)
    }
    #[cfg(not(feature = "gui"))]
    {
        let _ = w;
        Cli::command().print_help()?;
        Ok(2)
    }
}

/// Opens the session of a subcommand, warning on stderr where a file named like an official
/// checkpoint is not one.
fn open_session(spec: &ModelSpec) -> crate::Result<crate::session::Session> {
    let s = crate::session::Session::open(spec)?;
    if let Some(w) = s.catalogue_mismatch() {
        eprintln!("warning: {w}");
    }
    if let Some(n) = s.names_note() {
        eprintln!("note: {n}");
    }
    Ok(s)
}

/// Parses the command line and runs it. Returns the process exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Predict(a)) => commands::predict(&a),
        Some(Command::Attention(a)) => commands::attention(&a).map(|()| 0),
        Some(Command::Heads(a)) => commands::heads(&a).map(|()| 0),
        Some(Command::Parts(a)) => commands::parts(&a),
        Some(Command::HeadNames(a)) => commands::head_names(&a).map(|()| 0),
        Some(Command::Inspect(a)) => commands::inspect(&a).map(|()| 0),
        Some(Command::Convert(a)) => commands::convert(&a).map(|()| 0),
        Some(Command::Bench(a)) => bench::run(&a).map(|()| 0),
        Some(Command::Synth(a)) => demo::synth(&a).map(|()| 0),
        Some(Command::Train(a)) => demo::train(&a).map(|()| 0),
        Some(Command::Eval(a)) => demo::eval(&a).map(|()| 0),
        Some(Command::Explain(a)) => explain::explain(&a),
        Some(Command::Remake(a)) => remake(&a),
        Some(Command::Models) => models::models(),
        Some(Command::Download(a)) => models::download(&a),
        None => window(cli.window),
    }
}
