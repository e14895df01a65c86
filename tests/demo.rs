//! The bundled demo model on birds it has never seen (a seed no training set used). It must clear
//! the demo's bars that it reaches — at least 95 % top-1, part pointing of at least 80 % and a median
//! of at least three parts under the heads' peaks — and keep the object mass and deletion figures it
//! measured (README), so a regression in the engine, the generator or the evaluation shows up here.
//! Those two are guards below the shipped model's figures (0.58 and 77.5 % on this set), not the
//! demo's targets (0.8 and 90 %), which the shipped model does not reach yet.

use intr_explorer::model::{self, ConfigOverrides};
use intr_explorer::synth::{self, SynthOptions};
use intr_explorer::train::eval;

#[test]
fn the_shipped_demo_model_clears_its_bars_on_new_birds() {
    let path = intr_explorer::assets::demo_model().unwrap();
    let (m, ckpt) = model::load_model(&path, &ConfigOverrides::default(), &candle_core::Device::Cpu).unwrap();
    let names = model::stored_class_names(&ckpt).unwrap().unwrap();
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
        r.object_mass >= 0.5,
        "object mass {:.3} fell below the shipped model's level (0.58 measured; chance {:.3})",
        r.object_mass,
        r.object_mass_chance
    );
    // The per-species and per-head breakdowns account for every image.
    assert_eq!(r.per_class.iter().map(|c| c.images).sum::<usize>(), 160);
    for (h, p) in r.peak_cell_per_head.iter().enumerate() {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "head {h}: peak shares {p:?} do not sum to 1");
    }
    let split = r.attention_split;
    assert!((split.iter().sum::<f64>() - 1.0).abs() < 1e-4, "attention split {split:?} does not sum to 1");
    assert!((split[0] - r.object_mass).abs() < 1e-9, "attention split {split:?} vs object mass {}", r.object_mass);
    let class_mass: f64 = r.per_class.iter().map(|c| c.object_mass * c.images as f64).sum::<f64>() / 160.0;
    assert!((class_mass - r.object_mass).abs() < 1e-9, "per-species object mass {class_mass} vs {}", r.object_mass);
    assert!(r.deletion_pass >= 0.7, "deletion check passes {:.3} < 0.7 (77.5 % measured)", r.deletion_pass);
}
