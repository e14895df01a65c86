//! Head names in the window: named from the gallery's right-click menu, shown in the gallery and in
//! an exported figure, kept for the model, and there again in a fresh window.
#![cfg(feature = "gui")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use intr_explorer::gui::{Command, ExplorerApp, ExportWhat, NoDialogs, Start};

fn app_on_the_bunting() -> Harness<'static, ExplorerApp> {
    let model = intr_explorer::session::ModelSpec {
        path: Some(parity_dir().join("tiny_postnorm_sine.pth")),
        ..Default::default()
    };
    let start = Start {
        model: Some(model),
        images: vec![parity_dir().join("Painted_Bunting_0004_16641.jpg")],
        focus: Default::default(),
        session: None,
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| ExplorerApp::with_start(cc, Box::new(NoDialogs), start.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.state().current().is_none() {
        assert!(Instant::now() < deadline, "the photo was never analysed");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(2);
    h
}

#[test]
fn a_head_named_in_the_gallery_shows_there_in_an_exported_svg_and_in_a_fresh_window() {
    // Names are kept in the config folder: a private one (the only test of this binary, so no
    // other thread reads the environment meanwhile).
    let config = tempfile::tempdir().unwrap();
    unsafe { std::env::set_var("INTR_EXPLORER_CONFIG", config.path()) };
    let mut h = app_on_the_bunting();
    let class = h.state().view.class;
    h.get_by_label("gallery: head 2").click_secondary();
    h.run_steps(2);
    h.get_by_label_contains("Name head 2");
    // Clicks inside the menu keep it open: the checkbox (twice, back to every class), the field.
    for _ in 0..2 {
        h.get_by_label_contains("only").click();
        h.run_steps(2);
        h.get_by_label_contains("Name head 2");
    }
    h.get_all_by_role(egui::accesskit::Role::TextInput).last().expect("the name field").click();
    h.run_steps(2);
    h.get_by_label_contains("Name head 2");
    h.get_all_by_role(egui::accesskit::Role::TextInput).last().unwrap().type_text("crown");
    h.run_steps(2);
    h.get_by_label("Save").click();
    h.run_steps(3);
    let class_name = h.state().model.as_ref().unwrap().class_names[class].clone();
    assert_eq!(h.state().head_names.name(&class_name, 1), Some("crown"));
    assert_eq!(h.state().head_names.name("any other class", 1), Some("crown"), "named for every class");
    h.get_by_label_contains("head 2 · crown");
    let kept = std::fs::read_to_string(config.path().join("head-names.json")).unwrap();
    assert!(kept.contains("crown"), "{kept}");

    // The gallery exported as SVG carries the name.
    let out = tempfile::tempdir().unwrap();
    let svg = out.path().join("gallery.svg");
    h.state_mut().export.what = ExportWhat::Gallery;
    h.state_mut().apply(Command::ExportTo(svg.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.state().export_status.as_deref().is_none_or(|s| s.starts_with("exporting")) {
        assert!(Instant::now() < deadline, "the export never finished");
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.state().export_status.as_deref().unwrap().starts_with("exported"), "{:?}", h.state().export_status);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("head 2 · crown"), "the SVG does not name the head");
    assert!(!text.contains("head 1 · crown"));

    // A fresh window on the same model has the name; clearing it there removes it.
    drop(h);
    let mut h = app_on_the_bunting();
    h.get_by_label_contains("head 2 · crown");
    h.state_mut().apply(Command::NameHead { class: None, head: 1, name: String::new() });
    h.run_steps(2);
    assert!(h.query_by_label_contains("head 2 · crown").is_none());
    assert!(!std::fs::read_to_string(config.path().join("head-names.json")).unwrap().contains("crown"));
}
