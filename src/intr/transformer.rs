//! The DETR-style transformer of INTR: post- and pre-norm encoder and decoder layers, and the
//! position embeddings, built from [`Weights`] under the official state-dict names
//! (`transformer.encoder.layers.N.self_attn.in_proj_weight`, ...). One forward serves inference
//! (2-D (tokens, D) tensors, batch 1) and training ((B, tokens, D), with a [`TrainPass`] for
//! dropout).

use candle_core::{Device, Tensor};

use super::config::{IntrConfig, PositionEmbedding};
use super::layers::{Attention, Ffn, LayerNorm};
use super::pass::{self, TrainPass};
use super::weights::Weights;
use crate::error::{Error, Result};

/// One encoder layer.
pub struct EncoderLayer {
    attn: Attention,
    ffn: Ffn,
    norm1: LayerNorm,
    norm2: LayerNorm,
    pre_norm: bool,
}

impl EncoderLayer {
    /// `self_attn`, `linear1`/`linear2`, `norm1`/`norm2` under `w`.
    pub fn new(w: &Weights, cfg: &IntrConfig) -> Result<Self> {
        let d = cfg.hidden_dim;
        Ok(Self {
            attn: Attention::new(&w.pp("self_attn"), d, cfg.nheads)?,
            ffn: Ffn::new(w, d, cfg.dim_feedforward)?,
            norm1: LayerNorm::new(&w.pp("norm1"), d)?,
            norm2: LayerNorm::new(&w.pp("norm2"), d)?,
            pre_norm: cfg.pre_norm,
        })
    }

    /// (HW, D) → (HW, D); `pos` is added to queries and keys only. With a training pass, the
    /// tensors are (B, HW, D) and dropout acts after attention and in the feed-forward block.
    pub fn forward(&self, x: &Tensor, pos: &Tensor, mut pass: Option<&mut TrainPass<'_>>) -> Result<Tensor> {
        let attend = |q: &Tensor, v: &Tensor, pass: &mut Option<&mut TrainPass<'_>>| -> Result<Tensor> {
            match pass {
                Some(p) => Ok(self.attn.forward_train(q, q, v, false, p)?.0),
                None => self.attn.context(q, q, v),
            }
        };
        if self.pre_norm {
            let x2 = self.norm1.forward(x)?;
            let qk = x2.broadcast_add(pos)?;
            let sa = attend(&qk, &x2, &mut pass)?;
            let x = (x + pass::drop(&mut pass, sa)?)?;
            let x2 = self.norm2.forward(&x)?;
            Ok((&x + self.ffn.forward(&x2, pass)?)?)
        } else {
            let qk = x.broadcast_add(pos)?;
            let sa = attend(&qk, x, &mut pass)?;
            let x = self.norm1.forward(&(x + pass::drop(&mut pass, sa)?)?)?;
            let ff = self.ffn.forward(&x, pass)?;
            self.norm2.forward(&(&x + ff)?)
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
    /// `self_attn`, `multihead_attn`, `linear1`/`linear2`, `norm1`…`norm3` under `w`.
    pub fn new(w: &Weights, cfg: &IntrConfig) -> Result<Self> {
        let d = cfg.hidden_dim;
        Ok(Self {
            self_attn: Attention::new(&w.pp("self_attn"), d, cfg.nheads)?,
            cross_attn: Attention::new(&w.pp("multihead_attn"), d, cfg.nheads)?,
            ffn: Ffn::new(w, d, cfg.dim_feedforward)?,
            norm1: LayerNorm::new(&w.pp("norm1"), d)?,
            norm2: LayerNorm::new(&w.pp("norm2"), d)?,
            norm3: LayerNorm::new(&w.pp("norm3"), d)?,
            pre_norm: cfg.pre_norm,
        })
    }

    /// `tgt` (Q, D), `memory` (HW, D), `qpos` (Q, D). Returns the new `tgt` and the cross-attention
    /// weights (heads, Q, HW). The memory keys carry no position embedding (INTR, unlike DETR).
    pub fn forward(&self, tgt: &Tensor, memory: &Tensor, qpos: &Tensor) -> Result<(Tensor, Tensor)> {
        self.forward_evened(tgt, memory, qpos, &[], None)
    }

    /// Like [`DecoderLayer::forward`] with the cross-attention heads in `even` attending evenly to
    /// every grid cell (see [`Attention::forward_evened`]). With a training pass the tensors are
    /// (B, Q, D), (B, HW, D), (B, Q, D), the weights (B, heads, Q, HW), `even` must be empty, and
    /// dropout and head drop act.
    pub fn forward_evened(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        qpos: &Tensor,
        even: &[usize],
        mut pass: Option<&mut TrainPass<'_>>,
    ) -> Result<(Tensor, Tensor)> {
        let cross = |q: &Tensor, pass: &mut Option<&mut TrainPass<'_>>| -> Result<(Tensor, Tensor)> {
            match pass {
                Some(p) if even.is_empty() => self.cross_attn.forward_train(q, memory, memory, true, p),
                Some(_) => Err(Error::Config("heads are evened in inference passes only".into())),
                None => self.cross_attn.forward_evened(q, memory, memory, even),
            }
        };
        let (residual, query) = self.before_cross(tgt, qpos, &mut pass)?;
        let (ca, w) = cross(&query, &mut pass)?;
        Ok((self.after_cross(&residual, ca, pass)?, w))
    }

    /// The layer up to its cross-attention: the self-attention among the class queries (which
    /// mixes them) and the norm. Returns the residual stream and the cross-attention's queries;
    /// everything after the self-attention treats each query on its own.
    pub fn before_cross(
        &self,
        tgt: &Tensor,
        qpos: &Tensor,
        pass: &mut Option<&mut TrainPass<'_>>,
    ) -> Result<(Tensor, Tensor)> {
        let self_attend = |q: &Tensor, v: &Tensor, pass: &mut Option<&mut TrainPass<'_>>| -> Result<Tensor> {
            match pass {
                Some(p) => Ok(self.self_attn.forward_train(q, q, v, false, p)?.0),
                None => self.self_attn.context(q, q, v),
            }
        };
        if self.pre_norm {
            let t2 = self.norm1.forward(tgt)?;
            let qk = (&t2 + qpos)?;
            let sa = self_attend(&qk, &t2, pass)?;
            let tgt = (tgt + pass::drop(pass, sa)?)?;
            let t2 = self.norm2.forward(&tgt)?;
            let query = (&t2 + qpos)?;
            Ok((tgt, query))
        } else {
            let qk = (tgt + qpos)?;
            let sa = self_attend(&qk, tgt, pass)?;
            let tgt = self.norm1.forward(&(tgt + pass::drop(pass, sa)?)?)?;
            let query = (&tgt + qpos)?;
            Ok((tgt, query))
        }
    }

    /// The layer after its cross-attention, row by row: `residual` and `ca` (the cross-attention's
    /// output) are (rows, D), any rows (in a training pass (B, Q, D)).
    pub fn after_cross(&self, residual: &Tensor, ca: Tensor, mut pass: Option<&mut TrainPass<'_>>) -> Result<Tensor> {
        if self.pre_norm {
            let tgt = (residual + pass::drop(&mut pass, ca)?)?;
            let t2 = self.norm3.forward(&tgt)?;
            Ok((&tgt + self.ffn.forward(&t2, pass)?)?)
        } else {
            let tgt = self.norm2.forward(&(residual + pass::drop(&mut pass, ca)?)?)?;
            let ff = self.ffn.forward(&tgt, pass)?;
            self.norm3.forward(&(&tgt + ff)?)
        }
    }

    /// The cross-attention's output for `query` (rows, D) over `memory`, with the heads in `even`
    /// attending evenly (inference).
    pub fn cross_attention(&self, query: &Tensor, memory: &Tensor, even: &[usize]) -> Result<Tensor> {
        Ok(self.cross_attn.forward_evened(query, memory, memory, even)?.0)
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
    /// `encoder.layers.N`, `encoder.norm` (pre-norm), `decoder.layers.N`, `decoder.norm` under `w`
    /// (`transformer`).
    pub fn new(w: &Weights, cfg: &IntrConfig) -> Result<Self> {
        let encoder = (0..cfg.enc_layers)
            .map(|i| EncoderLayer::new(&w.pp("encoder.layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..cfg.dec_layers)
            .map(|i| DecoderLayer::new(&w.pp("decoder.layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let d = cfg.hidden_dim;
        let encoder_norm = if cfg.pre_norm { Some(LayerNorm::new(&w.pp("encoder.norm"), d)?) } else { None };
        let decoder_norm = LayerNorm::new(&w.pp("decoder.norm"), d)?;
        Ok(Self { encoder, encoder_norm, decoder, decoder_norm })
    }

    /// Final decoder norm applied to one layer's output.
    pub fn norm_decoder_output(&self, x: &Tensor) -> Result<Tensor> {
        self.decoder_norm.forward(x)
    }

    /// Final encoder norm (pre-norm models) or identity.
    pub fn norm_encoder_output(&self, x: Tensor) -> Result<Tensor> {
        match &self.encoder_norm {
            Some(n) => n.forward(&x),
            None => Ok(x),
        }
    }
}

/// Position embedding of the feature grid.
pub enum PositionEncoder {
    /// Sine with `npf = D/2` features per axis.
    Sine { npf: usize },
    /// `row_embed` / `col_embed` (rows, D/2), rows = 50 in the official code.
    Learned { row: Vec<f32>, col: Vec<f32>, rows: usize, half: usize },
    /// The learned tables as trainable (50, D/2) tensors.
    LearnedTraining { row: Tensor, col: Tensor },
}

/// Grid side accepted by the learned embedding tables.
const LEARNED_MAX: usize = 50;

impl PositionEncoder {
    /// The sine embedding, or `row_embed` / `col_embed` under `w` (`backbone.1`).
    pub fn new(w: &Weights, cfg: &IntrConfig) -> Result<Self> {
        let half = cfg.hidden_dim / 2;
        Ok(match cfg.position_embedding {
            PositionEmbedding::Sine => Self::Sine { npf: half },
            PositionEmbedding::Learned => {
                let row_shape = w.pp("row_embed").shape_or("weight", &[LEARNED_MAX, half])?;
                if row_shape.len() != 2 || row_shape[1] * 2 != cfg.hidden_dim {
                    return Err(Error::Config(format!(
                        "learned row embedding has shape {row_shape:?}, expected (50, {half})"
                    )));
                }
                if w.trains() {
                    let row = w.pp("row_embed").tensor("weight", &row_shape)?;
                    let col = w.pp("col_embed").tensor("weight", &row_shape)?;
                    Self::LearnedTraining { row, col }
                } else {
                    let row = w.pp("row_embed").values("weight", &row_shape)?;
                    let col = w.pp("col_embed").values("weight", &row_shape)?;
                    Self::Learned { row, col, rows: row_shape[0], half }
                }
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
            Self::Learned { row, col, rows, half } => {
                let rows = *rows;
                if h > rows || w > rows {
                    return Err(Error::Config(format!(
                        "the learned position embedding covers grids up to {rows}×{rows}; this image gives {h}×{w}"
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
            Self::LearnedTraining { row, col } => {
                let (rows, half) = row.dims2()?;
                if h > rows || w > rows {
                    return Err(Error::Config(format!(
                        "the learned position embedding covers grids up to {rows}×{rows}; this image gives {h}×{w}"
                    )));
                }
                // Token (i, j) = [col_embed[j], row_embed[i]], as the official code concatenates.
                let cols = col.narrow(0, 0, w)?.unsqueeze(0)?.broadcast_as((h, w, half))?;
                let rows = row.narrow(0, 0, h)?.unsqueeze(1)?.broadcast_as((h, w, half))?;
                Ok(Tensor::cat(&[cols, rows], 2)?.reshape((h * w, 2 * half))?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intr::layers::Linear;
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
