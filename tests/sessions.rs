//! Saved sessions: the exact view saved from one window and opened in a fresh one draws the same
//! frame; a session whose files are partly missing opens the rest and says what is missing.
#![cfg(feature = "gui")]

mod common;

use std::time::{Duration, Instant};

use common::*;
use eframe::egui;
use egui_kittest::Harness;
use intr_explorer::gui::{Command, ExplorerApp, NoDialogs, Start};
use intr_explorer::overlay::colormap::Colormap;

fn window(start: Start) -> Harness<'static, ExplorerApp> {
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .wgpu()
        .build_eframe(move |cc| ExplorerApp::with_start(cc, Box::new(NoDialogs), start.clone()))
}

/// Steps until `done`, then until nothing is pending (analyses, rankings, renders).
fn settle(h: &mut Harness<'static, ExplorerApp>, done: impl Fn(&ExplorerApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        h.step();
        let app = h.state();
        if done(app) && app.busy.is_none() && app.model_loading.is_none() && app.worker_idle() && !app.paper.busy() {
            break;
        }
        assert!(Instant::now() < deadline, "the window did not settle");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(4);
}

#[test]
fn a_saved_session_reopens_the_exact_view_in_a_fresh_window() {
    let config = tempfile::tempdir().unwrap();
    // Head names go to a private config folder (the only test of this binary).
    unsafe { std::env::set_var("INTR_EXPLORER_CONFIG", config.path()) };
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (from, to) in [
        (parity_dir().join("Painted_Bunting_0004_16641.jpg"), "bunting.jpg"),
        (shared().join("images/photos/duck.webp"), "duck.webp"),
    ] {
        std::fs::copy(from, photos.join(to)).unwrap();
    }
    let model = parity_dir().join("tiny_postnorm_sine.pth");
    let start = Start {
        model: Some(intr_explorer::session::ModelSpec { path: Some(model.clone()), ..Default::default() }),
        images: vec![photos.join("bunting.jpg"), photos.join("duck.webp")],
        ..Default::default()
    };
    let mut h = window(start);
    settle(&mut h, |app| app.current().is_some());
    // A view that differs from the start in every part a session keeps.
    h.state_mut().apply(Command::SelectImage(1));
    settle(&mut h, |app| app.current().is_some());
    for c in [
        Command::SelectClass(3),
        Command::SelectLayer(0),
        Command::SelectHead(Some(2)),
        Command::ToggleCompare(3),
        Command::ToggleCompare(1),
        Command::GalleryByRank(true),
        Command::NameHead { class: None, head: 2, name: "crown".into() },
    ] {
        h.state_mut().apply(c);
    }
    let mut look = h.state().display;
    look.colormap = Colormap::Magma;
    look.opacity = 0.8;
    h.state_mut().apply(Command::Display(look));
    settle(&mut h, |_| true);
    let session = dir.path().join("my view.json");
    h.state_mut().apply(Command::SaveSessionTo(session.clone()));
    assert_eq!(h.state().session_status.as_deref(), Some(format!("saved session {}", session.display()).as_str()));
    // The toolbar's note of the last save or open is news, not part of the view.
    h.state_mut().session_status = None;
    h.run_steps(2);
    let before = h.render().expect("renders");
    let view = h.state().view.clone();
    drop(h);
    // Names are in the session too: forgotten in the store, they come back with it.
    std::fs::remove_file(config.path().join("head-names.json")).unwrap();

    let mut h = window(Start { session: Some(session.clone()), ..Default::default() });
    settle(&mut h, |app| app.current().is_some_and(|a| a.image_path.ends_with("duck.webp")));
    let app = h.state();
    assert_eq!(app.view.class, view.class);
    assert_eq!(app.view.layer, view.layer);
    assert_eq!(app.view.head, view.head);
    assert_eq!(app.view.compare, view.compare);
    assert!(app.view.show_compare && app.view.gallery_by_rank);
    assert_eq!(app.display.colormap, Colormap::Magma);
    assert_eq!(app.images.len(), 2);
    assert_eq!(app.selected, 1);
    assert!(app.banner_texts().is_empty(), "{:?}", app.banner_texts());
    assert!(h.state().session_status.as_deref().is_some_and(|s| s.starts_with("opened session")));
    h.state_mut().session_status = None;
    h.run_steps(2);
    let after = h.render().expect("renders");
    assert_eq!(before.dimensions(), after.dimensions());
    // Identical as kittest's snapshots compare: no pixel off by more than 2/255 in a channel (text
    // drawn from a glyph atlas filled in another order can differ by 1 at an edge).
    let differing = before
        .pixels()
        .zip(after.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 2))
        .count();
    if differing > 0 && std::env::var_os("INTR_SESSION_DIFF").is_some() {
        before.save("/tmp/session_before.png").unwrap();
        after.save("/tmp/session_after.png").unwrap();
    }
    assert_eq!(differing, 0, "{differing} pixels differ between the saved and the reopened view");
    drop(h);

    // Paths are relative to the session: moved with its photos, it opens from anywhere. A photo
    // that is gone is reported; the rest opens.
    let moved = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(moved.path().join("photos")).unwrap();
    std::fs::copy(photos.join("bunting.jpg"), moved.path().join("photos/bunting.jpg")).unwrap();
    std::fs::copy(&session, moved.path().join("my view.json")).unwrap();
    let mut h = window(Start { session: Some(moved.path().join("my view.json")), ..Default::default() });
    settle(&mut h, |app| app.current().is_some());
    let app = h.state();
    assert_eq!(app.images.len(), 1);
    assert!(app.images[0].path.starts_with(moved.path()));
    let banners = app.banner_texts();
    assert!(banners.iter().any(|b| b.contains("duck.webp") && b.contains("is not there")), "{banners:?}");
}
