//! Training on candle: the differentiable model computes what the engine computes on the same
//! weights (so a trained model means in the app what it meant in training), and the loss falls over
//! a few dozen steps on generated birds.

use candle_core::{Device, Tensor};
use intr_explorer::demo::train::{self, DEMO_STEM, TrainModel, TrainOptions};
use intr_explorer::intr::weights::{MemorySource, WeightStore};
use intr_explorer::intr::{Intr, random::Rng};

fn random_batch(n: usize, side: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * 3 * side * side).map(|_| rng.uniform(2.0)).collect()
}

#[test]
fn the_training_model_computes_what_the_engine_computes() {
    // The demo architecture has no encoder layer; the trainer supports them too.
    for enc_layers in [0, 2] {
        let mut cfg = train::demo_config(5);
        cfg.enc_layers = enc_layers;
        same_as_engine(&cfg);
    }
    // Stride 8: the third stage dilated too, and a last stage as wide as the third (no projection
    // on its shortcut).
    let mut cfg = train::demo_config(5);
    cfg.dilation_stage3 = true;
    cfg.backbone.stage_channels = vec![64, 128, 256, 256];
    cfg.backbone.num_channels = 256;
    same_as_engine(&cfg);
}

fn same_as_engine(cfg: &intr_explorer::intr::IntrConfig) {
    let cfg = cfg.clone();
    let dev = Device::Cpu;
    let mut m = TrainModel::new(&cfg, DEMO_STEM, 3, &dev).unwrap();
    // A few training-mode passes give the batch norms non-trivial running statistics; random
    // non-zero residual gains make every block matter.
    let side = 96;
    for s in 0..3 {
        let x = Tensor::from_vec(random_batch(4, side, s), (4, 3, side, side), &dev).unwrap();
        m.forward(&x, true).unwrap();
    }
    let mut state = m.state_dict().unwrap();
    let mut rng = Rng::new(11);
    for (k, (_, v)) in &mut state {
        if k.ends_with("bn3.weight") || k.ends_with("bias") {
            v.iter_mut().for_each(|x| *x = 0.5 + rng.uniform(0.3));
        }
    }
    m.load_state(&state).unwrap();

    let chw = random_batch(1, side, 99);
    let x = Tensor::from_vec(chw.clone(), (1, 3, side, side), &dev).unwrap();
    let ours = m.forward(&x, false).unwrap();

    let src = MemorySource { tensors: state };
    let ws = WeightStore::new(&src);
    let engine = Intr::load(&ws, &cfg, &dev).unwrap();
    let out = engine.forward(&chw, side, side).unwrap();

    assert_eq!(ours.grid, out.grid);
    assert_eq!(out.grid, (side / cfg.stride(), side / cfg.stride()));
    let logits = ours.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in logits.iter().zip(&out.logits) {
        assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "enc_layers {}: logit {a} vs engine {b}", cfg.enc_layers);
    }
    // Last decoder layer's cross-attention, (H, Q, h·w).
    let att = ours.attention.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let per_layer = out.heads * out.classes * out.cells();
    let last = &out.attention[(out.layers - 1) * per_layer..];
    let worst = att.iter().zip(last).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "enc_layers {}: attention differs by {worst}", cfg.enc_layers);
}

/// `count` generated 64-pixel birds (all for training) in a temporary folder, kept alive by the
/// returned guard.
fn generated_birds(count: usize, seed: u64) -> (tempfile::TempDir, Vec<train::Example>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = intr_explorer::demo::synth::SynthOptions { count, seed, size: 64, val_fraction: 0.0 };
    intr_explorer::demo::synth::write_dataset(dir.path(), &opts, |_, _| {}).unwrap();
    let items = intr_explorer::demo::synth::load_dataset(dir.path(), "train").unwrap();
    let examples = items.iter().map(|i| train::Example { path: i.image.clone(), label: i.label }).collect();
    (dir, examples)
}

#[test]
fn loss_falls_over_a_few_dozen_steps_on_generated_birds() {
    // Two birds per species, one batch: a working gradient path memorises them quickly.
    let (_dir, examples) = generated_birds(32, 5);
    let cfg = train::demo_config(16);
    let mut m = TrainModel::new(&cfg, DEMO_STEM, 0, &Device::Cpu).unwrap();
    let o = TrainOptions {
        epochs: 100,
        batch: 32,
        lr: 1e-3,
        warmup: 3,
        clip: 1.0,
        max_steps: Some(30),
        ..Default::default()
    };
    let losses = train::train(&mut m, &examples, 64, &o, None, |_| {}).unwrap();
    assert_eq!(losses.len(), 30);
    let first: f32 = losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = losses[25..].iter().sum::<f32>() / 5.0;
    eprintln!("losses: {losses:?}");
    assert!(last < 0.7 * first, "loss {first} → {last}");
}

#[test]
fn dropout_and_head_drop_are_reproducible_from_the_seed_and_change_the_steps() {
    let (_dir, examples) = generated_birds(16, 6);
    let cfg = train::demo_config(16);
    let run = |dropout: f32, head_drop: f32| {
        let mut m = TrainModel::new(&cfg, DEMO_STEM, 0, &Device::Cpu).unwrap();
        let o = TrainOptions { batch: 16, warmup: 1, dropout, head_drop, max_steps: Some(3), ..Default::default() };
        train::train(&mut m, &examples, 64, &o, None, |_| {}).unwrap()
    };
    let off = run(0.0, 0.0);
    for (dropout, head_drop) in [(0.1, 0.0), (0.0, 0.2)] {
        let a = run(dropout, head_drop);
        assert_eq!(a, run(dropout, head_drop), "masks must follow from the seed ({dropout}, {head_drop})");
        // The first step's loss is computed before any update, so it differs only through the masks.
        assert_ne!(a[0], off[0], "dropout {dropout} / head drop {head_drop} left the forward pass unchanged");
    }
}

#[test]
fn random_erasing_blanks_one_rectangle_of_the_documented_size() {
    let side = 64;
    let mut erased = 0;
    for seed in 0..400u64 {
        let mut x = vec![1.0f32; 3 * side * side];
        let mut rng = Rng::new(seed);
        train::erase(&mut x, side, &mut rng, 0.5);
        let zeros: Vec<usize> = (0..side * side).filter(|&i| x[i] == 0.0).collect();
        for c in 1..3 {
            let plane = &x[c * side * side..(c + 1) * side * side];
            assert!((0..side * side).all(|i| (plane[i] == 0.0) == (x[i] == 0.0)), "seed {seed}: planes differ");
        }
        if zeros.is_empty() {
            continue;
        }
        erased += 1;
        let (ys, xs): (Vec<usize>, Vec<usize>) = zeros.iter().map(|&i| (i / side, i % side)).unzip();
        let h = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
        let w = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
        assert_eq!(zeros.len(), h * w, "seed {seed}: the erased pixels are not one rectangle");
        let share = (h * w) as f64 / (side * side) as f64;
        let (lo, hi) = train::ERASE_AREA;
        assert!(
            (f64::from(lo) * 0.8..=f64::from(hi) * 1.2).contains(&share),
            "seed {seed}: {h}×{w} is {share:.3} of the image"
        );
        let aspect = h as f64 / w as f64;
        assert!((0.25..=4.0).contains(&aspect), "seed {seed}: aspect {aspect:.2}");
    }
    assert!((160..=240).contains(&erased), "{erased} of 400 images erased at p = 0.5");
    // Off: nothing changes and nothing is drawn.
    let mut x = vec![1.0f32; 3 * side * side];
    let (mut a, mut b) = (Rng::new(9), Rng::new(9));
    train::erase(&mut x, side, &mut a, 0.0);
    assert!(x.iter().all(|&v| v == 1.0));
    assert_eq!(a.next_f32(), b.next_f32());
}

#[test]
fn a_trained_model_records_how_it_was_trained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("m.safetensors");
    let exe = env!("CARGO_BIN_EXE_intr-explorer");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(exe).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let (d, m) = (data.display().to_string(), out.display().to_string());
    run(&["synth", "--out", &d, "--count", "32", "--size", "64", "--seed", "3"]);
    run(&[
        "train",
        "--data",
        &d,
        "--out",
        &m,
        "--batch",
        "8",
        "--max-steps",
        "2",
        "--seed",
        "7",
        "--head-drop",
        "0.25",
        "--erase",
        "0.5",
    ]);
    let report: serde_json::Value = serde_json::from_str(&run(&["inspect", "--json", &m])).unwrap();
    let args = &report["training_args"];
    assert_eq!(args["seed"], 7, "{report}");
    assert_eq!(args["batch"], 8);
    assert_eq!(args["head_drop"], 0.25);
    assert_eq!(args["erase"], 0.5);
    assert_eq!(args["max_steps"], 2);
    assert!(args["lr"].as_f64().is_some() && args["jitter"].as_f64().is_some(), "{args}");
    assert!(run(&["inspect", &m]).contains("head_drop = 0.25"));
}
