//! The torchvision ResNet backbone with frozen batch norm folded into each convolution.
//!
//! Two interchangeable implementations: the fast NHWC path of [`crate::kernels::conv`] (CPU), and candle's
//! own `conv2d` (any device; also the cross-check of the fast path in tests). Key names follow the
//! official state dict: `backbone.0.body.{conv1,bn1,layer1..4}.*`.

use candle_core::{Device, Tensor};

use super::config::{BackboneConfig, BlockKind};
use super::weights::WeightStore;
use crate::error::{Error, Result};
use crate::kernels::conv::{self, ConvKernel, Fmap};

/// Frozen batch norm epsilon (DETR's `FrozenBatchNorm2d`).
const BN_EPS: f64 = 1e-5;

/// One convolution followed by frozen batch norm, folded.
pub struct ConvBn {
    kernel: ConvKernel,
}

impl ConvBn {
    fn load(ws: &WeightStore, conv: &str, bn: &str, geometry: (usize, usize, usize)) -> Result<Self> {
        let wkey = format!("{conv}.weight");
        let shape = ws.shape(&wkey)?.to_vec();
        let [cout, cin, kh, kw] = shape[..] else {
            return Err(Error::Config(format!("weight `{wkey}` has shape {shape:?}, expected a 4-d convolution")));
        };
        if kh != kw {
            return Err(Error::Config(format!("weight `{wkey}` has a non-square {kh}×{kw} kernel")));
        }
        let w = ws.get(&wkey, &shape)?;
        let gamma = ws.get(&format!("{bn}.weight"), &[cout])?;
        let beta = ws.get(&format!("{bn}.bias"), &[cout])?;
        let mean = ws.get(&format!("{bn}.running_mean"), &[cout])?;
        let var = ws.get(&format!("{bn}.running_var"), &[cout])?;
        let per_out = cin * kh * kw;
        let mut folded = w;
        let mut bias = vec![0.0f32; cout];
        for o in 0..cout {
            let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BN_EPS).sqrt();
            for v in &mut folded[o * per_out..(o + 1) * per_out] {
                *v = (f64::from(*v) * scale) as f32;
            }
            bias[o] = (f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32;
        }
        Ok(Self { kernel: ConvKernel::from_oihw(&folded, bias, (cout, cin, kh), geometry) })
    }

    fn forward_cpu(&self, x: &Fmap, residual: Option<&Fmap>, relu: bool) -> Fmap {
        conv::conv2d(x, &self.kernel, residual, relu)
    }

    /// candle path on NCHW tensors.
    fn forward_candle(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let k = &self.kernel;
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

impl Backbone {
    /// Loads `backbone.0.body.*` for `cfg`; a stage marked in `dilated` replaces its stride with
    /// dilation exactly as torchvision does (the stage's first block keeps the previous dilation).
    pub fn load(ws: &WeightStore, cfg: &BackboneConfig, dilated: [bool; 4]) -> Result<Self> {
        let p = "backbone.0.body";
        let stem = ConvBn::load(ws, &format!("{p}.conv1"), &format!("{p}.bn1"), (2, 3, 1))?;
        if stem.kernel.k != 7 {
            return Err(Error::Config(format!(
                "`{p}.conv1` is {}×{}, expected the 7×7 ResNet stem",
                stem.kernel.k, stem.kernel.k
            )));
        }
        if dilated.contains(&true) && cfg.block == BlockKind::Basic {
            return Err(Error::Config("dilation is not supported with BasicBlock ResNets (as in torchvision)".into()));
        }
        let mut stages = Vec::new();
        let mut cur_dilation = 1;
        for (s, &n) in cfg.blocks_per_stage.iter().enumerate() {
            let mut stride = if s == 0 { 1 } else { 2 };
            let previous_dilation = cur_dilation;
            if dilated[s] {
                cur_dilation *= stride;
                stride = 1;
            }
            let mut blocks = Vec::new();
            for b in 0..n {
                let (bs, bd) = if b == 0 { (stride, previous_dilation) } else { (1, cur_dilation) };
                let bp = format!("{p}.layer{}.{b}", s + 1);
                let conv = |i: usize, geo| ConvBn::load(ws, &format!("{bp}.conv{i}"), &format!("{bp}.bn{i}"), geo);
                let convs = match cfg.block {
                    BlockKind::Bottleneck => vec![conv(1, (1, 0, 1))?, conv(2, (bs, bd, bd))?, conv(3, (1, 0, 1))?],
                    BlockKind::Basic => vec![conv(1, (bs, 1, 1))?, conv(2, (1, 1, 1))?],
                };
                let downsample = if ws.has(&format!("{bp}.downsample.0.weight")) {
                    Some(ConvBn::load(ws, &format!("{bp}.downsample.0"), &format!("{bp}.downsample.1"), (bs, 0, 1))?)
                } else {
                    None
                };
                let expected_k =
                    if cfg.block == BlockKind::Bottleneck { [1, 3, 1].as_slice() } else { [3, 3].as_slice() };
                let ks: Vec<usize> = convs.iter().map(|c| c.kernel.k).collect();
                if ks != expected_k {
                    return Err(Error::Config(format!(
                        "block `{bp}` has kernel sizes {ks:?}, expected {expected_k:?}"
                    )));
                }
                blocks.push(Block { convs, downsample });
            }
            stages.push(blocks);
        }
        let bb = Self { stem, stages, force_candle: false };
        bb.check_channels()?;
        Ok(bb)
    }

    /// Every convolution's input channels must equal its predecessor's output channels.
    fn check_channels(&self) -> Result<()> {
        let mut c = self.stem.kernel.cout;
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let block_in = c;
                for (i, conv) in blk.convs.iter().enumerate() {
                    if conv.kernel.cin != c {
                        return Err(Error::Config(format!(
                            "backbone layer{}.{b}.conv{} takes {} channels but receives {c}",
                            s + 1,
                            i + 1,
                            conv.kernel.cin
                        )));
                    }
                    c = conv.kernel.cout;
                }
                let skip = blk.downsample.as_ref().map_or(block_in, |d| d.kernel.cout);
                if blk.downsample.as_ref().is_some_and(|d| d.kernel.cin != block_in) || skip != c {
                    return Err(Error::Config(format!(
                        "backbone layer{}.{b}: residual has {skip} channels, block output {c}",
                        s + 1
                    )));
                }
                if blk.downsample.is_none() && blk.convs.iter().any(|cv| cv.kernel.stride != 1) {
                    return Err(Error::Config(format!("backbone layer{}.{b} is strided but has no downsample", s + 1)));
                }
            }
        }
        Ok(())
    }

    /// Runs the backbone on a normalised (3, H, W) image given as CHW values. Returns the tokens
    /// (h·w, C) on `device`, row-major over the grid, and the grid size (h, w).
    pub fn forward(&self, chw: &[f32], h: usize, w: usize, device: &Device) -> Result<(Tensor, (usize, usize))> {
        if device.is_cpu() && !self.force_candle {
            let mut out = self.forward_fmap(Fmap::from_chw(3, h, w, chw));
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
    #[must_use]
    pub fn forward_fmap(&self, x: Fmap) -> Fmap {
        self.run_fmap(x, |_| {})
    }

    /// Per-stage outputs of the fast path (stem after max-pool, then each of the four stages), NHWC.
    #[must_use]
    pub fn stage_outputs(&self, x: Fmap) -> Vec<Fmap> {
        let mut outs = Vec::new();
        self.run_fmap(x, |f| outs.push(f.clone()));
        outs
    }

    /// Runs the fast path, showing `tap` the stem output and each stage's output.
    fn run_fmap(&self, x: Fmap, mut tap: impl FnMut(&Fmap)) -> Fmap {
        // Each map is dropped (back to the pool) as soon as the next one exists.
        let mut x = conv::maxpool_3x3_s2(&self.stem.forward_cpu(&x, None, true));
        tap(&x);
        for blocks in &self.stages {
            for blk in blocks {
                let mut y = blk.convs[0].forward_cpu(&x, None, true);
                let last = blk.convs.len() - 1;
                for conv in &blk.convs[1..last] {
                    y = conv.forward_cpu(&y, None, true);
                }
                // The projected shortcut is computed last, so its (large) map lives only while the
                // block's final convolution runs; that convolution then writes over the shortcut.
                let shortcut = match &blk.downsample {
                    Some(d) => d.forward_cpu(&x, None, false),
                    None => x,
                };
                x = conv::conv2d_add_into(&y, &blk.convs[last].kernel, shortcut, true);
            }
            tap(&x);
        }
        x
    }

    /// The candle path: (1, 3, H, W) → (1, C, h, w).
    pub fn forward_candle(&self, image: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward_candle(image, None, true)?;
        // Post-ReLU values are ≥ 0, so zero padding is the same as max-pool's −∞ padding.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for blocks in &self.stages {
            for blk in blocks {
                let identity = match &blk.downsample {
                    Some(d) => d.forward_candle(&x, None, false)?,
                    None => x.clone(),
                };
                let mut y = blk.convs[0].forward_candle(&x, None, true)?;
                let last = blk.convs.len() - 1;
                for conv in &blk.convs[1..last] {
                    y = conv.forward_candle(&y, None, true)?;
                }
                x = blk.convs[last].forward_candle(&y, Some(&identity), true)?;
            }
        }
        Ok(x)
    }
}
