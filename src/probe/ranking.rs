//! Which heads a class's score rests on, in order: greedy cumulative head evening (Prompt-CAM's
//! ranking, applied to INTR's last decoder layer). Starting with no head evened, each step evens
//! the one remaining head whose evening leaves the class's probability highest — the head the
//! class needs least — until every head is evened; read backwards, that order ranks the heads from
//! the one the decision rests on most.
//!
//! Only the chosen class's query is changed (its heads attend evenly to the whole grid); every
//! other class keeps its logit, and everything before the last layer's cross-attention is computed
//! once ([`Intr::class_query`]), so a ranking costs a few one-query cross-attentions and
//! `heads·(heads+1)/2` passes of the layer's row-wise tail, batched per step.

use crate::error::Result;
use crate::intr::Intr;
use crate::intr::model::{LastLayerInput, softmax};

/// One step of the greedy evening.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EveningStep {
    /// The head evened at this step (0-based).
    pub head: usize,
    /// The class's probability with this head and every head of the steps before evened.
    pub probability: f32,
    /// The class's logit at that point.
    pub logit: f32,
}

/// The ranking of one class's heads.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadRanking {
    /// The class (0-based).
    pub class: usize,
    /// Its probability with no head evened (the forward pass's).
    pub probability: f32,
    /// The greedy steps in evening order: the first is the head the class needs least.
    pub steps: Vec<EveningStep>,
}

impl HeadRanking {
    /// The heads from the most important (the last evened) to the least, each with the class's
    /// probability *before* and *after* it was evened in the greedy order.
    #[must_use]
    pub fn ranked(&self) -> Vec<RankedHead> {
        let n = self.steps.len();
        (0..n)
            .rev()
            .map(|i| {
                let before = if i == 0 { self.probability } else { self.steps[i - 1].probability };
                RankedHead { rank: n - i, head: self.steps[i].head, before, after: self.steps[i].probability }
            })
            .collect()
    }

    /// 1-based rank of each head (0-based index), 1 = the one the decision rests on most.
    #[must_use]
    pub fn rank_of_heads(&self) -> Vec<usize> {
        let mut ranks = vec![0; self.steps.len()];
        for r in self.ranked() {
            ranks[r.head] = r.rank;
        }
        ranks
    }

    /// The curve of the class's probability as heads are evened: no head, then after each step.
    #[must_use]
    pub fn curve(&self) -> Vec<f32> {
        std::iter::once(self.probability).chain(self.steps.iter().map(|s| s.probability)).collect()
    }
}

/// One head in the importance order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankedHead {
    /// 1 = the head the decision rests on most.
    pub rank: usize,
    /// 0-based head.
    pub head: usize,
    /// The class's probability before this head was evened (the heads ranked below it already were).
    pub before: f32,
    /// … and after.
    pub after: f32,
}

/// Ranks the last decoder layer's heads for `class` by greedy cumulative evening. `logits` are the
/// forward pass's (the other classes' logits, which evening this query does not change).
pub fn rank_heads(model: &Intr, kept: &LastLayerInput, logits: &[f32], class: usize) -> Result<HeadRanking> {
    let cq = model.class_query(kept, class)?;
    let probability_of = |logit: f32| {
        let mut l = logits.to_vec();
        l[class] = logit;
        softmax(&l)[class]
    };
    let heads = model.config().nheads;
    let mut evened: Vec<usize> = Vec::new();
    let mut steps = Vec::with_capacity(heads);
    while evened.len() < heads {
        let remaining: Vec<usize> = (0..heads).filter(|h| !evened.contains(h)).collect();
        let sets: Vec<Vec<usize>> = remaining
            .iter()
            .map(|&h| {
                let mut s = evened.clone();
                s.push(h);
                s
            })
            .collect();
        let tried = model.class_query_logits(&cq, &sets)?;
        // The highest probability; ties go to the lower head number.
        let (best, &logit) = tried
            .iter()
            .enumerate()
            .fold(None, |acc: Option<(usize, &f32)>, (i, l)| match acc {
                Some((_, b)) if b.total_cmp(l).is_ge() => acc,
                _ => Some((i, l)),
            })
            .expect("at least one head remains");
        let head = remaining[best];
        evened.push(head);
        steps.push(EveningStep { head, probability: probability_of(logit), logit });
    }
    Ok(HeadRanking { class, probability: softmax(logits)[class], steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intr::IntrConfig;
    use crate::intr::random::{Rng, random_weights, small_config};
    use crate::intr::weights::{MemorySource, WeightStore};
    use candle_core::Device;

    fn load(cfg: &IntrConfig, weights: &MemorySource) -> Intr {
        Intr::load(&WeightStore::new(weights), cfg, &Device::Cpu).unwrap()
    }

    /// The same model with the heads in `heads` of the last layer's cross-attention evened for
    /// every query, by zeroing their query projections (their scores are then all equal, so softmax
    /// spreads them evenly by itself): a path through the whole model that shares nothing with
    /// [`Intr::class_query`].
    fn silenced(cfg: &IntrConfig, weights: &MemorySource, heads: &[usize]) -> MemorySource {
        let mut w = weights.clone();
        let (d, dh) = (cfg.hidden_dim, cfg.hidden_dim / cfg.nheads);
        let p = format!("transformer.decoder.layers.{}.multihead_attn", cfg.dec_layers - 1);
        for &head in heads {
            let (_, wq) = w.tensors.get_mut(&format!("{p}.in_proj_weight")).unwrap();
            wq[head * dh * d..(head + 1) * dh * d].fill(0.0);
            let (_, bq) = w.tensors.get_mut(&format!("{p}.in_proj_bias")).unwrap();
            bq[head * dh..(head + 1) * dh].fill(0.0);
        }
        w
    }

    /// The greedy ranking by brute force: at every step, every remaining head is tried by running
    /// the whole model with the heads evened so far plus that one silenced; the class's probability
    /// takes its logit from that run and every other class's from the plain forward pass (evening
    /// one query's heads leaves the other queries as they were).
    fn brute_force(
        cfg: &IntrConfig,
        weights: &MemorySource,
        chw: &[f32],
        hw: (usize, usize),
        class: usize,
    ) -> Vec<(usize, f32)> {
        let plain = load(cfg, weights).forward(chw, hw.0, hw.1).unwrap().logits;
        let mut evened = Vec::new();
        let mut order = Vec::new();
        while evened.len() < cfg.nheads {
            let mut best: Option<(usize, f32)> = None;
            for h in (0..cfg.nheads).filter(|h| !evened.contains(h)) {
                let mut set = evened.clone();
                set.push(h);
                let logits = load(cfg, &silenced(cfg, weights, &set)).forward(chw, hw.0, hw.1).unwrap().logits;
                let mut l = plain.clone();
                l[class] = logits[class];
                let p = softmax(&l)[class];
                if best.is_none_or(|(_, b)| p > b) {
                    best = Some((h, p));
                }
            }
            let (h, p) = best.unwrap();
            evened.push(h);
            order.push((h, p));
        }
        order
    }

    #[test]
    fn the_greedy_ranking_equals_brute_force_on_small_random_models() {
        let (h, w) = (64, 96);
        for (seed, heads, dec_layers) in [(3, 4, 1), (5, 4, 2), (8, 8, 2), (13, 8, 1), (21, 8, 3)] {
            let cfg = IntrConfig { nheads: heads, ..small_config(6, dec_layers) };
            let weights = random_weights(&cfg, seed).unwrap();
            let mut rng = Rng::new(seed + 100);
            let chw: Vec<f32> = (0..3 * h * w).map(|_| rng.uniform(2.0)).collect();
            let model = load(&cfg, &weights);
            let (out, kept) = model.forward_keeping_last_layer(&chw, h, w).unwrap();
            for class in [0, out.ranking()[0], 5] {
                let ranking = rank_heads(&model, &kept, &out.logits, class).unwrap();
                let want = brute_force(&cfg, &weights, &chw, (h, w), class);
                let got: Vec<(usize, f32)> = ranking.steps.iter().map(|s| (s.head, s.probability)).collect();
                let heads_got: Vec<usize> = got.iter().map(|g| g.0).collect();
                let heads_want: Vec<usize> = want.iter().map(|g| g.0).collect();
                assert_eq!(heads_got, heads_want, "seed {seed}, {heads} heads, class {class}: evening order");
                for ((_, a), (_, b)) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-5 + 1e-4 * b, "seed {seed}, class {class}: probability {a} vs {b}");
                }
                // The start is the forward pass's own probability, and every head is evened once.
                assert_eq!(ranking.probability, out.probabilities()[class]);
                let mut seen = heads_got.clone();
                seen.sort_unstable();
                assert_eq!(seen, (0..heads).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn the_ranking_reads_the_evening_order_backwards_and_pairs_each_head_with_its_own_step() {
        let r = HeadRanking {
            class: 2,
            probability: 0.9,
            steps: vec![
                EveningStep { head: 3, probability: 0.88, logit: 0.0 },
                EveningStep { head: 0, probability: 0.7, logit: 0.0 },
                EveningStep { head: 2, probability: 0.3, logit: 0.0 },
                EveningStep { head: 1, probability: 0.1, logit: 0.0 },
            ],
        };
        let ranked = r.ranked();
        let heads: Vec<usize> = ranked.iter().map(|x| x.head).collect();
        assert_eq!(heads, [1, 2, 0, 3]);
        assert_eq!(ranked[0], RankedHead { rank: 1, head: 1, before: 0.3, after: 0.1 });
        assert_eq!(ranked[3], RankedHead { rank: 4, head: 3, before: 0.9, after: 0.88 });
        assert_eq!(r.rank_of_heads(), [3, 1, 2, 4]);
        assert_eq!(r.curve(), [0.9, 0.88, 0.7, 0.3, 0.1]);
    }
}
