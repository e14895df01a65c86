//! File dialogs, behind a trait so tests inject answers. The system's own dialogs (rfd: the desktop
//! portal, or zenity) run on a helper thread so the window never blocks, and send their answer on
//! the app's channel. Where no system dialog can open — a window manager without
//! xdg-desktop-portal and without zenity, common on clusters and remote desktops, where rfd answers
//! "nothing" at once, as if cancelled — they say so, and the app opens the built-in dialog
//! ([`BuiltIn`], egui_file) instead.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use eframe::egui;

use crate::figure::Format;

/// What a dialog is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    Images,
    Model,
    /// Where to save a figure: a suggested file name and the format.
    SaveFigure {
        suggested: String,
        format: Format,
    },
    /// A session file to open.
    OpenSession,
    /// Where to save the session.
    SaveSession,
}

/// File dialogs. Results arrive on the app's channel.
pub trait Dialogs {
    fn pick_images(&self, reply: Sender<Picked>, ctx: egui::Context);
    fn pick_model(&self, reply: Sender<Picked>, ctx: egui::Context);
    /// Asks where to save a figure (`suggested` file name, `format` for the filter).
    fn save_figure(&self, suggested: String, format: Format, reply: Sender<Picked>, ctx: egui::Context);
    /// Asks for a session file to open ([`Purpose::OpenSession`]) or where to save one
    /// ([`Purpose::SaveSession`]).
    fn session_file(&self, purpose: Purpose, reply: Sender<Picked>, ctx: egui::Context);
}

/// Dialogs that never open (headless runs, benchmarks, tests).
pub struct NoDialogs;

impl Dialogs for NoDialogs {
    fn pick_images(&self, _reply: Sender<Picked>, _ctx: egui::Context) {}
    fn pick_model(&self, _reply: Sender<Picked>, _ctx: egui::Context) {}
    fn save_figure(&self, _: String, _: Format, _: Sender<Picked>, _: egui::Context) {}
    fn session_file(&self, _: Purpose, _: Sender<Picked>, _: egui::Context) {}
}

/// Dialogs that report the system's dialog unavailable, as on a machine without a portal (tests).
pub struct UnavailableDialogs;

impl Dialogs for UnavailableDialogs {
    fn pick_images(&self, reply: Sender<Picked>, ctx: egui::Context) {
        unavailable(&reply, &ctx, Purpose::Images, "no system file dialog in this test".into());
    }
    fn pick_model(&self, reply: Sender<Picked>, ctx: egui::Context) {
        unavailable(&reply, &ctx, Purpose::Model, "no system file dialog in this test".into());
    }
    fn save_figure(&self, suggested: String, format: Format, reply: Sender<Picked>, ctx: egui::Context) {
        unavailable(
            &reply,
            &ctx,
            Purpose::SaveFigure { suggested, format },
            "no system file dialog in this test".into(),
        );
    }
    fn session_file(&self, purpose: Purpose, reply: Sender<Picked>, ctx: egui::Context) {
        unavailable(&reply, &ctx, purpose, "no system file dialog in this test".into());
    }
}

/// A dialog's answer.
#[derive(Debug)]
pub enum Picked {
    Images(Vec<PathBuf>),
    Model(PathBuf),
    ExportTo(PathBuf),
    OpenSession(PathBuf),
    SaveSessionTo(PathBuf),
    /// The system dialog cannot open here (`why`): the built-in one should.
    Unavailable {
        purpose: Purpose,
        why: String,
    },
}

fn unavailable(reply: &Sender<Picked>, ctx: &egui::Context, purpose: Purpose, why: String) {
    let _ = reply.send(Picked::Unavailable { purpose, why });
    ctx.request_repaint();
}

/// An answer of "nothing" faster than this is the dialog failing to open, not a person cancelling.
const TOO_FAST: Duration = Duration::from_millis(150);

/// Why the system's file dialog cannot open here, if that can be told before trying: on Linux and
/// the BSDs rfd needs the desktop portal on the session bus, or zenity.
#[must_use]
pub fn system_dialog_missing() -> Option<String> {
    if !cfg!(all(unix, not(target_os = "macos"))) {
        return None;
    }
    let bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty());
    let data_dirs = std::env::var("XDG_DATA_DIRS").unwrap_or_else(|_| "/usr/local/share:/usr/share".into());
    let portal = data_dirs
        .split(':')
        .any(|d| Path::new(d).join("dbus-1/services/org.freedesktop.portal.Desktop.service").is_file());
    let zenity =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("zenity").is_file()));
    let available = zenity || (bus && portal);
    (!available).then(|| "no desktop portal (xdg-desktop-portal) and no zenity".to_string())
}

/// The system's dialogs (rfd), each on a helper thread; where they cannot open, they say so.
pub struct NativeDialogs;

impl NativeDialogs {
    /// Runs `dialog` on a helper thread and sends `answer(result)`; a dialog that cannot open is
    /// reported as [`Picked::Unavailable`].
    fn run<T: Send + 'static>(
        purpose: Purpose,
        reply: Sender<Picked>,
        ctx: egui::Context,
        dialog: impl FnOnce() -> Option<T> + Send + 'static,
        answer: impl FnOnce(T) -> Picked + Send + 'static,
    ) {
        if let Some(why) = system_dialog_missing() {
            unavailable(&reply, &ctx, purpose, why);
            return;
        }
        std::thread::spawn(move || {
            let started = Instant::now();
            match dialog() {
                Some(v) => {
                    let _ = reply.send(answer(v));
                    ctx.request_repaint();
                }
                None if started.elapsed() < TOO_FAST => {
                    unavailable(&reply, &ctx, purpose, "the system file dialog did not open".into());
                }
                None => {}
            }
        });
    }
}

impl Dialogs for NativeDialogs {
    fn pick_images(&self, reply: Sender<Picked>, ctx: egui::Context) {
        let dialog = || {
            rfd::FileDialog::new()
                .set_title("Open images")
                .add_filter("Images", &crate::image::decode::IMAGE_EXTENSIONS)
                .pick_files()
        };
        Self::run(Purpose::Images, reply, ctx, dialog, Picked::Images);
    }

    fn pick_model(&self, reply: Sender<Picked>, ctx: egui::Context) {
        let dialog = || {
            rfd::FileDialog::new()
                .set_title("Open an INTR model")
                .add_filter("INTR checkpoints", &["pth", "pt", "safetensors"])
                .pick_file()
        };
        Self::run(Purpose::Model, reply, ctx, dialog, Picked::Model);
    }

    fn save_figure(&self, suggested: String, format: Format, reply: Sender<Picked>, ctx: egui::Context) {
        let purpose = Purpose::SaveFigure { suggested: suggested.clone(), format };
        let dialog = move || {
            let ext = format.extension();
            rfd::FileDialog::new()
                .set_title("Export figure")
                .set_file_name(suggested)
                .add_filter(ext.to_uppercase(), &[ext])
                .save_file()
        };
        Self::run(purpose, reply, ctx, dialog, Picked::ExportTo);
    }

    fn session_file(&self, purpose: Purpose, reply: Sender<Picked>, ctx: egui::Context) {
        let save = purpose == Purpose::SaveSession;
        let dialog = move || {
            let d = rfd::FileDialog::new().add_filter("INTR Explorer session", &["json"]);
            if save {
                d.set_title("Save session").set_file_name("session.json").save_file()
            } else {
                d.set_title("Open session").pick_file()
            }
        };
        let answer = move |p: PathBuf| if save { Picked::SaveSessionTo(with_json(p)) } else { Picked::OpenSession(p) };
        Self::run(purpose, reply, ctx, dialog, answer);
    }
}

/// `p`, with `.json` added when it has no extension.
fn with_json(mut p: PathBuf) -> PathBuf {
    if p.extension().is_none() {
        p.set_extension("json");
    }
    p
}

/// The built-in file dialog (egui_file), for where the system's cannot open.
pub struct BuiltIn {
    dialog: egui_file::FileDialog,
    purpose: Purpose,
}

impl BuiltIn {
    /// A dialog for `purpose`, starting in `folder`.
    #[must_use]
    pub fn new(purpose: Purpose, folder: &Path) -> Self {
        let mut dialog = match &purpose {
            Purpose::Images => egui_file::FileDialog::open_file()
                .title("Open images")
                .multi_select(true)
                .show_files_filter(Box::new(|p: &Path| crate::image::decode::has_image_extension(p))),
            Purpose::Model => egui_file::FileDialog::open_file()
                .title("Open an INTR model")
                .show_files_filter(Box::new(|p: &Path| super::is_model_path(p))),
            Purpose::SaveFigure { suggested, .. } => {
                egui_file::FileDialog::save_file().title("Export figure").default_filename(suggested.clone())
            }
            Purpose::OpenSession => egui_file::FileDialog::open_file()
                .title("Open session")
                .show_files_filter(Box::new(|p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")))),
            Purpose::SaveSession => {
                egui_file::FileDialog::save_file().title("Save session").default_filename("session.json")
            }
        }
        .initial_path(folder.to_path_buf())
        .id(egui::Id::unique("built-in-file-dialog"));
        dialog.open();
        Self { dialog, purpose }
    }

    /// Shows the dialog; once the user has chosen, the answer; once they have closed it without
    /// choosing, `Some(None)`.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<Option<Picked>> {
        self.dialog.show(ctx);
        match self.dialog.state() {
            egui_file::State::Open => None,
            egui_file::State::Selected => Some(self.answer()),
            egui_file::State::Closed | egui_file::State::Cancelled => Some(None),
        }
    }

    fn answer(&self) -> Option<Picked> {
        match &self.purpose {
            Purpose::Images => {
                let files: Vec<PathBuf> = self.dialog.selection().into_iter().map(Path::to_path_buf).collect();
                (!files.is_empty()).then_some(Picked::Images(files))
            }
            Purpose::Model => self.dialog.path().map(|p| Picked::Model(p.to_path_buf())),
            Purpose::SaveFigure { format, .. } => self.dialog.path().map(|p| {
                let mut p = p.to_path_buf();
                if p.extension().is_none() {
                    p.set_extension(format.extension());
                }
                Picked::ExportTo(p)
            }),
            Purpose::OpenSession => self.dialog.path().map(|p| Picked::OpenSession(p.to_path_buf())),
            Purpose::SaveSession => self.dialog.path().map(|p| Picked::SaveSessionTo(with_json(p.to_path_buf()))),
        }
    }
}
