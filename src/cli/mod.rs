//! Command-line interface: parsing (clap) and dispatch. Each subcommand lives in its own module and
//! returns `anyhow::Result`; `main` prints the error chain once and exits non-zero.

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
pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::ConfigOverrides;

/// INTR Explorer: rank the classes of a photo with an INTR model and see where each class's
/// attention heads looked.
#[derive(Debug, Parser)]
#[command(name = "intr-explorer", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand: open the desktop explorer on these files (a model and/or images).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the top classes of each image.
    Predict(PredictArgs),
    /// Write logits and every cross-attention map of one image to a safetensors file.
    Attention(AttentionArgs),
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
}

#[derive(Debug, Args)]
pub struct RemakeArgs {
    /// A figure written by `explain`.
    pub figure: PathBuf,
}

/// Which model to use and how to read it.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint: an official INTR `.pth` or a `.safetensors` made by `convert` or `train`
    /// (default: the bundled demo model).
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
    #[arg(long)]
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
    /// The model file: the one given, or the bundled demo model.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => crate::assets::demo_model(),
        }
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
    #[arg(long, short = 'k', default_value_t = 5)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the process's peak resident memory to stderr at the end (Linux).
    #[arg(long, hide = true)]
    pub report_peak_rss: bool,
    /// Image files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
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

/// Whether `e` is a write to a closed pipe (the reader went away: not an error worth reporting).
#[must_use]
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Runs the command recorded in a figure's provenance again (its outputs are redone).
fn remake(a: &RemakeArgs) -> anyhow::Result<i32> {
    let prov = crate::export::read_provenance(&a.figure)?;
    let json = prov.get("remake_args").ok_or_else(|| {
        anyhow::anyhow!("{}: the figure's provenance has no command to re-make it", a.figure.display())
    })?;
    let mut args: Vec<String> = serde_json::from_str(json)
        .map_err(|e| anyhow::anyhow!("{}: the recorded command is damaged: {e}", a.figure.display()))?;
    args.insert(0, "intr-explorer".into());
    args.push("--force".into());
    match Cli::try_parse_from(&args)?.command {
        Some(Command::Explain(e)) => explain::explain(&e),
        _ => anyhow::bail!("{}: the recorded command is not an `explain` run", a.figure.display()),
    }
}

/// Parses the command line and runs it. Returns the process exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Predict(a)) => commands::predict(&a),
        Some(Command::Attention(a)) => commands::attention(&a).map(|()| 0),
        Some(Command::Inspect(a)) => commands::inspect(&a).map(|()| 0),
        Some(Command::Convert(a)) => commands::convert(&a).map(|()| 0),
        Some(Command::Bench(a)) => bench::run(&a).map(|()| 0),
        Some(Command::Synth(a)) => demo::synth(&a).map(|()| 0),
        Some(Command::Train(a)) => demo::train(&a).map(|()| 0),
        Some(Command::Eval(a)) => demo::eval(&a).map(|()| 0),
        Some(Command::Explain(a)) => explain::explain(&a),
        Some(Command::Remake(a)) => remake(&a),
        #[cfg(feature = "gui")]
        None => crate::app::run(cli.paths).map(|()| 0),
        #[cfg(not(feature = "gui"))]
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(2)
        }
    }
}
