//! INTR as differentiable candle operations, for training: the same network as the engine
//! (`crate::intr`), parameters named exactly as the official state dict, so a trained model is
//! written as a checkpoint the engine loads. Batch norm trains on batch statistics and keeps running
//! statistics, which become the checkpoint's frozen batch norm.
//!
//! Convolutions (a gathered matrix times a matmul), training-mode batch norm and the stem's max-pool
//! are operations with hand-written backward passes (`super::ops`); the rest is candle's
//! differentiable operations, with softmax and layer norm written out.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Result, Tensor, Var};

use crate::intr::config::{BlockKind, IntrConfig};
use crate::intr::random::Rng;

/// Batch-norm momentum of the running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;
const LN_EPS: f64 = 1e-5;

/// Named values: name → (shape, row-major f32 values).
pub type NamedValues = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The trainable model: parameters (official names) and batch-norm running statistics.
pub struct TrainModel {
    pub cfg: IntrConfig,
    /// Trainable parameters by official state-dict name.
    pub params: BTreeMap<String, Var>,
    /// `*.running_mean` / `*.running_var` by name.
    pub buffers: BTreeMap<String, Tensor>,
    pub device: Device,
    /// Transformer dropout of training passes (DETR's places: attention weights, each residual
    /// branch, the feed-forward hidden layer): probability.
    dropout: f32,
    /// Head drop of training passes: the probability that one head's cross-attention output is
    /// zeroed for one query of one sample (the others scaled by 1 / (1 − p)), so that no head can
    /// idle while the others carry the class.
    head_drop: f32,
    /// Draws the dropout and head-drop masks.
    mask_rng: Rng,
}

/// What one forward pass returns.
pub struct TrainOutput {
    /// (B, Q) class logits.
    pub logits: Tensor,
    /// (B, H, Q, h·w) cross-attention of the last decoder layer.
    pub attention: Tensor,
    /// (h, w) of the token grid.
    pub grid: (usize, usize),
}

/// Initial values in the spirit of the official recipe: He-normal convolutions (torchvision),
/// Xavier-uniform transformer matrices (DETR), unit batch/layer norms with the last batch norm of
/// each residual branch at zero (torchvision's `zero_init_residual`), N(0, 1) class queries.
fn init_values(name: &str, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let normal = |rng: &mut Rng, std: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (rng.next_f32().max(1e-7), rng.next_f32());
                std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    };
    let is_bn = name.contains(".bn") || name.contains("downsample.1");
    if name.ends_with("running_var") {
        return vec![1.0; n];
    }
    if name.ends_with("running_mean") || name.ends_with("bias") {
        return vec![0.0; n];
    }
    if is_bn || name.contains("norm") {
        let last_bn = name.contains("layer") && (name.ends_with("bn3.weight"));
        return vec![if last_bn { 0.0 } else { 1.0 }; n];
    }
    if name == "query_embed.weight" {
        return normal(rng, 1.0);
    }
    if shape.len() == 4 {
        // He normal, fan-out (torchvision's ResNet init).
        let fan_out = shape[0] * shape[2] * shape[3];
        return normal(rng, (2.0 / fan_out as f32).sqrt());
    }
    let (fan_out, fan_in) = (shape[0], shape.get(1).copied().unwrap_or(1));
    let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
    (0..n).map(|_| rng.uniform(a)).collect()
}

impl TrainModel {
    /// A freshly initialised model of `cfg` with a stem of `stem` channels.
    pub fn new(cfg: &IntrConfig, stem: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let mut params = BTreeMap::new();
        let mut buffers = BTreeMap::new();
        for (name, shape) in crate::intr::random::state_dict_shapes_with_stem(cfg, stem) {
            let values = init_values(&name, &shape, &mut rng);
            let t = Tensor::from_vec(values, shape.as_slice(), device)?;
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                buffers.insert(name, t);
            } else {
                params.insert(name, Var::from_tensor(&t)?);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            params,
            buffers,
            device: device.clone(),
            dropout: 0.0,
            head_drop: 0.0,
            mask_rng: Rng::new(0),
        })
    }

    /// Sets the dropout and head drop of the following training passes (0 switches either off);
    /// `rng` draws their masks, so a pass is reproducible from it.
    pub fn set_dropout(&mut self, dropout: f32, head_drop: f32, rng: Rng) {
        self.dropout = dropout;
        self.head_drop = head_drop;
        self.mask_rng = rng;
    }

    /// Inverted dropout (PyTorch's): zeroes each element with the set probability and scales the
    /// rest by 1 / (1 − p). Identity in evaluation passes or without dropout.
    fn drop(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.dropout <= 0.0 {
            return Ok(x.clone());
        }
        let mask = dropout_mask(x.elem_count(), self.dropout, &mut self.mask_rng);
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }

    /// Head drop of a per-head context (B, H, Tq, d): one inverted-dropout draw per (sample,
    /// head, query). Identity in evaluation passes or without head drop.
    fn drop_heads(&mut self, ctx: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.head_drop <= 0.0 {
            return Ok(ctx.clone());
        }
        let (b, h, q, _) = ctx.dims4()?;
        let mask = dropout_mask(b * h * q, self.head_drop, &mut self.mask_rng);
        ctx.broadcast_mul(&Tensor::from_vec(mask, (b, h, q, 1), ctx.device())?)
    }

    fn p(&self, name: &str) -> Result<Tensor> {
        self.params
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::Msg(format!("parameter `{name}` is missing")))
    }

    /// All values (parameters and buffers) by name, as (shape, f32 values).
    pub fn state_dict(&self) -> Result<NamedValues> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.params {
            out.insert(k.clone(), (v.dims().to_vec(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?));
        }
        for (k, t) in &self.buffers {
            out.insert(k.clone(), (t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok(out)
    }

    /// Replaces values by name (resuming); every name must exist with the same shape.
    pub fn load_state(&mut self, values: &NamedValues) -> Result<()> {
        for (k, (shape, v)) in values {
            let t = Tensor::from_vec(v.clone(), shape.as_slice(), &self.device)?;
            if let Some(var) = self.params.get(k) {
                if var.dims() != shape.as_slice() {
                    candle_core::bail!("`{k}` has shape {shape:?}, the model expects {:?}", var.dims());
                }
                var.set(&t)?;
            } else if self.buffers.contains_key(k) {
                self.buffers.insert(k.clone(), t);
            }
        }
        Ok(())
    }

    /// Batch norm of a channels-first activation (C, B, H, W): batch statistics while training
    /// (running statistics updated), running statistics otherwise. Channels-first keeps every
    /// reduction, forward and backward, on the contiguous last dimension.
    fn batch_norm(&mut self, x: &Tensor, name: &str, train: bool) -> Result<Tensor> {
        let (w, b) = (self.p(&format!("{name}.weight"))?, self.p(&format!("{name}.bias"))?);
        let dims = x.dims4()?;
        let c = dims.0;
        if train {
            let (y, mean, var) = super::ops::batch_norm_train(x, &w, &b, BN_EPS)?;
            let n = (x.elem_count() / c) as f64;
            let rm = format!("{name}.running_mean");
            let rv = format!("{name}.running_var");
            if let (Some(old_m), Some(old_v)) = (self.buffers.get(&rm), self.buffers.get(&rv)) {
                let m = Tensor::from_vec(mean, c, &self.device)?;
                let v = (Tensor::from_vec(var, c, &self.device)? * (n / (n - 1.0).max(1.0)))?;
                let new_m = ((old_m * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
                let new_v = ((old_v * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
                self.buffers.insert(rm, new_m);
                self.buffers.insert(rv, new_v);
            }
            return Ok(y);
        }
        let x2 = x.reshape((c, ()))?;
        let m = self.buffers.get(&format!("{name}.running_mean")).cloned();
        let v = self.buffers.get(&format!("{name}.running_var")).cloned();
        let (mean, var) = match (m, v) {
            (Some(m), Some(v)) => (m.reshape((c, 1))?, v.reshape((c, 1))?),
            _ => candle_core::bail!("running statistics of `{name}` are missing"),
        };
        let scale = w.reshape((c, 1))?.broadcast_mul(&(var + BN_EPS)?.sqrt()?.recip()?)?;
        let shift = (b.reshape((c, 1))? - mean.broadcast_mul(&scale)?)?;
        x2.broadcast_mul(&scale)?.broadcast_add(&shift)?.reshape(dims)
    }

    fn conv_bn(&mut self, x: &Tensor, conv: &str, bn: &str, geo: (usize, usize, usize), train: bool) -> Result<Tensor> {
        let w = self.p(&format!("{conv}.weight"))?;
        let y = conv2d(x, &w, geo.0, geo.1, geo.2)?;
        self.batch_norm(&y, bn, train)
    }

    /// The ResNet, channels-first: (3, B, H, W) → (C, B, h, w).
    fn backbone(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let b = "backbone.0.body";
        let mut x = self.conv_bn(x, &format!("{b}.conv1"), &format!("{b}.bn1"), (2, 3, 1), train)?.relu()?;
        x = super::ops::max_pool_3x3_s2(&x)?;
        let cfg = self.cfg.backbone.clone();
        let mut cur_dilation = 1;
        for (s, &n) in cfg.blocks_per_stage.iter().enumerate() {
            let mut stride = if s == 0 { 1 } else { 2 };
            let previous = cur_dilation;
            if self.cfg.dilated_stages()[s] {
                cur_dilation *= stride;
                stride = 1;
            }
            for blk in 0..n {
                let (bs, bd) = if blk == 0 { (stride, previous) } else { (1, cur_dilation) };
                let p = format!("{b}.layer{}.{blk}", s + 1);
                let conv = |i: usize| (format!("{p}.conv{i}"), format!("{p}.bn{i}"));
                let out = match cfg.block {
                    BlockKind::Bottleneck => {
                        let (c1, n1) = conv(1);
                        let (c2, n2) = conv(2);
                        let (c3, n3) = conv(3);
                        let y = self.conv_bn(&x, &c1, &n1, (1, 0, 1), train)?.relu()?;
                        let y = self.conv_bn(&y, &c2, &n2, (bs, bd, bd), train)?.relu()?;
                        self.conv_bn(&y, &c3, &n3, (1, 0, 1), train)?
                    }
                    BlockKind::Basic => {
                        let (c1, n1) = conv(1);
                        let (c2, n2) = conv(2);
                        let y = self.conv_bn(&x, &c1, &n1, (bs, 1, 1), train)?.relu()?;
                        self.conv_bn(&y, &c2, &n2, (1, 1, 1), train)?
                    }
                };
                let shortcut = if self.params.contains_key(&format!("{p}.downsample.0.weight")) {
                    let (c, n) = (format!("{p}.downsample.0"), format!("{p}.downsample.1"));
                    self.conv_bn(&x, &c, &n, (bs, 0, 1), train)?
                } else {
                    x.clone()
                };
                x = (out + shortcut)?.relu()?;
            }
        }
        Ok(x)
    }

    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"))?;
        let b = self.p(&format!("{name}.bias"))?;
        x.broadcast_matmul(&w.t()?)?.broadcast_add(&b)
    }

    fn layer_norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let w = self.p(&format!("{name}.weight"))?;
        let b = self.p(&format!("{name}.bias"))?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?.broadcast_mul(&w)?.broadcast_add(&b)
    }

    /// Multi-head attention, batch first: q (B, Tq, D), k and v (B, Tk, D) → (out (B, Tq, D),
    /// weights (B, H, Tq, Tk)).
    /// `heads_drop`: whether head drop applies (the decoder's cross-attention).
    fn attention(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        name: &str,
        (train, heads_drop): (bool, bool),
    ) -> Result<(Tensor, Tensor)> {
        let d = self.cfg.hidden_dim;
        let h = self.cfg.nheads;
        let hd = d / h;
        let w = self.p(&format!("{name}.in_proj_weight"))?;
        let b = self.p(&format!("{name}.in_proj_bias"))?;
        let proj = |x: &Tensor, i: usize| -> Result<Tensor> {
            let (bs, t, _) = x.dims3()?;
            let y = x.broadcast_matmul(&w.narrow(0, i * d, d)?.t()?)?.broadcast_add(&b.narrow(0, i * d, d)?)?;
            y.reshape((bs, t, h, hd))?.transpose(1, 2)?.contiguous()
        };
        let (qh, kh, vh) = (proj(q, 0)?, proj(k, 1)?, proj(v, 2)?);
        let scores = (qh * (1.0 / (hd as f64).sqrt()))?.matmul(&kh.transpose(2, 3)?.contiguous()?)?;
        let weights = softmax_last(&scores)?;
        let ctx = self.drop(&weights, train)?.matmul(&vh)?;
        let ctx = if heads_drop { self.drop_heads(&ctx, train)? } else { ctx };
        let (bs, _, tq, _) = ctx.dims4()?;
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((bs, tq, d))?;
        Ok((self.linear(&ctx, &format!("{name}.out_proj"))?, weights))
    }

    fn ffn(&mut self, x: &Tensor, p: &str, train: bool) -> Result<Tensor> {
        let hidden = self.linear(x, &format!("{p}.linear1"))?.relu()?;
        let hidden = self.drop(&hidden, train)?;
        let out = self.linear(&hidden, &format!("{p}.linear2"))?;
        self.drop(&out, train)
    }

    /// Forward pass of a normalised batch (B, 3, H, W). Post-norm, sine embedding (the demo
    /// configuration); other configurations are refused.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<TrainOutput> {
        if self.cfg.pre_norm {
            candle_core::bail!("training supports post-norm models only");
        }
        // The backbone runs channels-first: (3, B, H, W).
        let feat = self.backbone(&x.transpose(0, 1)?.contiguous()?, train)?;
        let w = self.p("input_proj.weight")?;
        let src = conv2d(&feat, &w, 1, 0, 1)?.broadcast_add(&self.p("input_proj.bias")?.reshape(((), 1, 1, 1))?)?;
        let (d, bs, gh, gw) = src.dims4()?;
        let mut memory = src.reshape((d, bs, gh * gw))?.permute((1, 2, 0))?.contiguous()?; // (B, hw, D)
        let pos = sine_embedding(gh, gw, d, &self.device)?.unsqueeze(0)?; // (1, hw, D)
        for i in 0..self.cfg.enc_layers {
            let p = format!("transformer.encoder.layers.{i}");
            let qk = memory.broadcast_add(&pos)?;
            let (sa, _) = self.attention(&qk, &qk, &memory, &format!("{p}.self_attn"), (train, false))?;
            let sa = self.drop(&sa, train)?;
            memory = self.layer_norm(&(memory + sa)?, &format!("{p}.norm1"))?;
            let ff = self.ffn(&memory, &p, train)?;
            memory = self.layer_norm(&(&memory + ff)?, &format!("{p}.norm2"))?;
        }
        let q = self.cfg.num_queries;
        let qpos = self.p("query_embed.weight")?.unsqueeze(0)?.broadcast_as((bs, q, d))?.contiguous()?;
        let mut tgt = Tensor::zeros((bs, q, d), DType::F32, &self.device)?;
        let mut attention = None;
        for i in 0..self.cfg.dec_layers {
            let p = format!("transformer.decoder.layers.{i}");
            let qk = (&tgt + &qpos)?;
            let (sa, _) = self.attention(&qk, &qk, &tgt, &format!("{p}.self_attn"), (train, false))?;
            let sa = self.drop(&sa, train)?;
            tgt = self.layer_norm(&(tgt + sa)?, &format!("{p}.norm1"))?;
            let (ca, weights) =
                self.attention(&(&tgt + &qpos)?, &memory, &memory, &format!("{p}.multihead_attn"), (train, true))?;
            let ca = self.drop(&ca, train)?;
            tgt = self.layer_norm(&(tgt + ca)?, &format!("{p}.norm2"))?;
            let ff = self.ffn(&tgt, &p, train)?;
            tgt = self.layer_norm(&(&tgt + ff)?, &format!("{p}.norm3"))?;
            attention = Some(weights);
        }
        let hs = self.layer_norm(&tgt, "transformer.decoder.norm")?;
        let logits = self.linear(&hs, "presence_vector")?.squeeze(2)?;
        let attention = attention.ok_or_else(|| candle_core::Error::Msg("no decoder layer".into()))?;
        Ok(TrainOutput { logits, attention, grid: (gh, gw) })
    }
}

/// An inverted-dropout mask of `n` elements: 0 with probability `p`, else 1 / (1 − p).
fn dropout_mask(n: usize, p: f32, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    (0..n).map(|_| if rng.next_f32() < p { 0.0 } else { keep }).collect()
}

/// Softmax over the last dimension, written out (differentiable).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// 2-D convolution (no bias) of a channels-first activation (C, B, H, W) with (O, C, k, k) →
/// (O, B, Ho, Wo): the gathered matrix (see `ops::im2col`) times one matmul.
/// `stride`, `padding`, `dilation` as PyTorch.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize, dilation: usize) -> Result<Tensor> {
    let (o, c, k, _) = w.dims4()?;
    let g = super::ops::ConvGeometry::new(x.dims4()?, k, stride, padding, dilation);
    let cols = super::ops::im2col(x, g)?;
    // (O, C, k, k) → (O, k·k·C), tap-major as the gathered rows.
    let wm = w.permute((0, 2, 3, 1))?.contiguous()?.reshape((o, k * k * c))?;
    wm.matmul(&cols)?.reshape((o, g.b, g.ho, g.wo))
}

/// DETR's normalised sine embedding for an `h × w` grid: (h·w, d), y channels first.
pub fn sine_embedding(h: usize, w: usize, d: usize, device: &Device) -> Result<Tensor> {
    let npf = d / 2;
    let scale = std::f32::consts::TAU;
    let dim_t: Vec<f32> = (0..npf).map(|k| 10000f32.powf(2.0 * (k / 2) as f32 / npf as f32)).collect();
    let mut out = Vec::with_capacity(h * w * d);
    for i in 0..h {
        for j in 0..w {
            let y = (i + 1) as f32 / (h as f32 + 1e-6) * scale;
            let x = (j + 1) as f32 / (w as f32 + 1e-6) * scale;
            for base in [y, x] {
                for (k, t) in dim_t.iter().enumerate() {
                    let v = base / t;
                    out.push(if k % 2 == 0 { v.sin() } else { v.cos() });
                }
            }
        }
    }
    Tensor::from_vec(out, (h * w, d), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_mask_drops_at_rate_and_keeps_the_mean() {
        for p in [0.1f32, 0.5] {
            let m = dropout_mask(100_000, p, &mut Rng::new(3));
            let dropped = m.iter().filter(|&&v| v == 0.0).count() as f32 / m.len() as f32;
            assert!((dropped - p).abs() < 0.01, "dropped {dropped} at p = {p}");
            assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-6));
            let mean = m.iter().sum::<f32>() / m.len() as f32;
            assert!((mean - 1.0).abs() < 0.02, "mean {mean} at p = {p}");
        }
        assert_eq!(dropout_mask(64, 0.1, &mut Rng::new(9)), dropout_mask(64, 0.1, &mut Rng::new(9)));
    }

    #[test]
    fn head_drop_zeroes_whole_heads_in_training_passes_only() {
        let cfg = crate::demo::train::demo_config(4);
        let mut m = TrainModel::new(&cfg, crate::demo::train::DEMO_STEM, 0, &Device::Cpu).unwrap();
        m.set_dropout(0.0, 0.5, Rng::new(5));
        let ctx = Tensor::ones((2, 8, 4, 16), DType::F32, &Device::Cpu).unwrap();
        let rows = m.drop_heads(&ctx, true).unwrap().reshape((64, 16)).unwrap().to_vec2::<f32>().unwrap();
        let zeroed = rows.iter().filter(|r| r.iter().all(|&v| v == 0.0)).count();
        assert!(rows.iter().all(|r| r.iter().all(|&v| v == 0.0) || r.iter().all(|&v| v == 2.0)), "{rows:?}");
        assert!((16..=48).contains(&zeroed), "{zeroed} of 64 heads zeroed at p = 0.5");
        let eval = m.drop_heads(&ctx, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(eval.iter().all(|&v| v == 1.0));
    }
}
