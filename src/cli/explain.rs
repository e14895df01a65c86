//! `explain`: figures and a summary for many photos, headless. Folders expand to their images;
//! `--shard K/N` takes every N-th photo from the K-th on (deterministic, for cluster job arrays);
//! finished photos are skipped on reruns; a bad photo is reported and skipped. Per-photo records
//! are kept beside the figures, and `summary.csv` / `summary.json` are rebuilt from all of them
//! at the end, so shards run one after another end with the summary of one whole run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::commands::{Session, load_session, run_prepared};
use super::output::{peak_rss_bytes, write_atomic};
use crate::colormap::{Colormap, Interpolation, Normalization};
use crate::export::{self, Format};
use crate::figures::{self, FigureOptions, Look, View};
use crate::model::IntrOutput;
use crate::model::intr::softmax;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Photos and folders of photos.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Which class to explain: top1, top3 (one figure each), or a class name.
    #[arg(long, default_value = "top1")]
    pub class: String,
    /// Decoder layer, 1-based (default: the last).
    #[arg(long)]
    pub layer: Option<usize>,
    /// Heads to show: `all` or a comma list of 1-based heads (`1,4`); the head mean is always added.
    #[arg(long, default_value = "all")]
    pub heads: String,
    /// Also write a comparison figure of these classes (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<String>,
    #[arg(long, value_enum, default_value_t = ColormapArg::Viridis)]
    pub colormap: ColormapArg,
    #[arg(long, value_enum, default_value_t = NormArg::PerMap)]
    pub normalisation: NormArg,
    #[arg(long, value_enum, default_value_t = InterpArg::Bilinear)]
    pub interpolation: InterpArg,
    /// Overlay opacity, 0–1.
    #[arg(long, default_value_t = 0.6)]
    pub opacity: f32,
    /// Normalised values below this are transparent, 0–1.
    #[arg(long, default_value_t = 0.0)]
    pub threshold: f32,
    /// The official renderer's look: OpenCV JET, bicubic, median + Gaussian blur, 50 % blend.
    #[arg(long)]
    pub paper_style: bool,
    #[arg(long, value_enum, default_value_t = Format::Svg)]
    pub format: Format,
    /// Resolution of PNG output.
    #[arg(long, default_value_t = 150.0)]
    pub dpi: f32,
    /// Panel width in pixels (default: the photo's width, at most 480).
    #[arg(long)]
    pub panel_width: Option<u32>,
    /// Scale bar: size of one photo pixel, e.g. `0.05mm` or `12µm` (also `um`).
    #[arg(long)]
    pub scale: Option<String>,
    /// Figure title (default: the class, for a figure of one class's heads).
    #[arg(long)]
    pub title: Option<String>,
    /// Figure caption.
    #[arg(long)]
    pub caption: Option<String>,
    /// Output folder.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Process only shard K of N (`K/N`, 1-based): photos K, K+N, K+2N… of the sorted list.
    #[arg(long)]
    pub shard: Option<String>,
    /// Redo photos whose outputs exist.
    #[arg(long)]
    pub force: bool,
    /// Print the peak resident memory at the end (Linux).
    #[arg(long)]
    pub report_peak_rss: bool,
}

macro_rules! value_enum {
    ($name:ident => $target:ty { $($variant:ident = $value:expr),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name { $($variant),* }
        impl From<$name> for $target {
            fn from(v: $name) -> Self { match v { $($name::$variant => $value),* } }
        }
    };
}
value_enum!(ColormapArg => Colormap { Viridis = Colormap::Viridis, Cividis = Colormap::Cividis, Magma = Colormap::Magma,
    Inferno = Colormap::Inferno, Turbo = Colormap::Turbo, Jet = Colormap::Jet, JetOpencv = Colormap::JetOpenCv });
value_enum!(NormArg => Normalization { PerMap = Normalization::PerMap, SharedHeads = Normalization::SharedHeads,
    SharedClasses = Normalization::SharedClasses, Absolute = Normalization::Absolute });
value_enum!(InterpArg => Interpolation { Nearest = Interpolation::Nearest, Bilinear = Interpolation::Bilinear,
    Bicubic = Interpolation::Bicubic });

/// What is recorded per photo (and assembled into the summaries).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhotoRecord {
    pub image: String,
    pub image_sha256: String,
    /// (class name, probability), best first.
    pub top: Vec<(String, f32)>,
    pub heads: Vec<HeadRecord>,
    pub figures: Vec<String>,
    pub error: Option<String>,
}

/// One head (or the mean) of one explained class.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadRecord {
    pub class: String,
    /// 1-based head, or "mean".
    pub head: String,
    pub peak_row: usize,
    pub peak_col: usize,
    pub peak_value: f32,
    /// Shannon entropy of the map (nats; ln(cells) = uniform).
    pub entropy: f32,
    /// The class's probability (`None` in records written before it was recorded).
    #[serde(default)]
    pub class_probability: Option<f32>,
    /// The class's probability had this head attended evenly to the whole grid (the rest of the
    /// model unchanged): what the class score owes to where the head looks. Only for the heads of
    /// the last decoder layer; `None` for the mean and for earlier layers.
    #[serde(default)]
    pub probability_if_evened: Option<f32>,
}

/// Parses `K/N`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (k, n) = s.split_once('/').with_context(|| format!("--shard {s}: expected K/N, e.g. 2/8"))?;
    let (k, n): (usize, usize) = (
        k.trim().parse().with_context(|| format!("--shard {s}: K is not a number"))?,
        n.trim().parse().with_context(|| format!("--shard {s}: N is not a number"))?,
    );
    if n == 0 || k == 0 || k > n {
        bail!("--shard {s}: need 1 ≤ K ≤ N");
    }
    Ok((k, n))
}

/// Parses `0.05mm`, `12µm`, `12um` into (size of one pixel, unit).
pub fn parse_scale(s: &str) -> Result<(f64, String)> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().with_context(|| format!("--scale {s}: expected a number and a unit, e.g. 0.05mm"))?;
    let unit = match unit.trim() {
        "mm" => "mm",
        "µm" | "um" | "μm" => "µm",
        "cm" => "cm",
        other => bail!("--scale {s}: unit `{other}` is not one of mm, µm (um), cm"),
    };
    if !(v.is_finite() && v > 0.0) {
        bail!("--scale {s}: the size of a pixel must be positive");
    }
    Ok((v, unit.to_string()))
}

/// Expands folders (recursively, sorted) into image files; files are kept as given.
pub fn expand_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if crate::model::decode::has_image_extension(&p) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Output stems: the file stem, made unique over the whole (unsharded) list by a numeric suffix.
pub fn stems(files: &[PathBuf]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    files
        .iter()
        .map(|f| {
            let stem: String = f
                .file_stem()
                .map(|s| {
                    s.to_string_lossy()
                        .chars()
                        .map(|c| if c.is_alphanumeric() || "-_.".contains(c) { c } else { '_' })
                        .collect()
                })
                .unwrap_or_else(|| "image".into());
            let n = seen.entry(stem.clone()).or_insert(0);
            *n += 1;
            if *n == 1 { stem } else { format!("{stem}-{n}") }
        })
        .collect()
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

fn find_class(names: &[String], wanted: &str) -> Result<usize> {
    let w = wanted.trim().to_lowercase();
    if let Some(i) = names.iter().position(|n| n.to_lowercase() == w) {
        return Ok(i);
    }
    let close: Vec<&str> = names.iter().filter(|n| n.to_lowercase().contains(&w)).map(String::as_str).take(5).collect();
    if close.is_empty() {
        bail!("class `{wanted}` is not one of the model's {} classes", names.len());
    }
    bail!("class `{wanted}` is not a class name; did you mean: {}?", close.join(", "))
}

fn entropy(map: &[f32]) -> f32 {
    let s: f32 = map.iter().sum();
    if s <= 0.0 {
        return 0.0;
    }
    -map.iter().map(|&v| v / s).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f32>()
}

pub fn explain(a: &ExplainArgs) -> Result<i32> {
    let files = expand_inputs(&a.inputs);
    if files.is_empty() {
        bail!("no images found in {}", a.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let all_stems = stems(&files);
    let (k, n) = match &a.shard {
        Some(s) => parse_shard(s)?,
        None => (1, 1),
    };
    let scale = a.scale.as_deref().map(parse_scale).transpose()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create the output folder", a.out.display()))?;
    let records_dir = a.out.join(".records");
    std::fs::create_dir_all(&records_dir).with_context(|| format!("{}: cannot create", records_dir.display()))?;
    let s = load_session(&a.model)?;
    let model_path = a.model.path()?;
    // The run's provenance entries that do not depend on the photo.
    let info = figures::Source::of_model(Some(&model_path), &s.names)?;
    let mine: Vec<usize> = (0..files.len()).filter(|i| i % n == k - 1).collect();
    let pb = indicatif::ProgressBar::new(mine.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "explaining {bar:30} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut failures = 0;
    for &i in &mine {
        let (file, stem) = (&files[i], &all_stems[i]);
        pb.set_message(stem.clone());
        let record_path = records_dir.join(format!("{stem}.json"));
        if !a.force && finished(&record_path, &a.out) {
            pb.inc(1);
            continue;
        }
        let record = match explain_one(a, &s, &info, file, stem, scale.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                pb.suspend(|| eprintln!("error: {e:#}"));
                PhotoRecord {
                    image: file.display().to_string(),
                    image_sha256: String::new(),
                    top: Vec::new(),
                    heads: Vec::new(),
                    figures: Vec::new(),
                    error: Some(format!("{e:#}")),
                }
            }
        };
        let json = serde_json::to_vec_pretty(&record)?;
        write_atomic(&record_path, |tmp| Ok(std::fs::write(tmp, &json)?))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    write_summaries(&a.out, &records_dir, &all_stems)?;
    eprintln!(
        "{} photos ({} in this shard), {failures} failed; summary in {}",
        files.len(),
        mine.len(),
        a.out.join("summary.csv").display()
    );
    if a.report_peak_rss
        && let Some(b) = peak_rss_bytes()
    {
        eprintln!("peak RSS: {:.1} MB", b as f64 / 1e6);
    }
    Ok(i32::from(failures > 0))
}

/// A photo is finished when its record exists without an error and all its figures exist.
fn finished(record_path: &Path, out: &Path) -> bool {
    let Ok(bytes) = std::fs::read(record_path) else { return false };
    let Ok(r) = serde_json::from_slice::<PhotoRecord>(&bytes) else { return false };
    r.error.is_none() && r.figures.iter().all(|f| out.join(f).is_file())
}

fn explain_one(
    a: &ExplainArgs,
    s: &Session,
    info: &figures::Source,
    file: &Path,
    stem: &str,
    scale: Option<&(f64, String)>,
) -> Result<PhotoRecord> {
    let source = info.with_image(file)?;
    // With each last-layer head's evening, for the summary's `probability_if_evened`.
    let (prep, (out, evened)) = run_prepared(s, file, |m, chw, h, w| m.forward_evening_heads(chw, h, w))?;
    let ranking = out.ranking();
    let probs = out.probabilities();
    let classes: Vec<usize> = match a.class.as_str() {
        "top1" => ranking[..1].to_vec(),
        "top3" => ranking.iter().copied().take(3).collect(),
        name => vec![find_class(&s.names, name)?],
    };
    let layer = match a.layer {
        Some(l) if l == 0 || l > out.layers => bail!("--layer {l}: the model has layers 1 to {}", out.layers),
        Some(l) => l - 1,
        None => out.layers - 1,
    };
    let heads: Vec<usize> = if a.heads == "all" {
        (0..out.heads).collect()
    } else {
        a.heads
            .split(',')
            .map(|h| match h.trim().parse::<usize>() {
                Ok(v) if v >= 1 && v <= out.heads => Ok(v - 1),
                _ => bail!("--heads {}: `{h}` is not a head in 1..={}", a.heads, out.heads),
            })
            .collect::<Result<_>>()?
    };
    let look = look_of(a);
    let opts = FigureOptions {
        look,
        layer,
        panel_width: Some(a.panel_width.unwrap_or_else(|| (prep.original.width as u32).min(480))),
        letters: true,
        labels: true,
        title: a.title.clone(),
        caption: a.caption.clone(),
        scale: scale.cloned(),
        shared_with: a.compare.iter().filter_map(|c| find_class(&s.names, c).ok()).collect(),
    };
    let mut figures_out = Vec::new();
    let mut views: Vec<(View, String)> = classes
        .iter()
        .map(|&c| (View::Gallery { class: c, heads: heads.clone(), mean: true }, slug(&s.names[c])))
        .collect();
    if !a.compare.is_empty() {
        let cmp: Vec<usize> = a.compare.iter().map(|c| find_class(&s.names, c)).collect::<Result<_>>()?;
        views.push((View::Compare { classes: cmp, heads: heads.clone(), mean: true }, "compare".into()));
    }
    for (view, name) in &views {
        let mut prov = figures::look_provenance(&look, layer, view, &s.names);
        source.add_to(&mut prov);
        let args = remake_args(a, file, view, &s.names, layer);
        prov.insert("remake".into(), shell_join(&args));
        prov.insert("remake_args".into(), serde_json::to_string(&args)?);
        let fig = figures::compose(&prep.original, &out, &s.names, view, &opts, prov);
        let fname = format!("{stem}__{name}.{}", a.format.extension());
        export::write(&fig, &a.out.join(&fname), a.format, a.dpi)?;
        figures_out.push(fname);
    }
    Ok(PhotoRecord {
        image: file.display().to_string(),
        image_sha256: source.image_sha256.clone(),
        top: ranking.iter().take(5).map(|&c| (s.names[c].clone(), probs[c])).collect(),
        heads: head_records(&out, &probs, &evened, layer, &classes, &heads, &s.names),
        figures: figures_out,
        error: None,
    })
}

fn look_of(a: &ExplainArgs) -> Look {
    if a.paper_style {
        return Look {
            colormap: Colormap::JetOpenCv,
            normalization: Normalization::PerMap,
            threshold: 0.0,
            interpolation: Interpolation::Bicubic,
            opacity: 0.5,
            official_blur: true,
        };
    }
    Look {
        colormap: a.colormap.into(),
        normalization: a.normalisation.into(),
        threshold: a.threshold.clamp(0.0, 1.0),
        interpolation: a.interpolation.into(),
        opacity: a.opacity.clamp(0.0, 1.0),
        official_blur: false,
    }
}

/// The arguments that re-make one figure (recorded in its provenance, run by `remake`).
fn remake_args(a: &ExplainArgs, file: &Path, view: &View, names: &[String], layer: usize) -> Vec<String> {
    let mut v: Vec<String> = vec!["explain".into()];
    let mut push = |k: &str, val: String| {
        v.push(k.to_string());
        v.push(val);
    };
    if let Ok(m) = a.model.path() {
        push("--model", m.display().to_string());
    }
    if let Some(c) = &a.model.classes {
        push("--classes", c.display().to_string());
    }
    match view {
        View::Compare { classes, .. } => {
            push("--class", "top1".into());
            push("--compare", classes.iter().map(|&c| names[c].as_str()).collect::<Vec<_>>().join(","));
        }
        View::Gallery { class, .. } | View::Single { class, .. } => push("--class", names[*class].clone()),
    }
    push("--layer", (layer + 1).to_string());
    push("--heads", a.heads.clone());
    let name = |p: Option<clap::builder::PossibleValue>| p.map(|p| p.get_name().to_string()).unwrap_or_default();
    if a.paper_style {
        push("--paper-style", String::new());
    } else {
        push("--colormap", name(clap::ValueEnum::to_possible_value(&a.colormap)));
        push("--normalisation", name(clap::ValueEnum::to_possible_value(&a.normalisation)));
        push("--interpolation", name(clap::ValueEnum::to_possible_value(&a.interpolation)));
        push("--opacity", a.opacity.to_string());
        push("--threshold", a.threshold.to_string());
    }
    push("--format", a.format.extension().to_string());
    push("--dpi", a.dpi.to_string());
    if let Some(w) = a.panel_width {
        push("--panel-width", w.to_string());
    }
    if let Some(sc) = &a.scale {
        push("--scale", sc.clone());
    }
    if let Some(t) = a.title.as_ref().filter(|t| !t.is_empty()) {
        push("--title", t.clone());
    }
    if let Some(c) = a.caption.as_ref().filter(|c| !c.is_empty()) {
        push("--caption", c.clone());
    }
    push("--out", a.out.display().to_string());
    v.push(file.display().to_string());
    // `--paper-style` is a flag: drop its empty value.
    v.retain(|s| !s.is_empty());
    v
}

/// Shell form of `args` (single-quoted where needed).
fn shell_join(args: &[String]) -> String {
    let q = |s: &String| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c)) {
            s.clone()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once("intr-explorer".to_string()).chain(args.iter().map(q)).collect::<Vec<_>>().join(" ")
}

/// The records of `heads` (and their mean) for each of `classes`; `probs` are the class
/// probabilities and `evened[head]` the logits with that head of the last layer attending evenly.
fn head_records(
    o: &IntrOutput,
    probs: &[f32],
    evened: &[Vec<f32>],
    layer: usize,
    classes: &[usize],
    heads: &[usize],
    names: &[String],
) -> Vec<HeadRecord> {
    let (_, gw) = o.grid;
    let evened_probs: Vec<Vec<f32>> =
        if layer + 1 == o.layers { evened.iter().map(|l| softmax(l)).collect() } else { Vec::new() };
    let mut out = Vec::new();
    for &c in classes {
        for h in heads.iter().map(|&h| Some(h)).chain([None]) {
            let map = figures::map_values(o, layer, c, h);
            let (peak, &value) = map.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap_or((0, &0.0));
            out.push(HeadRecord {
                class: names[c].clone(),
                head: h.map_or("mean".into(), |h| (h + 1).to_string()),
                peak_row: peak / gw,
                peak_col: peak % gw,
                peak_value: value,
                entropy: entropy(&map),
                class_probability: Some(probs[c]),
                probability_if_evened: h.and_then(|h| evened_probs.get(h)).map(|p| p[c]),
            });
        }
    }
    out
}

/// Rebuilds `summary.json` and `summary.csv` from every record of the run, in input order.
fn write_summaries(out: &Path, records_dir: &Path, stems: &[String]) -> Result<()> {
    let mut records = Vec::new();
    for stem in stems {
        let p = records_dir.join(format!("{stem}.json"));
        if let Ok(bytes) = std::fs::read(&p) {
            let r: PhotoRecord =
                serde_json::from_slice(&bytes).with_context(|| format!("{}: damaged record", p.display()))?;
            records.push(r);
        }
    }
    let json = serde_json::to_vec_pretty(&records)?;
    write_atomic(&out.join("summary.json"), |tmp| Ok(std::fs::write(tmp, &json)?))?;
    let mut csv = String::from(
        "image,image_sha256,top1,top1_probability,top2,top2_probability,top3,top3_probability,class,head,peak_row,peak_col,peak_value,entropy,class_probability,probability_if_evened,error\n",
    );
    let field =
        |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for r in &records {
        let mut top = String::new();
        for k in 0..3 {
            match r.top.get(k) {
                Some((n, p)) => top.push_str(&format!("{},{p:.6},", field(n))),
                None => top.push_str(",,"),
            }
        }
        let err = field(r.error.as_deref().unwrap_or(""));
        if r.heads.is_empty() {
            csv.push_str(&format!("{},{},{top},,,,,,,,,{err}\n", field(&r.image), r.image_sha256));
        }
        for h in &r.heads {
            csv.push_str(&format!(
                "{},{},{top}{},{},{},{},{:.6e},{:.4},{},{},{err}\n",
                field(&r.image),
                r.image_sha256,
                field(&h.class),
                h.head,
                h.peak_row,
                h.peak_col,
                h.peak_value,
                h.entropy,
                h.class_probability.map(|p| format!("{p:.6}")).unwrap_or_default(),
                h.probability_if_evened.map(|p| format!("{p:.6}")).unwrap_or_default()
            ));
        }
    }
    write_atomic(&out.join("summary.csv"), |tmp| Ok(std::fs::write(tmp, csv.as_bytes())?))
}
