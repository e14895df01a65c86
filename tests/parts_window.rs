//! The Parts window: an annotated folder (freshly generated birds) scored in the worker, the head ×
//! part table shown, and its suggested names taken over as the model's head names.
#![cfg(feature = "gui")]

use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use intr_explorer::gui::{ExplorerApp, NoDialogs, Start};

#[test]
fn the_parts_window_scores_a_folder_and_takes_over_the_suggested_names() {
    // Head names are kept in the config folder: a private one (the only test of this binary).
    let config = tempfile::tempdir().unwrap();
    unsafe { std::env::set_var("INTR_EXPLORER_CONFIG", config.path()) };
    let data = config.path().join("birds");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_intr-explorer"))
        .args(["synth", "--out", data.to_str().unwrap(), "--count", "48", "--val-fraction", "0", "--seed", "4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The bundled demo model, no photo.
    let start = Start { model: Some(Default::default()), images: Vec::new(), focus: Default::default(), session: None };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| ExplorerApp::with_start(cc, Box::new(NoDialogs), start.clone()));
    let wait = |h: &mut Harness<'_, ExplorerApp>, what: &str, done: &dyn Fn(&ExplorerApp) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(h.state()) {
            assert!(Instant::now() < deadline, "{what}");
            h.step();
            std::thread::sleep(Duration::from_millis(20));
        }
        h.run_steps(2);
    };
    wait(&mut h, "the demo model never loaded", &|app| app.model.is_some());
    // Loaded with no photo, the window is idle (it used to say "loading model" for ever).
    h.run();
    h.get_by_label("Parts…").click();
    // A window is laid out once unseen before it shows.
    h.run_steps(3);
    assert!(h.state().parts.show, "the Parts window is open");
    h.get_by_role(egui::accesskit::Role::TextInput).focus();
    h.run_steps(1);
    h.get_by_role(egui::accesskit::Role::TextInput).type_text(data.to_str().unwrap());
    h.run_steps(2);
    h.get_by_label("Score").click();
    h.run_steps(2);
    wait(&mut h, "the scoring never finished", &|app| app.parts.running.is_none() && app.parts.report.is_some());
    let report = match &h.state().parts.report {
        Some(Ok(r)) => std::sync::Arc::clone(r),
        other => panic!("{other:?}"),
    };
    assert_eq!(report.all.photos, 48);
    h.get_by_label("suggested name");
    h.get_by_label_contains("48 photos (generated)");
    let first = report.suggested.iter().flatten().next().cloned().expect("a head on a part");
    let best = first.part.clone();
    h.get_by_label(&format!("{} {:.2}", first.part, first.hit_rate));
    h.get_by_label("Use the suggested names").click();
    h.run_steps(3);
    for (head, s) in report.suggested.iter().enumerate() {
        let got = h.state().head_names.name("any class", head).map(str::to_string);
        assert_eq!(got, s.as_ref().map(|s| s.part.clone()), "head {}", head + 1);
    }
    // What changed is said in the window.
    h.get_by_label_contains("named for every class: head");
    let kept = std::fs::read_to_string(config.path().join("head-names.json")).unwrap();
    assert!(kept.contains(&best), "{kept}");
    // A folder without annotations is named in the window, in the error colour.
    h.get_by_role(egui::accesskit::Role::TextInput).focus();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.get_by_role(egui::accesskit::Role::TextInput).type_text(config.path().to_str().unwrap());
    h.run_steps(2);
    h.get_by_label("Score").click();
    // (The first scoring's report stands until the second one's answer replaces it.)
    wait(&mut h, "the second scoring never answered", &|app| matches!(app.parts.report, Some(Err(_))));
    h.get_by_label_contains("holds no part annotations");
}
