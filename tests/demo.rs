//! The bundled demo model on birds it has never seen (a seed no training set used): what the
//! shipped model achieves (see the README's evaluation table) still holds, so a regression in the
//! engine, the generator or the evaluation is caught. The guard sits below the measured figures by
//! a margin for sampling noise; it is not the target the demo model is meant to reach.

use intr_explorer::model::{self, ConfigOverrides};
use intr_explorer::synth::{self, SynthOptions};
use intr_explorer::train::eval;

#[test]
fn the_shipped_demo_model_keeps_its_measured_accuracy_on_new_birds() {
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
    assert!(r.top5 >= 0.9, "top-5 {:.3} < 0.9", r.top5);
    assert!(r.top1 >= 0.2, "top-1 {:.3} < 0.2 (chance 0.0625)", r.top1);
    assert!(
        r.object_mass > r.object_mass_chance,
        "object mass {:.3} is not above its chance level {:.3}",
        r.object_mass,
        r.object_mass_chance
    );
}
