//! The transformer's building blocks: linear layers, layer norm, multi-head attention that can
//! return its weights, and the feed-forward block. Each is built once from [`Weights`] under its
//! state-dict names; built for inference it runs the fast CPU kernels (weights packed, bias and ReLU
//! fused), built for training it holds trainable variables and runs differentiable candle operations.
//!
//! Inference tensors are 2-D (tokens, D), batch 1; training tensors are (B, tokens, D).

use candle_core::{D, Device, Tensor};
use candle_nn::Module;

use super::pass::{self, TrainPass};
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::kernels::attention;
use crate::kernels::packed_gemm::{self, Geometry, PackedB};

/// LayerNorm epsilon of `nn.LayerNorm`.
const LN_EPS: f64 = 1e-5;

/// A linear layer `y = x·Wᵀ + b`.
pub enum Linear {
    /// For inference: on a CPU with AVX-512 the weights are packed for [`packed_gemm`] (bias and
    /// ReLU fused); otherwise W is kept transposed (in, out) for candle's matmul.
    Inference { w_t: Option<Tensor>, b: Tensor, packed: Option<PackedB>, out: usize },
    /// For training: W (out, in) and b (out), trainable.
    Training { w: Tensor, b: Tensor },
}

impl Linear {
    /// From a (out, in) row-major weight and its bias, for inference.
    pub fn from_parts(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize, dev: &Device) -> Result<Self> {
        let (w_t, packed) = if dev.is_cpu() && packed_gemm::available() {
            (None, Some(PackedB::from_fn(inp, out, &b, |p, c| w[c * inp + p])))
        } else {
            (Some(Tensor::from_vec(w, (out, inp), dev)?.t()?.contiguous()?), None)
        };
        Ok(Self::Inference { w_t, b: Tensor::from_vec(b, out, dev)?, packed, out })
    }

    /// `weight` (out, in) and `bias` (out) under `w`.
    pub fn new(w: &Weights, out: usize, inp: usize) -> Result<Self> {
        Self::with_weight_shape(w, out, inp, &[out, inp])
    }

    /// Like [`Linear::new`] where the stored weight has `shape` (a 1×1 convolution's
    /// `(out, in, 1, 1)`).
    pub fn with_weight_shape(w: &Weights, out: usize, inp: usize, shape: &[usize]) -> Result<Self> {
        if w.trains() {
            let weight = w.tensor("weight", shape)?.reshape((out, inp))?;
            return Ok(Self::Training { w: weight, b: w.tensor("bias", &[out])? });
        }
        Self::from_parts(w.values("weight", shape)?, w.values("bias", &[out])?, out, inp, w.device())
    }

    /// (…, in) → (…, out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// (…, in) → relu((…, out))
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let y = match self {
            Self::Training { w, b } => x.broadcast_matmul(&w.t()?)?.broadcast_add(b)?,
            Self::Inference { w_t, b, packed, out } => {
                let (m, k) = x.dims2()?;
                if let Some(p) = packed {
                    let xs = x.flatten_all()?.to_vec1::<f32>()?;
                    let mut y = vec![0.0f32; m * out];
                    let geo = Geometry { src_w: m, cin: k, stride: 1, out_h: 1, out_w: m, segments: vec![(0, 0, k)] };
                    packed_gemm::run(&xs, &geo, p, packed_gemm::Residual::None, relu, &mut y);
                    return Ok(Tensor::from_vec(y, (m, *out), x.device())?);
                }
                let w_t = w_t.as_ref().ok_or_else(|| Error::Config("linear layer without weights".into()))?;
                crate::kernels::count_gemm(m, k, *out);
                x.matmul(w_t)?.broadcast_add(b)?
            }
        };
        Ok(if relu { y.relu()? } else { y })
    }
}

/// Layer norm over the last dimension: candle's fused kernel for inference, written out (and so
/// differentiable) for training.
pub enum LayerNorm {
    Inference(candle_nn::LayerNorm),
    Training { w: Tensor, b: Tensor },
}

impl LayerNorm {
    /// `weight` and `bias` (d) under `w`.
    pub fn new(w: &Weights, d: usize) -> Result<Self> {
        if w.trains() {
            return Ok(Self::Training { w: w.tensor("weight", &[d])?, b: w.tensor("bias", &[d])? });
        }
        let weight = Tensor::from_vec(w.values("weight", &[d])?, d, w.device())?;
        let bias = Tensor::from_vec(w.values("bias", &[d])?, d, w.device())?;
        Ok(Self::Inference(candle_nn::LayerNorm::new(weight, bias, LN_EPS)))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Inference(n) => Ok(n.forward(x)?),
            Self::Training { w, b } => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
                Ok(centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)?)
            }
        }
    }
}

/// `nn.MultiheadAttention` with separate q/k/v projections split from `in_proj_weight`.
pub struct Attention {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) out: Linear,
    pub(super) heads: usize,
    /// Use candle's ops even where the AVX-512 kernel could run (cross-checking the two paths).
    pub(super) candle_only: bool,
}

impl Attention {
    /// `in_proj_weight` (3D, D), `in_proj_bias` (3D) and `out_proj` under `w`.
    pub fn new(w: &Weights, d: usize, heads: usize) -> Result<Self> {
        let (q, k, v) = if w.trains() {
            let (iw, ib) = (w.tensor("in_proj_weight", &[3 * d, d])?, w.tensor("in_proj_bias", &[3 * d])?);
            let part = |i: usize| -> Result<Linear> {
                Ok(Linear::Training { w: iw.narrow(0, i * d, d)?, b: ib.narrow(0, i * d, d)? })
            };
            (part(0)?, part(1)?, part(2)?)
        } else {
            let iw = w.values("in_proj_weight", &[3 * d, d])?;
            let ib = w.values("in_proj_bias", &[3 * d])?;
            let part = |i: usize| {
                let (rows, bias) = (iw[i * d * d..(i + 1) * d * d].to_vec(), ib[i * d..(i + 1) * d].to_vec());
                Linear::from_parts(rows, bias, d, d, w.device())
            };
            (part(0)?, part(1)?, part(2)?)
        };
        Ok(Self { q, k, v, out: Linear::new(&w.pp("out_proj"), d, d)?, heads, candle_only: false })
    }

    /// Attends `q` (Lq, D) over `k`, `v` (Lk, D). Returns the output (Lq, D) and the post-softmax
    /// weights (heads, Lq, Lk).
    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_evened(q, k, v, &[])
    }

    /// Like [`Attention::forward`], with the heads in `even` attending evenly to every key (their
    /// weights replaced by 1/Lk, so their output is the mean of their values): what the output
    /// becomes when those heads' attention carries no information about where to look.
    pub fn forward_evened(&self, q: &Tensor, k: &Tensor, v: &Tensor, even: &[usize]) -> Result<(Tensor, Tensor)> {
        let (out, w) = self.run(q, k, v, true, even)?;
        let w = w.ok_or_else(|| Error::Config("attention weights were not kept".into()))?;
        Ok((out, w))
    }

    /// Like [`Attention::forward`] for callers that need only the output (self-attention): the
    /// weights of all heads are never held at once.
    pub fn context(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        Ok(self.run(q, k, v, false, &[])?.0)
    }

    /// A training (or evaluation) pass, batch first: q (B, Tq, D), k and v (B, Tk, D) → (output
    /// (B, Tq, D), weights (B, H, Tq, Tk)). Dropout acts on the weights; `heads_drop` (the decoder's
    /// cross-attention) also drops whole heads' outputs.
    pub fn forward_train(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads_drop: bool,
        pass: &mut TrainPass<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, tq, d) = q.dims3()?;
        let h = self.heads;
        let hd = d / h;
        let split = |x: Tensor| -> Result<Tensor> {
            let (b, t, _) = x.dims3()?;
            Ok(x.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (qh, kh, vh) = (split(self.q.forward(q)?)?, split(self.k.forward(k)?)?, split(self.v.forward(v)?)?);
        let scores = (qh * (1.0 / (hd as f64).sqrt()))?.matmul(&kh.transpose(2, 3)?.contiguous()?)?;
        let weights = softmax_last(&scores)?;
        let ctx = pass.drop(&weights)?.matmul(&vh)?;
        let ctx = if heads_drop { pass.drop_heads(&ctx)? } else { ctx };
        let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, tq, d))?;
        Ok((self.out.forward(&ctx)?, weights))
    }

    fn run(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        need_weights: bool,
        even: &[usize],
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (lq, d) = q.dims2()?;
        let lk = k.dims2()?.0;
        let h = self.heads;
        let dh = d / h;
        if let Some(&bad) = even.iter().find(|&&e| e >= h) {
            return Err(Error::Config(format!("head {bad} does not exist (the attention has {h} heads)")));
        }
        let scale = 1.0 / (dh as f64).sqrt();
        let packed = matches!(self.q, Linear::Inference { packed: Some(_), .. });
        if q.device().is_cpu() && packed && !self.candle_only {
            let vec = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let qs = vec((self.q.forward(q)? * scale)?)?;
            let ks = vec(self.k.forward(k)?)?;
            let vs = vec(self.v.forward(v)?)?;
            let (mut ctx, mut weights) = attention::attention(&qs, &ks, &vs, (lq, lk, d, h), need_weights);
            for &e in even {
                let cols = e * dh..(e + 1) * dh;
                let mut mean = vec![0f32; dh];
                for row in vs.chunks_exact(d) {
                    mean.iter_mut().zip(&row[cols.clone()]).for_each(|(m, &x)| *m += x);
                }
                mean.iter_mut().for_each(|m| *m /= lk as f32);
                for row in ctx.chunks_exact_mut(d) {
                    row[cols.clone()].copy_from_slice(&mean);
                }
                if let Some(w) = weights.as_mut() {
                    w[e * lq * lk..(e + 1) * lq * lk].fill(1.0 / lk as f32);
                }
            }
            let ctx = Tensor::from_vec(ctx, (lq, d), q.device())?;
            let weights = weights.map(|w| Tensor::from_vec(w, (h, lq, lk), q.device())).transpose()?;
            return Ok((self.out.forward(&ctx)?, weights));
        }
        let split =
            |x: Tensor, l: usize| -> Result<Tensor> { Ok(x.reshape((l, h, dh))?.transpose(0, 1)?.contiguous()?) };
        // PyTorch scales q before the product: q · (1/√dh).
        let qh = split((self.q.forward(q)? * scale)?, lq)?;
        let kh = split(self.k.forward(k)?, lk)?;
        let vh = split(self.v.forward(v)?, lk)?;
        // Scores and context: two (lq × dh) · (dh × lk)-sized products per head.
        crate::kernels::count_gemm(2 * h * lq, dh, lk);
        let scores = qh.matmul(&kh.transpose(1, 2)?)?;
        let mut weights = candle_nn::ops::softmax_last_dim(&scores)?;
        if !even.is_empty() {
            // Per head: keep (1) or replace by the even weights (0).
            let keep: Vec<f32> = (0..h).map(|i| if even.contains(&i) { 0.0 } else { 1.0 }).collect();
            let keep = Tensor::from_vec(keep, (h, 1, 1), q.device())?;
            let evened = keep.affine(-1.0 / lk as f64, 1.0 / lk as f64)?;
            weights = weights.broadcast_mul(&keep)?.broadcast_add(&evened)?;
        }
        let ctx = weights.matmul(&vh)?.transpose(0, 1)?.reshape((lq, d))?;
        Ok((self.out.forward(&ctx)?, Some(weights)))
    }
}

/// Softmax over the last dimension, written out (differentiable).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// The feed-forward block `linear2(relu(linear1(x)))`.
pub struct Ffn {
    l1: Linear,
    l2: Linear,
}

impl Ffn {
    /// `linear1` (f, d) and `linear2` (d, f) under `w` (the layer's own prefix).
    pub fn new(w: &Weights, d: usize, f: usize) -> Result<Self> {
        Ok(Self { l1: Linear::new(&w.pp("linear1"), f, d)?, l2: Linear::new(&w.pp("linear2"), d, f)? })
    }

    /// With a training pass, dropout after the hidden layer and on the output.
    pub fn forward(&self, x: &Tensor, mut pass: Option<&mut TrainPass<'_>>) -> Result<Tensor> {
        let hidden = pass::drop(&mut pass, self.l1.forward_relu(x)?)?;
        pass::drop(&mut pass, self.l2.forward(&hidden)?)
    }
}
