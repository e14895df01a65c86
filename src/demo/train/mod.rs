//! Training INTR on the CPU with candle: the demo configuration, batches from an ImageFolder tree
//! with augmentation, cross-entropy on the class logits, AdamW with gradient clipping, warm-up and
//! cosine learning rate, resumable state, and the result written in the engine's checkpoint format.

pub mod model;
mod optim;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{F32Tensor, write_model, write_safetensors};
use crate::checkpoint::{META_INPUT_SIZE, META_TRAINING};
use crate::intr::config::{BackboneConfig, BlockKind, IntrConfig, PositionEmbedding};
use crate::intr::random::Rng;
pub use model::TrainModel;
pub use optim::AdamW;

/// ImageNet statistics, as the engine's preprocessing.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The demo model: a narrow dilated Bottleneck ResNet (one block per stage, stem 32), D = 128,
/// 8 heads, no encoder layer and 2 decoder layers, FFN 256, post-norm, sine embedding. Stride 16.
///
/// Without encoder layers the class queries read the backbone's local features directly: a token
/// of the background cannot carry what self-attention gathered from the bird, so a query that
/// needs the crown has to look at the crown. In short trial runs this doubled the share of
/// attention on the animal against two encoder layers, at equal accuracy.
#[must_use]
pub fn demo_config(classes: usize) -> IntrConfig {
    IntrConfig {
        hidden_dim: 128,
        nheads: 8,
        enc_layers: 0,
        dec_layers: 2,
        dim_feedforward: 256,
        num_queries: classes,
        pre_norm: false,
        position_embedding: PositionEmbedding::Sine,
        dilation: true,
        dilation_stage3: false,
        backbone: BackboneConfig {
            block: BlockKind::Bottleneck,
            blocks_per_stage: vec![1, 1, 1, 1],
            stage_channels: vec![64, 128, 256, 512],
            num_channels: 512,
        },
    }
}

/// Stem width of the demo model.
pub const DEMO_STEM: usize = 32;

/// Training settings (stored in the trained model's metadata, [`META_TRAINING`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub clip: f64,
    pub warmup: usize,
    /// Brightness and contrast jitter of the augmentation (0.15 = ±15 %; 0 = off).
    pub jitter: f32,
    /// Transformer dropout probability (0 = off; DETR's recipe uses 0.1, which made the demo
    /// model's attention less faithful, see the README).
    pub dropout: f32,
    /// Head-drop probability of the decoder's cross-attention (0 = off): each head's output is
    /// zeroed for a query of a sample with this probability, so every head must carry evidence.
    pub head_drop: f32,
    /// Random erasing (Zhong et al. 2017): the probability that one rectangle of 1–6 % of the
    /// image, aspect 0.3–3.3, is set to the mean colour (0 = off, as the demo model was trained).
    pub erase: f32,
    pub seed: u64,
    /// Stop after this many optimisation steps (smoke tests); `None` = all epochs.
    pub max_steps: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch: 32,
            lr: 1e-3,
            weight_decay: 1e-4,
            clip: 1.0,
            warmup: 100,
            jitter: 0.15,
            dropout: 0.0,
            head_drop: 0.0,
            erase: 0.0,
            seed: 0,
            max_steps: None,
        }
    }
}

/// One labelled image.
#[derive(Debug, Clone)]
pub struct Example {
    pub path: PathBuf,
    pub label: usize,
}

/// Decodes an image file into normalised CHW values (size must be `side × side`).
pub fn load_chw(path: &Path, side: usize) -> Result<Vec<f32>> {
    let img = image::open(path).with_context(|| format!("{}: cannot read the image", path.display()))?.to_rgb8();
    if img.width() as usize != side || img.height() as usize != side {
        bail!("{}: is {}×{}, expected {side}×{side}", path.display(), img.width(), img.height());
    }
    let mut chw = vec![0f32; 3 * side * side];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            chw[c * side * side + i] = (f32::from(p[c]) / 255.0 - MEAN[c]) / STD[c];
        }
    }
    Ok(chw)
}

/// Augments one CHW image in place: horizontal flip, shift by up to `max_shift` pixels (edges
/// replicated), brightness and contrast jitter of ±`jitter` (0.15 = ±15 %).
pub fn augment(chw: &[f32], side: usize, rng: &mut Rng, max_shift: i64, jitter: f32) -> Vec<f32> {
    let flip = rng.next_f32() < 0.5;
    let span = 2 * max_shift + 1;
    let dx = (rng.next_f32() * span as f32) as i64 - max_shift;
    let dy = (rng.next_f32() * span as f32) as i64 - max_shift;
    let gain = 1.0 + rng.uniform(jitter);
    let bias = rng.uniform(jitter) / 0.226;
    let s = side as i64;
    let mut out = vec![0f32; chw.len()];
    for c in 0..3 {
        let plane = &chw[c * side * side..(c + 1) * side * side];
        let mean = MEAN[c] / STD[c];
        for y in 0..s {
            let sy = (y - dy).clamp(0, s - 1);
            for x in 0..s {
                let xx = if flip { s - 1 - x } else { x };
                let sx = (xx - dx).clamp(0, s - 1);
                // Jitter acts on the un-normalised value: (v·σ + μ)·gain + b, normalised again.
                let v = plane[(sy * s + sx) as usize];
                out[c * side * side + (y * s + x) as usize] = (v + mean) * gain - mean + bias;
            }
        }
    }
    out
}

/// Smallest and largest share of the image one random erasing blanks.
pub const ERASE_AREA: (f32, f32) = (0.01, 0.06);

/// Random erasing of one normalised CHW image in place: with probability `p`, one rectangle of
/// 1–6 % of the image area with an aspect ratio of 0.3–3.3 (log-uniform) is set to 0, the mean
/// colour; up to ten draws are made for a rectangle that fits, as torchvision's `RandomErasing`
/// does. Its default area (2–33 %) often hides a whole demo bird and left the demo's training at
/// chance after 380 steps; 1–6 % is about one part of a bird. With `p == 0` nothing is drawn from
/// `rng`.
pub fn erase(chw: &mut [f32], side: usize, rng: &mut Rng, p: f32) {
    if p <= 0.0 || rng.next_f32() >= p {
        return;
    }
    let area = (side * side) as f32;
    for _ in 0..10 {
        let target = area * (ERASE_AREA.0 + rng.next_f32() * (ERASE_AREA.1 - ERASE_AREA.0));
        let ratio = (0.3f32.ln() + rng.next_f32() * (3.3f32.ln() - 0.3f32.ln())).exp();
        let h = (target * ratio).sqrt().round() as usize;
        let w = (target / ratio).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= side || w >= side {
            continue;
        }
        let y0 = ((rng.next_f32() * (side - h + 1) as f32) as usize).min(side - h);
        let x0 = ((rng.next_f32() * (side - w + 1) as f32) as usize).min(side - w);
        for plane in chw.chunks_exact_mut(side * side) {
            for row in plane.chunks_exact_mut(side).skip(y0).take(h) {
                row[x0..x0 + w].fill(0.0);
            }
        }
        return;
    }
}

/// Running state that makes a run resumable.
struct Progress {
    step: usize,
    epoch: usize,
}

/// Where the resumable training state of `out` lives.
#[must_use]
pub fn state_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".train-state");
    PathBuf::from(s)
}

/// Writes the model as a checkpoint the engine loads (config, classes, input size and the training
/// options in metadata).
pub fn save_model(model: &TrainModel, classes: &[String], side: usize, opts: &TrainOptions, out: &Path) -> Result<()> {
    let tensors: Vec<F32Tensor> =
        model.state_dict()?.iter().map(|(k, (shape, v))| F32Tensor::new(k, shape.clone(), v)).collect();
    let mut meta = HashMap::new();
    meta.insert(META_INPUT_SIZE.to_string(), side.to_string());
    meta.insert(META_TRAINING.to_string(), serde_json::to_string(opts)?);
    write_model(out, &tensors, model.intr.config(), Some(classes), meta)
}

fn save_state(model: &TrainModel, opt: &AdamW, p: &Progress, path: &Path) -> Result<()> {
    let mut tensors: Vec<F32Tensor> =
        model.state_dict()?.iter().map(|(k, (shape, v))| F32Tensor::new(k, shape.clone(), v)).collect();
    for (k, (shape, v)) in opt.state()? {
        tensors.push(F32Tensor::new(&k, shape, &v));
    }
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), p.step.to_string());
    meta.insert("epoch".to_string(), p.epoch.to_string());
    write_safetensors(path, &tensors, meta)
}

fn load_state(model: &mut TrainModel, opt: &mut AdamW, path: &Path) -> Result<Progress> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a training state: {e:?}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a training state: {e:?}", path.display()))?;
    let mut values = BTreeMap::new();
    for (name, view) in st.tensors() {
        let v: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        values.insert(name, (view.shape().to_vec(), v));
    }
    model.load_state(&values)?;
    opt.load_state(&values)?;
    let m = meta.metadata().clone().unwrap_or_default();
    let num = |k: &str| m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Progress { step: num("step"), epoch: num("epoch") })
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine decay to 1 % of `lr`.
#[must_use]
pub fn lr_at(step: usize, total: usize, o: &TrainOptions) -> f64 {
    if step < o.warmup {
        return o.lr * (step + 1) as f64 / o.warmup as f64;
    }
    let t = (step - o.warmup) as f64 / (total.saturating_sub(o.warmup)).max(1) as f64;
    o.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// What a training run reports per step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: usize,
    pub total: usize,
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub lr: f64,
}

/// Trains `model` on `examples` (images `side × side`). Resumes from `state` if it exists and
/// writes it after every epoch. `report` is called after every step. Returns the per-step losses.
pub fn train(
    model: &mut TrainModel,
    examples: &[Example],
    side: usize,
    o: &TrainOptions,
    state: Option<&Path>,
    mut report: impl FnMut(StepReport),
) -> Result<Vec<f32>> {
    if examples.is_empty() {
        bail!("no training images");
    }
    let device = Device::Cpu;
    let mut opt = AdamW::new(model, o.weight_decay)?;
    let mut progress = Progress { step: 0, epoch: 0 };
    if let Some(s) = state.filter(|s| s.exists()) {
        progress = load_state(model, &mut opt, s)?;
    }
    let steps_per_epoch = examples.len().div_ceil(o.batch);
    let total = o.max_steps.unwrap_or(steps_per_epoch * o.epochs).min(steps_per_epoch * o.epochs);
    let images: Vec<Vec<f32>> = examples.iter().map(|e| load_chw(&e.path, side)).collect::<Result<_>>()?;
    let mut losses = Vec::new();
    while progress.epoch < o.epochs && progress.step < total {
        // The order of an epoch depends only on the seed and the epoch: resumed runs repeat it.
        let mut rng = Rng::new(o.seed ^ (progress.epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut order: Vec<usize> = (0..examples.len()).collect();
        for i in (1..order.len()).rev() {
            let j = ((rng.next_f32() * (i + 1) as f32) as usize).min(i);
            order.swap(i, j);
        }
        let skip = progress.step - progress.epoch * steps_per_epoch;
        for chunk in order.chunks(o.batch).skip(skip) {
            if progress.step >= total {
                break;
            }
            let mut data = Vec::with_capacity(chunk.len() * 3 * side * side);
            for &i in chunk {
                let mut r =
                    Rng::new(o.seed ^ ((progress.step * o.batch + i) as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                let mut x = augment(&images[i], side, &mut r, (side / 16) as i64, o.jitter);
                erase(&mut x, side, &mut r, o.erase);
                data.extend(x);
            }
            let x = Tensor::from_vec(data, (chunk.len(), 3, side, side), &device)?;
            let labels: Vec<u32> = chunk.iter().map(|&i| examples[i].label as u32).collect();
            let y = Tensor::from_vec(labels.clone(), chunk.len(), &device)?;
            // Dropout and head-drop masks depend only on the seed and the step: resumed runs repeat them.
            model.set_dropout(
                o.dropout,
                o.head_drop,
                Rng::new(o.seed ^ (progress.step as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)),
            );
            let out = model.forward(&x, true)?;
            let loss = candle_nn::loss::cross_entropy(&out.logits, &y)?;
            let grads = loss.backward()?;
            let lr = lr_at(progress.step, total, o);
            opt.step(model, &grads, lr, o.clip)?;
            let pred = out.logits.argmax(1)?.to_vec1::<u32>()?;
            let correct = pred.iter().zip(&labels).filter(|(a, b)| a == b).count();
            let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            losses.push(l);
            progress.step += 1;
            report(StepReport {
                step: progress.step,
                total,
                epoch: progress.epoch,
                loss: l,
                accuracy: correct as f32 / chunk.len() as f32,
                lr,
            });
        }
        if progress.step >= (progress.epoch + 1) * steps_per_epoch {
            progress.epoch += 1;
            if let Some(s) = state {
                save_state(model, &opt, &progress, s)?;
            }
        }
    }
    Ok(losses)
}
