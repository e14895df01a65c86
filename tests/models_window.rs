//! The Models window against a loopback server that behaves like the Hub: download with progress,
//! cancel, resume, open; class names given in place for a model whose names ship nowhere.
#![cfg(feature = "gui")]

mod common;

use std::time::{Duration, Instant};

use common::hub_server::{FILE, Hub, REPO};
use common::*;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use intr_explorer::gui::{ExplorerApp, NoDialogs};
use intr_explorer::hub::{Entry, catalogue::ClassNames};

fn step_until(
    h: &mut Harness<'static, ExplorerApp>,
    what: &str,
    done: impl Fn(&Harness<'static, ExplorerApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(h) {
        assert!(Instant::now() < deadline, "the window never showed {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_models_window_downloads_with_progress_cancels_resumes_and_opens() {
    // Names given in the window are remembered in the config folder: a private one for this test
    // (the only test of this binary, so no other thread reads the environment meanwhile).
    let config = tempfile::tempdir().unwrap();
    unsafe { std::env::set_var("INTR_EXPLORER_CONFIG", config.path()) };
    let content = std::fs::read(parity_dir().join(FILE)).unwrap();
    let hub = Hub::start(content.clone());
    // A slow link, so that progress and cancel can be seen: ~17 MB at 256 KB per 30 ms.
    hub.faults.lock().unwrap().slow = Some(Duration::from_millis(30));
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    let sha: &'static str = Box::leak(hub.sha.clone().into_boxed_str());
    let entry = Entry {
        name: "tiny",
        repo: REPO,
        file: FILE,
        bytes: content.len() as u64,
        sha256: sha,
        classes: 10,
        acc1: 50.0,
        acc5: 90.0,
        dataset: "a test set",
        dataset_url: "http://127.0.0.1/dataset",
        names: ClassNames::DatasetFolders,
    };
    let mut h = Harness::builder().with_size(egui::vec2(1300.0, 800.0)).wgpu().build_eframe(move |cc| {
        let mut app = ExplorerApp::new(cc, Box::new(NoDialogs), None, Vec::new());
        app.models.env = env.clone();
        app.models.catalogue = vec![entry];
        app
    });
    h.run_steps(2);
    h.get_by_label("Models…").click();
    h.run_steps(4);
    assert!(h.state().models.show, "the Models… button opens the window");
    h.get_by_label("tiny");
    h.get_by_label("Download").click();
    // Progress: the bar says how much of the file is there.
    step_until(&mut h, "progress", |h| h.query_by_label_contains(" of 18 MB").is_some());
    h.get_by_label("Cancel").click();
    step_until(&mut h, "the cancelled download", |h| h.state().models.jobs.is_empty());
    let outcome = h.state().models.outcome["tiny"].clone();
    assert!(outcome.contains("cancelled"), "{outcome}");
    h.step();
    // What arrived is kept, and the button offers to resume.
    h.get_by_label_contains("Resume download").click();
    hub.faults.lock().unwrap().slow = None;
    step_until(&mut h, "the finished download", |h| h.query_by_label("Open").is_some());
    let ranges = hub.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[1].starts_with("bytes=") && ranges[1] != "bytes=0-", "the second request resumed: {ranges:?}");
    assert!(h.state().models.outcome["tiny"].contains("verified"));
    h.get_by_label("Open").click();
    step_until(&mut h, "the opened model", |h| h.state().model.is_some());
    let m = h.state().model.as_ref().unwrap();
    assert_eq!(m.class_names.len(), 10);
    assert_eq!(m.path.file_name().unwrap(), FILE);
    assert!(!h.state().models.show, "Open closes the window");
    assert_eq!(m.class_names[0], "class 0");

    // Its class names ship nowhere: given in place, they are used at once and remembered.
    let names = config.path().join("names.txt");
    std::fs::write(&names, (1..=10).map(|i| format!("bird {i}\n")).collect::<String>()).unwrap();
    h.get_by_label("Models…").click();
    h.run_steps(4);
    h.get_by_label_contains("classes are numbered until you give their names");
    h.get_by_role(egui::accesskit::Role::TextInput).focus();
    h.run_steps(2);
    h.get_by_role(egui::accesskit::Role::TextInput).type_text(&names.display().to_string());
    h.run_steps(2);
    h.get_by_label("Use").click();
    step_until(&mut h, "the model with its names", |h| {
        h.state().model.as_ref().is_some_and(|m| m.class_names[0] == "bird 1")
    });
    assert!(config.path().join("names.json").is_file());
    h.run_steps(4);
    h.get_by_label_contains("class names from");
}
