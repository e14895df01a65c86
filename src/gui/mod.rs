//! The desktop explorer (egui/eframe on wgpu), behind the default `gui` feature: the state and the
//! commands ([`state`]), the app that applies them ([`app`]), panels as `*_ui` functions that read
//! the state and emit commands ([`panels`]), file dialogs ([`dialogs`]), the inference worker over the session
//! ([`worker`]), figure export ([`export`]), blurred overlays rendered in the background
//! ([`paper_cache`]) and the GPU pipeline ([`gpu`]: knows textures and colormaps, not classes).

pub mod app;
pub mod dialogs;
pub mod export;
pub mod gpu;
pub mod models;
pub mod panels;
pub mod paper_cache;
pub mod state;
pub mod worker;

use std::path::Path;

use eframe::egui;

pub use dialogs::{Dialogs, NativeDialogs, NoDialogs, Picked, Purpose, UnavailableDialogs};
pub use export::ExportJob;
pub use paper_cache::{PaperCache, PaperJob, PaperKey};
pub use state::{Command, ExplorerApp, ExportSettings, ExportWhat, Start};

/// Whether a path names a checkpoint (by extension).
#[must_use]
pub fn is_model_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "pth" | "pt" | "safetensors"))
}

/// Why no window can open here, if that can be told before trying: on Linux and the BSDs a
/// window needs an X11 or Wayland display.
#[must_use]
pub fn missing_display() -> Option<String> {
    let unix_desktop = cfg!(all(unix, not(target_os = "macos")));
    let has = |v: &str| std::env::var_os(v).is_some_and(|s| !s.is_empty());
    (unix_desktop && !has("DISPLAY") && !has("WAYLAND_DISPLAY")).then(|| {
        "cannot open the window: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); without one, use a \
         subcommand such as `predict` or `explain` (see `intr-explorer --help`)"
            .to_string()
    })
}

/// Runs the window on `start`. With no model the bundled demo opens, with its images unless
/// photos were given.
pub fn run(mut start: Start) -> anyhow::Result<()> {
    if let Some(why) = missing_display() {
        anyhow::bail!(why);
    }
    if start.model.is_none() && crate::session::assets::demo_model().is_ok() {
        start.model = Some(Default::default());
        if start.images.is_empty() {
            start.images = crate::session::assets::demo_images();
        }
    }
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default().with_inner_size([1600.0, 1000.0]).with_title("INTR Explorer"),
        ..Default::default()
    };
    eframe::run_native(
        "INTR Explorer",
        options,
        Box::new(move |cc| Ok(Box::new(ExplorerApp::with_start(cc, Box::new(NativeDialogs), start)))),
    )
    .map_err(|e| anyhow::anyhow!(window_error(&e.to_string())))
}

/// One line for a window that could not open: the display asked for and the last part of the
/// windowing system's message (which otherwise carries source paths of the libraries).
fn window_error(message: &str) -> String {
    let display = std::env::var("DISPLAY").ok().filter(|d| !d.is_empty());
    let cause = message.rsplit(": ").next().unwrap_or(message).trim();
    match display {
        Some(d) => format!("cannot open the window on display {d}: {cause}"),
        None => format!("cannot open the window: {cause}"),
    }
}
