//! A soak of the real window: the real app, the real worker and the tiny official-format model,
//! driven by a seeded random stream of clicks, keys, wheel, drags and resizes, with dialogs that
//! answer with good and bad files from the shared edge cases, a broken checkpoint, or a cancel.
//! No frame may panic, the worker must still answer at the end, and memory must not grow by more
//! than 10 % after the warm-up: the heap in use, measured with the window in the same state (photos
//! closed, windows shut, worker idle) at half-time and at the end. The resident size is reported
//! too; it climbs in steps to the largest photos and models seen (the allocator keeps freed pages)
//! and is no measure of a leak.
//!
//! `INTR_SOAK_FRAMES` (default 20 000) sets the number of frames; `INTR_SOAK_SECS` instead runs for
//! that long (the long soak: `INTR_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`).
#![cfg(feature = "gui")]

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use intr_explorer::figure::Format;
use intr_explorer::gui::{Dialogs, ExplorerApp, Picked, Start};

/// xorshift64*: a small deterministic stream (the seed is printed, so a failure can be replayed).
struct Rng(Cell<u64>);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Dialogs that answer at random: one or more photos (good and bad), a model (good or broken), a
/// place to save a figure, or nothing (the user cancelled).
struct RandomDialogs {
    rng: Rng,
    photos: Vec<PathBuf>,
    models: Vec<PathBuf>,
    out: PathBuf,
    /// How often each dialog was asked for: photos, model, save.
    asked: std::rc::Rc<[Cell<usize>; 3]>,
}

impl RandomDialogs {
    fn cancelled(&self) -> bool {
        self.rng.below(4) == 0
    }
}

impl Dialogs for RandomDialogs {
    fn pick_images(&self, reply: Sender<Picked>, _ctx: egui::Context) {
        self.asked[0].set(self.asked[0].get() + 1);
        if self.cancelled() {
            return;
        }
        let n = 1 + self.rng.below(3);
        let picked = (0..n).map(|_| self.photos[self.rng.below(self.photos.len())].clone()).collect();
        let _ = reply.send(Picked::Images(picked));
    }

    fn pick_model(&self, reply: Sender<Picked>, _ctx: egui::Context) {
        self.asked[1].set(self.asked[1].get() + 1);
        if self.cancelled() {
            return;
        }
        let _ = reply.send(Picked::Model(self.models[self.rng.below(self.models.len())].clone()));
    }

    fn save_figure(&self, _suggested: String, format: Format, reply: Sender<Picked>, _ctx: egui::Context) {
        self.asked[2].set(self.asked[2].get() + 1);
        if self.cancelled() {
            return;
        }
        let name = format!("figure{}.{}", self.rng.below(3), format.extension());
        // Sometimes into a folder that does not exist: a clear error, nothing written.
        let dir = if self.rng.below(5) == 0 { self.out.join("missing") } else { self.out.clone() };
        let _ = reply.send(Picked::ExportTo(dir.join(name)));
    }
    fn session_file(&self, purpose: intr_explorer::gui::Purpose, reply: Sender<Picked>, _ctx: egui::Context) {
        if self.cancelled() {
            return;
        }
        let session = self.out.join(format!("session{}.json", self.rng.below(2)));
        let _ = match purpose {
            intr_explorer::gui::Purpose::SaveSession => reply.send(Picked::SaveSessionTo(session)),
            // The one saved (if any), a photo that is no session, or one that is not there.
            _ => reply.send(Picked::OpenSession(match self.rng.below(4) {
                0 => self.photos[self.rng.below(self.photos.len())].clone(),
                1 => self.out.join("no such session.json"),
                _ => session,
            })),
        };
    }
}

/// Bytes of heap in use now (glibc's `mallinfo2`: small blocks in use plus mapped large blocks).
/// Unlike the resident size, it falls again when memory is freed, so a leak shows as growth and the
/// allocator keeping freed pages does not.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> u64 {
    #[repr(C)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> Mallinfo2;
    }
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct (glibc >= 2.33).
    let m = unsafe { mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> u64 {
    rss_kib() * 1024
}

/// Brings the window to the same state before memory is measured: every photo closed, every
/// floating window shut, the worker idle; then the heap in use.
fn settled_heap(h: &mut Harness<'static, ExplorerApp>) -> u64 {
    use intr_explorer::gui::Command;
    for c in
        [Command::ShowCompare(false), Command::ShowExport(false), Command::ShowModels(false), Command::ShowHelp(false)]
    {
        h.state_mut().apply(c);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        while !h.state().images.is_empty() {
            h.state_mut().apply(Command::CloseImage(0));
        }
        h.step();
        let app = h.state();
        if app.images.is_empty()
            && app.busy.is_none()
            && app.model_loading.is_none()
            && !app.paper.busy()
            && app.worker_idle()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window did not settle within a minute: busy {:?}, model loading {:?}, renders pending {}, worker idle {}",
            app.busy,
            app.model_loading,
            app.paper.busy(),
            app.worker_idle()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(5);
    // wgpu frees destroyed textures and buffers at its next submissions: draw a few frames.
    for _ in 0..3 {
        h.render().expect("the frame renders");
    }
    // Closing every photo frees what was drawn for it: no overlay scene, no paper-style texture.
    assert_eq!(h.state().drawn_caches(), (0, 0), "GPU scenes and paper textures of closed photos are still kept");
    heap_in_use()
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const KEYS: [egui::Key; 14] = [
    egui::Key::ArrowUp,
    egui::Key::ArrowDown,
    egui::Key::ArrowLeft,
    egui::Key::ArrowRight,
    egui::Key::L,
    egui::Key::V,
    egui::Key::Num0,
    egui::Key::Num1,
    egui::Key::Num3,
    egui::Key::F1,
    egui::Key::Escape,
    egui::Key::Tab,
    egui::Key::Enter,
    egui::Key::Space,
];

#[test]
fn the_window_survives_a_long_random_stream_of_events_files_and_cancels() {
    let seed: u64 = std::env::var("INTR_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026);
    let frames: usize = std::env::var("INTR_SOAK_FRAMES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let secs: Option<u64> = std::env::var("INTR_SOAK_SECS").ok().and_then(|s| s.parse().ok());
    let out = tempfile::tempdir().unwrap();
    let fixtures = shared().join("fixtures/intr-parity");
    let model = fixtures.join("tiny_postnorm_sine.pth");
    let mut photos: Vec<PathBuf> =
        std::fs::read_dir(shared().join("images/edge-cases")).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    photos.push(fixtures.join("Painted_Bunting_0004_16641.jpg"));
    photos.push(shared().join("images/no such photo.jpg"));
    let models = vec![
        model.clone(),
        model.clone(),
        shared().join("images/edge-cases/not_an_image.jpg"),
        fixtures.join("tiny_postnorm_sine.json"),
        shared().join("images/edge-cases/macaw.bmp"),
    ];
    let asked = std::rc::Rc::new([Cell::new(0), Cell::new(0), Cell::new(0)]);
    let dialogs = RandomDialogs {
        rng: Rng(Cell::new(seed ^ 0x9e37_79b9)),
        photos,
        models,
        out: out.path().into(),
        asked: std::rc::Rc::clone(&asked),
    };
    let start = Start {
        model: Some(intr_explorer::session::ModelSpec { path: Some(model), ..Default::default() }),
        images: vec![fixtures.join("Painted_Bunting_0004_16641.jpg")],
        focus: Default::default(),
        session: None,
    };
    let mut dialogs = Some(dialogs);
    let hub_cache = out.path().join("hub");
    let mut h: Harness<'static, ExplorerApp> =
        Harness::builder().with_size(egui::vec2(1200.0, 800.0)).wgpu().build_eframe(move |cc| {
            let mut app = ExplorerApp::with_start(cc, Box::new(dialogs.take().unwrap()), start.clone());
            // The Models window's Download buttons reach a port where nothing listens, never the Hub.
            app.models.env = intr_explorer::hub::HubEnv {
                endpoint: "http://127.0.0.1:9".into(),
                cache: intr_explorer::hub::Cache { root: hub_cache.clone() },
                offline: false,
            };
            app
        });
    let rng = Rng(Cell::new(seed));
    let mut size = egui::vec2(1200.0, 800.0);
    let mut pointer = egui::pos2(600.0, 400.0);
    let mut dragging = false;
    let started = Instant::now();
    // Memory is compared between the end of the first half (every kind of photo, model and figure
    // has been opened by then, and the allocator's arenas have grown to fit them) and the end.
    let warm_up = frames / 2;
    let mut rss_after_warm_up = 0;
    let mut heap_after_warm_up = 0;
    let mut peak_rss = 0;
    assert!(rss_kib() > 0, "/proc/self/status has no VmRSS");
    let mut renders = 0;
    let mut frame = 0usize;
    println!("soak seed {seed}");
    loop {
        let done = match secs {
            Some(s) => started.elapsed() >= Duration::from_secs(s),
            None => frame >= frames,
        };
        if done {
            break;
        }
        let at = |r: &Rng| egui::pos2(r.unit() * size.x, r.unit() * size.y);
        match rng.below(100) {
            0..=34 => {
                pointer = at(&rng);
                h.event(egui::Event::PointerMoved(pointer));
            }
            35..=54 => {
                // A click where the pointer is (mostly the primary button).
                let button =
                    if rng.below(6) == 0 { egui::PointerButton::Secondary } else { egui::PointerButton::Primary };
                let modifiers = egui::Modifiers::NONE;
                h.event(egui::Event::PointerButton { pos: pointer, button, pressed: true, modifiers });
                h.event(egui::Event::PointerButton { pos: pointer, button, pressed: false, modifiers });
            }
            55..=62 => {
                // A drag: press here, release a few frames later somewhere else.
                let modifiers = egui::Modifiers::NONE;
                let button = egui::PointerButton::Primary;
                h.event(egui::Event::PointerButton { pos: pointer, button, pressed: !dragging, modifiers });
                dragging = !dragging;
            }
            63..=72 => {
                let delta = egui::vec2(rng.unit() * 40.0 - 20.0, rng.unit() * 400.0 - 200.0);
                let modifiers = if rng.below(3) == 0 { egui::Modifiers::COMMAND } else { egui::Modifiers::NONE };
                h.event(egui::Event::MouseWheel {
                    unit: egui::MouseWheelUnit::Point,
                    delta,
                    modifiers,
                    phase: egui::TouchPhase::Move,
                    source: egui::MouseWheelSource::Unknown,
                });
            }
            73..=86 => h.key_press(KEYS[rng.below(KEYS.len())]),
            87..=89 => h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::O),
            90..=91 => h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::E),
            92..=94 => {
                size = egui::vec2(320.0 + rng.unit() * 1400.0, 240.0 + rng.unit() * 900.0);
                h.set_size(size);
            }
            _ => {
                // Let time pass: the worker finishes, banners and progress update.
                std::thread::sleep(Duration::from_millis(rng.below(30) as u64));
            }
        }
        h.step();
        if frame % 500 == 250 {
            // Draw through the real wgpu pipeline (overlay shaders included) now and then.
            h.render().expect("the frame renders");
            renders += 1;
        }
        frame += 1;
        let halfway = match secs {
            Some(s) => rss_after_warm_up == 0 && started.elapsed() >= Duration::from_secs(s / 2),
            None => frame == warm_up,
        };
        if halfway {
            rss_after_warm_up = rss_kib();
            heap_after_warm_up = settled_heap(&mut h);
        }
        if frame.is_multiple_of(100) {
            peak_rss = peak_rss.max(rss_kib());
        }
        if frame.is_multiple_of(2_000) {
            let app = h.state();
            let analysed = app.images.iter().filter(|e| e.analysis.is_some()).count();
            println!(
                "frame {frame}: RSS {} MB, {} photos open ({analysed} analysed)",
                rss_kib() / 1024,
                app.images.len()
            );
        }
    }
    let end_rss = rss_kib();
    // The worker is not stuck: a photo it has never seen, opened now, is analysed within a minute.
    let fresh = out.path().join("fresh bunting.jpg");
    std::fs::copy(fixtures.join("Painted_Bunting_0004_16641.jpg"), &fresh).unwrap();
    h.state_mut().apply(intr_explorer::gui::Command::OpenImages(vec![fresh.clone()]));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        h.step();
        // A request refused because the queue was full ("the model is busy") is asked again, as a
        // user would by clicking the photo.
        let idle = h
            .state()
            .images
            .iter()
            .position(|e| e.path == fresh && e.pending.is_none() && e.analysis.is_none() && e.error.is_none());
        if let Some(i) = idle {
            h.state_mut().apply(intr_explorer::gui::Command::SelectImage(i));
        }
        let app = h.state();
        if app.images.iter().any(|e| e.path == fresh && (e.analysis.is_some() || e.error.is_some())) {
            let e = app.images.iter().find(|e| e.path == fresh).unwrap();
            assert!(e.error.is_none(), "the fresh photo failed: {:?}", e.error);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not answer within a minute after {frame} frames: busy {:?}, model loading {:?}, \
             entry {:?}, banners {:?}",
            app.busy,
            app.model_loading,
            app.images.iter().find(|e| e.path == fresh).map(|e| (e.pending, e.analysis.is_some(), &e.error)),
            app.banner_texts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked: Vec<usize> = asked.iter().map(Cell::get).collect();
    let saved = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("figure"))
        .count();
    println!(
        "dialogs asked: {} for photos, {} for a model, {} to save ({saved} figures written)",
        asked[0], asked[1], asked[2]
    );
    assert!(asked[0] > 0 && asked[1] > 0, "the stream never opened a photo or a model: {asked:?}");
    let end_heap = settled_heap(&mut h);
    let growth = end_heap as f64 / heap_after_warm_up.max(1) as f64 - 1.0;
    println!(
        "soak: {frame} frames in {:.0} s ({renders} rendered); heap in use, settled: {:.1} MB at half-time, {:.1} MB \
         at the end ({:+.1} %); RSS {} MB at half-time, {} MB at the end, peak {} MB",
        started.elapsed().as_secs_f64(),
        heap_after_warm_up as f64 / 1e6,
        end_heap as f64 / 1e6,
        growth * 100.0,
        rss_after_warm_up / 1024,
        end_rss / 1024,
        peak_rss / 1024
    );
    assert!(growth < 0.10, "the heap in use grew by {:.1} % after the warm-up", growth * 100.0);
}
