//! How a forward pass of a model built for training runs: training or evaluation statistics,
//! dropout and head drop with their seeded masks, and the batch-norm running statistics the pass
//! updates. A model built for inference runs without one.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::random::Rng;
use crate::error::Result;

/// The state of one training (or evaluation) pass.
pub struct TrainPass<'a> {
    /// Training statistics and dropout on (else: running statistics, no dropout).
    pub train: bool,
    /// Transformer dropout probability (DETR's places: attention weights, each residual branch, the
    /// feed-forward hidden layer).
    pub dropout: f32,
    /// The probability that one head's cross-attention output is zeroed for one query of one
    /// sample (the others scaled by 1 / (1 − p)), so that no head can idle.
    pub head_drop: f32,
    /// Draws the dropout and head-drop masks.
    pub rng: &'a mut Rng,
    /// `*.running_mean` / `*.running_var` by state-dict name, updated by training passes.
    pub buffers: &'a mut BTreeMap<String, Tensor>,
}

impl TrainPass<'_> {
    /// Inverted dropout (PyTorch's): zeroes each element with the set probability and scales the
    /// rest by 1 / (1 − p). Identity in evaluation passes or without dropout.
    pub fn drop(&mut self, x: &Tensor) -> Result<Tensor> {
        if !self.train || self.dropout <= 0.0 {
            return Ok(x.clone());
        }
        let mask = dropout_mask(x.elem_count(), self.dropout, self.rng);
        Ok((x * Tensor::from_vec(mask, x.shape(), x.device())?)?)
    }

    /// Head drop of a per-head context (B, H, Tq, d): one inverted-dropout draw per (sample,
    /// head, query). Identity in evaluation passes or without head drop.
    pub fn drop_heads(&mut self, ctx: &Tensor) -> Result<Tensor> {
        if !self.train || self.head_drop <= 0.0 {
            return Ok(ctx.clone());
        }
        let (b, h, q, _) = ctx.dims4()?;
        let mask = dropout_mask(b * h * q, self.head_drop, self.rng);
        Ok(ctx.broadcast_mul(&Tensor::from_vec(mask, (b, h, q, 1), ctx.device())?)?)
    }
}

/// Applies [`TrainPass::drop`] when there is a pass.
pub fn drop(pass: &mut Option<&mut TrainPass<'_>>, x: Tensor) -> Result<Tensor> {
    match pass {
        Some(p) => p.drop(&x),
        None => Ok(x),
    }
}

/// An inverted-dropout mask of `n` elements: 0 with probability `p`, else 1 / (1 − p).
#[must_use]
pub fn dropout_mask(n: usize, p: f32, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    (0..n).map(|_| if rng.next_f32() < p { 0.0 } else { keep }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
        let (mut rng, mut buffers) = (Rng::new(5), BTreeMap::new());
        let mut pass = TrainPass { train: true, dropout: 0.0, head_drop: 0.5, rng: &mut rng, buffers: &mut buffers };
        let ctx = Tensor::ones((2, 8, 4, 16), DType::F32, &Device::Cpu).unwrap();
        let rows = pass.drop_heads(&ctx).unwrap().reshape((64, 16)).unwrap().to_vec2::<f32>().unwrap();
        let zeroed = rows.iter().filter(|r| r.iter().all(|&v| v == 0.0)).count();
        assert!(rows.iter().all(|r| r.iter().all(|&v| v == 0.0) || r.iter().all(|&v| v == 2.0)), "{rows:?}");
        assert!((16..=48).contains(&zeroed), "{zeroed} of 64 heads zeroed at p = 0.5");
        pass.train = false;
        let eval = pass.drop_heads(&ctx).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(eval.iter().all(|&v| v == 1.0));
    }
}
