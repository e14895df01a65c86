//! The INTR network: backbone → input projection → encoder → class-query decoder → presence vector.
//! One forward pass yields every class's logit and the cross-attention maps of every decoder layer,
//! head and class.

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::backbone::Backbone;
use super::config::IntrConfig;
use super::layers::Linear;
use super::pass::TrainPass;
use super::transformer::{PositionEncoder, Transformer};
use super::weights::{WeightStore, Weights, WeightsRoot};
use crate::error::{Error, Result};

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

/// What the last decoder layer read in a forward pass: enough to run that layer again
/// ([`Intr::last_layer_logits`]) without the backbone, encoder or earlier layers.
#[derive(Debug)]
pub struct LastLayerInput {
    /// (Q, D) the layer's input: the previous layer's output, or zeros for a one-layer decoder.
    input: Tensor,
    /// (h·w, D) the encoder output the cross-attention reads.
    memory: Tensor,
}

/// The last decoder layer seen from one class query ([`Intr::class_query`]): after the layer's
/// self-attention every query is computed on its own, so evening heads for this query alone
/// leaves every other class's logit as it was.
pub struct ClassQuery {
    /// (1, D) the query's residual stream entering the cross-attention.
    residual: Tensor,
    /// (1, D) the cross-attention's output with no head evened.
    base: Tensor,
    /// Per head, (1, D): what evening that head adds to the cross-attention's output. The output
    /// projection is linear, so evening a set of heads adds the sum of theirs.
    deltas: Vec<Tensor>,
}

/// What a training pass returns.
pub struct TrainOutput {
    /// (B, Q) class logits.
    pub logits: Tensor,
    /// (B, H, Q, h·w) cross-attention of the last decoder layer.
    pub attention: Tensor,
    /// (h, w) of the token grid.
    pub grid: (usize, usize),
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

    /// Where the grid lies over the input image (see [`crate::image::grid::cell_of`]).
    #[must_use]
    pub fn placement(&self) -> crate::image::grid::GridPlacement {
        crate::image::grid::GridPlacement::receptive(self.input, self.stride)
    }

    /// The map of one layer, head and class: h·w values, row-major.
    #[must_use]
    pub fn map(&self, layer: usize, head: usize, class: usize) -> &[f32] {
        let n = self.cells();
        let i = ((layer * self.heads + head) * self.classes + class) * n;
        &self.attention[i..i + n]
    }

    /// One layer and one class alone (as layer 0, class 0, with that class's logit): what a
    /// specimen sheet keeps of each photo.
    #[must_use]
    pub fn only(&self, layer: usize, class: usize) -> IntrOutput {
        let attention = (0..self.heads).flat_map(|h| self.map(layer, h, class).iter().copied()).collect();
        IntrOutput {
            logits: vec![self.logits.get(class).copied().unwrap_or(0.0)],
            attention,
            layers: 1,
            heads: self.heads,
            classes: 1,
            grid: self.grid,
            input: self.input,
            stride: self.stride,
            timings: self.timings,
        }
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

    /// The values of one map: a head, or the mean of the heads when `head` is `None`.
    #[must_use]
    pub fn map_values(&self, layer: usize, class: usize, head: Option<usize>) -> Vec<f32> {
        match head {
            Some(h) => self.map(layer, h, class).to_vec(),
            None => self.head_mean(layer, class),
        }
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
    /// Builds the model for inference from `ws` (every weight must be present and used) on
    /// `device`.
    pub fn load(ws: &WeightStore, config: &IntrConfig, device: &Device) -> Result<Self> {
        let root = WeightsRoot::load(ws, device);
        let model = Self::new(&root.weights(), config, 0)?;
        ws.finish()?;
        Ok(model)
    }

    /// The model of `config` under the official state-dict names, from `w`: for inference when
    /// `w` loads (the ResNet stem's width is then the checkpoint's), trainable when `w` is fresh
    /// (with a stem of `stem` channels; torchvision's is 64).
    pub fn new(w: &Weights, config: &IntrConfig, stem: usize) -> Result<Self> {
        config.validate()?;
        let (d, c) = (config.hidden_dim, config.backbone.num_channels);
        let backbone = Backbone::new(&w.pp("backbone.0.body"), &config.backbone, config.dilated_stages(), stem)?;
        let input_proj = Linear::with_weight_shape(&w.pp("input_proj"), d, c, &[d, c, 1, 1])?;
        let position = PositionEncoder::new(&w.pp("backbone.1"), config)?;
        let transformer = Transformer::new(&w.pp("transformer"), config)?;
        let query_embed = w.pp("query_embed").tensor("weight", &[config.num_queries, d])?;
        let presence = Linear::new(&w.pp("presence_vector"), 1, d)?;
        Ok(Self {
            config: config.clone(),
            device: w.device().clone(),
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
        base: crate::image::preprocess::PreprocessOptions,
    ) -> crate::image::preprocess::PreprocessOptions {
        match self.input_size {
            Some(size) => crate::image::preprocess::PreprocessOptions { size, max_size: None, ..base },
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
        Ok(self.forward_inner(chw, h, w)?.0)
    }

    /// [`Intr::forward`], keeping what the last decoder layer read, so that probes can run that
    /// layer again with its cross-attention edited ([`Intr::last_layer_logits`]).
    pub fn forward_keeping_last_layer(&self, chw: &[f32], h: usize, w: usize) -> Result<(IntrOutput, LastLayerInput)> {
        let (out, trace) = self.forward_inner(chw, h, w)?;
        // The last layer's input: the layer before's output, or the zero start.
        let n = trace.decoder_layer_outputs.len();
        let input = if n >= 2 { trace.decoder_layer_outputs[n - 2].clone() } else { self.query_embed.zeros_like()? };
        Ok((out, LastLayerInput { input, memory: trace.encoder_output }))
    }

    /// The hook probes use: every class's logit when the last decoder layer runs again on `kept`
    /// with the cross-attention heads in `even` (0-based) attending evenly to the whole grid (their
    /// weights replaced by 1/(h·w)), the rest of the model unchanged. Costs one decoder layer.
    pub fn last_layer_logits(&self, kept: &LastLayerInput, even: &[usize]) -> Result<Vec<f32>> {
        let layer =
            self.transformer.decoder.last().ok_or_else(|| Error::Config("the model has no decoder layers".into()))?;
        let (t, _) = layer.forward_evened(&kept.input, &kept.memory, &self.query_embed, even, None)?;
        let hs = self.transformer.norm_decoder_output(&t)?;
        Ok(self.presence.forward(&hs)?.squeeze(1)?.to_vec1::<f32>()?)
    }

    /// Prepares [`Intr::class_query_logits`] for class `class` (0-based): the last layer's
    /// self-attention once, and its cross-attention for that one query with no head and with each
    /// head evened. Costs one decoder layer's self-attention and `heads + 1` one-query
    /// cross-attentions.
    pub fn class_query(&self, kept: &LastLayerInput, class: usize) -> Result<ClassQuery> {
        let layer =
            self.transformer.decoder.last().ok_or_else(|| Error::Config("the model has no decoder layers".into()))?;
        if class >= self.config.num_queries {
            return Err(Error::Request(format!("class {class} is not one of the model's {}", self.config.num_queries)));
        }
        let (residual, query) = layer.before_cross(&kept.input, &self.query_embed, &mut None)?;
        let residual = residual.narrow(0, class, 1)?;
        let query = query.narrow(0, class, 1)?;
        let base = layer.cross_attention(&query, &kept.memory, &[])?;
        let deltas = (0..self.config.nheads)
            .map(|h| Ok((layer.cross_attention(&query, &kept.memory, &[h])? - &base)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClassQuery { residual, base, deltas })
    }

    /// The logit of `cq`'s class with the heads of each set in `sets` (0-based) evened for that
    /// class's query alone: one value per set, all sets in one batch through the rest of the layer.
    pub fn class_query_logits(&self, cq: &ClassQuery, sets: &[Vec<usize>]) -> Result<Vec<f32>> {
        let layer =
            self.transformer.decoder.last().ok_or_else(|| Error::Config("the model has no decoder layers".into()))?;
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sets
            .iter()
            .map(|set| {
                set.iter().try_fold(cq.base.clone(), |acc, &h| {
                    let d = cq.deltas.get(h).ok_or_else(|| {
                        Error::Request(format!("head {h} is not one of the model's {}", cq.deltas.len()))
                    })?;
                    Ok::<_, Error>((acc + d)?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ca = Tensor::cat(&rows, 0)?;
        let residual = cq.residual.broadcast_as(ca.shape())?.contiguous()?;
        let t = layer.after_cross(&residual, ca, None)?;
        let hs = self.transformer.norm_decoder_output(&t)?;
        Ok(self.presence.forward(&hs)?.squeeze(1)?.to_vec1::<f32>()?)
    }

    /// The forward pass with each layer's maps gathered as plain data, and the trace it ran.
    fn forward_inner(&self, chw: &[f32], h: usize, w: usize) -> Result<(IntrOutput, Trace)> {
        let (heads, classes) = (self.config.nheads, self.config.num_queries);
        let mut attention = Vec::new();
        // Each layer's maps are appended as soon as they exist, so no second copy is ever held.
        let layers = self.config.dec_layers;
        let trace = self.run(chw, h, w, &mut |a: Tensor| {
            if attention.capacity() == 0 {
                attention.reserve_exact(a.elem_count() * layers);
            }
            attention.extend(a.flatten_all()?.to_vec1::<f32>()?);
            Ok(())
        })?;
        let out = IntrOutput {
            logits: trace.logits.to_vec1::<f32>()?,
            attention,
            layers: trace.hs.len(),
            heads,
            classes,
            grid: trace.grid,
            input: (w, h),
            stride: self.config.stride(),
            timings: trace.timings,
        };
        Ok((out, trace))
    }

    /// A training (or evaluation) pass of a model built fresh ([`Intr::new`]) on a normalised batch
    /// (B, 3, H, W): the same layers as [`Intr::forward`], differentiable, batch first, with the
    /// pass's dropout, head drop and batch statistics.
    pub fn forward_train(&self, x: &Tensor, pass: &mut TrainPass<'_>) -> Result<TrainOutput> {
        // The backbone runs channels-first: (3, B, H, W) → (C, B, h, w).
        let feat = self.backbone.forward_train(&x.transpose(0, 1)?.contiguous()?, pass)?;
        let (c, bs, gh, gw) = feat.dims4()?;
        let tokens = feat.permute((1, 2, 3, 0))?.contiguous()?.reshape((bs, gh * gw, c))?;
        let mut memory = self.input_proj.forward(&tokens)?; // (B, hw, D)
        let pos = self.position.encode(gh, gw, x.device())?.unsqueeze(0)?; // (1, hw, D)
        for layer in &self.transformer.encoder {
            memory = layer.forward(&memory, &pos, Some(pass))?;
        }
        let memory = self.transformer.norm_encoder_output(memory)?;
        let (q, d) = self.query_embed.dims2()?;
        let qpos = self.query_embed.unsqueeze(0)?.broadcast_as((bs, q, d))?.contiguous()?;
        let mut tgt = qpos.zeros_like()?;
        let mut attention = None;
        for layer in &self.transformer.decoder {
            let (t, w) = layer.forward_evened(&tgt, &memory, &qpos, &[], Some(pass))?;
            tgt = t;
            attention = Some(w);
        }
        let hs = self.transformer.norm_decoder_output(&tgt)?;
        let logits = self.presence.forward(&hs)?.squeeze(2)?;
        let attention = attention.ok_or_else(|| Error::Config("the model has no decoder layers".into()))?;
        Ok(TrainOutput { logits, attention, grid: (gh, gw) })
    }

    /// Like [`Intr::forward`] but keeps every intermediate.
    pub fn forward_traced(&self, chw: &[f32], h: usize, w: usize) -> Result<Trace> {
        let mut attention = Vec::new();
        let mut trace = self.run(chw, h, w, &mut |a: Tensor| {
            attention.push(a);
            Ok(())
        })?;
        trace.attention = attention;
        Ok(trace)
    }

    /// The forward pass; each decoder layer's cross-attention (heads, Q, h·w) goes to `on_attention`
    /// (the returned trace's `attention` is empty).
    fn run(
        &self,
        chw: &[f32],
        h: usize,
        w: usize,
        on_attention: &mut dyn FnMut(Tensor) -> Result<()>,
    ) -> Result<Trace> {
        if chw.len() != 3 * h * w || h == 0 || w == 0 {
            return Err(Error::Config(format!("input has {} values, expected 3×{h}×{w}", chw.len())));
        }
        let t0 = Instant::now();
        let (features, grid) = self.backbone.forward(chw, h, w, &self.device)?;
        let features = features.to_device(&self.device)?;
        // The backbone's pooled feature-map buffers (the largest maps of the pass) are not needed
        // by the transformer, whose own allocations would otherwise come on top of them: peak RSS
        // of one predict on the full-size checkpoint 462 → 405 MB (a 3:2 photo), no slower.
        crate::kernels::conv::release_buffers();
        let t1 = Instant::now();
        let pos_embed = self.position.encode(grid.0, grid.1, &self.device)?;
        let input_proj = self.input_proj.forward(&features)?;
        let mut x = input_proj.clone();
        let mut encoder_layer_outputs = Vec::with_capacity(self.transformer.encoder.len());
        for layer in &self.transformer.encoder {
            x = layer.forward(&x, &pos_embed, None)?;
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
    pub fn backbone_stage_outputs(&self, x: crate::kernels::conv::Fmap) -> Result<Vec<crate::kernels::conv::Fmap>> {
        self.backbone.stage_outputs(x)
    }
}
