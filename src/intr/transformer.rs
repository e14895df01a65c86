//! The DETR-style transformer of INTR on candle: multi-head attention that can return its weights,
//! post- and pre-norm encoder and decoder layers, and the position embeddings.
//!
//! All tensors are 2-D (tokens, D): batch 1 throughout. Weight names follow the official state dict
//! (`transformer.encoder.layers.N.self_attn.in_proj_weight`, ...).

use candle_core::{Device, Tensor};
use candle_nn::{LayerNorm, Module};

use super::config::{IntrConfig, PositionEmbedding};
use super::weights::WeightStore;
use crate::error::{Error, Result};
use crate::kernels::attention;
use crate::kernels::packed_gemm::{self, Geometry, PackedB};

/// LayerNorm epsilon of `nn.LayerNorm`.
const LN_EPS: f64 = 1e-5;

/// A linear layer `y = x·Wᵀ + b`. On a CPU with AVX-512 the weights are packed for
/// [`fastconv`] (bias and ReLU fused); otherwise W is kept transposed (in, out) for candle's matmul.
pub struct Linear {
    w_t: Option<Tensor>,
    b: Tensor,
    packed: Option<PackedB>,
    out: usize,
}

impl Linear {
    /// From a (out, in) row-major weight and its bias.
    pub fn from_parts(w: Vec<f32>, b: Vec<f32>, out: usize, inp: usize, dev: &Device) -> Result<Self> {
        let w_t = Tensor::from_vec(w, (out, inp), dev)?.t()?.contiguous()?;
        let packed = if dev.is_cpu() && packed_gemm::available() {
            Some(PackedB::new(&w_t.flatten_all()?.to_vec1::<f32>()?, &b, inp, out))
        } else {
            None
        };
        let w_t = if packed.is_some() { None } else { Some(w_t) };
        Ok(Self { w_t, b: Tensor::from_vec(b, out, dev)?, packed, out })
    }

    /// Loads `{p}.weight` (out, in) and `{p}.bias` (out).
    pub fn load(ws: &WeightStore, p: &str, out: usize, inp: usize, dev: &Device) -> Result<Self> {
        let w = ws.get(&format!("{p}.weight"), &[out, inp])?;
        let b = ws.get(&format!("{p}.bias"), &[out])?;
        Self::from_parts(w, b, out, inp, dev)
    }

    /// (n, in) → (n, out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }

    /// (n, in) → relu((n, out))
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }

    fn apply(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        if let Some(p) = &self.packed {
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let mut out = vec![0.0f32; m * self.out];
            let geo = Geometry { src_w: m, cin: k, stride: 1, out_h: 1, out_w: m, segments: vec![(0, 0, k)] };
            packed_gemm::run(&xs, &geo, p, packed_gemm::Residual::None, relu, &mut out);
            return Ok(Tensor::from_vec(out, (m, self.out), x.device())?);
        }
        let w_t = self.w_t.as_ref().ok_or_else(|| Error::Config("linear layer without weights".into()))?;
        let y = x.matmul(w_t)?.broadcast_add(&self.b)?;
        Ok(if relu { y.relu()? } else { y })
    }
}

fn layer_norm(ws: &WeightStore, p: &str, d: usize, dev: &Device) -> Result<LayerNorm> {
    let w = Tensor::from_vec(ws.get(&format!("{p}.weight"), &[d])?, d, dev)?;
    let b = Tensor::from_vec(ws.get(&format!("{p}.bias"), &[d])?, d, dev)?;
    Ok(LayerNorm::new(w, b, LN_EPS))
}

fn ln(norm: &LayerNorm, x: &Tensor) -> Result<Tensor> {
    Ok(norm.forward(x)?)
}

/// `nn.MultiheadAttention` with separate q/k/v projections split from `in_proj_weight`.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// Use candle's ops even where the AVX-512 kernel could run (cross-checking the two paths).
    candle_only: bool,
}

impl Attention {
    fn load(ws: &WeightStore, p: &str, d: usize, heads: usize, dev: &Device) -> Result<Self> {
        let w = ws.get(&format!("{p}.in_proj_weight"), &[3 * d, d])?;
        let b = ws.get(&format!("{p}.in_proj_bias"), &[3 * d])?;
        let part = |i: usize| {
            Linear::from_parts(w[i * d * d..(i + 1) * d * d].to_vec(), b[i * d..(i + 1) * d].to_vec(), d, d, dev)
        };
        Ok(Self {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: Linear::load(ws, &format!("{p}.out_proj"), d, d, dev)?,
            heads,
            candle_only: false,
        })
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
        if q.device().is_cpu() && packed_gemm::available() && !self.candle_only {
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

struct Ffn {
    l1: Linear,
    l2: Linear,
}

impl Ffn {
    fn load(ws: &WeightStore, p: &str, d: usize, f: usize, dev: &Device) -> Result<Self> {
        Ok(Self {
            l1: Linear::load(ws, &format!("{p}.linear1"), f, d, dev)?,
            l2: Linear::load(ws, &format!("{p}.linear2"), d, f, dev)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l1.forward_relu(x)?)
    }
}

/// One encoder layer.
pub struct EncoderLayer {
    attn: Attention,
    ffn: Ffn,
    norm1: LayerNorm,
    norm2: LayerNorm,
    pre_norm: bool,
}

impl EncoderLayer {
    fn load(ws: &WeightStore, p: &str, cfg: &IntrConfig, dev: &Device) -> Result<Self> {
        let d = cfg.hidden_dim;
        Ok(Self {
            attn: Attention::load(ws, &format!("{p}.self_attn"), d, cfg.nheads, dev)?,
            ffn: Ffn::load(ws, p, d, cfg.dim_feedforward, dev)?,
            norm1: layer_norm(ws, &format!("{p}.norm1"), d, dev)?,
            norm2: layer_norm(ws, &format!("{p}.norm2"), d, dev)?,
            pre_norm: cfg.pre_norm,
        })
    }

    /// (HW, D) → (HW, D); `pos` is added to queries and keys only.
    pub fn forward(&self, x: &Tensor, pos: &Tensor) -> Result<Tensor> {
        if self.pre_norm {
            let x2 = ln(&self.norm1, x)?;
            let qk = (&x2 + pos)?;
            let x = (x + self.attn.context(&qk, &qk, &x2)?)?;
            let x2 = ln(&self.norm2, &x)?;
            Ok((&x + self.ffn.forward(&x2)?)?)
        } else {
            let qk = (x + pos)?;
            let x = ln(&self.norm1, &(x + self.attn.context(&qk, &qk, x)?)?)?;
            ln(&self.norm2, &(&x + self.ffn.forward(&x)?)?)
        }
    }
}

/// One decoder layer: class-query self-attention, cross-attention over the image, FFN.
pub struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    ffn: Ffn,
    norm1: LayerNorm,
    norm2: LayerNorm,
    norm3: LayerNorm,
    pre_norm: bool,
}

impl DecoderLayer {
    fn load(ws: &WeightStore, p: &str, cfg: &IntrConfig, dev: &Device) -> Result<Self> {
        let d = cfg.hidden_dim;
        Ok(Self {
            self_attn: Attention::load(ws, &format!("{p}.self_attn"), d, cfg.nheads, dev)?,
            cross_attn: Attention::load(ws, &format!("{p}.multihead_attn"), d, cfg.nheads, dev)?,
            ffn: Ffn::load(ws, p, d, cfg.dim_feedforward, dev)?,
            norm1: layer_norm(ws, &format!("{p}.norm1"), d, dev)?,
            norm2: layer_norm(ws, &format!("{p}.norm2"), d, dev)?,
            norm3: layer_norm(ws, &format!("{p}.norm3"), d, dev)?,
            pre_norm: cfg.pre_norm,
        })
    }

    /// `tgt` (Q, D), `memory` (HW, D), `qpos` (Q, D). Returns the new `tgt` and the cross-attention
    /// weights (heads, Q, HW). The memory keys carry no position embedding (INTR, unlike DETR).
    pub fn forward(&self, tgt: &Tensor, memory: &Tensor, qpos: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_evened(tgt, memory, qpos, &[])
    }

    /// Like [`DecoderLayer::forward`] with the cross-attention heads in `even` attending evenly to
    /// every grid cell (see [`Attention::forward_evened`]).
    pub fn forward_evened(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        qpos: &Tensor,
        even: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        if self.pre_norm {
            let t2 = ln(&self.norm1, tgt)?;
            let qk = (&t2 + qpos)?;
            let tgt = (tgt + self.self_attn.context(&qk, &qk, &t2)?)?;
            let t2 = ln(&self.norm2, &tgt)?;
            let (ca, w) = self.cross_attn.forward_evened(&(&t2 + qpos)?, memory, memory, even)?;
            let tgt = (tgt + ca)?;
            let t2 = ln(&self.norm3, &tgt)?;
            Ok(((&tgt + self.ffn.forward(&t2)?)?, w))
        } else {
            let qk = (tgt + qpos)?;
            let tgt = ln(&self.norm1, &(tgt + self.self_attn.context(&qk, &qk, tgt)?)?)?;
            let (ca, w) = self.cross_attn.forward_evened(&(&tgt + qpos)?, memory, memory, even)?;
            let tgt = ln(&self.norm2, &(tgt + ca)?)?;
            let tgt = ln(&self.norm3, &(&tgt + self.ffn.forward(&tgt)?)?)?;
            Ok((tgt, w))
        }
    }
}

/// The whole transformer.
pub struct Transformer {
    pub encoder: Vec<EncoderLayer>,
    /// Pre-norm models only.
    pub encoder_norm: Option<LayerNorm>,
    pub decoder: Vec<DecoderLayer>,
    pub decoder_norm: LayerNorm,
}

impl Transformer {
    pub fn load(ws: &WeightStore, cfg: &IntrConfig, dev: &Device) -> Result<Self> {
        let encoder = (0..cfg.enc_layers)
            .map(|i| EncoderLayer::load(ws, &format!("transformer.encoder.layers.{i}"), cfg, dev))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.dec_layers)
            .map(|i| DecoderLayer::load(ws, &format!("transformer.decoder.layers.{i}"), cfg, dev))
            .collect::<Result<Vec<_>>>()?;
        let encoder_norm =
            if cfg.pre_norm { Some(layer_norm(ws, "transformer.encoder.norm", cfg.hidden_dim, dev)?) } else { None };
        let decoder_norm = layer_norm(ws, "transformer.decoder.norm", cfg.hidden_dim, dev)?;
        Ok(Self { encoder, encoder_norm, decoder, decoder_norm })
    }

    /// Final decoder norm applied to one layer's output.
    pub fn norm_decoder_output(&self, x: &Tensor) -> Result<Tensor> {
        ln(&self.decoder_norm, x)
    }

    /// Final encoder norm (pre-norm models) or identity.
    pub fn norm_encoder_output(&self, x: Tensor) -> Result<Tensor> {
        match &self.encoder_norm {
            Some(n) => ln(n, &x),
            None => Ok(x),
        }
    }
}

/// Position embedding of the feature grid.
pub enum PositionEncoder {
    /// Sine with `npf = D/2` features per axis.
    Sine { npf: usize },
    /// `row_embed` / `col_embed` (50, D/2).
    Learned { row: Vec<f32>, col: Vec<f32>, half: usize },
}

/// Grid side accepted by the learned embedding tables.
const LEARNED_MAX: usize = 50;

impl PositionEncoder {
    pub fn load(ws: &WeightStore, cfg: &IntrConfig) -> Result<Self> {
        let half = cfg.hidden_dim / 2;
        Ok(match cfg.position_embedding {
            PositionEmbedding::Sine => Self::Sine { npf: half },
            PositionEmbedding::Learned => {
                let row_shape = ws.shape("backbone.1.row_embed.weight")?.to_vec();
                if row_shape.len() != 2 || row_shape[1] * 2 != cfg.hidden_dim {
                    return Err(Error::Config(format!(
                        "learned row embedding has shape {row_shape:?}, expected (50, {half})"
                    )));
                }
                let row = ws.get("backbone.1.row_embed.weight", &row_shape)?;
                let col = ws.get("backbone.1.col_embed.weight", &row_shape)?;
                Self::Learned { row, col, half }
            }
        })
    }

    /// The embedding of an h×w grid as (h·w, D), tokens row-major.
    pub fn encode(&self, h: usize, w: usize, dev: &Device) -> Result<Tensor> {
        match self {
            Self::Sine { npf } => {
                let npf = *npf;
                let d = 2 * npf;
                let mut out = vec![0.0f32; h * w * d];
                let two_pi = 2.0 * std::f64::consts::PI;
                // normalize=True: (i+1) / (last + 1e-6) · 2π, per axis.
                let ys: Vec<f64> = (0..h).map(|i| (i + 1) as f64 / (h as f64 + 1e-6) * two_pi).collect();
                let xs: Vec<f64> = (0..w).map(|j| (j + 1) as f64 / (w as f64 + 1e-6) * two_pi).collect();
                let dim_t: Vec<f64> = (0..npf).map(|k| 10000f64.powf(2.0 * (k / 2) as f64 / npf as f64)).collect();
                let feat =
                    |v: f64, k: usize| if k.is_multiple_of(2) { (v / dim_t[k]).sin() } else { (v / dim_t[k]).cos() };
                for i in 0..h {
                    for j in 0..w {
                        let t = &mut out[(i * w + j) * d..(i * w + j + 1) * d];
                        for k in 0..npf {
                            t[k] = feat(ys[i], k) as f32;
                            t[npf + k] = feat(xs[j], k) as f32;
                        }
                    }
                }
                Ok(Tensor::from_vec(out, (h * w, d), dev)?)
            }
            Self::Learned { row, col, half } => {
                if h > LEARNED_MAX || w > LEARNED_MAX {
                    return Err(Error::Config(format!(
                        "the learned position embedding covers grids up to {LEARNED_MAX}×{LEARNED_MAX}; this image gives {h}×{w}"
                    )));
                }
                let half = *half;
                let mut out = vec![0.0f32; h * w * 2 * half];
                for i in 0..h {
                    for j in 0..w {
                        let t = &mut out[(i * w + j) * 2 * half..(i * w + j + 1) * 2 * half];
                        t[..half].copy_from_slice(&col[j * half..(j + 1) * half]);
                        t[half..].copy_from_slice(&row[i * half..(i + 1) * half]);
                    }
                }
                Ok(Tensor::from_vec(out, (h * w, 2 * half), dev)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intr::random::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// A random attention of `d` channels and `heads` heads; `silent` heads get an all-zero query
    /// projection, so their scores are all zero and softmax spreads them evenly by itself.
    fn attention(seed: u64, d: usize, heads: usize, silent: &[usize], candle_only: bool) -> Attention {
        let mut rng = Rng::new(seed);
        let dev = Device::Cpu;
        let dh = d / heads;
        let mut lin = |zero_rows: &[usize]| {
            let mut w = random(&mut rng, d * d);
            let mut b = random(&mut rng, d);
            for &hd in zero_rows {
                w[hd * dh * d..(hd + 1) * dh * d].fill(0.0);
                b[hd * dh..(hd + 1) * dh].fill(0.0);
            }
            Linear::from_parts(w, b, d, d, &dev).unwrap()
        };
        Attention { q: lin(silent), k: lin(&[]), v: lin(&[]), out: lin(&[]), heads, candle_only }
    }

    /// Random queries (lq, d) and keys = values (lk, d).
    fn inputs(seed: u64, lq: usize, lk: usize, d: usize) -> (Tensor, Tensor) {
        let mut rng = Rng::new(seed);
        let q = Tensor::from_vec(random(&mut rng, lq * d), (lq, d), &Device::Cpu).unwrap();
        let kv = Tensor::from_vec(random(&mut rng, lk * d), (lk, d), &Device::Cpu).unwrap();
        (q, kv)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    #[test]
    fn an_evened_head_reads_exactly_what_a_head_with_no_query_reads() {
        let (d, heads, lq, lk) = (32, 4, 5, 13);
        let (q, kv) = inputs(3, lq, lk, d);
        for candle_only in [false, true] {
            let plain = attention(9, d, heads, &[], candle_only);
            // Same weights (same seed draws) except head 2's query projection is zero.
            let silent = attention(9, d, heads, &[2], candle_only);
            let (expected, expected_w) = silent.forward(&q, &kv, &kv).unwrap();
            let (got, got_w) = plain.forward_evened(&q, &kv, &kv, &[2]).unwrap();
            assert!(close(&values(&got), &values(&expected), 1e-5), "candle_only {candle_only}");
            assert!(close(&values(&got_w), &values(&expected_w), 1e-6), "candle_only {candle_only}");
            let w = values(&got_w);
            assert!(w[2 * lq * lk..3 * lq * lk].iter().all(|&x| (x - 1.0 / lk as f32).abs() < 1e-7));
            // The other heads still look where they looked.
            let (_, plain_w) = plain.forward(&q, &kv, &kv).unwrap();
            let pw = values(&plain_w);
            assert!(close(&w[..2 * lq * lk], &pw[..2 * lq * lk], 1e-6));
            assert!(!close(&w[2 * lq * lk..3 * lq * lk], &pw[2 * lq * lk..3 * lq * lk], 1e-3));
        }
    }

    #[test]
    fn the_kernel_and_candle_agree_on_evened_heads() {
        let (d, heads, lq, lk) = (32, 4, 6, 21);
        let (q, kv) = inputs(5, lq, lk, d);
        let (a, aw) = attention(4, d, heads, &[], false).forward_evened(&q, &kv, &kv, &[0, 3]).unwrap();
        let (b, bw) = attention(4, d, heads, &[], true).forward_evened(&q, &kv, &kv, &[0, 3]).unwrap();
        assert!(close(&values(&a), &values(&b), 1e-5));
        assert!(close(&values(&aw), &values(&bw), 1e-6));
    }

    #[test]
    fn evening_a_head_that_does_not_exist_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 16), candle_core::DType::F32, &dev).unwrap();
        let err = attention(1, 16, 4, &[], false).forward_evened(&x, &x, &x, &[4]).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("head 4 does not exist")));
    }
}
