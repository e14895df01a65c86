//! Whether a photo looks like something the model knows: an out-of-domain score from what the
//! forward pass already gives. A model shown a photo of a kind it was never trained on still puts
//! it in one of its classes, but usually without deciding between two of them; the score is how far
//! the two best classes are from a clear decision, 1 − (p₁ − p₂), so 0 is certain and 1 is a tie.
//!
//! On the bundled demo model it separates the shared real photos from freshly generated birds with
//! an AUROC of 0.995, and the flag (score ≥ [`THRESHOLD`]) is raised on 2 of 200 generated birds
//! and 11 of the 12 real photos (`docs/faithfulness.md`). It measures indecision, so on a model that
//! is often unsure of its own classes it also flags hard in-domain photos.

use serde::{Deserialize, Serialize};

use crate::intr::model::softmax;

/// The score from which a photo is flagged.
pub const THRESHOLD: f32 = 0.1;

/// A photo's out-of-domain score and flag.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutOfDomain {
    /// 1 − (p₁ − p₂) of the two most probable classes, in [0, 1].
    pub score: f32,
    /// `score ≥ THRESHOLD`: the photo may be outside what the model knows.
    pub flagged: bool,
}

/// The score of a forward pass's class logits.
#[must_use]
pub fn out_of_domain(logits: &[f32]) -> OutOfDomain {
    let mut p = softmax(logits);
    p.sort_by(|a, b| b.total_cmp(a));
    let (p1, p2) = (p.first().copied().unwrap_or(0.0), p.get(1).copied().unwrap_or(0.0));
    let score = (1.0 - (p1 - p2)).clamp(0.0, 1.0);
    OutOfDomain { score, flagged: score >= THRESHOLD }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clear_decision_scores_near_zero_and_a_tie_near_one() {
        let clear = out_of_domain(&[12.0, 0.0, -1.0]);
        assert!(clear.score < 1e-4 && !clear.flagged, "{clear:?}");
        let tie = out_of_domain(&[3.0, 3.0, -5.0]);
        assert!(tie.score > 0.999 && tie.flagged, "{tie:?}");
        let single = out_of_domain(&[1.0]);
        assert_eq!(single, OutOfDomain { score: 0.0, flagged: false });
    }
}
