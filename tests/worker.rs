//! The inference worker: results arrive as plain data, failures as messages, stale work is dropped.
#![cfg(feature = "gui")]

mod common;

use std::time::Duration;

use common::*;
use intr_explorer::gui::worker::{Request, Response, Worker};
use intr_explorer::image::preprocess::PreprocessOptions;
use intr_explorer::session::ModelSpec;

const WAIT: Duration = Duration::from_secs(60);

fn next_final(w: &Worker) -> Response {
    loop {
        match w.recv_timeout(WAIT).expect("worker answered") {
            Response::Progress { .. } => continue,
            other => return other,
        }
    }
}

#[test]
fn worker_loads_analyzes_and_reports_failures() {
    let wakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&wakes);
    let w = Worker::spawn(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    let bunting = parity_dir().join("Painted_Bunting_0004_16641.jpg");
    // Analysing before a model is loaded is a readable failure.
    w.send(Request::Analyze { id: 1, image: bunting.clone(), options: PreprocessOptions::default() }).unwrap();
    assert!(matches!(next_final(&w), Response::Failed { id: 1, ref what } if what.contains("no model")));

    let path = parity_dir().join("tiny_postnorm_sine.pth");
    w.send(Request::LoadModel {
        spec: ModelSpec { path: Some(path), ..Default::default() },
        focus: Default::default(),
    })
    .unwrap();
    match next_final(&w) {
        Response::ModelLoaded(info) => assert_eq!(info.class_names.len(), 10),
        other => panic!("{other:?}"),
    }
    w.send(Request::Analyze { id: 2, image: bunting.clone(), options: PreprocessOptions::default() }).unwrap();
    match next_final(&w) {
        Response::Done(a) => {
            assert_eq!(a.id, 2);
            assert_eq!(a.output.grid, (25, 33));
            assert_eq!((a.image.width, a.image.height), (500, 389));
            assert_eq!(a.output.attention.len(), 2 * 4 * 10 * 25 * 33);
        }
        other => panic!("{other:?}"),
    }
    let bad = shared().join("images/edge-cases/not_an_image.jpg");
    w.send(Request::Analyze { id: 3, image: bad, options: PreprocessOptions::default() }).unwrap();
    assert!(matches!(next_final(&w), Response::Failed { id: 3, ref what } if what.contains("not_an_image.jpg")));

    // A bad checkpoint keeps the previous model usable.
    let broken = shared().join("images/edge-cases/not_an_image.jpg");
    w.send(Request::LoadModel {
        spec: ModelSpec { path: Some(broken), ..Default::default() },
        focus: Default::default(),
    })
    .unwrap();
    assert!(matches!(next_final(&w), Response::Failed { id: 0, .. }));
    w.send(Request::Analyze { id: 4, image: bunting, options: PreprocessOptions::default() }).unwrap();
    assert!(matches!(next_final(&w), Response::Done(a) if a.id == 4));
    assert!(wakes.load(std::sync::atomic::Ordering::SeqCst) >= 8, "the waker runs after every message");
}

/// A worker with the fixture `model` loaded.
fn loaded(model: &str) -> Worker {
    let w = Worker::spawn(|| {}).unwrap();
    let path = parity_dir().join(model);
    w.send(Request::LoadModel {
        spec: ModelSpec { path: Some(path), ..Default::default() },
        focus: Default::default(),
    })
    .unwrap();
    assert!(matches!(next_final(&w), Response::ModelLoaded(_)));
    w
}

#[test]
fn a_newer_request_supersedes_older_ones() {
    let w = loaded("tiny_postnorm_learned.pth");
    let bunting = parity_dir().join("Painted_Bunting_0004_16641.jpg");
    for id in 10..14 {
        w.send(Request::Analyze { id, image: bunting.clone(), options: PreprocessOptions::default() }).unwrap();
    }
    // Only the newest request may produce a result; older ones are skipped or dropped.
    match next_final(&w) {
        Response::Done(a) => assert_eq!(a.id, 13),
        other => panic!("{other:?}"),
    }
    w.cancel(20);
    w.send(Request::Analyze { id: 15, image: bunting, options: PreprocessOptions::default() }).unwrap();
    assert!(w.recv_timeout(Duration::from_secs(3)).is_none_or(|r| !matches!(r, Response::Done(_))));
}

#[test]
fn a_panic_inside_the_worker_becomes_an_error_and_the_worker_carries_on() {
    let w = loaded("tiny_postnorm_sine.pth");
    let bunting = parity_dir().join("Painted_Bunting_0004_16641.jpg");
    w.inject_panic();
    w.send(Request::Analyze { id: 1, image: bunting.clone(), options: PreprocessOptions::default() }).unwrap();
    match next_final(&w) {
        Response::Failed { id: 1, what } => {
            assert!(what.contains("internal error while analysing the photo: injected fault"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    // The same worker, the same model: the next photo is analysed as usual.
    w.send(Request::Analyze { id: 2, image: bunting, options: PreprocessOptions::default() }).unwrap();
    assert!(matches!(next_final(&w), Response::Done(a) if a.id == 2));
}
