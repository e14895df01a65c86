//! Frame cost of the explorer after a result has arrived: the official 200-class, 8-head, 6-layer
//! result at a 1600×1000 window, switching class, head and layer every frame. Prints the median and
//! 95th percentile CPU time of a frame (the egui pass and tessellation; GPU work excluded) and checks that
//! no switch sends work to the model. Run: `cargo bench --bench frame`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use intr_explorer::gui::worker::Analysis;
use intr_explorer::gui::{Command, ExplorerApp, NoDialogs};
use intr_explorer::image::decode::RgbImage;
use intr_explorer::image::grid::GridMapping;
use intr_explorer::intr::IntrOutput;
use intr_explorer::intr::model::StageTimings;
use intr_explorer::intr::random::Rng;
use intr_explorer::session;

fn official_sized() -> Analysis {
    let (layers, heads, classes, gh, gw) = (6, 8, 200, 25, 33);
    let mut rng = Rng::new(5);
    let mut attention = Vec::with_capacity(layers * heads * classes * gh * gw);
    for _ in 0..layers * heads * classes {
        let m: Vec<f32> = (0..gh * gw).map(|_| rng.next_f32().powi(4)).collect();
        let s: f32 = m.iter().sum();
        attention.extend(m.into_iter().map(|v| v / s));
    }
    let (w, h) = (500, 389);
    let data = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
    let logits: Vec<f32> = (0..classes).map(|_| rng.uniform(3.0)).collect();
    let evened = (0..heads).map(|_| logits.iter().map(|&l| l + rng.uniform(0.5)).collect()).collect();
    let ood = intr_explorer::probe::out_of_domain(&logits);
    Analysis {
        id: 1,
        result: session::Analysis {
            image_path: PathBuf::from("bird.jpg"),
            image: RgbImage { width: w, height: h, data },
            output: IntrOutput {
                logits,
                attention,
                layers,
                heads,
                classes,
                grid: (gh, gw),
                input: (1028, 800),
                stride: 32,
                timings: StageTimings::default(),
            },
            evened,
            last_layer: None,
            mapping: GridMapping { original: (w, h), input: (1028, 800), grid: (gh, gw), stride: 32 },
            class_names: Arc::new((0..classes).map(|i| format!("Species number {i}")).collect()),
            took: Duration::ZERO,
            oriented: false,
            ood,
            input_size: (1028, 800),
        },
    }
}

fn main() {
    let mut h = Harness::builder().with_size(egui::vec2(1600.0, 1000.0)).build_eframe(|cc| {
        let mut app = ExplorerApp::new(cc, Box::new(NoDialogs), None, Vec::new());
        app.inject(official_sized());
        app
    });
    h.run();
    h.state_mut().apply(Command::ToggleCompare(3));
    h.state_mut().apply(Command::ToggleCompare(7));
    h.state_mut().apply(Command::ToggleCompare(11));
    h.run();
    let mut times = Vec::new();
    for i in 0..300 {
        let app = h.state_mut();
        app.apply(match i % 3 {
            0 => Command::SelectClass((i * 7) % 200),
            1 => Command::SelectHead(if i % 9 == 0 { None } else { Some(i % 8) }),
            _ => Command::SelectLayer(i % 6),
        });
        assert!(app.busy.is_none(), "a view switch sent work to the model");
        let t = Instant::now();
        h.step();
        // What the window's renderer does on the CPU next: turn the frame's shapes into meshes.
        let shapes = h.output().shapes.clone();
        let meshes = h.ctx.tessellate(shapes, h.ctx.pixels_per_point());
        times.push(t.elapsed());
        assert!(!meshes.is_empty());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "frame CPU time over 300 switches (1600×1000, 200 classes × 8 heads × 6 layers, comparison of 3 classes open): median {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() * 95 / 100]),
        ms(times[times.len() - 1])
    );
}
