//! `intr-explorer bench`: the performance and memory figures quoted in the README.
//!
//! - `bench forward`: the official configuration (R50, D=256, 6+6 layers, 8 heads, 200 classes)
//!   with deterministic random weights, one 800×1028 image, N timed runs; median total and
//!   per-stage split, and the same with each head of the last layer evened in turn (the explorer's
//!   worker does both). `--compare-candle` also times candle's own `conv2d` backbone in the same run.
//! - `bench memory`: writes a full-size official-format checkpoint (optimizer state, `args`) and
//!   runs `predict` on it in a child process, which reports its own peak RSS.
//! - `bench prepare`: decoding a photo and the evaluation transform, timed apart.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::{Args, Subcommand};

use crate::intr::Intr;
use crate::intr::config::IntrConfig;
use crate::intr::model::StageTimings;
use crate::intr::random::{self, Rng};
use crate::intr::weights::WeightStore;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: BenchKind,
}

#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Time one full-size forward pass of the official configuration.
    Forward {
        /// Worker threads, or a list (`1,2`: each count measured in its own process, one after
        /// the other). The bar is measured with 2.
        #[arg(long, value_delimiter = ',', default_value = "2")]
        threads: Vec<usize>,
        /// Timed runs (after one warm-up).
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Input width × height.
        #[arg(long, default_value = "1028x800")]
        size: String,
        /// Number of classes.
        #[arg(long, default_value_t = 200)]
        classes: usize,
        /// Also time candle's own conv2d backbone in the same run, for comparison.
        #[arg(long)]
        compare_candle: bool,
    },
    /// Peak memory of `predict` on a full-size official-format checkpoint with optimizer state.
    Memory {
        /// Images to predict on, one `predict` run each; a generated 1333×800 image (the largest
        /// network input the size rule allows) is always measured too.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Keep the generated checkpoint here instead of a temporary directory.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
    /// Time preparing a photo for the network: decoding, then the official evaluation transform
    /// (resize and normalisation), each on its own.
    Prepare {
        /// The photo.
        image: PathBuf,
        /// Timed runs (after one warm-up).
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

pub fn run(a: &BenchArgs) -> Result<()> {
    match &a.which {
        BenchKind::Forward { threads, runs, size, classes, compare_candle } => {
            if let [one] = threads[..] {
                return forward(one, *runs, size, *classes, *compare_candle);
            }
            // The thread pool is set once per process: one child process per count.
            let exe = std::env::current_exe().context("cannot locate this executable")?;
            for &t in threads {
                let mut cmd = std::process::Command::new(&exe);
                cmd.args(["bench", "forward", "--threads", &t.to_string(), "--runs", &runs.to_string()]);
                cmd.args(["--size", size, "--classes", &classes.to_string()]);
                if *compare_candle {
                    cmd.arg("--compare-candle");
                }
                let out = cmd.output().context("cannot run the benchmark")?;
                out!("{}", String::from_utf8_lossy(&out.stdout));
                if !out.status.success() {
                    bail!("bench forward --threads {t} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            Ok(())
        }
        BenchKind::Memory { image, keep } => memory(image, keep.as_ref()),
        BenchKind::Prepare { image, runs, threads } => prepare(image, *runs, *threads),
    }
}

/// The CPU's model name (Linux), or what the architecture is.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn forward(threads: usize, runs: usize, size: &str, classes: usize, compare_candle: bool) -> Result<()> {
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .with_context(|| format!("--size `{size}`: expected WIDTHxHEIGHT"))?;
    if runs == 0 || threads == 0 {
        bail!("--runs and --threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("cannot set up the thread pool")?;
    let cfg = IntrConfig::official(classes);
    let weights = random::random_weights(&cfg, 1)?;
    let ws = WeightStore::new(&weights);
    let mut model = Intr::load(&ws, &cfg, &Device::Cpu)?;
    drop(ws);
    drop(weights);
    let mut rng = Rng::new(7);
    let input: Vec<f32> = (0..3 * w * h).map(|_| rng.uniform(2.0)).collect();
    let path = crate::kernels::simd();
    let others: Vec<&str> =
        crate::kernels::Simd::available_paths().into_iter().filter(|&p| p != path).map(|p| p.name()).collect();
    outln!(
        "CPU: {} ({} logical cores); SIMD path: {}{}",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        path.name(),
        if others.is_empty() { String::new() } else { format!(" (INTR_SIMD={} also runs here)", others.join("|")) }
    );
    outln!(
        "official INTR configuration, {classes} classes, input {w}×{h}, {threads} thread(s), {runs} runs after 1 warm-up (the cold forward)"
    );
    // The explorer's worker also evens each head of the last layer in turn (the reliance shown
    // under each head): timed as its own variant.
    let mut variants =
        vec![("fast NHWC backbone", false, false), ("fast NHWC backbone + evening each head", false, true)];
    if compare_candle {
        variants.push(("candle conv2d backbone", true, false));
    }
    for (label, force, evening) in variants {
        model.set_force_candle_backbone(force);
        let mut totals = Vec::new();
        let mut stages: Vec<StageTimings> = Vec::new();
        let mut evenings = Vec::new();
        let mut rankings = Vec::new();
        let mut flops = 0;
        for i in 0..=runs {
            let counted = crate::kernels::flops();
            let t = Instant::now();
            let (out, evened_in, ranked_in) = if evening {
                let (out, kept) = model.forward_keeping_last_layer(&input, h, w)?;
                let te = Instant::now();
                crate::probe::evened_logits(&model, &kept)?;
                let evened_in = te.elapsed();
                // Ranking the top class's heads (greedy cumulative evening), after the forward
                // pass: timed on its own, not in the total.
                let tr = Instant::now();
                crate::probe::rank_heads(&model, &kept, &out.logits, out.ranking()[0])?;
                (out, evened_in, tr.elapsed())
            } else {
                (model.forward(&input, h, w)?, Duration::ZERO, Duration::ZERO)
            };
            let dt = t.elapsed() - ranked_in;
            if i == 0 {
                flops = crate::kernels::flops() - counted;
            }
            if i > 0 {
                totals.push(dt);
                stages.push(out.timings);
                evenings.push(evened_in);
                rankings.push(ranked_in);
            } else {
                outln!("[{label}] grid {}×{}, warm-up {:.3} s", out.grid.0, out.grid.1, dt.as_secs_f64());
            }
        }
        let med = |f: fn(&StageTimings) -> Duration| median(stages.iter().map(f).collect());
        let all: Vec<String> = totals.iter().map(|d| format!("{:.3}", d.as_secs_f64())).collect();
        let evening_part = if evening {
            format!(
                ", evening {:.3} s; ranking the top class's heads afterwards {:.1} ms",
                median(evenings).as_secs_f64(),
                median(rankings).as_secs_f64() * 1e3
            )
        } else {
            String::new()
        };
        let warm = median(totals.clone()).as_secs_f64();
        outln!(
            "[{label}] median {warm:.3} s, {:.1} GFLOP at {:.1} GFLOP/s (backbone {:.3} s, encoder {:.3} s, decoder {:.3} s{evening_part}); runs: {}",
            flops as f64 / 1e9,
            flops as f64 / 1e9 / warm,
            med(|s| s.backbone).as_secs_f64(),
            med(|s| s.encoder).as_secs_f64(),
            med(|s| s.decoder).as_secs_f64(),
            all.join(" ")
        );
    }
    Ok(())
}

fn memory(images: &[PathBuf], keep: Option<&PathBuf>) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = keep.cloned().unwrap_or_else(|| dir.path().join("intr_checkpoint_official_layout.pth"));
    let cfg = IntrConfig::official(200);
    let t = Instant::now();
    random::write_official_pth(&path, &cfg, 1, true).with_context(|| format!("{}: cannot write", path.display()))?;
    let bytes = std::fs::metadata(&path)?.len();
    outln!(
        "wrote {} ({:.0} MB, official layout with optimizer state) in {:.1} s",
        path.display(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Largest input: 1333×800 after the size rule (a 5:3 photo), filled with noise.
    let widest = dir.path().join("widest_1333x800.png");
    let mut rng = Rng::new(3);
    let noise =
        image::RgbImage::from_fn(1333, 800, |_, _| image::Rgb([0, 0, 0].map(|_: u8| (rng.next_f32() * 255.0) as u8)));
    noise.save(&widest).with_context(|| format!("{}: cannot write", widest.display()))?;
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    for image in images.iter().chain(std::iter::once(&widest)) {
        let out = std::process::Command::new(&exe)
            .args(["predict", "--report-peak-rss", "-k", "1", "--model"])
            .arg(&path)
            .arg(image)
            .output()
            .context("cannot run predict")?;
        out!("{}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("predict failed ({}): {err}", out.status);
        }
        let peak =
            err.lines().find_map(|l| l.strip_prefix("peak RSS: ")).context("predict did not report its peak RSS")?;
        outln!("predict peak RSS: {peak} ({})", image.display());
    }
    Ok(())
}

fn prepare(image: &std::path::Path, runs: usize, threads: usize) -> Result<()> {
    use crate::image::{decode, preprocess};
    if runs == 0 || threads == 0 {
        bail!("--runs and --threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("cannot set up the thread pool")?;
    let opts = preprocess::PreprocessOptions::default();
    let (mut decoding, mut transform) = (Vec::new(), Vec::new());
    let mut sizes = None;
    for i in 0..=runs {
        let t = Instant::now();
        let d = decode::decode_file(image, opts.apply_orientation)?;
        let td = t.elapsed();
        let (photo_w, photo_h) = (d.image.width, d.image.height);
        let t = Instant::now();
        let (chw, input, _) = preprocess::prepare_image(d.image, &opts);
        let tt = t.elapsed();
        std::hint::black_box(chw);
        sizes = Some(((photo_w, photo_h), input));
        if i > 0 {
            decoding.push(td);
            transform.push(tt);
        }
    }
    let ((pw, ph), (iw, ih)) = sizes.context("no run")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (md, mt) = (median(decoding), median(transform));
    outln!("CPU: {}; {threads} thread(s), {runs} runs after 1 warm-up", cpu_model());
    outln!(
        "{}: {pw}×{ph} photo to a {iw}×{ih} input: decoding {:.1} ms, resize and normalisation {:.1} ms, together {:.1} ms (medians)",
        image.display(),
        ms(md),
        ms(mt),
        ms(md + mt)
    );
    Ok(())
}
