//! Head evening: what each class's score owes to where one head of the last decoder layer looks,
//! measured by making that head attend evenly to the whole grid (weights 1/(h·w), so its output is
//! the mean of its values) and reading the logits again.

use crate::error::Result;
use crate::intr::model::LastLayerInput;
use crate::intr::{Intr, IntrOutput};

/// Per head of the last decoder layer, every class's logit when that head alone attends evenly:
/// `evened[head][class]`. Costs one decoder layer per head.
pub fn evened_logits(model: &Intr, kept: &LastLayerInput) -> Result<Vec<Vec<f32>>> {
    (0..model.config().nheads).map(|head| model.last_layer_logits(kept, &[head])).collect()
}

/// [`Intr::forward`] plus [`evened_logits`]: the backbone, encoder and earlier decoder layers run
/// once; the last decoder layer once more per head.
pub fn forward_evening_heads(model: &Intr, chw: &[f32], h: usize, w: usize) -> Result<(IntrOutput, Vec<Vec<f32>>)> {
    let (out, evened, _) = forward_evening_heads_keeping(model, chw, h, w)?;
    Ok((out, evened))
}

/// [`forward_evening_heads`], also returning what the last decoder layer read (for later probes
/// such as [`crate::probe::rank_heads`]).
pub fn forward_evening_heads_keeping(
    model: &Intr,
    chw: &[f32],
    h: usize,
    w: usize,
) -> Result<(IntrOutput, Vec<Vec<f32>>, LastLayerInput)> {
    let (out, kept) = model.forward_keeping_last_layer(chw, h, w)?;
    let evened = evened_logits(model, &kept)?;
    Ok((out, evened, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intr::Intr;
    use crate::intr::config::IntrConfig;
    use crate::intr::random::{Rng, random_weights};
    use crate::intr::weights::{MemorySource, WeightStore};
    use candle_core::Device;

    /// A small random INTR with `dec_layers` decoder layers.
    fn config(dec_layers: usize) -> IntrConfig {
        crate::intr::random::small_config(5, dec_layers)
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
            let weights = random_weights(&cfg, 5).unwrap();
            let (out, evened) = forward_evening_heads(&load(&cfg, &weights), &chw, h, w).unwrap();
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
