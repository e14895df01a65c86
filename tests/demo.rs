//! The bundled demo model on birds it has never seen (a seed no training set used). It must clear
//! the demo's bars that it reaches — at least 95 % top-1, part pointing of at least 80 %, a median
//! of at least three parts under the heads' peaks and the deletion check passing for at least 90 %
//! of the images — and keep the object mass it measured (README), so a regression in the engine,
//! the generator or the evaluation shows up here. That one is a guard below the shipped model's
//! figure (0.69 on this set), not the demo's target (0.8), which the shipped model does not reach yet.

use intr_explorer::demo::eval;
use intr_explorer::demo::synth::{self, SynthOptions};
use intr_explorer::intr::{self, ConfigOverrides};

#[test]
fn the_shipped_demo_model_clears_its_bars_on_new_birds() {
    let path = intr_explorer::session::assets::demo_model().unwrap();
    let (m, ckpt) = intr::load_model(&path, &ConfigOverrides::default(), &candle_core::Device::Cpu).unwrap();
    let names = ckpt.stored_class_names().unwrap().unwrap();
    let species: Vec<String> = synth::all_species().into_iter().map(|s| s.name).collect();
    assert_eq!(names, species, "the demo model's classes are the generator's species, in order");

    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions { count: 160, seed: 20_261_127, size: 128, val_fraction: 1.0 };
    synth::write_dataset(dir.path(), &opts, |_, _| {}).unwrap();
    let items = synth::load_dataset(dir.path(), "val").unwrap();
    assert_eq!(items.len(), 160);
    let r = eval::evaluate(&m, &items, 128, 1, |_| {}).unwrap();
    eprintln!("{}", r.table());
    assert!(r.top1 >= 0.95, "top-1 {:.3} < 0.95 (chance 0.0625)", r.top1);
    assert!(
        r.part_pointing >= 0.8,
        "part pointing {:.3} < 0.8 (chance {:.3})",
        r.part_pointing,
        r.part_pointing_chance
    );
    assert!(r.head_diversity_median >= 3.0, "median head diversity {} < 3 parts", r.head_diversity_median);
    assert!(
        r.object_mass >= 0.6,
        "object mass {:.3} fell below the shipped model's level (0.69 measured; chance {:.3})",
        r.object_mass,
        r.object_mass_chance
    );
    // The per-species and per-head breakdowns account for every image.
    assert_eq!(r.per_class.iter().map(|c| c.images).sum::<usize>(), 160);
    for (h, p) in r.peak_cell_per_head.iter().enumerate() {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "head {}: peak shares {p:?} do not sum to 1", h + 1);
    }
    let split = r.attention_split;
    assert!((split.iter().sum::<f64>() - 1.0).abs() < 1e-4, "attention split {split:?} does not sum to 1");
    assert!((split[0] - r.object_mass).abs() < 1e-9, "attention split {split:?} vs object mass {}", r.object_mass);
    let class_mass: f64 = r.per_class.iter().map(|c| c.object_mass * c.images as f64).sum::<f64>() / 160.0;
    assert!((class_mass - r.object_mass).abs() < 1e-9, "per-species object mass {class_mass} vs {}", r.object_mass);
    assert!(r.deletion_pass >= 0.9, "deletion check passes {:.3} < 0.9 (91.9 % measured)", r.deletion_pass);

    // Evening one head at a time: a decision that changes is counted, so accuracy can fall by at
    // most the share of changed decisions; and the decisions rest on where some head looks (the
    // shipped model loses about 40 points of top-1 when its most relied-on head looks everywhere).
    let heads = m.config().nheads;
    assert_eq!(r.top1_evened_per_head.len(), heads);
    for h in 0..heads {
        let (acc, changed) = (r.top1_evened_per_head[h], r.decision_changes_evened_per_head[h]);
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&changed), "head {}: {acc} {changed}", h + 1);
        assert!(
            r.top1 - acc <= changed + 1e-9,
            "head {}: top-1 fell by {} but only {changed} changed",
            h + 1,
            r.top1 - acc
        );
    }
    let least = r.top1_evened_per_head.iter().copied().fold(1.0, f64::min);
    assert!(least < r.top1 - 0.2, "no head's evening costs 20 points of top-1 (least {least:.3}, top-1 {:.3})", r.top1);
    // Split by any trait, a head's object mass averages back to its overall figure.
    for (t, &tr) in synth::Trait::ALL.iter().enumerate() {
        let with = items.iter().filter(|i| synth::Species::from_index(i.label).has(tr)).count() as f64;
        for h in 0..heads {
            let [a, b] = r.object_mass_per_head_by_trait[h][t];
            let mean = (a * (160.0 - with) + b * with) / 160.0;
            assert!((mean - r.object_mass_per_head[h]).abs() < 1e-9, "head {}, {}: {a} / {b}", h + 1, tr.name());
        }
    }
}

/// Evening heads recomputes only the last decoder layer: the ordinary output is unchanged, and
/// each head's evened logits differ from the ordinary ones.
#[test]
fn evening_a_head_leaves_the_ordinary_output_untouched() {
    use intr_explorer::image::decode::RgbImage;
    use intr_explorer::image::preprocess::normalize;

    let path = intr_explorer::session::assets::demo_model().unwrap();
    let (m, _) = intr::load_model(&path, &ConfigOverrides::default(), &candle_core::Device::Cpu).unwrap();
    let s = synth::render(&synth::all_species()[6], 128, 5).unwrap();
    let chw = normalize(&RgbImage { width: 128, height: 128, data: s.rgb });
    let plain = m.forward(&chw, 128, 128).unwrap();
    let (out, evened) = intr_explorer::probe::forward_evening_heads(&m, &chw, 128, 128).unwrap();
    assert_eq!(out.logits, plain.logits);
    assert_eq!(out.attention, plain.attention);
    assert_eq!(evened.len(), m.config().nheads);
    for (h, logits) in evened.iter().enumerate() {
        assert_eq!(logits.len(), out.classes);
        let change = logits.iter().zip(&out.logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(change > 1e-3, "head {}: evening changed the logits by only {change}", h + 1);
    }
}

/// The premise of the evaluation's and the overlays' grid placement (`grid::cell_of`): a
/// backbone cell reads the image around input pixel `stride·c`, not the tile right of it. A thin
/// vertical stripe added at column x changes the features of grid column `cell_of(x)` the most
/// (the pixels within two of a boundary between cells are left out: learned filters are not
/// exactly symmetric), and each inner column's sensitivity is centred within two pixels of
/// `stride·c`. Under the naive tiling (`x / stride`, centre `stride·c + stride/2`) both fail.
#[test]
fn a_grid_cell_reads_the_pixels_nearest_its_receptive_field_centre() {
    use intr_explorer::image::decode::RgbImage;
    use intr_explorer::image::grid::cell_of;
    use intr_explorer::image::preprocess::normalize;
    use intr_explorer::kernels::conv::Fmap;

    let path = intr_explorer::session::assets::demo_model().unwrap();
    let (m, _) = intr::load_model(&path, &ConfigOverrides::default(), &candle_core::Device::Cpu).unwrap();
    let stride = m.config().stride();
    let side = 128;
    let species = synth::all_species();
    let images: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            let s = synth::render(&species[i * 5], side, 77 + i as u64).unwrap();
            normalize(&RgbImage { width: side, height: side, data: s.rgb })
        })
        .collect();
    let features = |chw: &[f32]| m.backbone_stage_outputs(Fmap::from_chw(3, side, side, chw)).unwrap().pop().unwrap();
    let base: Vec<Fmap> = images.iter().map(|chw| features(chw)).collect();
    let gw = base[0].w;
    // change[x][j]: how much a stripe at column x changes the features of grid column j.
    let mut change = vec![vec![0f64; gw]; side];
    for (x, row) in change.iter_mut().enumerate() {
        for (chw, b) in images.iter().zip(&base) {
            let mut p = chw.clone();
            for c in 0..3 {
                for y in 0..side {
                    p[c * side * side + y * side + x] += 2.0;
                }
            }
            let f = features(&p);
            for (i, (a, o)) in f.data.iter().zip(&b.data).enumerate() {
                row[(i / f.c) % f.w] += f64::from(a - o).powi(2);
            }
        }
    }
    let mut wrong = Vec::new();
    for (x, row) in change.iter().enumerate() {
        let from_boundary = (x as i64 - (stride / 2) as i64).rem_euclid(stride as i64);
        if from_boundary <= 2 || from_boundary >= stride as i64 - 2 {
            continue;
        }
        let most = (0..gw).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        if most != cell_of(x, stride, gw) {
            wrong.push((x, most));
        }
    }
    let centres: Vec<f64> = (1..gw - 1)
        .map(|j| {
            let total: f64 = change.iter().map(|r| r[j]).sum();
            // The centre of pixel x is at x + 0.5; cell j's receptive field is centred on pixel stride·j.
            change.iter().enumerate().map(|(x, r)| (x as f64 + 0.5) * r[j]).sum::<f64>() / total - 0.5
        })
        .collect();
    eprintln!(
        "stride {stride}; (column, most-changed cell) that disagree: {wrong:?}; inner cells' centres {centres:.1?}"
    );
    assert!(wrong.is_empty(), "cells reading other pixels than `cell_of` says: {wrong:?}");
    for (j, c) in (1..).zip(&centres) {
        assert!((c - (j * stride) as f64).abs() <= 2.0, "cell {j} is centred on pixel {c:.1}, not {}", j * stride);
    }
}
