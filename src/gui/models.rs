//! The Models window: the catalogue of official checkpoints with their size, classes, accuracy and
//! dataset, what is downloaded, downloads in the background (progress, cancel, resume) and *Open*;
//! recent models listed the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

use eframe::egui::{self, RichText};

use super::state::{Command, ExplorerApp};
use crate::hub::{self, HubEnv, catalogue};

/// One download in progress.
pub struct Job {
    done: Arc<AtomicU64>,
    /// 0 until known.
    total: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    result: Receiver<Result<hub::Fetched, String>>,
}

/// The window's state: which catalogue, which cache, what is downloading.
pub struct ModelsState {
    pub show: bool,
    pub env: HubEnv,
    pub catalogue: Vec<hub::Entry>,
    pub jobs: HashMap<String, Job>,
    /// The last outcome per model ("downloaded and verified", or why not).
    pub outcome: HashMap<String, String>,
    /// The class-names field per model (a names file or the dataset's train folder).
    pub names_input: HashMap<String, String>,
}

impl Default for ModelsState {
    fn default() -> Self {
        Self {
            show: false,
            env: HubEnv::from_env(),
            catalogue: catalogue::CATALOGUE.to_vec(),
            jobs: HashMap::new(),
            outcome: HashMap::new(),
            names_input: HashMap::new(),
        }
    }
}

/// What the window shows for one model.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Downloading {
        done: u64,
        total: Option<u64>,
    },
    Downloaded(PathBuf),
    /// Part of it is there from an interrupted download (bytes).
    Partial(u64),
    NotDownloaded,
}

impl ModelsState {
    fn entry(&self, name: &str) -> Option<&hub::Entry> {
        self.catalogue.iter().find(|e| e.name == name)
    }

    /// The status of the model `name`.
    #[must_use]
    pub fn status(&self, e: &hub::Entry) -> Status {
        if let Some(j) = self.jobs.get(e.name) {
            let total = j.total.load(Ordering::Acquire);
            return Status::Downloading { done: j.done.load(Ordering::Acquire), total: (total > 0).then_some(total) };
        }
        if let Some(p) = e.cached(&self.env) {
            return Status::Downloaded(p);
        }
        let part = self.env.cache.partial(e.repo, e.sha256);
        match std::fs::metadata(part) {
            Ok(m) if m.len() > 0 => Status::Partial(m.len()),
            _ => Status::NotDownloaded,
        }
    }

    /// Starts downloading `name` on a helper thread (resuming what is there).
    pub fn start(&mut self, name: &str, ctx: &egui::Context) {
        let Some(e) = self.entry(name).copied() else { return };
        if self.jobs.contains_key(e.name) {
            return;
        }
        let (done, total, cancel) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (tx, rx) = std::sync::mpsc::channel();
        let (d, t, c, env, ctx) =
            (Arc::clone(&done), Arc::clone(&total), Arc::clone(&cancel), self.env.clone(), ctx.clone());
        let spawned = std::thread::Builder::new().name(format!("download-{}", e.name)).spawn(move || {
            let progress = |now: u64, of: Option<u64>| {
                d.store(now, Ordering::Release);
                if let Some(of) = of {
                    t.store(of, Ordering::Release);
                }
                ctx.request_repaint();
            };
            let r = super::worker::guarded("downloading", || e.fetch(&env, &progress, &c).map_err(|e| e.to_string()));
            let _ = tx.send(r);
            ctx.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.outcome.remove(e.name);
                self.jobs.insert(e.name.to_string(), Job { done, total, cancel, result: rx });
            }
            Err(err) => {
                self.outcome.insert(e.name.to_string(), format!("cannot start the download: {err}"));
            }
        }
    }

    /// Checks `list` against the model `name` (it must read as one name per class) and remembers it.
    pub fn use_names(&mut self, name: &str, list: &std::path::Path) -> Result<(), String> {
        let e = self.entry(name).copied().ok_or_else(|| format!("no model `{name}`"))?;
        let names = crate::session::classes::load(list).map_err(|err| err.to_string())?;
        crate::session::classes::check_count(list, &names, e.classes).map_err(|err| err.to_string())?;
        hub::names::remember(e.sha256, list);
        self.outcome.insert(e.name.to_string(), format!("class names checked: {} names, one per class", names.len()));
        Ok(())
    }

    /// Asks the download of `name` to stop (what it has is kept for the next one).
    pub fn cancel(&self, name: &str) {
        if let Some(j) = self.jobs.get(name) {
            j.cancel.store(true, Ordering::Release);
        }
    }

    /// Collects finished downloads; returns whether any is still running.
    pub fn poll(&mut self) -> bool {
        let mut finished = Vec::new();
        for (name, j) in &self.jobs {
            match j.result.try_recv() {
                Ok(Ok(f)) => finished.push((name.clone(), format!("downloaded and verified: {}", f.path.display()))),
                Ok(Err(e)) => finished.push((name.clone(), e)),
                Err(TryRecvError::Disconnected) => finished.push((name.clone(), "the download stopped".into())),
                Err(TryRecvError::Empty) => {}
            }
        }
        for (name, what) in finished {
            self.jobs.remove(&name);
            self.outcome.insert(name, what);
        }
        !self.jobs.is_empty()
    }
}

/// Where a model's class names ship nowhere: the list in use, or a field to give one (a names file
/// or the dataset's train folder), remembered for the model.
fn names_row(ui: &mut egui::Ui, m: &ModelsState, e: &hub::Entry, cmds: &mut Vec<Command>) {
    if let Some(list) = hub::names::remembered(e.sha256) {
        ui.horizontal(|ui| {
            ui.label(RichText::new(format!("class names from {}", list.display())).small());
            if ui.small_button("Change…").on_hover_text("give another names file or dataset folder").clicked() {
                cmds.push(Command::NamesInput(e.name.to_string(), list.display().to_string()));
            }
        });
        if !m.names_input.contains_key(e.name) {
            return;
        }
    } else {
        ui.label(RichText::new("classes are numbered until you give their names:").small())
            .on_hover_text(e.names_hint());
        ui.label(
            RichText::new(
                "a text file with one name per line, in the dataset's sorted class-folder order, or the dataset's \
                 train folder itself",
            )
            .small()
            .weak(),
        );
    }
    ui.horizontal(|ui| {
        let mut text = m.names_input.get(e.name).cloned().unwrap_or_default();
        let edit = egui::TextEdit::singleline(&mut text).hint_text("names file or the dataset's train folder");
        let field = ui.add(edit.desired_width(260.0));
        if field.changed() {
            cmds.push(Command::NamesInput(e.name.to_string(), text.clone()));
        }
        let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.add_enabled(!text.trim().is_empty(), egui::Button::new("Use")).clicked()
            || (entered && !text.trim().is_empty())
        {
            cmds.push(Command::UseNames(e.name.to_string(), PathBuf::from(text.trim())));
        }
    });
}

/// The last outcome of a model's row: news in plain text, a failure in the error colour (with what
/// to check when the Hub could not be reached).
fn outcome_label(ui: &mut egui::Ui, o: &str) {
    let ok = o.starts_with("downloaded") || o.starts_with("class names");
    if ok {
        ui.label(RichText::new(o).small());
        return;
    }
    ui.colored_label(ui.visuals().error_fg_color, RichText::new(format!("(!) {o}")).small());
    if o.contains("no answer from") || o.contains("failed to lookup") || o.contains("Connection refused") {
        ui.label(
            RichText::new(
                "the Hub could not be reached: check the internet connection (or HF_ENDPOINT), then press Download \
                 again",
            )
            .small(),
        );
    }
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

/// The Models window.
pub fn models_window(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    let m = &app.models;
    let mut open = true;
    egui::Window::new("Models").open(&mut open).resizable(true).default_width(760.0).show(ctx, |ui| {
        ui.label(format!(
            "The official INTR checkpoints ({}). Downloads go to the Hugging Face cache, {}, shared with \
             Python tools; an interrupted one resumes, and each is checked (size and SHA-256) before use.",
            catalogue::OFFICIAL_REPO,
            m.env.cache.root.display()
        ));
        if m.env.offline {
            ui.colored_label(ui.visuals().warn_fg_color, "HF_HUB_OFFLINE is set: only what is in the cache opens.");
        }
        ui.add_space(4.0);
        egui::Grid::new("catalogue").striped(true).num_columns(6).spacing([12.0, 6.0]).show(ui, |ui| {
            for h in ["Model", "Classes", "Top-1 / top-5", "Size", "Trained on", ""] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for e in &m.catalogue {
                ui.label(RichText::new(e.name).strong()).on_hover_text(format!("{} in {}", e.file, e.repo));
                ui.label(e.classes.to_string()).on_hover_text(e.names_hint());
                ui.label(format!("{:.1} % / {:.1} %", e.acc1, e.acc5));
                ui.label(mb(e.bytes));
                ui.hyperlink_to(e.dataset, e.dataset_url);
                ui.vertical(|ui| {
                    match m.status(e) {
                        Status::Downloading { done, total } => {
                            ui.horizontal(|ui| {
                                let frac = total.map_or(0.0, |t| done as f32 / t.max(1) as f32);
                                let text = match total {
                                    Some(t) => format!("{} of {}", mb(done), mb(t)),
                                    None => mb(done),
                                };
                                ui.add(egui::ProgressBar::new(frac).desired_width(180.0).text(text));
                                if ui.button("Cancel").clicked() {
                                    cmds.push(Command::CancelDownload(e.name.to_string()));
                                }
                            });
                        }
                        Status::Downloaded(path) => {
                            ui.horizontal(|ui| {
                                ui.label("downloaded").on_hover_text(path.display().to_string());
                                if ui.button("Open").clicked() {
                                    cmds.push(Command::LoadModel(path.clone()));
                                    cmds.push(Command::ShowModels(false));
                                }
                            });
                        }
                        Status::Partial(have) => {
                            if ui.button(format!("Resume download ({} of {} there)", mb(have), mb(e.bytes))).clicked() {
                                cmds.push(Command::Download(e.name.to_string()));
                            }
                        }
                        Status::NotDownloaded => {
                            if ui.add_enabled(!m.env.offline, egui::Button::new("Download")).clicked() {
                                cmds.push(Command::Download(e.name.to_string()));
                            }
                        }
                    }
                    if let Some(o) = m.outcome.get(e.name) {
                        outcome_label(ui, o);
                    }
                    if matches!(e.names, catalogue::ClassNames::DatasetFolders) {
                        names_row(ui, m, e, cmds);
                    }
                });
                ui.end_row();
            }
        });
        ui.separator();
        ui.label(RichText::new("Recent models").strong());
        if app.recent_models.is_empty() {
            ui.label(RichText::new("none yet: Open model… opens any .pth or .safetensors").weak());
        }
        for p in &app.recent_models {
            ui.horizontal(|ui| {
                let exists = p.exists();
                ui.label(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
                    .on_hover_text(p.display().to_string());
                if !exists {
                    ui.label(RichText::new("(missing)").weak());
                }
                if ui.add_enabled(exists, egui::Button::new("Open")).clicked() {
                    cmds.push(Command::LoadModel(p.clone()));
                    cmds.push(Command::ShowModels(false));
                }
            });
        }
    });
    if !open {
        cmds.push(Command::ShowModels(false));
    }
}
