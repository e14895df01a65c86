//! The real explorer UI driven by egui_kittest (wgpu on a CPU adapter) with injected results:
//! clicking a class changes the head gallery's class, the layer selector changes the maps, adding
//! classes to the comparison adds rows; snapshots of these states are checked in.
#![cfg(feature = "gui")]

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use intr_explorer::gui::worker::Analysis;
use intr_explorer::gui::{Dialogs, ExplorerApp, NoDialogs, Picked};
use intr_explorer::image::decode::RgbImage;
use intr_explorer::image::grid::GridMapping;
use intr_explorer::intr::IntrOutput;
use intr_explorer::intr::model::StageTimings;
use intr_explorer::session;

const NAMES: [&str; 5] = ["Indigo Bunting", "Painted Bunting", "Lazuli Bunting", "Blue Grosbeak", "House Finch"];

/// A deterministic result: 2 layers, 3 heads, 5 classes, a 4×6 grid; each (layer, head, class)
/// peaks at a different cell so every view change changes the pixels.
fn analysis() -> Analysis {
    let (layers, heads, classes, gh, gw) = (2, 3, 5, 4, 6);
    let mut attention = Vec::new();
    for l in 0..layers {
        for h in 0..heads {
            for c in 0..classes {
                let peak = (l * 7 + h * 5 + c * 3) % (gh * gw);
                let mut m: Vec<f32> =
                    (0..gh * gw).map(|i| if i == peak { 10.0 } else { 1.0 + (i % 3) as f32 }).collect();
                let s: f32 = m.iter().sum();
                m.iter_mut().for_each(|v| *v /= s);
                attention.extend(m);
            }
        }
    }
    let (w, h) = (240, 160);
    let data = (0..w * h).flat_map(|i| [((i % w) * 255 / w) as u8, ((i / w) * 255 / h) as u8, 128]).collect();
    let logits = vec![2.0, 3.0, 1.0, 0.5, -1.0];
    let ood = intr_explorer::probe::out_of_domain(&logits);
    Analysis {
        id: 1,
        result: session::Analysis {
            image_path: PathBuf::from("synthetic bird.png"),
            image: RgbImage { width: w, height: h, data },
            output: IntrOutput {
                logits,
                attention,
                layers,
                heads,
                classes,
                grid: (gh, gw),
                // A 960 × 640 input at stride 160: cells centred on multiples of 40 photo pixels.
                input: (w * 4, h * 4),
                stride: 160,
                timings: StageTimings::default(),
            },
            // Per head, the logits with that head attending evenly: head 1 changes nothing, head 2
            // takes 3 from the top class (Painted Bunting), head 3 adds 0.2 to it.
            evened: vec![
                vec![2.0, 3.0, 1.0, 0.5, -1.0],
                vec![2.0, 0.0, 1.0, 0.5, -1.0],
                vec![2.0, 3.2, 1.0, 0.5, -1.0],
            ],
            last_layer: None,
            mapping: GridMapping { original: (w, h), input: (w * 4, h * 4), grid: (gh, gw), stride: 160 },
            class_names: Arc::new(NAMES.iter().map(|s| s.to_string()).collect()),
            took: std::time::Duration::ZERO,
            oriented: false,
            ood,
            input_size: (w * 4, h * 4),
        },
    }
}

fn harness() -> Harness<'static, ExplorerApp> {
    let mut h = Harness::builder().with_size(egui::vec2(1400.0, 900.0)).wgpu().build_eframe(|cc| {
        let mut app = ExplorerApp::new(cc, Box::new(NoDialogs), None, Vec::new());
        app.inject(analysis());
        app
    });
    h.run();
    h
}

#[test]
fn clicking_a_class_changes_the_gallery_and_the_layer_selector_changes_the_maps() {
    let mut h = harness();
    // The top class is selected first, on the last layer, showing the mean of the heads.
    assert_eq!(h.state().view.class, 1);
    assert_eq!(h.state().view.layer, 1);
    h.snapshot("explorer_top_class");

    h.get_by_label_contains("Lazuli Bunting").click();
    h.run();
    assert_eq!(h.state().view.class, 2);
    h.snapshot("explorer_class_lazuli");

    h.get_by_label("1").click();
    h.run();
    assert_eq!(h.state().view.layer, 0);
    h.snapshot("explorer_layer_1");
}

#[test]
fn each_head_says_what_the_class_score_owes_to_where_it_looks() {
    let mut h = harness();
    // Painted Bunting: 62.4 % now; 7.6 % with head 2 evened, 66.9 % with head 3 evened.
    h.get_by_label("head 1");
    h.get_by_label("head 2 · 62 to 8 %");
    h.get_by_label("head 3 · 62 to 67 %");
    // Another class owes its heads something else: Lazuli Bunting gains from head 2's evening
    // (8.4 % → 20.7 %) and loses a little from head 3's (8.4 % → 7.4 %).
    h.get_by_label_contains("Lazuli Bunting").click();
    h.run();
    h.get_by_label("head 2 · 8 to 21 %");
    h.get_by_label("head 3 · 8 to 7 %");
    // The figures are about the last layer's heads: under the first layer's maps they are not shown.
    h.get_by_label("1").click();
    h.run();
    assert_eq!(h.state().view.layer, 0);
    assert!(h.query_by_label("head 2 · 8 to 21 %").is_none() && h.query_by_label("head 3 · 8 to 7 %").is_none());
    assert!(h.query_all_by_label("head 2").count() >= 1 && h.query_all_by_label("head 3").count() >= 1);
}

#[test]
fn adding_classes_to_the_comparison_adds_rows() {
    let mut h = harness();
    let plus = h.get_all_by_label("+").count();
    assert_eq!(plus, 5, "one add button per listed class");
    h.get_all_by_label("+").next().unwrap().click();
    h.run();
    assert_eq!(h.state().view.compare.len(), 1);
    h.get_all_by_label("+").next().unwrap().click();
    h.run();
    assert_eq!(h.state().view.compare.len(), 2);
    assert!(h.state().view.show_compare, "two classes open the comparison");
    assert_eq!(h.get_all_by_label("remove").count(), 2, "one row per compared class");
    h.snapshot("explorer_compare");
}

#[test]
fn keyboard_moves_through_classes_heads_and_layers() {
    let mut h = harness();
    h.key_press(egui::Key::ArrowDown);
    h.run();
    assert_eq!(h.state().view.class, 0, "second in the ranking");
    h.key_press(egui::Key::Num2);
    h.run();
    assert_eq!(h.state().view.head, Some(1));
    h.key_press(egui::Key::ArrowRight);
    h.key_press(egui::Key::ArrowRight);
    h.run();
    assert_eq!(h.state().view.head, None, "after the last head comes the mean");
    h.key_press(egui::Key::L);
    h.run();
    assert_eq!(h.state().view.layer, 0);
}

#[test]
fn paper_style_draws_the_blurred_official_overlay_once_rendered_in_the_background() {
    let mut h = harness();
    h.get_by_label("Paper style").click();
    h.run();
    assert!(h.state().display.official_blur);
    assert!(h.state().paper.busy(), "the main view and the gallery request their blurred maps");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.state().paper.busy() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    h.run();
    let app = h.state();
    assert!(!app.paper.busy(), "the blurred maps did not arrive within 60 s");
    let a = app.current().unwrap().clone();
    // The main view (class 1, mean of heads) and every gallery map (3 heads + mean) are textures now.
    for head in [None, Some(0), Some(1), Some(2)] {
        let style = app.style_for(&a, 1, head);
        assert!(app.paper.texture(&app.paper_key(&a, 1, head, &style)).is_some(), "head {head:?}");
    }
    h.snapshot("explorer_paper_style");
}

/// The synthetic result's photo written into `dir` (exported figures record the photo's SHA-256,
/// so it must exist on disk).
fn photo_on_disk(dir: &std::path::Path) -> PathBuf {
    let photo = dir.join("synthetic bird.png");
    let a = analysis();
    image::RgbImage::from_raw(a.image.width as u32, a.image.height as u32, a.image.data.clone())
        .unwrap()
        .save(&photo)
        .unwrap();
    photo
}

/// Dialogs that answer "save here" at once.
struct SaveTo(PathBuf);

impl Dialogs for SaveTo {
    fn pick_images(&self, _reply: std::sync::mpsc::Sender<Picked>, _ctx: egui::Context) {}
    fn pick_model(&self, _reply: std::sync::mpsc::Sender<Picked>, _ctx: egui::Context) {}
    fn save_figure(
        &self,
        _suggested: String,
        _format: intr_explorer::figure::Format,
        reply: std::sync::mpsc::Sender<Picked>,
        _ctx: egui::Context,
    ) {
        reply.send(Picked::ExportTo(self.0.clone())).unwrap();
    }
    fn session_file(&self, _: intr_explorer::gui::Purpose, _: std::sync::mpsc::Sender<Picked>, _: egui::Context) {}
}

#[test]
fn ctrl_e_opens_the_export_window_and_exports_the_gallery_as_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figure.svg");
    let photo = photo_on_disk(dir.path());
    let target = out.clone();
    let mut h = Harness::builder().with_size(egui::vec2(1400.0, 900.0)).wgpu().build_eframe(move |cc| {
        let mut app = ExplorerApp::new(cc, Box::new(SaveTo(target.clone())), None, Vec::new());
        let mut a = analysis();
        a.result.image_path = photo.clone();
        app.inject(a);
        app
    });
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::E);
    h.run();
    assert!(h.state().view.show_export, "Ctrl+E opens the Export window");
    h.get_by_label("all heads").click();
    h.run();
    h.get_by_label("Save figure…").click();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    let svg = std::fs::read_to_string(&out).expect("the figure was written");
    // Three heads + mean, each labelled; the class in the title; provenance embedded.
    assert!(svg.contains("Painted Bunting"), "class name in the figure");
    for label in ["head 1", "head 2", "head 3", "mean of heads"] {
        assert!(svg.contains(label), "{label} missing");
    }
    let prov = intr_explorer::figure::read_provenance(&out).unwrap();
    assert_eq!(prov["image"], "synthetic bird.png");
    assert_eq!(prov["layer"], "2");
    h.run();
    assert!(h.state().export_status.as_deref().is_some_and(|s| s.starts_with("exported")));
}

/// The real app with the real worker on the tiny official fixture, opened on `images`; steps frames
/// until `done` holds (at most a minute).
fn started(images: Vec<PathBuf>, done: impl Fn(&ExplorerApp) -> bool) -> Harness<'static, ExplorerApp> {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/intr-parity");
    let model =
        intr_explorer::session::ModelSpec { path: Some(fixtures.join("tiny_postnorm_sine.pth")), ..Default::default() };
    let start = intr_explorer::gui::Start { model: Some(model), images, focus: Default::default(), session: None };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .wgpu()
        .build_eframe(move |cc| ExplorerApp::with_start(cc, Box::new(NoDialogs), start.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done(h.state()) {
        assert!(std::time::Instant::now() < deadline, "the window never got there");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    h.step();
    h
}

#[test]
fn one_photo_on_the_command_line_is_analysed_once_at_start_up() {
    let bunting =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/intr-parity/Painted_Bunting_0004_16641.jpg");
    let h = started(vec![bunting], |app| app.current().is_some());
    // The request sent while the model loaded runs on that model: it is not sent again.
    assert_eq!(h.state().analyses_requested(), 1);
    assert!(h.state().banner_texts().is_empty(), "{:?}", h.state().banner_texts());
}

#[test]
fn a_failed_photo_shows_its_error_in_place_not_analysing_and_its_banner_once() {
    let bad = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/images/edge-cases/not_an_image.jpg");
    let h = started(vec![bad], |app| app.images.first().is_some_and(|e| e.error.is_some()));
    assert!(h.query_by_label_contains("Analysing").is_none(), "the centre still says Analysing…");
    h.get_by_label_contains("not_an_image.jpg could not be analysed");
    let banners = h.state().banner_texts();
    assert_eq!(banners.len(), 1, "{banners:?}");
    assert!(banners[0].contains("not an image"), "{banners:?}");
}

#[test]
fn the_compare_window_keeps_its_size_and_a_click_on_a_cell_shows_that_class_and_head() {
    let mut h = harness();
    h.state_mut().apply(intr_explorer::gui::Command::ToggleCompare(0));
    h.state_mut().apply(intr_explorer::gui::Command::ToggleCompare(2));
    h.run();
    let id = egui::Id::unique(intr_explorer::gui::panels::COMPARE_WINDOW);
    let rect = |h: &Harness<'_, ExplorerApp>| h.ctx.memory(|m| m.area_rect(id)).expect("the comparison is open");
    let first = rect(&h);
    // Many frames with the pointer moving over it: it used to grow on every repaint.
    for i in 0..60 {
        let p = first.min + egui::vec2(40.0 + (i * 13 % 400) as f32, 60.0 + (i * 7 % 150) as f32);
        h.event(egui::Event::PointerMoved(p));
        h.step();
    }
    assert_eq!(rect(&h), first, "the comparison window changed size");
    assert!(first.width() <= 1400.0 * 0.9 + 1.0 && first.height() <= 900.0 * 0.75 + 1.0, "{first:?}");
    h.get_by_label("Lazuli Bunting · head 2").click();
    h.run();
    assert_eq!((h.state().view.class, h.state().view.head), (2, Some(1)));
    h.get_by_label("Indigo Bunting · mean").click();
    h.run();
    assert_eq!((h.state().view.class, h.state().view.head), (0, None));
}

#[test]
fn save_figure_without_a_system_dialog_writes_the_file_through_the_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    // The photo must exist on disk: its SHA-256 goes into the figure's provenance; the built-in
    // dialog opens in its folder.
    let photo = photo_on_disk(dir.path());
    // egui_file's own path and name fields carry no accessible name; the check is for our widgets.
    let mut h =
        Harness::builder().with_size(egui::vec2(1400.0, 900.0)).with_accessibility_check(false).wgpu().build_eframe(
            move |cc| {
                let mut app = ExplorerApp::new(cc, Box::new(intr_explorer::gui::UnavailableDialogs), None, Vec::new());
                let mut a = analysis();
                a.result.image_path = photo.clone();
                app.inject(a);
                app
            },
        );
    h.run();
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::E);
    h.run();
    h.get_by_label("Save figure…").click();
    h.run();
    // The system dialog said it cannot open: the window says so and opens its own.
    let banners = h.state().banner_texts();
    assert!(banners.iter().any(|b| b.contains("no system file dialog here")), "{banners:?}");
    h.get_by_label("Save").click();
    let out = dir.path().join("synthetic bird_heads.svg");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.run();
    }
    let prov =
        intr_explorer::figure::read_provenance(&out).expect("the figure was written through the built-in dialog");
    assert_eq!(prov["image"], "synthetic bird.png");
}

#[test]
fn v_hides_the_overlay_and_f1_explains_the_terms_in_plain_words() {
    let mut h = harness();
    assert!(h.state().view.overlay);
    h.key_press(egui::Key::V);
    h.run();
    assert!(!h.state().view.overlay, "V shows the photo alone");
    h.key_press(egui::Key::V);
    h.run();
    assert!(h.state().view.overlay);
    h.key_press(egui::Key::F1);
    h.run();
    for term in ["Head", "Layer", "Normalisation", "Colour bar", "Out of domain"] {
        h.get_by_label(term);
    }
    h.get_by_label_contains("if that head alone looked evenly over the whole image");
}

#[test]
fn a_figure_exported_from_the_window_can_be_remade_from_its_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("bunting.jpg");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/intr-parity/Painted_Bunting_0004_16641.jpg"),
        &photo,
    )
    .unwrap();
    let mut h = started(vec![photo], |app| app.current().is_some());
    let out = dir.path().join("heads.svg");
    h.state_mut().apply(intr_explorer::gui::Command::ExportTo(out.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.step();
    }
    let before = std::fs::read(&out).expect("the figure was exported");
    let prov = intr_explorer::figure::read_provenance(&out).unwrap();
    assert!(prov.contains_key("remake_args"), "{prov:?}");
    let copy = dir.path().join("copy.svg");
    std::fs::copy(&out, &copy).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_intr-explorer"))
        .args(["remake", &copy.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&copy).unwrap(), before, "remake gives the window's figure byte for byte");
}

#[test]
fn the_heads_are_ranked_for_the_viewed_class_and_the_gallery_can_follow_the_ranking() {
    let bunting =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/intr-parity/Painted_Bunting_0004_16641.jpg");
    let mut h = started(vec![bunting], |app| app.current_ranking().is_some());
    let ranking = h.state().current_ranking().unwrap().clone().expect("the worker ranked the heads");
    assert_eq!(ranking.class, h.state().view.class);
    let ranked = ranking.ranked();
    assert_eq!(ranked.len(), 4);
    h.get_by_label("Heads ranked");
    // The gallery by number, each head labelled with its rank; then in the ranking's order.
    let x_of = |h: &Harness<'static, ExplorerApp>, rank: usize| {
        let head = ranked[rank - 1].head + 1;
        h.get_by_label_contains(&format!("#{rank} head {head}")).rect().min.x
    };
    let by_number: Vec<f32> = (1..=4).map(|r| x_of(&h, r)).collect();
    h.get_by_label("order gallery").click();
    h.run_steps(3);
    assert!(h.state().view.gallery_by_rank);
    let by_rank: Vec<f32> = (1..=4).map(|r| x_of(&h, r)).collect();
    assert!(by_rank.windows(2).all(|w| w[0] < w[1]), "not in rank order: {by_rank:?}");
    let heads: Vec<usize> = ranked.iter().map(|r| r.head).collect();
    if heads != [0, 1, 2, 3] {
        assert_ne!(by_number, by_rank, "the order did not change");
    }
    // Another class gets its own ranking.
    let other = (h.state().view.class + 1) % 5;
    h.state_mut().apply(intr_explorer::gui::Command::SelectClass(other));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while h.state().current_ranking().is_none() {
        assert!(std::time::Instant::now() < deadline, "no ranking for the other class");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(h.state().current_ranking().unwrap().as_ref().unwrap().class, other);
}

#[test]
fn closing_the_photo_shown_shows_and_analyses_the_next_and_frees_what_was_drawn_for_it() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let bunting = dir.join("fixtures/intr-parity/Painted_Bunting_0004_16641.jpg");
    let duck = dir.join("images/photos/duck.webp");
    let mut h = started(vec![bunting, duck.clone()], |app| app.current().is_some());
    assert_eq!(h.state().images.len(), 2);
    assert_eq!(h.state().selected, 0);
    let (scenes, _) = h.state().drawn_caches();
    // The photo shown is closed with its × button; the next one is shown and analysed.
    h.get_all_by_label("×").next().expect("a close button per photo").click();
    h.run_steps(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.state().current().is_none() {
        assert!(std::time::Instant::now() < deadline, "the next photo was never analysed");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let app = h.state();
    assert_eq!(app.images.len(), 1);
    assert_eq!(app.images[0].path, duck);
    assert_eq!(app.current().unwrap().image_path, duck);
    // The closed photo's overlay scene went with it (the new one took its place).
    assert_eq!(app.drawn_caches().0, scenes, "scenes: {:?} after, {scenes} before", app.drawn_caches());
    // Delete closes the photo shown too.
    h.key_press(egui::Key::Delete);
    h.run_steps(2);
    assert!(h.state().images.is_empty());
    assert_eq!(h.state().drawn_caches(), (0, 0));
}

#[test]
fn the_comparison_contrasts_the_top_class_with_its_closest_look_alike_on_one_symmetric_scale() {
    let mut h = harness();
    h.state_mut().apply(intr_explorer::gui::Command::ShowCompare(true));
    h.run();
    let (scenes, _) = h.state().drawn_caches();
    h.get_by_label("contrast").click();
    h.run();
    // With no class compared yet: the top class (Painted Bunting) minus the runner-up (Indigo).
    assert_eq!(h.state().view.compare, [1, 0]);
    let cs = h.state().contrast_scene().expect("the contrast is on the GPU");
    assert_eq!(cs.pair, (1, 0));
    assert!(cs.range.0 < 0.0 && (cs.range.0 + cs.range.1).abs() < 1e-7, "symmetric: {:?}", cs.range);
    // Its largest difference is the scale's end: head maps peak at 10/… in different cells.
    let a = h.state().current().unwrap().clone();
    let o = &a.output;
    let most = (0..o.heads)
        .flat_map(|k| o.map(1, k, 1).iter().zip(o.map(1, k, 0)).map(|(x, y)| (x - y).abs()).collect::<Vec<_>>())
        .fold(0.0f32, f32::max);
    assert!(most <= cs.range.1 + 1e-7 && most >= 0.5 * cs.range.1, "{most} vs {:?}", cs.range);
    assert_eq!(h.state().drawn_caches().0, scenes + 1, "one scene more: the contrast's");
    for label in ["contrast · head 1", "contrast · head 3", "contrast · mean"] {
        h.get_by_label(label);
    }
    h.get_by_label_contains("Painted Bunting minus Indigo Bunting");
    h.snapshot("explorer_contrast");
    // Swapped, it is subtracted the other way round (and drawn again).
    h.get_by_label("swap").click();
    h.run();
    assert_eq!(h.state().contrast_scene().map(|c| c.pair), Some((0, 1)));
    h.get_by_label_contains("Indigo Bunting minus Painted Bunting");
    // The layer follows the main view's.
    h.state_mut().apply(intr_explorer::gui::Command::SelectLayer(0));
    h.run();
    assert_eq!(h.state().contrast_scene().map(|c| c.layer), Some(0));
    // Closing the comparison frees the contrast's scene.
    h.state_mut().apply(intr_explorer::gui::Command::ShowCompare(false));
    h.run();
    assert!(h.state().contrast_scene().is_none());
    assert_eq!(h.state().drawn_caches().0, scenes);
}

#[test]
fn the_specimen_sheet_shows_the_class_heads_over_the_ticked_photos_and_exports_them() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let bunting = dir.join("fixtures/intr-parity/Painted_Bunting_0004_16641.jpg");
    let duck = dir.join("images/photos/duck.webp");
    let mut h = started(vec![bunting.clone(), duck.clone()], |app| app.current().is_some());
    // The second photo is analysed when shown.
    h.state_mut().apply(intr_explorer::gui::Command::SelectImage(1));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.state().images.iter().any(|e| e.analysis.is_none()) {
        assert!(std::time::Instant::now() < deadline, "the duck was never analysed");
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    h.run();
    h.get_by_label("Sheet…").click();
    h.run();
    assert!(h.state().view.show_sheet);
    let heads = h.state().current().unwrap().output.heads;
    for photo in ["Painted_Bunting_0004_16641.jpg", "duck.webp"] {
        for k in 1..=heads {
            h.get_by_label(&format!("{photo} · head {k}"));
        }
        h.get_by_label(&format!("{photo} · mean"));
    }
    // Export it while both photos are on it: one row each.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("sheet.svg");
    h.state_mut().export.what = intr_explorer::gui::ExportWhat::Sheet;
    h.state_mut().export.format = intr_explorer::figure::Format::Svg;
    let job = intr_explorer::gui::ExportJob::from_app(h.state(), file.clone()).unwrap();
    job.run().unwrap();
    let svg = std::fs::read_to_string(&file).unwrap();
    assert_eq!(svg.matches("<image ").count(), 2 * (heads + 1), "two rows of heads and the mean");
    assert!(svg.contains(">Painted_Bunting_0004_16641.jpg</text>") && svg.contains(">duck.webp</text>"));
    // Unticked, a photo leaves the sheet.
    h.get_by_role_and_label(egui::accesskit::Role::CheckBox, "duck.webp").click();
    h.run();
    assert_eq!(h.state().sheet_photos().len(), 1);
    assert!(h.query_by_label("duck.webp · mean").is_none());
    h.get_by_label("Painted_Bunting_0004_16641.jpg · mean");
}
