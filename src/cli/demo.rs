//! `synth`, `train` and `eval`: the generated fine-grained dataset, training INTR on it with
//! candle, and measuring accuracy and how faithful the attention is on held-out images.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::demo::synth::{self, SynthOptions};
use crate::demo::train::{self, DEMO_STEM, Example, TrainModel, TrainOptions};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (ImageFolder tree `train/`, `val/`, masks under `masks/`, `dataset.json`).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Number of images (balanced over the species).
    #[arg(long, default_value_t = 1600)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Share of images held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f32,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Dataset folder written by `synth` (or any ImageFolder tree of square images).
    #[arg(long, short = 'd')]
    pub data: PathBuf,
    /// Output `.safetensors` model; `<out>.train-state` holds the resumable state.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10, value_parser = super::count)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32, value_parser = super::count)]
    pub batch: usize,
    /// Peak learning rate (after warm-up; cosine decay).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Transformer dropout probability: attention weights, residual branches, feed-forward
    /// (DETR's recipe uses 0.1; off by default, as the demo model was trained).
    #[arg(long, default_value_t = 0.0, value_parser = parse_dropout)]
    pub dropout: f32,
    /// Head drop of the decoder's cross-attention: the probability that a head's output is
    /// zeroed for one class query of one image (0 = off, as the demo model was trained).
    #[arg(long, default_value_t = 0.0, value_parser = parse_dropout)]
    pub head_drop: f32,
    /// Brightness and contrast jitter of the augmentation (0.15 = ±15 %; 0 = off).
    #[arg(long, default_value_t = 0.15, value_parser = parse_jitter)]
    pub jitter: f32,
    /// Random erasing: the probability that one rectangle of 1–6 % of the image (about one part of
    /// a bird) is set to the mean colour (0 = off, as the demo model was trained).
    #[arg(long, default_value_t = 0.0, value_parser = parse_dropout)]
    pub erase: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many steps (for quick checks).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Start again even if a training state exists (it is otherwise resumed).
    #[arg(long)]
    pub restart: bool,
    /// Transformer encoder layers (default: the demo architecture's).
    #[arg(long)]
    pub enc_layers: Option<usize>,
    /// Transformer decoder layers (default: the demo architecture's).
    #[arg(long)]
    pub dec_layers: Option<usize>,
    /// Backbone stride: 16 (last stage dilated) or 8 (last two stages dilated: a 2× finer grid).
    #[arg(long, value_parser = parse_stride)]
    pub stride: Option<usize>,
    /// Output channels of the four ResNet stages, comma-separated, multiples of 4 (default: the
    /// demo architecture's).
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
}

fn parse_dropout(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(p) if (0.0..0.9).contains(&p) => Ok(p),
        _ => Err(format!("expected a probability from 0 to 0.9, got {s:?}")),
    }
}

fn parse_jitter(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(j) if (0.0..=0.5).contains(&j) => Ok(j),
        _ => Err(format!("expected a fraction from 0 to 0.5, got {s:?}")),
    }
}

fn parse_stride(s: &str) -> std::result::Result<usize, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("`{s}`: the backbone stride is 16 or 8")),
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}} < {{eta_precise}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

pub fn synth(a: &SynthArgs) -> Result<()> {
    if a.size < 32 {
        bail!("--size {}: images smaller than 32 pixels cannot show the parts", a.size);
    }
    let opts = SynthOptions { count: a.count, seed: a.seed, size: a.size, val_fraction: a.val_fraction };
    let pb = bar(a.count as u64, "drawing");
    let started = Instant::now();
    synth::write_dataset(&a.out, &opts, |done, _| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    eprintln!("wrote {} images to {} in {:.1} s", a.count, a.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

pub fn train(a: &TrainArgs) -> Result<()> {
    let items = synth::load_dataset(&a.data, "train")?;
    if items.is_empty() {
        bail!("{}: no training images under train/", a.data.display());
    }
    let classes = crate::session::classes::from_folder(&a.data.join("train"))?;
    let side = image::image_dimensions(&items[0].image)
        .with_context(|| format!("{}: cannot read the image", items[0].image.display()))?
        .0 as usize;
    let examples: Vec<Example> = items.iter().map(|i| Example { path: i.image.clone(), label: i.label }).collect();
    let mut cfg = train::demo_config(classes.len());
    if let Some(n) = a.enc_layers {
        cfg.enc_layers = n;
    }
    if let Some(n) = a.dec_layers {
        ensure!(n > 0, "--dec-layers must be at least 1");
        cfg.dec_layers = n;
    }
    if let Some(s) = a.stride {
        cfg.dilation_stage3 = s == 8;
    }
    if let Some(w) = &a.widths {
        ensure!(
            w.len() == 4 && w.iter().all(|&c| c > 0 && c % 4 == 0),
            "--widths needs four channel counts, each a positive multiple of 4 (got {w:?})"
        );
        cfg.backbone.stage_channels.clone_from(w);
        cfg.backbone.num_channels = w[3];
    }
    let mut model = TrainModel::new(&cfg, DEMO_STEM, a.seed, &candle_core::Device::Cpu)?;
    let state = train::state_path(&a.out);
    if a.restart && state.exists() {
        std::fs::remove_file(&state).with_context(|| format!("{}: cannot remove", state.display()))?;
    }
    let o = TrainOptions {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        clip: a.clip,
        dropout: a.dropout,
        head_drop: a.head_drop,
        jitter: a.jitter,
        erase: a.erase,
        seed: a.seed,
        max_steps: a.max_steps,
        ..Default::default()
    };
    eprintln!(
        "training on {} images of {side}×{side}, {} classes, {} parameters{}",
        examples.len(),
        classes.len(),
        model.params.values().map(|v| v.elem_count()).sum::<usize>(),
        if state.exists() { format!(", resuming from {}", state.display()) } else { String::new() }
    );
    let pb = bar(0, "training");
    // Without a terminal (logs, CI) the bar is hidden: print a line every 20 steps instead.
    let log_lines = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (mut ema_loss, mut ema_acc) = (None::<f32>, None::<f32>);
    train::train(&mut model, &examples, side, &o, Some(&state), |r| {
        pb.set_length(r.total as u64);
        pb.set_position(r.step as u64);
        let l = ema_loss.map_or(r.loss, |e| 0.95 * e + 0.05 * r.loss);
        let acc = ema_acc.map_or(r.accuracy, |e| 0.95 * e + 0.05 * r.accuracy);
        ema_loss = Some(l);
        ema_acc = Some(acc);
        let msg = format!("epoch {} loss {l:.3} acc {:.1} % lr {:.1e}", r.epoch + 1, acc * 100.0, r.lr);
        if log_lines && (r.step % 20 == 0 || r.step == r.total) {
            eprintln!("step {}/{} [{:.0} s] {msg}", r.step, r.total, pb.elapsed().as_secs_f64());
        }
        pb.set_message(msg);
    })?;
    pb.finish();
    train::save_model(&model, &classes, side, &o, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model to evaluate (default: the bundled demo model).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Dataset folder written by `synth` (its `val/` split and masks are used).
    #[arg(long, short = 'd')]
    pub data: PathBuf,
    /// Evaluate at most this many images (balanced order is kept).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also print the figures per species (the JSON always has them).
    #[arg(long)]
    pub per_species: bool,
    /// Write a figure of heads × species (one held-out image per species, attention of its class).
    #[arg(long, value_name = "PNG")]
    pub figure: Option<PathBuf>,
    /// Seed of the random cells of the deletion check and the diversity chance level.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn eval(a: &EvalArgs) -> Result<()> {
    let spec = crate::session::ModelSpec { path: a.model.clone(), ..Default::default() };
    let session = crate::session::Session::open_on(&spec, &candle_core::Device::Cpu)?;
    let (model, classes) = (session.model(), session.class_names());
    let mut items = synth::load_dataset(&a.data, "val")?;
    if items.is_empty() {
        bail!("{}: no held-out images under val/", a.data.display());
    }
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    let side = image::image_dimensions(&items[0].image)
        .with_context(|| format!("{}: cannot read the image", items[0].image.display()))?
        .0 as usize;
    let pb = bar(items.len() as u64, "evaluating");
    let report = crate::demo::eval::evaluate(model, &items, side, a.seed, |n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if a.per_species {
            print!("{}", report.class_table(classes));
        }
    }
    if let Some(fig) = &a.figure {
        crate::demo::eval::heads_figure(model, &items, side, fig)?;
        eprintln!("wrote {}", fig.display());
    }
    Ok(())
}
