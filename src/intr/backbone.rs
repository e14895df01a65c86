//! The torchvision ResNet backbone, built once from [`Weights`] under the official state-dict names
//! (`backbone.0.body.{conv1,bn1,layer1..4}.*`), and one block structure run three ways:
//!
//! - the fast NHWC path of [`crate::kernels::conv`] (CPU inference; frozen batch norm folded into each
//!   convolution),
//! - candle's own `conv2d` on NCHW tensors (any device; also the cross-check of the fast path),
//! - training: channels-first (C, B, H, W) tensors, the gathered convolution and batch norm on batch
//!   statistics of [`crate::kernels::training`], whose running statistics become the frozen batch norm.

use candle_core::{Device, Tensor};

use super::config::{BackboneConfig, BlockKind};
use super::pass::TrainPass;
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::kernels::conv::{self, ConvKernel, Fmap};
use crate::kernels::training;

/// Batch norm epsilon (DETR's `FrozenBatchNorm2d`, PyTorch's `BatchNorm2d`).
const BN_EPS: f64 = 1e-5;
/// Batch-norm momentum of the running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;

/// One convolution followed by batch norm.
pub enum ConvBn {
    /// For inference: the frozen batch norm folded into the convolution, packed for the kernels.
    Folded(ConvKernel),
    /// For training: the convolution's and the batch norm's trainable weights; the running
    /// statistics are kept in the pass under `bn`'s names.
    Training { weight: Tensor, bn_w: Tensor, bn_b: Tensor, bn: String, geometry: (usize, usize, usize) },
}

impl ConvBn {
    /// `conv.weight` and `bn.{weight,bias,running_mean,running_var}`; `fresh` is the weight's
    /// (cout, cin, k, k) when training (loading takes the checkpoint's); `geometry` is
    /// (stride, padding, dilation).
    fn new(conv: &Weights, bn: &Weights, fresh: [usize; 4], geometry: (usize, usize, usize)) -> Result<Self> {
        let wkey = conv.path("weight");
        let shape = conv.shape_or("weight", &fresh)?;
        let [cout, cin, kh, kw] = shape[..] else {
            return Err(Error::Config(format!("weight `{wkey}` has shape {shape:?}, expected a 4-d convolution")));
        };
        if kh != kw {
            return Err(Error::Config(format!("weight `{wkey}` has a non-square {kh}×{kw} kernel")));
        }
        if conv.trains() {
            return Ok(Self::Training {
                weight: conv.tensor("weight", &shape)?,
                bn_w: bn.tensor("weight", &[cout])?,
                bn_b: bn.tensor("bias", &[cout])?,
                bn: {
                    bn.buffer("running_mean", &[cout])?;
                    bn.buffer("running_var", &[cout])?;
                    bn.prefix().to_string()
                },
                geometry,
            });
        }
        let w = conv.values("weight", &shape)?;
        let gamma = bn.values("weight", &[cout])?;
        let beta = bn.values("bias", &[cout])?;
        let mean = bn.values("running_mean", &[cout])?;
        let var = bn.values("running_var", &[cout])?;
        let scale: Vec<f64> = (0..cout).map(|o| f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt()).collect();
        #[allow(clippy::cast_possible_truncation)]
        let bias = (0..cout).map(|o| (f64::from(beta[o]) - f64::from(mean[o]) * scale[o]) as f32).collect();
        Ok(Self::Folded(ConvKernel::from_oihw_scaled(&w, Some(&scale), bias, (cout, cin, kh), geometry)))
    }

    /// (cout, cin, k, stride).
    fn dims(&self) -> Result<(usize, usize, usize, usize)> {
        Ok(match self {
            Self::Folded(k) => (k.cout, k.cin, k.k, k.stride),
            Self::Training { weight, geometry, .. } => {
                let (cout, cin, k, _) = weight.dims4()?;
                (cout, cin, k, geometry.0)
            }
        })
    }

    fn kernel(&self) -> Result<&ConvKernel> {
        match self {
            Self::Folded(k) => Ok(k),
            Self::Training { .. } => {
                Err(Error::Config("a backbone built for training runs training passes only".into()))
            }
        }
    }

    /// The candle path on NCHW tensors (inference).
    fn forward_candle(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let k = self.kernel()?;
        let w = Tensor::from_slice(&k.gemm_weight(), (k.k, k.k, k.cin, k.cout), x.device())?
            .permute((3, 2, 0, 1))?
            .contiguous()?;
        let b = Tensor::from_slice(&k.bias, (1, k.cout, 1, 1), x.device())?;
        let mut y = x.conv2d(&w, k.pad, k.stride, k.dilation, 1)?.broadcast_add(&b)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        Ok(if relu { y.relu()? } else { y })
    }

    /// A training (or evaluation) pass on a channels-first (C, B, H, W) activation: the convolution
    /// then batch norm on batch statistics (running statistics updated) or, in evaluation passes,
    /// on the running statistics.
    fn forward_train(&self, x: &Tensor, pass: &mut TrainPass<'_>) -> Result<Tensor> {
        let Self::Training { weight, bn_w, bn_b, bn, geometry: (stride, pad, dilation) } = self else {
            return Err(Error::Config("a backbone built for inference runs inference passes only".into()));
        };
        let y = training::conv2d(x, weight, *stride, *pad, *dilation)?;
        let c = y.dims4()?.0;
        let (rm, rv) = (format!("{bn}.running_mean"), format!("{bn}.running_var"));
        if pass.train {
            let (y, mean, var) = training::batch_norm_train(&y, bn_w, bn_b, BN_EPS)?;
            let n = (y.elem_count() / c) as f64;
            if let (Some(old_m), Some(old_v)) = (pass.buffers.get(&rm), pass.buffers.get(&rv)) {
                let dev = y.device();
                let m = Tensor::from_vec(mean, c, dev)?;
                let v = (Tensor::from_vec(var, c, dev)? * (n / (n - 1.0).max(1.0)))?;
                let new_m = ((old_m * (1.0 - BN_MOMENTUM))? + (m * BN_MOMENTUM)?)?;
                let new_v = ((old_v * (1.0 - BN_MOMENTUM))? + (v * BN_MOMENTUM)?)?;
                pass.buffers.insert(rm, new_m);
                pass.buffers.insert(rv, new_v);
            }
            return Ok(y);
        }
        let dims = y.dims4()?;
        let (Some(mean), Some(var)) = (pass.buffers.get(&rm), pass.buffers.get(&rv)) else {
            return Err(Error::Config(format!("running statistics of `{bn}` are missing")));
        };
        let scale = bn_w.reshape((c, 1))?.broadcast_mul(&(var.reshape((c, 1))? + BN_EPS)?.sqrt()?.recip()?)?;
        let shift = (bn_b.reshape((c, 1))? - mean.reshape((c, 1))?.broadcast_mul(&scale)?)?;
        Ok(y.reshape((c, ()))?.broadcast_mul(&scale)?.broadcast_add(&shift)?.reshape(dims)?)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

/// The ResNet body up to `layer4`.
pub struct Backbone {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    /// Use candle's `conv2d` even on the CPU (slow; for cross-checking and non-CPU devices).
    pub force_candle: bool,
}

/// One convolution of a block as a path runs it: `(conv, input, residual, relu)`.
type ConvStep<'a, T> = dyn FnMut(&ConvBn, &T, Option<T>, bool) -> Result<T> + 'a;

impl Backbone {
    /// The body under `w` (`backbone.0.body`) for `cfg`, with a stem of `stem` channels when
    /// training (loading takes the checkpoint's). A stage marked in `dilated` replaces its stride
    /// with dilation exactly as torchvision does (the stage's first block keeps the previous
    /// dilation); a block gets a projected shortcut where it strides or changes the width, as in
    /// torchvision. Bottleneck inner widths are a quarter of the stage output when training.
    pub fn new(w: &Weights, cfg: &BackboneConfig, dilated: [bool; 4], stem: usize) -> Result<Self> {
        let stem = ConvBn::new(&w.pp("conv1"), &w.pp("bn1"), [stem, 3, 7, 7], (2, 3, 1))?;
        let (mut c, _, k, _) = stem.dims()?;
        if k != 7 {
            return Err(Error::Config(format!("`{}` is {k}×{k}, expected the 7×7 ResNet stem", w.path("conv1"))));
        }
        if dilated.contains(&true) && cfg.block == BlockKind::Basic {
            return Err(Error::Config("dilation is not supported with BasicBlock ResNets (as in torchvision)".into()));
        }
        let mut stages = Vec::new();
        let mut cur_dilation = 1;
        for (s, (&n, &out)) in cfg.blocks_per_stage.iter().zip(&cfg.stage_channels).enumerate() {
            let mut stride = if s == 0 { 1 } else { 2 };
            let previous_dilation = cur_dilation;
            if dilated[s] {
                cur_dilation *= stride;
                stride = 1;
            }
            let mut blocks = Vec::new();
            for b in 0..n {
                let (bs, bd) = if b == 0 { (stride, previous_dilation) } else { (1, cur_dilation) };
                let bw = w.pp(format!("layer{}", s + 1)).pp(b);
                let conv = |i: usize, fresh, geo| {
                    ConvBn::new(&bw.pp(format!("conv{i}")), &bw.pp(format!("bn{i}")), fresh, geo)
                };
                let convs = match cfg.block {
                    BlockKind::Bottleneck => {
                        let inner = out / 4;
                        vec![
                            conv(1, [inner, c, 1, 1], (1, 0, 1))?,
                            conv(2, [inner, inner, 3, 3], (bs, bd, bd))?,
                            conv(3, [out, inner, 1, 1], (1, 0, 1))?,
                        ]
                    }
                    BlockKind::Basic => {
                        vec![conv(1, [out, c, 3, 3], (bs, 1, 1))?, conv(2, [out, out, 3, 3], (1, 1, 1))?]
                    }
                };
                let expected_k =
                    if cfg.block == BlockKind::Bottleneck { [1, 3, 1].as_slice() } else { [3, 3].as_slice() };
                let ks: Vec<usize> = convs.iter().map(|cv| cv.dims().map(|d| d.2)).collect::<Result<_>>()?;
                if ks != expected_k {
                    let bp = bw.prefix();
                    return Err(Error::Config(format!(
                        "block `{bp}` has kernel sizes {ks:?}, expected {expected_k:?}"
                    )));
                }
                let block_out = convs.last().map(ConvBn::dims).transpose()?.map_or(c, |d| d.0);
                let downsample = if b == 0 && (bs != 1 || c != block_out) {
                    Some(ConvBn::new(&bw.pp("downsample.0"), &bw.pp("downsample.1"), [block_out, c, 1, 1], (bs, 0, 1))?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                c = block_out;
            }
            stages.push(blocks);
        }
        let bb = Self { stem, stages, force_candle: false };
        bb.check_channels()?;
        Ok(bb)
    }

    /// Every convolution's input channels must equal its predecessor's output channels.
    fn check_channels(&self) -> Result<()> {
        let mut c = self.stem.dims()?.0;
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let block_in = c;
                for (i, conv) in blk.convs.iter().enumerate() {
                    let (cout, cin, _, _) = conv.dims()?;
                    if cin != c {
                        return Err(Error::Config(format!(
                            "backbone layer{}.{b}.conv{} takes {cin} channels but receives {c}",
                            s + 1,
                            i + 1
                        )));
                    }
                    c = cout;
                }
                let ds = blk.downsample.as_ref().map(ConvBn::dims).transpose()?;
                let skip = ds.map_or(block_in, |d| d.0);
                if ds.is_some_and(|d| d.1 != block_in) || skip != c {
                    return Err(Error::Config(format!(
                        "backbone layer{}.{b}: residual has {skip} channels, block output {c}",
                        s + 1
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs the backbone on a normalised (3, H, W) image given as CHW values. Returns the tokens
    /// (h·w, C) on `device`, row-major over the grid, and the grid size (h, w).
    pub fn forward(&self, chw: &[f32], h: usize, w: usize, device: &Device) -> Result<(Tensor, (usize, usize))> {
        if device.is_cpu() && !self.force_candle {
            let mut out = self.forward_fmap(Fmap::from_chw(3, h, w, chw))?;
            let grid = (out.h, out.w);
            let tokens = Tensor::from_vec(std::mem::take(&mut out.data), (grid.0 * grid.1, out.c), &Device::Cpu)?;
            return Ok((tokens, grid));
        }
        let f = self.forward_candle(&Tensor::from_slice(chw, (1, 3, h, w), device)?)?;
        let (_, c, gh, gw) = f.dims4()?;
        let tokens = f.reshape((c, gh * gw))?.t()?.contiguous()?;
        Ok((tokens, (gh, gw)))
    }

    /// The fast CPU path on NHWC maps.
    pub fn forward_fmap(&self, x: Fmap) -> Result<Fmap> {
        self.run_fmap(x, &mut |_| {})
    }

    /// Per-stage outputs of the fast path (stem after max-pool, then each of the four stages), NHWC.
    pub fn stage_outputs(&self, x: Fmap) -> Result<Vec<Fmap>> {
        let mut outs = Vec::new();
        self.run_fmap(x, &mut |f| outs.push(f.clone()))?;
        Ok(outs)
    }

    /// The fast path, showing `tap` the stem output and each stage's output. Each map is dropped
    /// (back to the pool) as soon as the next one exists; the projected shortcut is computed last,
    /// so its (large) map lives only while the block's final convolution runs, which then writes
    /// over it.
    fn run_fmap(&self, x: Fmap, tap: &mut dyn FnMut(&Fmap)) -> Result<Fmap> {
        let mut step = |cb: &ConvBn, x: &Fmap, residual: Option<Fmap>, relu: bool| -> Result<Fmap> {
            let k = cb.kernel()?;
            Ok(match residual {
                Some(r) => conv::conv2d_add_into(x, k, r, relu),
                None => conv::conv2d(x, k, None, relu),
            })
        };
        self.run(x, &mut step, &|x: &Fmap| Ok(conv::maxpool_3x3_s2(x)), tap)
    }

    /// The candle path: (1, 3, H, W) → (1, C, h, w).
    pub fn forward_candle(&self, image: &Tensor) -> Result<Tensor> {
        let mut step = |cb: &ConvBn, x: &Tensor, residual: Option<Tensor>, relu: bool| -> Result<Tensor> {
            cb.forward_candle(x, residual.as_ref(), relu)
        };
        // Post-ReLU values are ≥ 0, so zero padding is the same as max-pool's −∞ padding.
        let pool = |x: &Tensor| -> Result<Tensor> {
            Ok(x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?)
        };
        self.run(image.clone(), &mut step, &pool, &mut |_| {})
    }

    /// A training (or evaluation) pass, channels-first: (3, B, H, W) → (C, B, h, w).
    pub fn forward_train(&self, x: &Tensor, pass: &mut TrainPass<'_>) -> Result<Tensor> {
        let mut step = |cb: &ConvBn, x: &Tensor, residual: Option<Tensor>, relu: bool| -> Result<Tensor> {
            let y = cb.forward_train(x, pass)?;
            let y = match residual {
                Some(r) => (y + r)?,
                None => y,
            };
            Ok(if relu { y.relu()? } else { y })
        };
        self.run(x.clone(), &mut step, &|x: &Tensor| Ok(training::max_pool_3x3_s2(x)?), &mut |_| {})
    }

    /// The ResNet's structure, once for every path: the stem and max-pool, then per block its
    /// convolutions (ReLU after each), the shortcut (projected or not) added before the last ReLU.
    fn run<T>(
        &self,
        x: T,
        step: &mut ConvStep<'_, T>,
        pool: &dyn Fn(&T) -> Result<T>,
        tap: &mut dyn FnMut(&T),
    ) -> Result<T> {
        let mut x = pool(&step(&self.stem, &x, None, true)?)?;
        tap(&x);
        for blocks in &self.stages {
            for blk in blocks {
                let (last, middle) = blk.convs.split_last().ok_or_else(|| Error::Config("empty block".into()))?;
                let (first, middle) =
                    middle.split_first().ok_or_else(|| Error::Config("a block of one conv".into()))?;
                let mut y = step(first, &x, None, true)?;
                for conv in middle {
                    y = step(conv, &y, None, true)?;
                }
                let shortcut = match &blk.downsample {
                    Some(d) => step(d, &x, None, false)?,
                    None => x,
                };
                x = step(last, &y, Some(shortcut), true)?;
            }
            tap(&x);
        }
        Ok(x)
    }
}
