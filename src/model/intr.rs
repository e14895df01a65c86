//! The INTR network: backbone → input projection → encoder → class-query decoder → presence vector.
//! One forward pass yields every class's logit and the cross-attention maps of every decoder layer,
//! head and class.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::backbone::Backbone;
use super::config::IntrConfig;
use super::error::{Error, Result};
use super::transformer::{Linear, PositionEncoder, Transformer};
use super::weights::WeightStore;

/// A loaded INTR model.
pub struct Intr {
    config: IntrConfig,
    device: Device,
    backbone: Backbone,
    input_proj: Linear,
    position: PositionEncoder,
    transformer: Transformer,
    /// (Q, D)
    query_embed: Tensor,
    presence: Linear,
    /// Shorter input side the model was trained at, when it is not the official 800.
    input_size: Option<usize>,
}

/// What one forward pass produces, as plain data that can cross threads.
#[derive(Debug, Clone)]
pub struct IntrOutput {
    /// (classes) raw class logits.
    pub logits: Vec<f32>,
    /// (layers, heads, classes, h, w) cross-attention weights, each map summing to 1 over h·w.
    pub attention: Vec<f32>,
    pub layers: usize,
    pub heads: usize,
    pub classes: usize,
    /// Attention grid (h, w).
    pub grid: (usize, usize),
    /// Network input (width, height) in pixels.
    pub input: (usize, usize),
    /// Backbone stride in input pixels: cell (i, j) reads the input around pixel (stride·j, stride·i).
    pub stride: usize,
    /// Wall time of each stage.
    pub timings: StageTimings,
}

/// Time spent in each part of the forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub backbone: Duration,
    pub encoder: Duration,
    pub decoder: Duration,
}

/// Every intermediate the parity tests compare (2-D tensors are (tokens, D)).
pub struct Trace {
    /// (h·w, C)
    pub backbone_features: Tensor,
    /// (h·w, D)
    pub pos_embed: Tensor,
    /// (h·w, D)
    pub input_proj: Tensor,
    /// each (h·w, D)
    pub encoder_layer_outputs: Vec<Tensor>,
    /// (h·w, D)
    pub encoder_output: Tensor,
    /// each (Q, D), before the final decoder norm
    pub decoder_layer_outputs: Vec<Tensor>,
    /// each (Q, D) = decoder.norm(layer output)
    pub hs: Vec<Tensor>,
    /// each (heads, Q, h·w)
    pub attention: Vec<Tensor>,
    /// (Q)
    pub logits: Tensor,
    pub grid: (usize, usize),
    pub timings: StageTimings,
}

impl IntrOutput {
    /// Number of grid cells h·w.
    #[must_use]
    pub fn cells(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// Where the grid lies over the input image (see [`super::preprocess::cell_of`]).
    #[must_use]
    pub fn placement(&self) -> super::preprocess::GridPlacement {
        super::preprocess::GridPlacement::receptive(self.input, self.stride)
    }

    /// The map of one layer, head and class: h·w values, row-major.
    #[must_use]
    pub fn map(&self, layer: usize, head: usize, class: usize) -> &[f32] {
        let n = self.cells();
        let i = ((layer * self.heads + head) * self.classes + class) * n;
        &self.attention[i..i + n]
    }

    /// The mean over heads of one layer and class: h·w values.
    #[must_use]
    pub fn head_mean(&self, layer: usize, class: usize) -> Vec<f32> {
        let n = self.cells();
        let mut out = vec![0.0f32; n];
        for h in 0..self.heads {
            for (o, v) in out.iter_mut().zip(self.map(layer, h, class)) {
                *o += v;
            }
        }
        let inv = 1.0 / self.heads as f32;
        out.iter_mut().for_each(|v| *v *= inv);
        out
    }

    /// Softmax of the logits (class probabilities).
    #[must_use]
    pub fn probabilities(&self) -> Vec<f32> {
        softmax(&self.logits)
    }

    /// Class indices sorted by descending logit (ties by index).
    #[must_use]
    pub fn ranking(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.logits.len()).collect();
        idx.sort_by(|&a, &b| self.logits[b].total_cmp(&self.logits[a]).then(a.cmp(&b)));
        idx
    }
}

/// Numerically stable softmax.
#[must_use]
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| f64::from(v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| (v / sum) as f32).collect()
}

impl Intr {
    /// Builds the model from `ws` (every weight must be present and used) on `device`.
    pub fn load(ws: &WeightStore, config: &IntrConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let d = config.hidden_dim;
        let backbone = Backbone::load(ws, &config.backbone, config.dilated_stages())?;
        let input_proj = ws.get("input_proj.weight", &[d, config.backbone.num_channels, 1, 1])?;
        let input_proj_b = ws.get("input_proj.bias", &[d])?;
        let input_proj = Linear::from_parts(input_proj, input_proj_b, d, config.backbone.num_channels, device)?;
        let position = PositionEncoder::load(ws, config)?;
        let transformer = Transformer::load(ws, config, device)?;
        let query_embed =
            Tensor::from_vec(ws.get("query_embed.weight", &[config.num_queries, d])?, (config.num_queries, d), device)?;
        let presence = Linear::load(ws, "presence_vector", 1, d, device)?;
        ws.finish()?;
        Ok(Self {
            config: config.clone(),
            device: device.clone(),
            backbone,
            input_proj,
            position,
            transformer,
            query_embed,
            presence,
            input_size: None,
        })
    }

    /// Records the shorter input side the model was trained at (from the checkpoint's metadata).
    pub fn set_input_size(&mut self, size: Option<usize>) {
        self.input_size = size;
    }

    /// `base` adjusted to the model: a model trained at its own input size gets that shorter side
    /// and no longer-side cap; official models keep the official 800/1333 rule.
    #[must_use]
    pub fn preprocess_options(
        &self,
        base: super::preprocess::PreprocessOptions,
    ) -> super::preprocess::PreprocessOptions {
        match self.input_size {
            Some(size) => super::preprocess::PreprocessOptions { size, max_size: None, ..base },
            None => base,
        }
    }

    /// The configuration the model was built with.
    #[must_use]
    pub fn config(&self) -> &IntrConfig {
        &self.config
    }

    /// The device the transformer runs on.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Makes the backbone use candle's `conv2d` even on the CPU (cross-checking only).
    pub fn set_force_candle_backbone(&mut self, on: bool) {
        self.backbone.force_candle = on;
    }

    /// Runs the model on a normalised image `(3, H, W)` given as CHW f32 values.
    pub fn forward(&self, chw: &[f32], h: usize, w: usize) -> Result<IntrOutput> {
        self.forward_inner(chw, h, w, None)
    }

    /// [`Intr::forward`] plus, for each head of the last decoder layer, every class's logit when
    /// that head alone attends evenly to the whole grid (`evened[head][class]`): how much each
    /// class's decision rests on where that head looks. The backbone, encoder and earlier decoder
    /// layers run once; the last decoder layer runs once more per head.
    pub fn forward_evening_heads(&self, chw: &[f32], h: usize, w: usize) -> Result<(IntrOutput, Vec<Vec<f32>>)> {
        let mut evened = Vec::new();
        let out = self.forward_inner(chw, h, w, Some(&mut evened))?;
        Ok((out, evened))
    }

    fn forward_inner(&self, chw: &[f32], h: usize, w: usize, evened: Option<&mut Vec<Vec<f32>>>) -> Result<IntrOutput> {
        let (heads, classes) = (self.config.nheads, self.config.num_queries);
        let mut attention = Vec::new();
        // Each layer's maps are appended as soon as they exist, so no second copy is ever held.
        let layers = self.config.dec_layers;
        let trace = self.run(
            chw,
            h,
            w,
            &mut |a: Tensor| {
                if attention.capacity() == 0 {
                    attention.reserve_exact(a.elem_count() * layers);
                }
                attention.extend(a.flatten_all()?.to_vec1::<f32>()?);
                Ok(())
            },
            evened,
        )?;
        Ok(IntrOutput {
            logits: trace.logits.to_vec1::<f32>()?,
            attention,
            layers: trace.hs.len(),
            heads,
            classes,
            grid: trace.grid,
            input: (w, h),
            stride: self.config.stride(),
            timings: trace.timings,
        })
    }

    /// Like [`Intr::forward`] but keeps every intermediate.
    pub fn forward_traced(&self, chw: &[f32], h: usize, w: usize) -> Result<Trace> {
        let mut attention = Vec::new();
        let mut trace = self.run(
            chw,
            h,
            w,
            &mut |a: Tensor| {
                attention.push(a);
                Ok(())
            },
            None,
        )?;
        trace.attention = attention;
        Ok(trace)
    }

    /// The forward pass; each decoder layer's cross-attention (heads, Q, h·w) goes to `on_attention`
    /// (the returned trace's `attention` is empty). With `evened`, it also receives the logits with
    /// each head of the last layer in turn evened (see [`Intr::forward_evening_heads`]).
    fn run(
        &self,
        chw: &[f32],
        h: usize,
        w: usize,
        on_attention: &mut dyn FnMut(Tensor) -> Result<()>,
        evened: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Trace> {
        if chw.len() != 3 * h * w || h == 0 || w == 0 {
            return Err(Error::Config(format!("input has {} values, expected 3×{h}×{w}", chw.len())));
        }
        let t0 = Instant::now();
        let (features, grid) = self.backbone.forward(chw, h, w, &self.device)?;
        let features = features.to_device(&self.device)?;
        let t1 = Instant::now();
        let pos_embed = self.position.encode(grid.0, grid.1, &self.device)?;
        let input_proj = self.input_proj.forward(&features)?;
        let mut x = input_proj.clone();
        let mut encoder_layer_outputs = Vec::with_capacity(self.transformer.encoder.len());
        for layer in &self.transformer.encoder {
            x = layer.forward(&x, &pos_embed)?;
            encoder_layer_outputs.push(x.clone());
        }
        let memory = self.transformer.norm_encoder_output(x)?;
        let t2 = Instant::now();
        let mut tgt = self.query_embed.zeros_like()?;
        let mut decoder_layer_outputs = Vec::new();
        let mut hs = Vec::new();
        for layer in &self.transformer.decoder {
            let (t, wts) = layer.forward(&tgt, &memory, &self.query_embed)?;
            tgt = t;
            hs.push(self.transformer.norm_decoder_output(&tgt)?);
            decoder_layer_outputs.push(tgt.clone());
            on_attention(wts)?;
        }
        let last = hs.last().ok_or_else(|| Error::Config("the model has no decoder layers".into()))?;
        let logits = self.presence.forward(last)?.squeeze(1)?;
        if let (Some(evened), Some(layer)) = (evened, self.transformer.decoder.last()) {
            // The last layer's input: the layer before's output, or the zero start.
            let n = decoder_layer_outputs.len();
            let last_input =
                if n >= 2 { decoder_layer_outputs[n - 2].clone() } else { self.query_embed.zeros_like()? };
            evened.clear();
            for head in 0..self.config.nheads {
                let (t, _) = layer.forward_evened(&last_input, &memory, &self.query_embed, &[head])?;
                let hs = self.transformer.norm_decoder_output(&t)?;
                evened.push(self.presence.forward(&hs)?.squeeze(1)?.to_vec1::<f32>()?);
            }
        }
        let t3 = Instant::now();
        Ok(Trace {
            backbone_features: features,
            pos_embed,
            input_proj,
            encoder_layer_outputs,
            encoder_output: memory,
            decoder_layer_outputs,
            hs,
            attention: Vec::new(),
            logits,
            grid,
            timings: StageTimings { backbone: t1 - t0, encoder: t2 - t1, decoder: t3 - t2 },
        })
    }
}

impl Intr {
    /// The fast backbone's per-stage outputs (stem, layer1..4), NHWC; for parity checks.
    #[must_use]
    pub fn backbone_stage_outputs(&self, x: super::conv_cpu::Fmap) -> Vec<super::conv_cpu::Fmap> {
        self.backbone.stage_outputs(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{BackboneConfig, BlockKind};
    use crate::model::synthetic::{Rng, random_weights};
    use crate::model::weights::MemorySource;

    /// A small random INTR with `dec_layers` decoder layers.
    fn config(dec_layers: usize) -> IntrConfig {
        IntrConfig {
            hidden_dim: 32,
            nheads: 4,
            enc_layers: 1,
            dec_layers,
            dim_feedforward: 64,
            backbone: BackboneConfig {
                block: BlockKind::Basic,
                blocks_per_stage: vec![1, 1, 1, 1],
                stage_channels: vec![8, 16, 32, 64],
                num_channels: 64,
            },
            ..IntrConfig::official(5)
        }
    }

    fn load(cfg: &IntrConfig, weights: &MemorySource) -> Intr {
        Intr::load(&WeightStore::new(weights), cfg, &Device::Cpu).unwrap()
    }

    /// Evening a head of the last layer gives what the same model gives with that head's query
    /// projection zeroed (its scores are all zero, so softmax spreads it evenly by itself): an
    /// independent path through the whole model, for a one-layer decoder (whose last layer starts
    /// from zeros) and a deeper one.
    #[test]
    fn evening_a_head_equals_zeroing_its_query_projection() {
        let (h, w) = (64, 96);
        let mut rng = Rng::new(11);
        let chw: Vec<f32> = (0..3 * h * w).map(|_| rng.uniform(2.0)).collect();
        for dec_layers in [1, 3] {
            let cfg = config(dec_layers);
            let weights = random_weights(&cfg, 5);
            let (out, evened) = load(&cfg, &weights).forward_evening_heads(&chw, h, w).unwrap();
            assert_eq!(evened.len(), cfg.nheads);
            let (d, dh) = (cfg.hidden_dim, cfg.hidden_dim / cfg.nheads);
            for head in 0..cfg.nheads {
                let mut silent = weights.clone();
                let p = format!("transformer.decoder.layers.{}.multihead_attn", dec_layers - 1);
                let (_, wq) = silent.tensors.get_mut(&format!("{p}.in_proj_weight")).unwrap();
                wq[head * dh * d..(head + 1) * dh * d].fill(0.0);
                let (_, bq) = silent.tensors.get_mut(&format!("{p}.in_proj_bias")).unwrap();
                bq[head * dh..(head + 1) * dh].fill(0.0);
                let want = load(&cfg, &silent).forward(&chw, h, w).unwrap().logits;
                let moved = want.iter().zip(&out.logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(moved > 1e-4, "{dec_layers} layers, head {}: evening moves nothing ({moved})", head + 1);
                for (c, (a, b)) in evened[head].iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{dec_layers} layers, head {}, class {c}: evened {a} vs zero query {b}",
                        head + 1
                    );
                }
            }
        }
    }
}
