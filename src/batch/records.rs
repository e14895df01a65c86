//! What `explain` keeps per photo, beside its figures (`.records/<stem>.json`): the ranking, every
//! explained head's statistics and the figures written. A rerun skips a photo whose record is
//! finished; the summaries are rebuilt from all records.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::intr::model::softmax;
use crate::probe::stats;
use crate::session::Analysis;

/// What is recorded per photo (and assembled into the summaries).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhotoRecord {
    pub image: String,
    pub image_sha256: String,
    /// (class name, probability), best first.
    pub top: Vec<(String, f32)>,
    pub heads: Vec<HeadRecord>,
    pub figures: Vec<String>,
    pub error: Option<String>,
    /// What made the figures: the model, class list, photo and every option that shows in them
    /// ([`super::Plan::fingerprint`]). A rerun reuses the figures only when it is the same.
    /// `None` in records written before it was recorded (those photos are made again).
    #[serde(default)]
    pub plan: Option<String>,
    /// The model's name (the demo model says so).
    #[serde(default)]
    pub model: Option<String>,
    /// Whether the photo looks like something the model knows ([`crate::probe::ood`]).
    #[serde(default)]
    pub out_of_domain: Option<crate::probe::OutOfDomain>,
}

/// One head (or the mean) of one explained class. Heads, layers and grid cells are counted from 1,
/// as the window counts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadRecord {
    pub class: String,
    /// 1-based head, or "mean".
    pub head: String,
    /// The name given to the head (for this class, or for every class), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_name: Option<String>,
    /// 1-based decoder layer (`None` in records written before it was recorded).
    #[serde(default)]
    pub layer: Option<usize>,
    /// The peak cell's row and column of the attention grid, counted from 1.
    pub peak_row: usize,
    pub peak_col: usize,
    /// The centre of the pixels the peak cell covers, in photo pixels from the top-left corner
    /// (after EXIF orientation).
    #[serde(default)]
    pub peak_x: Option<f64>,
    #[serde(default)]
    pub peak_y: Option<f64>,
    pub peak_value: f32,
    /// Shannon entropy of the map (nats; ln(cells) = uniform).
    pub entropy: f32,
    /// The class's probability (`None` in records written before it was recorded).
    #[serde(default)]
    pub class_probability: Option<f32>,
    /// The class's probability had this head attended evenly to the whole grid (the rest of the
    /// model unchanged): what the class score owes to where the head looks. Only for the heads of
    /// the last decoder layer; `None` for the mean and for earlier layers.
    #[serde(default)]
    pub probability_if_evened: Option<f32>,
    /// The head's rank for this class by greedy cumulative evening (1 = the head the decision rests
    /// on most; [`crate::probe::rank_heads`]). Last-layer heads only.
    #[serde(default)]
    pub head_rank: Option<usize>,
    /// The class's probability once this head and every head ranked below it are evened: the
    /// ranking's curve, read at this head.
    #[serde(default)]
    pub cumulative_probability_if_evened: Option<f32>,
    /// The figure file that shows this class's heads.
    #[serde(default)]
    pub figure: Option<String>,
}

impl PhotoRecord {
    /// The record of a photo that could not be explained.
    #[must_use]
    pub fn failed(image: &Path, error: String) -> Self {
        Self {
            image: image.display().to_string(),
            image_sha256: String::new(),
            top: Vec::new(),
            heads: Vec::new(),
            figures: Vec::new(),
            error: Some(error),
            plan: None,
            model: None,
            out_of_domain: None,
        }
    }
}

/// A photo is finished for `plan` (a [`super::Plan::fingerprint`]) when its record exists without an
/// error, was made by that plan, and all its figures exist.
#[must_use]
pub fn finished(record_path: &Path, out: &Path, plan: &str) -> bool {
    let Ok(bytes) = std::fs::read(record_path) else { return false };
    let Ok(r) = serde_json::from_slice::<PhotoRecord>(&bytes) else { return false };
    r.error.is_none() && r.plan.as_deref() == Some(plan) && r.figures.iter().all(|f| out.join(f).is_file())
}

/// The records of the plan's heads (and their mean) at its layer, for each of `classes` of an
/// analysed photo (its class probabilities, and `evened[head]`: the logits with that head of the
/// last layer attending evenly), with the plan's head names; `rankings` are the classes' head
/// rankings (last layer only), `figure(class)` is the figure file showing the class.
#[must_use]
pub fn head_records(
    a: &Analysis,
    probs: &[f32],
    plan: &super::Plan,
    classes: &[usize],
    rankings: &[crate::probe::HeadRanking],
    figure: impl Fn(usize) -> Option<String>,
) -> Vec<HeadRecord> {
    let (layer, heads, head_names) = (plan.layer, &plan.heads, &plan.head_names);
    let (o, evened, names) = (&a.output, &a.evened, &a.class_names);
    let (_, gw) = o.grid;
    let evened_probs: Vec<Vec<f32>> =
        if layer + 1 == o.layers { evened.iter().map(|l| softmax(l)).collect() } else { Vec::new() };
    let mut out = Vec::new();
    let last = layer + 1 == o.layers;
    for &c in classes {
        let ranked = rankings.iter().find(|r| r.class == c && last).map(crate::probe::HeadRanking::ranked);
        let rank_of = |h: usize| ranked.as_ref().and_then(|r| r.iter().find(|x| x.head == h).copied());
        for h in heads.iter().map(|&h| Some(h)).chain([None]) {
            let map = o.map_values(layer, c, h);
            let (peak, value) = stats::peak(&map);
            let (row, col) = (peak / gw.max(1), peak % gw.max(1));
            let (x0, y0, x1, y1) = a.mapping.cell_rect(row, col);
            out.push(HeadRecord {
                class: names[c].clone(),
                head: h.map_or("mean".into(), |h| (h + 1).to_string()),
                head_name: h.and_then(|h| head_names.name(&names[c], h)).map(str::to_string),
                layer: Some(layer + 1),
                peak_row: row + 1,
                peak_col: col + 1,
                peak_x: Some((x0 + x1) / 2.0),
                peak_y: Some((y0 + y1) / 2.0),
                peak_value: value,
                entropy: stats::entropy(&map),
                class_probability: Some(probs[c]),
                probability_if_evened: h.and_then(|h| evened_probs.get(h)).map(|p| p[c]),
                head_rank: h.and_then(rank_of).map(|r| r.rank),
                cumulative_probability_if_evened: h.and_then(rank_of).map(|r| r.after),
                figure: figure(c),
            });
        }
    }
    out
}
