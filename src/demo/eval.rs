//! Evaluation on held-out generated images, where the ground truth of *why* is known: accuracy, and
//! whether the attention explains the decision — object mass, part pointing, head diversity and a
//! deletion check — each next to its chance level.

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::demo::synth::{self, DatasetItem};
use crate::image::grid::{cell_extent, cell_of};
use crate::intr::Intr;
use crate::intr::random::Rng;

/// Share of the grid blanked by the deletion check.
pub const DELETION_SHARE: f64 = 0.1;

/// The figures of one evaluation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EvalReport {
    pub images: usize,
    pub classes: usize,
    pub top1: f64,
    pub top5: f64,
    /// Mean share of the predicted class's attention (head mean, last layer) on the animal.
    pub object_mass: f64,
    /// Mean share of the image the animal covers (the chance level of `object_mass`).
    pub object_mass_chance: f64,
    /// The same share per head of the predicted class (last layer): which heads look elsewhere.
    pub object_mass_per_head: Vec<f64>,
    /// Where each head's peak cell falls (predicted class, last layer), as shares of the images:
    /// [mostly animal (≥ half the cell), partly animal (the outline), background only].
    pub peak_cell_per_head: Vec<[f64; 3]>,
    /// Where the predicted class's head-mean attention goes, as mean shares summing to 1: [the
    /// animal (= `object_mass`), the background part of cells the animal touches (the outline),
    /// background-only cells beside those (8-neighbours), background farther away].
    pub attention_split: [f64; 4],
    /// Top-1 accuracy with one head of the last layer (per head) attending evenly to the whole grid,
    /// all else unchanged: how much the decisions rest on where that head looks.
    pub top1_evened_per_head: Vec<f64>,
    /// Share of images whose predicted class changes when that head attends evenly.
    pub decision_changes_evened_per_head: Vec<f64>,
    /// Object mass per head (predicted class) split by each trait of the true species:
    /// `[head][trait][value]`, traits in `synth::Trait::ALL` order, value `false` then `true`. A head
    /// that checks a trait by looking for one of its two values shows a high figure for that value
    /// and a low one for the other, where what it looks for is absent.
    pub object_mass_per_head_by_trait: Vec<[[f64; 2]; 4]>,
    /// Share of (image, look-alike species) cases where the true class's best-aligned head peaks on
    /// the part that tells the two apart.
    pub part_pointing: f64,
    /// Chance of a random peak cell touching that part.
    pub part_pointing_chance: f64,
    pub part_pointing_cases: usize,
    /// Median number of distinct parts the heads' peaks fall on, per image.
    pub head_diversity_median: f64,
    /// Same for peaks drawn uniformly at random over the cells.
    pub head_diversity_chance: f64,
    /// Share of images where blanking the top-attended cells lowers the class logit more than
    /// blanking as many random cells.
    pub deletion_pass: f64,
    /// Mean logit drops: top-attended cells, random cells.
    pub deletion_drop_top: f64,
    pub deletion_drop_random: f64,
    /// The same figures per true species (in class order): which species are explained worst.
    pub per_class: Vec<ClassFigures>,
}

/// Figures of the held-out images of one species.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClassFigures {
    pub images: usize,
    pub top1: f64,
    pub object_mass: f64,
    pub deletion_pass: f64,
}

/// Per-cell share of each part label: `shares[cell][label]`, for a `gh × gw` grid of `stride`
/// over a `side × side` label mask. A cell holds the pixels its features look at, those nearest
/// its receptive-field centre (`grid::cell_of`), not the naive tile right and below it.
fn cell_part_shares(labels: &[u8], side: usize, (gh, gw): (usize, usize), stride: usize) -> Vec<[f64; 16]> {
    let mut shares = vec![[0f64; 16]; gh * gw];
    let mut counts = vec![0usize; gh * gw];
    for y in 0..side {
        let gy = cell_of(y, stride, gh);
        for x in 0..side {
            let gx = cell_of(x, stride, gw);
            let l = (labels[y * side + x] as usize).min(15);
            shares[gy * gw + gx][l] += 1.0;
            counts[gy * gw + gx] += 1;
        }
    }
    for (s, &n) in shares.iter_mut().zip(&counts) {
        s.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    }
    shares
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// The part that fills most of a cell, background excluded (None if the cell is background only).
fn dominant_part(share: &[f64; 16]) -> Option<usize> {
    (1..16).filter(|&l| share[l] > 0.0).max_by(|&a, &b| share[a].total_cmp(&share[b]))
}

/// Blanks grid cells of a normalised CHW image (sets them to the dataset mean, 0 after normalising):
/// the pixels each cell's features look at (`grid::cell_extent`).
fn blank_cells(chw: &[f32], side: usize, (gh, gw): (usize, usize), stride: usize, cells: &[usize]) -> Vec<f32> {
    let mut out = chw.to_vec();
    for &c in cells {
        let (cy, cx) = (c / gw, c % gw);
        let (y0, y1) = cell_extent(cy, stride, gh, side);
        let (x0, x1) = cell_extent(cx, stride, gw, side);
        for ch in 0..3 {
            for y in y0..y1 {
                for x in x0..x1 {
                    out[ch * side * side + y * side + x] = 0.0;
                }
            }
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// Evaluates `model` on `items` (square images of `side` with masks), `seed` for the random cells.
pub fn evaluate(
    model: &Intr,
    items: &[DatasetItem],
    side: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<EvalReport> {
    let pairs = synth::one_part_pairs();
    let mut r = EvalReport {
        object_mass_per_head: vec![0.0; model.config().nheads],
        peak_cell_per_head: vec![[0.0; 3]; model.config().nheads],
        top1_evened_per_head: vec![0.0; model.config().nheads],
        decision_changes_evened_per_head: vec![0.0; model.config().nheads],
        object_mass_per_head_by_trait: vec![[[0.0; 2]; 4]; model.config().nheads],
        per_class: vec![ClassFigures::default(); model.config().num_queries],
        ..EvalReport::default()
    };
    let (mut pp_hits, mut pp_chance) = (0usize, 0f64);
    let mut trait_images = [[0usize; 2]; 4];
    let mut diversity = Vec::new();
    let mut diversity_chance = Vec::new();
    let mut rng = Rng::new(seed);
    for (n, item) in items.iter().enumerate() {
        let chw = crate::demo::train::load_chw(&item.image, side)?;
        let mask_path = item.mask.as_ref().with_context(|| format!("{}: no mask", item.image.display()))?;
        let labels = image::open(mask_path)
            .with_context(|| format!("{}: cannot read the mask", mask_path.display()))?
            .to_luma8()
            .into_raw();
        let (out, evened) = crate::probe::forward_evening_heads(model, &chw, side, side)?;
        let (gh, gw) = out.grid;
        let stride = out.stride;
        let cells = gh * gw;
        let last = out.layers - 1;
        let ranking = out.ranking();
        let pred = ranking[0];
        let label = item.label;
        if label >= r.per_class.len() {
            bail!("{}: label {label} outside the model's {} classes", item.image.display(), r.per_class.len());
        }
        let hit = f64::from(u8::from(pred == label));
        r.per_class[label].images += 1;
        r.per_class[label].top1 += hit;
        r.top1 += hit;
        r.top5 += f64::from(u8::from(ranking.iter().take(5).any(|&c| c == label)));
        let shares = cell_part_shares(&labels, side, (gh, gw), stride);
        let animal: Vec<f64> = shares.iter().map(|s| 1.0 - s[0]).collect();
        let mean_map = out.head_mean(last, pred);
        let mass = mean_map.iter().zip(&animal).map(|(&a, &m)| f64::from(a) * m).sum::<f64>();
        r.object_mass += mass;
        r.attention_split[0] += mass;
        for (c, (&a, &m)) in mean_map.iter().zip(&animal).enumerate() {
            let a = f64::from(a);
            let (cy, cx) = (c / gw, c % gw);
            let beside = (cy.saturating_sub(1)..(cy + 2).min(gh))
                .any(|y| (cx.saturating_sub(1)..(cx + 2).min(gw)).any(|x| animal[y * gw + x] > 0.0));
            r.attention_split[if m > 0.0 {
                1
            } else if beside {
                2
            } else {
                3
            }] += a * (1.0 - m);
        }
        r.per_class[label].object_mass += mass;
        let species = (label < synth::species::SPECIES_COUNT).then(|| synth::Species::from_index(label));
        if let Some(sp) = &species {
            for (t, &tr) in synth::Trait::ALL.iter().enumerate() {
                trait_images[t][usize::from(sp.has(tr))] += 1;
            }
        }
        for (h, ev) in evened.iter().enumerate() {
            let m = out.map(last, h, pred).iter().zip(&animal).map(|(&a, &m)| f64::from(a) * m).sum::<f64>();
            r.object_mass_per_head[h] += m;
            if let Some(sp) = &species {
                for (t, &tr) in synth::Trait::ALL.iter().enumerate() {
                    r.object_mass_per_head_by_trait[h][t][usize::from(sp.has(tr))] += m;
                }
            }
            let evened_pred = argmax(ev);
            r.top1_evened_per_head[h] += f64::from(u8::from(evened_pred == label));
            r.decision_changes_evened_per_head[h] += f64::from(u8::from(evened_pred != pred));
        }
        r.object_mass_chance += animal.iter().sum::<f64>() / cells as f64;

        // Part pointing: for each look-alike of the true species, the head of the true class with
        // the most attention on the telling part, and whether its peak cell touches that part.
        for &(a, b, part) in &pairs {
            if a != label && b != label {
                continue;
            }
            let l = part.label() as usize;
            let on_part: Vec<bool> = shares.iter().map(|s| s[l] > 0.0).collect();
            if !on_part.iter().any(|&x| x) {
                continue;
            }
            let best = (0..out.heads)
                .max_by(|&h1, &h2| {
                    let mass = |h: usize| -> f64 {
                        out.map(last, h, label).iter().zip(&shares).map(|(&v, s)| f64::from(v) * s[l]).sum()
                    };
                    mass(h1).total_cmp(&mass(h2))
                })
                .unwrap_or(0);
            let peak = argmax(out.map(last, best, label));
            pp_hits += usize::from(on_part[peak]);
            pp_chance += on_part.iter().filter(|&&x| x).count() as f64 / cells as f64;
            r.part_pointing_cases += 1;
        }

        // Head diversity: distinct parts under the heads' peaks (predicted class).
        let peaks: Vec<usize> = (0..out.heads).map(|h| argmax(out.map(last, h, pred))).collect();
        for (&p, acc) in peaks.iter().zip(&mut r.peak_cell_per_head) {
            let a = animal[p];
            acc[if a >= 0.5 {
                0
            } else if a > 0.0 {
                1
            } else {
                2
            }] += 1.0;
        }
        let count_parts = |cells_: &[usize]| -> f64 {
            let mut seen: Vec<usize> =
                cells_.iter().filter_map(|&c| dominant_part(&shares[c])).filter(|&p| p != 0).collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len() as f64
        };
        diversity.push(count_parts(&peaks));
        let random: Vec<usize> =
            (0..out.heads).map(|_| ((rng.next_f32() * cells as f32) as usize).min(cells - 1)).collect();
        diversity_chance.push(count_parts(&random));

        // Deletion: blank the top-attended cells vs as many random cells.
        let k = ((cells as f64 * DELETION_SHARE).round() as usize).max(1);
        let mut order: Vec<usize> = (0..cells).collect();
        order.sort_by(|&x, &y| mean_map[y].total_cmp(&mean_map[x]));
        let top = &order[..k];
        let mut pool: Vec<usize> = (0..cells).collect();
        for i in (1..pool.len()).rev() {
            let j = ((rng.next_f32() * (i + 1) as f32) as usize).min(i);
            pool.swap(i, j);
        }
        let random_cells = &pool[..k];
        let base = f64::from(out.logits[pred]);
        let after_top = model.forward(&blank_cells(&chw, side, (gh, gw), stride, top), side, side)?;
        let after_random = model.forward(&blank_cells(&chw, side, (gh, gw), stride, random_cells), side, side)?;
        let drop_top = base - f64::from(after_top.logits[pred]);
        let drop_random = base - f64::from(after_random.logits[pred]);
        r.deletion_drop_top += drop_top;
        r.deletion_drop_random += drop_random;
        let passed = f64::from(u8::from(drop_top > drop_random));
        r.deletion_pass += passed;
        r.per_class[label].deletion_pass += passed;
        progress(n + 1);
    }
    let n = items.len().max(1) as f64;
    r.images = items.len();
    r.classes = model.config().num_queries;
    r.top1 /= n;
    r.top5 /= n;
    r.object_mass /= n;
    r.object_mass_chance /= n;
    r.object_mass_per_head.iter_mut().for_each(|v| *v /= n);
    r.top1_evened_per_head.iter_mut().for_each(|v| *v /= n);
    r.decision_changes_evened_per_head.iter_mut().for_each(|v| *v /= n);
    for by_trait in &mut r.object_mass_per_head_by_trait {
        for (t, values) in by_trait.iter_mut().enumerate() {
            for (v, m) in values.iter_mut().enumerate() {
                *m /= trait_images[t][v].max(1) as f64;
            }
        }
    }
    r.peak_cell_per_head.iter_mut().flatten().for_each(|v| *v /= n);
    r.attention_split.iter_mut().for_each(|v| *v /= n);
    r.deletion_pass /= n;
    r.deletion_drop_top /= n;
    r.deletion_drop_random /= n;
    for c in &mut r.per_class {
        let m = c.images.max(1) as f64;
        c.top1 /= m;
        c.object_mass /= m;
        c.deletion_pass /= m;
    }
    let cases = r.part_pointing_cases.max(1) as f64;
    r.part_pointing = pp_hits as f64 / cases;
    r.part_pointing_chance = pp_chance / cases;
    r.head_diversity_median = median(&mut diversity);
    r.head_diversity_chance = median(&mut diversity_chance);
    Ok(r)
}

impl EvalReport {
    /// The report as an aligned text table.
    #[must_use]
    pub fn table(&self) -> String {
        let rows = [
            (
                "top-1 accuracy",
                format!("{:.1} %", self.top1 * 100.0),
                format!("{:.1} %", 100.0 / self.classes.max(1) as f64),
            ),
            (
                "top-5 accuracy",
                format!("{:.1} %", self.top5 * 100.0),
                format!("{:.1} %", 500.0 / self.classes.max(1) as f64),
            ),
            ("object mass", format!("{:.3}", self.object_mass), format!("{:.3}", self.object_mass_chance)),
            (
                "part pointing",
                format!("{:.1} % of {}", self.part_pointing * 100.0, self.part_pointing_cases),
                format!("{:.1} %", self.part_pointing_chance * 100.0),
            ),
            (
                "head diversity (median parts)",
                format!("{:.1}", self.head_diversity_median),
                format!("{:.1}", self.head_diversity_chance),
            ),
            (
                "deletion check passes",
                format!(
                    "{:.1} % (drop {:.2} vs {:.2})",
                    self.deletion_pass * 100.0,
                    self.deletion_drop_top,
                    self.deletion_drop_random
                ),
                "50 %".to_string(),
            ),
        ];
        let mut s = format!("{:<32} {:>34} {:>10}\n", "measure", "model", "chance");
        for (a, b, c) in rows {
            s.push_str(&format!("{a:<32} {b:>34} {c:>10}\n"));
        }
        let per_head: Vec<String> = self.object_mass_per_head.iter().map(|v| format!("{v:.2}")).collect();
        s.push_str(&format!("object mass per head: {}\n", per_head.join(" ")));
        let peaks: Vec<String> = self
            .peak_cell_per_head
            .iter()
            .map(|p| format!("{:.0}/{:.0}/{:.0}", p[0] * 100.0, p[1] * 100.0, p[2] * 100.0))
            .collect();
        s.push_str(&format!(
            "head peaks on the animal / its outline / background (% of images): {}\n",
            peaks.join(" ")
        ));
        let evened: Vec<String> = self.top1_evened_per_head.iter().map(|v| format!("{:.0}", v * 100.0)).collect();
        s.push_str(&format!("top-1 with that head attending evenly to the whole grid (%): {}\n", evened.join(" ")));
        for (h, by_trait) in self.object_mass_per_head_by_trait.iter().enumerate() {
            // The trait whose two values split this head's object mass the most.
            let Some((t, [a, b])) =
                by_trait.iter().enumerate().max_by(|x, y| (x.1[0] - x.1[1]).abs().total_cmp(&(y.1[0] - y.1[1]).abs()))
            else {
                continue;
            };
            let tr = synth::Trait::ALL[t];
            let [va, vb] = tr.values();
            // Numbered from 1, as in the explorer.
            s.push_str(&format!(
                "head {}: object mass {:.2}; by {}: {va} {a:.2}, {vb} {b:.2}\n",
                h + 1,
                self.object_mass_per_head.get(h).copied().unwrap_or(0.0),
                tr.name()
            ));
        }
        let [on, outline, beside, far] = self.attention_split;
        s.push_str(&format!(
            "head-mean attention on the animal / rest of its outline cells / cells beside them / farther: \
             {on:.3} / {outline:.3} / {beside:.3} / {far:.3}\n"
        ));
        s.push_str(&format!("({} held-out images)\n", self.images));
        s
    }

    /// The per-species figures as an aligned text table, species named by `classes`.
    #[must_use]
    pub fn class_table(&self, classes: &[String]) -> String {
        let mut s =
            format!("{:<44} {:>6} {:>7} {:>11} {:>9}\n", "species", "images", "top-1", "object mass", "deletion");
        for (i, c) in self.per_class.iter().enumerate().filter(|(_, c)| c.images > 0) {
            let name = classes.get(i).map_or_else(|| format!("class {i}"), Clone::clone);
            s.push_str(&format!(
                "{name:<44} {:>6} {:>6.1}% {:>11.3} {:>8.1}%\n",
                c.images,
                c.top1 * 100.0,
                c.object_mass,
                c.deletion_pass * 100.0
            ));
        }
        s
    }
}

/// Side of one panel of the heads × species figure, in pixels.
const PANEL: usize = 128;

/// A figure of heads × species: one row per species (first held-out image of it, in species
/// order), columns = the photo, then each head of the last decoder layer, then the head mean, for
/// the species' own class (viridis, per-map min–max, bilinear, 60 % opacity). Written as PNG.
pub fn heads_figure(model: &Intr, items: &[DatasetItem], side: usize, out: &std::path::Path) -> Result<()> {
    let classes = model.config().num_queries;
    let heads = model.config().nheads;
    let cols = heads + 2;
    let mut rows: Vec<&DatasetItem> = Vec::new();
    for c in 0..classes {
        if let Some(it) = items.iter().find(|i| i.label == c) {
            rows.push(it);
        }
    }
    let (w, h) = (cols * PANEL, rows.len().max(1) * PANEL);
    let mut canvas = image::RgbImage::new(w as u32, h as u32);
    let style = crate::overlay::colormap::OverlayStyle {
        colormap: crate::overlay::colormap::Colormap::Viridis,
        interpolation: crate::overlay::colormap::Interpolation::Bilinear,
        lo: 0.0,
        hi: 1.0,
        threshold: 0.0,
        opacity: 0.6,
    };
    for (r, item) in rows.iter().enumerate() {
        let photo = image::open(&item.image)
            .with_context(|| format!("{}: cannot read the image", item.image.display()))?
            .resize_exact(PANEL as u32, PANEL as u32, image::imageops::FilterType::Triangle)
            .to_rgb8();
        let chw = crate::demo::train::load_chw(&item.image, side)?;
        let o = model.forward(&chw, side, side)?;
        let (gh, gw) = o.grid;
        let last = o.layers - 1;
        for col in 0..cols {
            let panel: Vec<u8> = if col == 0 {
                photo.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect()
            } else {
                let map = if col <= heads {
                    o.map(last, col - 1, item.label).to_vec()
                } else {
                    o.head_mean(last, item.label)
                };
                let (lo, hi) = crate::overlay::colormap::value_range([map.as_slice()]);
                let st = crate::overlay::colormap::OverlayStyle { lo, hi, ..style };
                let grid = crate::overlay::colormap::GridMap::new(&map, (gw, gh), o.placement());
                crate::overlay::colormap::render_overlay(photo.as_raw(), PANEL, PANEL, &grid, &st)
            };
            for (i, px) in panel.chunks(4).enumerate() {
                let (x, y) = ((col * PANEL + i % PANEL) as u32, (r * PANEL + i / PANEL) as u32);
                canvas.put_pixel(x, y, image::Rgb([px[0], px[1], px[2]]));
            }
        }
    }
    crate::files::write_atomic(out, |tmp| {
        canvas
            .save_with_format(tmp, image::ImageFormat::Png)
            .with_context(|| format!("{}: cannot write the figure", out.display()))
    })
}
