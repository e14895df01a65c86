//! File dialogs, behind a trait so tests inject paths: the native ones (rfd) run on a helper
//! thread so the window never blocks, and send their answer on the app's channel.

use std::path::PathBuf;
use std::sync::mpsc::Sender;

use eframe::egui;

/// File dialogs, behind a trait so tests inject paths. Results arrive on the app's channel.
pub trait Dialogs {
    fn pick_images(&self, reply: Sender<Picked>, ctx: egui::Context);
    fn pick_model(&self, reply: Sender<Picked>, ctx: egui::Context);
    /// Asks where to save a figure (`suggested` file name, `format` for the filter).
    fn save_figure(&self, suggested: String, format: crate::figure::Format, reply: Sender<Picked>, ctx: egui::Context);
}

/// Dialogs that never open (headless runs, benchmarks, tests).
pub struct NoDialogs;

impl Dialogs for NoDialogs {
    fn pick_images(&self, _reply: Sender<Picked>, _ctx: egui::Context) {}
    fn pick_model(&self, _reply: Sender<Picked>, _ctx: egui::Context) {}
    fn save_figure(&self, _: String, _: crate::figure::Format, _: Sender<Picked>, _: egui::Context) {}
}

/// A dialog's answer.
#[derive(Debug)]
pub enum Picked {
    Images(Vec<PathBuf>),
    Model(PathBuf),
    ExportTo(PathBuf),
}

/// Native dialogs (rfd): run on a helper thread so the window never blocks.
pub struct NativeDialogs;

impl Dialogs for NativeDialogs {
    fn pick_images(&self, reply: Sender<Picked>, ctx: egui::Context) {
        std::thread::spawn(move || {
            let files = rfd::FileDialog::new()
                .set_title("Open images")
                .add_filter("Images", &crate::image::decode::IMAGE_EXTENSIONS)
                .pick_files();
            if let Some(files) = files {
                let _ = reply.send(Picked::Images(files));
                ctx.request_repaint();
            }
        });
    }

    fn pick_model(&self, reply: Sender<Picked>, ctx: egui::Context) {
        std::thread::spawn(move || {
            let file = rfd::FileDialog::new()
                .set_title("Open an INTR model")
                .add_filter("INTR checkpoints", &["pth", "safetensors"])
                .pick_file();
            if let Some(file) = file {
                let _ = reply.send(Picked::Model(file));
                ctx.request_repaint();
            }
        });
    }

    fn save_figure(&self, suggested: String, format: crate::figure::Format, reply: Sender<Picked>, ctx: egui::Context) {
        std::thread::spawn(move || {
            let ext = format.extension();
            let file = rfd::FileDialog::new()
                .set_title("Export figure")
                .set_file_name(suggested)
                .add_filter(ext.to_uppercase(), &[ext])
                .save_file();
            if let Some(file) = file {
                let _ = reply.send(Picked::ExportTo(file));
                ctx.request_repaint();
            }
        });
    }
}
