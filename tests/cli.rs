//! The command-line interface, end to end: output formats, files written, exit codes, messages.

mod common;

use std::process::{Command, Output};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_intr-explorer"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(name: &str) -> String {
    parity_dir().join(name).display().to_string()
}

fn bunting() -> String {
    fixture("Painted_Bunting_0004_16641.jpg")
}

#[test]
fn predict_prints_a_ranking_and_json() {
    let model = fixture("tiny_postnorm_sine.pth");
    let o = run(&["predict", "--model", &model, "-k", "3", &bunting()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("500×389 → 1028×800, grid 25×33"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("class ")).count(), 3, "{text}");

    let o = run(&["predict", "--model", &model, "--json", "-k", "10", &bunting()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let top = v[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    let total: f64 = top.iter().map(|t| t["probability"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "probabilities sum to {total}");
    let logits: Vec<f64> = top.iter().map(|t| t["logit"].as_f64().unwrap()).collect();
    assert!(logits.windows(2).all(|w| w[0] >= w[1]), "not sorted: {logits:?}");
    assert_eq!(v[0]["grid"], serde_json::json!([25, 33]));
}

#[test]
fn predict_uses_class_names_and_checks_their_count() {
    let dir = tempfile::tempdir().unwrap();
    let names = dir.path().join("classes.txt");
    let list: String = (1..=10).map(|i| format!("{i} {i:03}.Test_Species_{i}\n")).collect();
    std::fs::write(&names, list).unwrap();
    let model = fixture("tiny_postnorm_sine.pth");
    let o = run(&["predict", "-m", &model, "-c", &names.display().to_string(), "--json", &bunting()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Test Species 10"), "{}", stdout(&o));
    let cub = shared().join("fixtures/cub_classes.txt").display().to_string();
    let o = run(&["predict", "-m", &model, "-c", &cub, &bunting()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cub_classes.txt") && stderr(&o).contains("has 200 class names but the model has 10"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn one_bad_image_is_reported_and_the_rest_still_run() {
    let model = fixture("tiny_postnorm_sine.pth");
    let bad = shared().join("images/edge-cases/not_an_image.jpg").display().to_string();
    let o = run(&["predict", "-m", &model, &bad, &bunting()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not_an_image.jpg"), "{}", stderr(&o));
    assert!(stdout(&o).contains("Painted_Bunting"), "{}", stdout(&o));
}

#[test]
fn attention_writes_every_map_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("maps.safetensors");
    let model = fixture("tiny_prenorm_sine.pth");
    let o = run(&["attention", "-m", &model, &bunting(), "--out", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["attention"].dims(), &[2, 4, 10, 25, 33]);
    assert_eq!(t["head_mean"].dims(), &[2, 10, 25, 33]);
    assert_eq!(t["logits"].dims(), &[10]);
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["grid"], "[25,33]");
    assert_eq!(meta["image_size"], "[500,389]");
    assert!(meta["classes"].contains("class 9"));
    // Nothing but the output file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn attention_to_an_unwritable_place_names_the_path() {
    let model = fixture("tiny_postnorm_sine.pth");
    let o = run(&["attention", "-m", &model, &bunting(), "--out", "/nonexistent-dir/maps.safetensors"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent-dir/maps.safetensors"), "{}", stderr(&o));
}

#[test]
fn inspect_describes_without_loading() {
    let model = fixture("tiny_postnorm_learned.pth");
    let o = run(&["inspect", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "classes     10",
        "D=64 heads=4 encoder=2 decoder=2 ffn=128 post-norm learned",
        "epoch       3",
        "optimizer",
        "nheads = 4",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    let o = run(&["inspect", "--json", &model]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(parity_dir().join("tiny_postnorm_learned.json")).unwrap())
            .unwrap();
    assert_eq!(v["parameters"], spec["n_parameters"]);
    assert_eq!(v["config"]["position_embedding"], "learned");
}

#[test]
fn convert_writes_a_self_describing_safetensors_that_predicts_identically() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("tiny.safetensors");
    let names = dir.path().join("names.txt");
    std::fs::write(&names, (0..10).map(|i| format!("Species {i}\n")).collect::<String>()).unwrap();
    let model = fixture("tiny_prenorm_sine.pth");
    let o = run(&["convert", &model, &st.display().to_string(), "--classes", &names.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = run(&["predict", "-m", &model, "--json", "-k", "10", &bunting()]);
    let b = run(&["predict", "-m", &st.display().to_string(), "--json", "-k", "10", &bunting()]);
    assert!(b.status.success(), "{}", stderr(&b));
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&stdout(&a)).unwrap(), serde_json::from_str(&stdout(&b)).unwrap());
    for (x, y) in a[0]["top"].as_array().unwrap().iter().zip(b[0]["top"].as_array().unwrap()) {
        assert_eq!(x["logit"], y["logit"]);
        assert_eq!(y["name"], format!("Species {}", x["class"]));
    }
    let o = run(&["inspect", &st.display().to_string()]);
    assert!(stdout(&o).contains("pre-norm") && stdout(&o).contains("Species 0"), "{}", stdout(&o));
}

#[test]
fn usage_errors_follow_unix_habits() {
    let o = run(&["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["predict", "--model"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["predict", "--model", "/no/such/model.pth", &bunting()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/no/such/model.pth") && stderr(&o).contains("cannot open"), "{}", stderr(&o));
    let o = run(&["--version"]);
    assert!(o.status.success() && stdout(&o).contains("intr-explorer"));
}

#[test]
fn closed_stdout_ends_quietly_instead_of_panicking() {
    // The reader goes away at once (as with `| head -1`): no panic message, success.
    let mut child = bin()
        .args(["inspect", &fixture("tiny_postnorm_sine.pth")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
}

#[test]
fn bad_values_are_usage_errors_naming_the_flag_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (model, out_s) = (fixture("tiny_postnorm_sine.pth"), out.display().to_string());
    for (flag, value) in [
        ("--opacity", "1.5"),
        ("--threshold", "2"),
        ("--panel-width", "0"),
        ("--dpi", "0"),
        ("--shard", "4/3"),
        ("--scale", "5furlongs"),
        ("--heads", "1,x"),
        ("--layer", "0"),
        ("--colormap", "rainbow"),
        ("--width", "3m"),
    ] {
        let o = run(&["explain", "--model", &model, "--out", &out_s, flag, value, &bunting()]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{flag} {value}: {}", stderr(&o));
        assert!(!out.exists(), "{flag} {value}: nothing may be written");
    }
    let o = run(&["predict", "--model", &model, "-k", "0", &bunting()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_mistyped_command_is_a_usage_error_not_a_window() {
    let o = bin().args(["predcit", "x.jpg"]).env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no such command `predcit`; did you mean `predict`?"), "{}", stderr(&o));
    let o = bin().args(["frobnicate"]).env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the commands are predict, attention"), "{}", stderr(&o));
}

#[cfg(feature = "gui")]
#[test]
fn without_a_display_the_window_says_so_in_one_line() {
    let o = bin().env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("no display") && e.contains("explain"), "{e}");
}

#[test]
fn the_demo_model_says_so_and_a_photo_it_does_not_know_is_flagged() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let bird = demo.join("samples/05-azure-capped-plainwing-plaintail.png").display().to_string();
    let duck = demo.join("photos/duck.webp").display().to_string();
    let o = run(&["predict", &bird, &duck]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with("model: demo model (16 invented bird species)"), "{text}");
    assert_eq!(text.matches("(!) out of domain?").count(), 1, "only the duck is flagged: {text}");
    let o = run(&["predict", "--json", &bird, &duck]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["model"], "demo model (16 invented bird species)");
    assert_eq!(v[0]["out_of_domain"]["flagged"], false);
    assert_eq!(v[1]["out_of_domain"]["flagged"], true);
    assert!(v[1]["out_of_domain"]["score"].as_f64().unwrap() >= 0.1);
    // Another model is named by its file.
    let o = run(&["predict", "--json", "--model", &fixture("tiny_postnorm_sine.pth"), &bunting()]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["model"], "tiny_postnorm_sine.pth");
}

#[test]
fn heads_ranks_every_head_once_and_chains_the_probabilities() {
    let photo = shared().join("images/photos/duck.webp").display().to_string();
    let o = run(&["heads", "--json", &photo]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let heads = v["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 8, "{v}");
    let mut numbers: Vec<u64> = heads.iter().map(|h| h["head"].as_u64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    let ranks: Vec<u64> = heads.iter().map(|h| h["rank"].as_u64().unwrap()).collect();
    assert_eq!(ranks, (1..=8).collect::<Vec<_>>());
    // Each head's "before" is the next-ranked head's "after" (it was evened just before), and the
    // least important head starts from the forward pass's own probability.
    for w in heads.windows(2) {
        assert_eq!(w[0]["probability_before"], w[1]["probability_after"], "{v}");
    }
    assert_eq!(heads[7]["probability_before"], v["probability"]);
    // That probability is predict's for the same class.
    let p = run(&["predict", "--json", "-k", "1", &photo]);
    let top: serde_json::Value = serde_json::from_str(&stdout(&p)).unwrap();
    assert_eq!(top[0]["top"][0]["name"], v["name"]);
    let (a, b) = (top[0]["top"][0]["probability"].as_f64().unwrap(), v["probability"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");

    let name = v["name"].as_str().unwrap().to_string();
    let o = run(&["heads", "--class", &name.to_uppercase(), &photo]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("rank  head"), "{}", stdout(&o));
    let o = run(&["heads", "--class", "No Such Bird", &photo]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("No Such Bird"), "{}", stderr(&o));
}

#[test]
fn head_names_are_set_listed_exported_imported_and_drawn_into_figures_and_summaries() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let model = fixture("tiny_postnorm_sine.pth");
    let go =
        |args: &[&str]| bin().args(args).env("INTR_EXPLORER_CONFIG", &config).current_dir(tmp.path()).output().unwrap();
    let o = go(&["head-names", "--model", &model, "set", "2", "crown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = go(&["head-names", "--model", &model, "set", "3", "red breast", "--class", "class 1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&go(&["head-names", "--model", &model, "list"]));
    assert!(text.contains("head 2: crown") && text.contains("head 3 for class 1: red breast"), "{text}");
    let o = go(&["head-names", "--model", &model, "set", "9", "tail"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("head 9 is not one of the model's heads 1 to 4"), "{}", stderr(&o));

    // Exported, cleared, imported again; a file for another model is refused.
    let o = go(&["head-names", "--model", &model, "export", "names.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    go(&["head-names", "--model", &model, "clear", "2"]);
    assert!(!stdout(&go(&["head-names", "--model", &model, "list"])).contains("crown"));
    let o = go(&["head-names", "--model", &model, "import", "names.json"]);
    assert!(o.status.success() && stdout(&o).contains("head 2: crown"), "{}", stderr(&o));
    let o = go(&["head-names", "import", "names.json"]);
    assert!(!o.status.success() && stderr(&o).contains("another model"), "{}", stderr(&o));

    // Figures and summaries name the heads; a remake draws the names it was made with.
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(bunting(), photos.join("bunting.jpg")).unwrap();
    let o = go(&["explain", "--model", &model, "--class", "class 1", "--out", "figs", "photos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = tmp.path().join("figs/bunting__class-1.svg");
    let made = std::fs::read(&svg).unwrap();
    let text = String::from_utf8_lossy(&made);
    assert!(text.contains("head 2 · crown") && text.contains("head 3 · red breast"), "the figure does not name heads");
    let summary = std::fs::read_to_string(tmp.path().join("figs/summary.csv")).unwrap();
    assert!(summary.lines().next().unwrap().contains(",head,head_name,"), "{summary}");
    assert!(summary.contains(",2,crown,") && summary.contains(",3,red breast,"), "{summary}");
    go(&["head-names", "--model", &model, "set", "2", "wing bars"]);
    let o = go(&["remake", svg.to_str().unwrap(), "--out", "again.svg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(tmp.path().join("again.svg")).unwrap(), made, "the remake is not the same figure");
}

#[test]
fn bench_prepare_times_decoding_and_the_transform_apart_and_names_a_bad_photo() {
    let o = run(&["bench", "prepare", &bunting(), "--runs", "1", "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("CPU: "), "{out}");
    // The bunting fixture is 500×389: the size rule makes it 1028×800.
    assert!(out.contains("500×389 photo to a 1028×800 input: decoding "), "{out}");
    assert!(out.contains("resize and normalisation ") && out.contains("(medians)"), "{out}");
    let missing = run(&["bench", "prepare", "no_such_photo.jpg", "--runs", "1"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("no_such_photo.jpg"), "{}", stderr(&missing));
}
