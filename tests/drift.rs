//! The command line and the window go through one session layer: the same input gives the same
//! outcome in both — a class list of the wrong length, a folder with sub-folders, an unknown class
//! name, a head or layer out of range — and each bad request is a clear error before any forward pass.
#![cfg(feature = "gui")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use eframe::egui;
use egui_kittest::Harness;
use intr_explorer::gui::worker::{FocusRequest, Request, Response, Worker};
use intr_explorer::gui::{Command as AppCommand, ExplorerApp, NoDialogs};
use intr_explorer::session::ModelSpec;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intr-explorer")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tiny() -> PathBuf {
    parity_dir().join("tiny_postnorm_sine.pth")
}

fn bunting() -> PathBuf {
    parity_dir().join("Painted_Bunting_0004_16641.jpg")
}

/// What the window's worker answers to opening `spec` with `focus`: the number of classes, or the
/// message. A focus the model does not have leaves the model open, focus dropped, with its message.
fn worker_open(spec: ModelSpec, focus: FocusRequest) -> Result<usize, String> {
    let w = Worker::spawn(|| {}).unwrap();
    w.send(Request::LoadModel { spec, focus }).unwrap();
    let outcome = loop {
        match w.recv_timeout(Duration::from_secs(60)).expect("the worker answered") {
            Response::Progress { .. } => continue,
            Response::ModelLoaded(info) if info.focus_errors.is_empty() => break Ok(info.class_names.len()),
            Response::ModelLoaded(info) => {
                assert_eq!(info.focus, Default::default(), "what the model does not have is dropped");
                assert_eq!(info.focus_errors.len(), 1, "{:?}", info.focus_errors);
                return Err(info.focus_errors[0].clone());
            }
            Response::Failed { id: 0, what } => break Err(what),
            other => panic!("unexpected {other:?}"),
        }
    };
    if outcome.is_err() {
        // Nothing was installed: an analysis finds no model, so no forward pass ran.
        let options = Default::default();
        w.send(Request::Analyze { id: 1, image: bunting(), options }).unwrap();
        loop {
            match w.recv_timeout(Duration::from_secs(60)).expect("the worker answered") {
                Response::Progress { .. } => continue,
                Response::Failed { id: 1, what } => {
                    assert!(what.contains("no model is loaded"), "{what}");
                    break;
                }
                other => panic!("a rejected model must not analyse: {other:?}"),
            }
        }
    }
    outcome
}

fn spec(model: &Path, classes: Option<&Path>) -> ModelSpec {
    ModelSpec { path: Some(model.to_path_buf()), classes: classes.map(Path::to_path_buf), ..Default::default() }
}

/// The first line of stderr after `error: `.
fn error_line(o: &Output) -> String {
    let e = stderr(o);
    let line = e.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in {e}"));
    line["error: ".len()..].to_string()
}

#[test]
fn a_class_list_of_the_wrong_length_is_the_same_error_everywhere() {
    let cub = shared().join("fixtures/cub_classes.txt");
    let o = cli(&[
        "predict",
        "-m",
        &tiny().display().to_string(),
        "-c",
        &cub.display().to_string(),
        &bunting().display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let window = worker_open(spec(&tiny(), Some(&cub)), FocusRequest::default()).unwrap_err();
    assert!(window.contains("has 200 class names but the model has 10"), "{window}");
    assert_eq!(error_line(&o), window);

    // A list stored in the model itself: the window used to replace it by numbers silently.
    let dir = tempfile::tempdir().unwrap();
    let stored = dir.path().join("eleven names.safetensors");
    let ckpt = intr_explorer::checkpoint::Checkpoint::open(&tiny()).unwrap();
    let cfg = intr_explorer::intr::resolve_config(&ckpt, &Default::default()).unwrap();
    let tensors: Vec<_> = ckpt
        .tensors()
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| intr_explorer::checkpoint::F32Tensor::new(k, t.shape.clone(), &ckpt.read_f32(k).unwrap()))
        .collect();
    let names: Vec<String> = (0..11).map(|i| format!("Species {i}")).collect();
    intr_explorer::checkpoint::write_model(&stored, &tensors, &cfg, Some(&names), Default::default()).unwrap();
    let o = cli(&["predict", "-m", &stored.display().to_string(), &bunting().display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let window = worker_open(spec(&stored, None), FocusRequest::default()).unwrap_err();
    assert!(window.contains("eleven names.safetensors") && window.contains("has 11 class names"), "{window}");
    assert_eq!(error_line(&o), window);
}

/// A photo tree: two photos at the top, one in a sub-folder whose name sorts between them, one
/// deeper, and a file that is not an image.
fn photo_tree(root: &Path) -> PathBuf {
    let d = root.join("photos");
    std::fs::create_dir_all(d.join("m-sub/deeper")).unwrap();
    for f in ["a.jpg", "z.jpg", "m-sub/b.jpg", "m-sub/deeper/c.jpg"] {
        std::fs::copy(bunting(), d.join(f)).unwrap();
    }
    std::fs::write(d.join("notes.txt"), "not a photo").unwrap();
    d
}

fn app_images(paths: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<String>) {
    let mut h = Harness::builder()
        .with_size(egui::vec2(800.0, 600.0))
        .wgpu()
        .build_eframe(|cc| ExplorerApp::new(cc, Box::new(NoDialogs), None, Vec::new()));
    h.state_mut().apply(AppCommand::OpenImages(paths));
    h.run();
    let app = h.state();
    (app.images.iter().map(|e| e.path.clone()).collect(), app.banner_texts())
}

#[test]
fn a_folder_with_sub_folders_opens_the_same_photos_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let photos = photo_tree(dir.path());
    let o = cli(&["predict", "--json", "-m", &tiny().display().to_string(), &photos.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cli_order: Vec<PathBuf> =
        v.as_array().unwrap().iter().map(|r| PathBuf::from(r["image"].as_str().unwrap())).collect();
    let want: Vec<PathBuf> =
        ["a.jpg", "m-sub/b.jpg", "m-sub/deeper/c.jpg", "z.jpg"].iter().map(|f| photos.join(f)).collect();
    assert_eq!(cli_order, want);
    let (window_order, errors) = app_images(vec![photos.clone()]);
    assert_eq!(window_order, want);
    assert!(errors.is_empty(), "{errors:?}");

    // A tree without a photo: the same message in both, and nothing analysed.
    let empty = dir.path().join("empty/inside");
    std::fs::create_dir_all(&empty).unwrap();
    let o = cli(&["predict", "-m", &tiny().display().to_string(), &dir.path().join("empty").display().to_string()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let (window_order, errors) = app_images(vec![dir.path().join("empty")]);
    assert!(window_order.is_empty());
    assert_eq!(errors, vec![error_line(&o)]);
    assert!(errors[0].contains("no images found in"), "{errors:?}");
}

/// Runs `explain` with `extra` on the bunting into a fresh folder: (output, whether it wrote anything).
fn explain(extra: &[&str], names: &Path) -> (Output, bool) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (m, c, o, b) = (
        tiny().display().to_string(),
        names.display().to_string(),
        out.display().to_string(),
        bunting().display().to_string(),
    );
    let mut args = vec!["explain", "-m", &m, "-c", &c, "--out", &o];
    args.extend_from_slice(extra);
    args.push(&b);
    let output = cli(&args);
    (output, out.exists())
}

fn bird_names(dir: &Path) -> PathBuf {
    let p = dir.join("names.txt");
    let names = ["Indigo Bunting", "Painted Bunting", "Lazuli Bunting", "Blue Grosbeak", "House Finch"];
    let list: String = (0..10).map(|i| format!("{} {i}\n", names[i % 5])).collect();
    std::fs::write(&p, list).unwrap();
    p
}

#[test]
fn an_unknown_class_name_is_refused_with_suggestions_before_any_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let names = bird_names(dir.path());
    let (o, wrote) = explain(&["--class", "Painted Buntin 1"], &names);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!wrote, "nothing is written for a plan that fails its check");
    let msg = error_line(&o);
    assert!(msg.starts_with("--class Painted Buntin 1: ") && msg.contains("did you mean `Painted Bunting 1`"), "{msg}");
    let focus = FocusRequest { class: Some("Painted Buntin 1".into()), ..Default::default() };
    let window = worker_open(spec(&tiny(), Some(&names)), focus).unwrap_err();
    assert_eq!(window, msg);

    // CUB spellings name the class in both.
    let (o, _) = explain(&["--class", "016.Painted_Bunting_1"], &names);
    assert!(o.status.success(), "{}", stderr(&o));
    let focus = FocusRequest { class: Some("Painted_Bunting_1".into()), ..Default::default() };
    assert_eq!(worker_open(spec(&tiny(), Some(&names)), focus), Ok(10));
}

#[test]
fn a_head_or_layer_out_of_range_is_refused_before_any_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let names = bird_names(dir.path());
    let (o, wrote) = explain(&["--heads", "2,9"], &names);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!wrote);
    assert_eq!(stderr(&o).lines().filter(|l| l.starts_with("error")).count(), 1, "one error, not one per photo");
    let msg = error_line(&o);
    assert!(msg.contains("head 9 is not one of the model's heads 1 to 4"), "{msg}");
    let focus = FocusRequest { head: Some(9), ..Default::default() };
    let window = worker_open(spec(&tiny(), Some(&names)), focus).unwrap_err();
    assert_eq!(window, "--head 9: head 9 is not one of the model's heads 1 to 4");

    let (o, wrote) = explain(&["--layer", "3"], &names);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!wrote);
    assert_eq!(error_line(&o), "--layer 3: layer 3 is not one of the model's layers 1 to 2");
    let focus = FocusRequest { layer: Some(3), ..Default::default() };
    assert_eq!(worker_open(spec(&tiny(), Some(&names)), focus).unwrap_err(), error_line(&o));
}
