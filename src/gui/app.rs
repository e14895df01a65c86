//! The explorer as an eframe app: it applies the [`Command`]s the panels ([`super::panels`]) return,
//! after layout, and drains worker responses, dialog answers and dropped files each frame.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::dialogs::{BuiltIn, Dialogs, Picked, Purpose};
use super::export::{self, ExportJob};
use super::gpu::callback::OverlayResources;
use super::gpu::pipeline::AtlasLayout;
use super::paper_cache::{PaperCache, PaperJob};
use super::state::{
    Banner, Cause, Command, ContrastScene, ExplorerApp, GPU_SCENES, ImageEntry, Persisted, RECENT, STORAGE_KEY, Start,
    ViewState,
};
use super::worker::{Analysis, FocusRequest, Request, Response, Worker};
use crate::image::preprocess::PreprocessOptions;
use crate::session::saved::{self, SavedSession};
use crate::session::{ModelSpec, inputs};

/// The GPU scene key of the comparison's contrast (one at a time; analyses count up from 1).
pub const CONTRAST_SCENE: u64 = u64::MAX;

/// Most photos on the window's specimen sheet (each needs its scene on the GPU).
pub const SHEET_PHOTOS: usize = 12;

impl ExplorerApp {
    /// Creates the app; loads `model` (or nothing: the window then says how to open one) and `images`.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        dialogs: Box<dyn Dialogs>,
        model: Option<PathBuf>,
        images: Vec<PathBuf>,
    ) -> Self {
        Self::with_start(
            cc,
            dialogs,
            Start {
                model: model.map(|p| ModelSpec { path: Some(p), ..Default::default() }),
                images,
                focus: FocusRequest::default(),
                session: None,
            },
        )
    }

    /// Creates the app on what the command line asked for.
    pub fn with_start(cc: &eframe::CreationContext<'_>, dialogs: Box<dyn Dialogs>, start: Start) -> Self {
        let persisted: Persisted = cc.storage.and_then(|s| eframe::get_value(s, STORAGE_KEY)).unwrap_or_default();
        let ctx = cc.egui_ctx.clone();
        let waker = ctx.clone();
        let worker = match Worker::spawn(move || waker.request_repaint()) {
            Ok(w) => w,
            Err(e) => panic!("cannot start the inference thread: {e}"),
        };
        let waker = ctx.clone();
        let paper = match PaperCache::spawn(move || waker.request_repaint()) {
            Ok(p) => p,
            Err(e) => panic!("cannot start the overlay render thread: {e}"),
        };
        let gpu = cc.wgpu_render_state.clone();
        if let Some(rs) = &gpu {
            OverlayResources::install(rs);
        }
        let (picked_tx, picked_rx) = std::sync::mpsc::channel();
        let (export_tx, export_rx) = std::sync::mpsc::channel();
        let (thumbs_tx, thumbs_rx) = std::sync::mpsc::channel();
        let mut app = Self {
            worker,
            dialogs,
            picked_tx,
            picked_rx,
            model: None,
            model_loading: None,
            images: Vec::new(),
            selected: 0,
            view: ViewState::default(),
            display: persisted.display,
            recent_models: persisted.recent_models,
            errors: Vec::new(),
            busy: None,
            head_names: Default::default(),
            session_status: None,
            pending_session: None,
            thumbs_tx,
            thumbs_rx,
            thumbs_pending: Arc::default(),
            rankings: std::collections::HashMap::new(),
            rankings_asked: std::collections::HashSet::new(),
            contrast: None,
            parts: Default::default(),
            paper,
            export: persisted.export,
            models: super::models::ModelsState::default(),
            export_status: None,
            export_tx,
            export_rx,
            next_id: 1,
            first_after_load: 1,
            built_in: None,
            dialog_notice_given: false,
            gpu,
            ctx,
        };
        if let Some(session) = start.session {
            app.apply(Command::OpenSession(session));
            return app;
        }
        if let Some(spec) = start.model {
            app.load(spec, start.focus);
        }
        if !start.images.is_empty() {
            app.apply(Command::OpenImages(start.images));
        }
        app
    }

    /// Adds a finished analysis as if the worker had produced it (tests, demos).
    pub fn inject(&mut self, analysis: Analysis) {
        let path = analysis.image_path.clone();
        let idx = match self.images.iter().position(|e| e.path == path) {
            Some(i) => i,
            None => {
                self.images.push(ImageEntry { path, analysis: None, error: None, pending: None, thumbnail: None });
                self.images.len() - 1
            }
        };
        self.next_id = self.next_id.max(analysis.id + 1);
        self.accept(idx, analysis);
        self.selected = idx;
    }

    fn accept(&mut self, idx: usize, a: Analysis) {
        let a = Arc::new(a);
        if let Some(old) = self.images[idx].analysis.take() {
            self.release(&old);
        }
        self.upload(&a);
        let thumb = thumbnail(&self.ctx, &a);
        let entry = &mut self.images[idx];
        entry.thumbnail = Some(thumb);
        entry.analysis = Some(Arc::clone(&a));
        entry.error = None;
        entry.pending = None;
        if idx == self.selected {
            self.reset_view_for(&a);
        }
    }

    fn reset_view_for(&mut self, a: &Analysis) {
        let ranking = a.output.ranking();
        let focus = self.model.as_ref().map(|m| m.focus).unwrap_or_default();
        let fits = |i: Option<usize>, n: usize| i.filter(|&i| i < n);
        self.view.class = fits(focus.class, a.output.classes).or(ranking.first().copied()).unwrap_or(0);
        self.view.layer = fits(focus.layer, a.output.layers).unwrap_or(a.output.layers.saturating_sub(1));
        self.view.head = fits(focus.head, a.output.heads);
        self.view.compare.retain(|&c| c < a.output.classes);
    }

    /// Frees what was drawn for an analysis that no photo shows any more: its GPU scene and its
    /// paper-style textures (a closed 12-megapixel photo would otherwise hold ~50 MB until evicted).
    fn release(&mut self, a: &Analysis) {
        if self.images.iter().any(|e| e.analysis.as_ref().is_some_and(|b| b.id == a.id)) {
            return;
        }
        if let Some(rs) = &self.gpu {
            OverlayResources::release(rs, a.id);
        }
        self.paper.forget(a.id);
        if self.contrast.is_some_and(|c| c.analysis == a.id) {
            self.drop_contrast();
        }
        self.rankings.retain(|k, _| k.0 != a.id);
        self.rankings_asked.retain(|k| k.0 != a.id);
    }

    /// The exact view, as a session file holds it.
    #[must_use]
    pub fn saved_session(&self) -> SavedSession {
        let m = self.model.as_ref();
        let name = |c: usize| m.and_then(|m| m.class_names.get(c).cloned());
        let layers = m.map_or(1, |m| m.config.dec_layers);
        SavedSession {
            version: saved::VERSION,
            model: m.filter(|m| !m.demo).map(|m| m.path.clone()),
            classes: m.and_then(|m| m.spec.classes.clone()),
            photos: self.images.iter().map(|e| e.path.clone()).collect(),
            selected: self.selected,
            class: name(self.view.class),
            // The last layer is saved as "the last" (`None`), whatever the model's depth.
            layer: (self.view.layer + 1 < layers).then_some(self.view.layer + 1),
            head: self.view.head.map(|h| h + 1),
            compare: self.view.compare.iter().filter_map(|&c| name(c)).collect(),
            show_compare: self.view.show_compare,
            contrast: self.view.contrast,
            gallery_by_rank: self.view.gallery_by_rank,
            look: self.display,
            head_names: self.head_names.clone(),
        }
    }

    /// Opens a saved session: its model (with the class, layer and head to show), its photos and
    /// look at once; the comparison, the photo shown and the head names once the model is there. A
    /// missing model, class list or photo is reported, and the rest opens.
    fn open_session(&mut self, path: &std::path::Path) {
        let s = match SavedSession::read(path) {
            Ok(s) => s,
            Err(e) => return self.report(e.to_string(), Cause::Other),
        };
        let missing = |what: &str, p: &std::path::Path| {
            format!("{}: its {what} {} is not there; the rest of the session opens", path.display(), p.display())
        };
        let mut notes = Vec::new();
        let classes = s.classes.clone().filter(|c| {
            let there = c.exists();
            if !there {
                notes.push(missing("class list", c));
            }
            there
        });
        match &s.model {
            Some(m) if !m.exists() => notes.push(missing("model", m)),
            model => {
                let spec = ModelSpec { path: model.clone(), classes, ..Default::default() };
                let focus = FocusRequest { class: s.class.clone(), head: s.head, layer: s.layer };
                self.load(spec, focus);
            }
        }
        self.display = s.look;
        // The session's photos replace the open ones.
        for i in (0..self.images.len()).rev() {
            let closed = self.images.remove(i);
            if let Some(a) = &closed.analysis {
                self.release(a);
            }
        }
        self.errors.retain(|b| !matches!(b.cause, Cause::Image(_)));
        self.selected = 0;
        let there: Vec<PathBuf> = s.photos.iter().filter(|p| p.exists()).cloned().collect();
        for p in s.photos.iter().filter(|p| !p.exists()) {
            notes.push(missing("photo", p));
        }
        if !there.is_empty() {
            self.apply(Command::OpenImages(there));
        }
        if let Some(i) = s.photos.get(s.selected).and_then(|p| self.images.iter().position(|e| &e.path == p)) {
            self.apply(Command::SelectImage(i));
        }
        for n in notes {
            self.report(n, Cause::Other);
        }
        self.session_status = Some(format!("opened session {}", path.display()));
        self.pending_session = Some(s);
    }

    /// What of a session being opened needs the model's classes: applied once it is there.
    fn finish_session(&mut self) {
        let (Some(s), Some(m)) = (self.pending_session.take(), &self.model) else { return };
        let index = |n: &String| m.class_names.iter().position(|c| c == n);
        self.view.compare = s.compare.iter().filter_map(index).collect();
        self.view.show_compare = s.show_compare && self.view.compare.len() >= 2;
        self.view.contrast = s.contrast;
        self.view.gallery_by_rank = s.gallery_by_rank;
        if !s.head_names.is_empty() && s.head_names != self.head_names {
            self.head_names = s.head_names;
            if let Some(sha) = &m.sha256 {
                let _ = crate::session::head_names::Store::default().save(sha, &self.head_names);
            }
        }
    }

    /// Names a head of the open model and keeps the names for it.
    fn name_head(&mut self, class: Option<usize>, head: usize, name: &str) {
        let Some(m) = &self.model else { return };
        if head >= m.config.nheads {
            return;
        }
        let class_name = class.and_then(|c| m.class_names.get(c).cloned());
        self.head_names.set(class_name.as_deref(), head, name);
        self.keep_head_names();
    }

    /// Keeps the head names for the open model (and says so when they cannot be kept).
    fn keep_head_names(&mut self) {
        let Some(m) = &self.model else { return };
        let saved = match &m.sha256 {
            Some(sha) => {
                crate::session::head_names::Store::default().save(sha, &self.head_names).map_err(|e| e.to_string())
            }
            None => Err(format!("{}: the model file could not be read to keep head names for it", m.path.display())),
        };
        if let Err(e) = saved {
            self.report(format!("the head name is used now but not kept: {e}"), Cause::Other);
        }
    }

    /// Asks the worker to rank the viewed class's heads for the current photo, once per (photo,
    /// class); a full queue is tried again next frame.
    fn ask_ranking(&mut self) {
        let Some(a) = self.current() else { return };
        let key = (a.id, self.view.class);
        if a.last_layer.is_none() || self.rankings.contains_key(&key) || self.rankings_asked.contains(&key) {
            return;
        }
        let req = Request::RankHeads { analysis: Arc::clone(a), class: self.view.class };
        if self.worker.send(req).is_ok() {
            self.rankings_asked.insert(key);
        }
    }

    /// The classes the comparison contrasts (first minus second), when it is asked to.
    #[must_use]
    pub fn contrast_pair(&self) -> Option<(usize, usize)> {
        let c = &self.view.compare;
        (self.view.show_compare && self.view.contrast && c.len() >= 2).then(|| (c[0], c[1]))
    }

    /// The contrast scene on the GPU for the current photo, its pair and layer, if drawn.
    #[must_use]
    pub fn contrast_scene(&self) -> Option<ContrastScene> {
        let a = self.current()?;
        let pair = self.contrast_pair()?;
        let layer = self.view.layer.min(a.output.layers.saturating_sub(1));
        self.contrast.filter(|c| c.analysis == a.id && c.pair == pair && c.layer == layer)
    }

    /// Puts the contrast the comparison shows on the GPU (its heads and mean), replacing the one
    /// there; frees it when none is shown.
    fn sync_contrast(&mut self) {
        let Some(a) = self.current().cloned() else {
            self.drop_contrast();
            return;
        };
        let Some(pair) = self.contrast_pair() else {
            self.drop_contrast();
            return;
        };
        let o = &a.output;
        let layer = self.view.layer.min(o.layers.saturating_sub(1));
        if pair.0 >= o.classes || pair.1 >= o.classes || self.contrast_scene().is_some() {
            return;
        }
        let heads: Vec<Option<usize>> = (0..o.heads).map(Some).chain([None]).collect();
        let maps: Vec<Vec<f32>> =
            heads.iter().map(|&h| crate::figure::compose::contrast_map(o, layer, pair, h)).collect();
        let range = crate::figure::compose::contrast_range(maps.iter().map(Vec::as_slice));
        let (gh, gw) = o.grid;
        if let (Some(rs), Some(atlas)) = (&self.gpu, AtlasLayout::new(heads.len(), gw as u32, gh as u32)) {
            let rgba: Vec<u8> = a.image.data.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
            let flat: Vec<f32> = maps.concat();
            OverlayResources::upload(
                rs,
                CONTRAST_SCENE,
                &rgba,
                (a.image.width as u32, a.image.height as u32),
                atlas,
                &flat,
                GPU_SCENES + 1,
            );
        }
        self.contrast = Some(ContrastScene { analysis: a.id, pair, layer, range });
    }

    /// The specimen sheet's photos: the strip's analysed photos not left out, at most
    /// [`SHEET_PHOTOS`] (their scenes must all fit on the GPU).
    #[must_use]
    pub fn sheet_photos(&self) -> Vec<Arc<Analysis>> {
        self.images
            .iter()
            .filter(|e| !self.view.sheet_left_out.contains(&e.path))
            .filter_map(|e| e.analysis.clone())
            .take(SHEET_PHOTOS)
            .collect()
    }

    /// Puts back on the GPU the scenes of the sheet's photos that were evicted.
    fn sync_sheet(&mut self) {
        if !self.view.show_sheet {
            return;
        }
        let Some(rs) = &self.gpu else { return };
        let missing: Vec<Arc<Analysis>> =
            self.sheet_photos().into_iter().filter(|a| !OverlayResources::has(rs, a.id)).collect();
        for a in missing {
            self.upload(&a);
        }
    }

    fn drop_contrast(&mut self) {
        if self.contrast.take().is_some()
            && let Some(rs) = &self.gpu
        {
            OverlayResources::release(rs, CONTRAST_SCENE);
        }
    }

    /// How many overlay scenes are on the GPU and paper-style textures kept (tests).
    #[must_use]
    pub fn drawn_caches(&self) -> (usize, usize) {
        (self.gpu.as_ref().map_or(0, OverlayResources::scene_count), self.paper.len())
    }

    /// Uploads the photo and every map (+ the head means) of an analysis to the GPU once.
    fn upload(&self, a: &Analysis) {
        let Some(rs) = &self.gpu else { return };
        let o = &a.output;
        let (gh, gw) = o.grid;
        let Some(atlas) = Self::atlas_layout(o) else { return };
        let mut maps = Vec::with_capacity(atlas.count * gw * gh);
        for l in 0..o.layers {
            for c in 0..o.classes {
                for h in 0..o.heads {
                    maps.extend_from_slice(o.map(l, h, c));
                }
                maps.extend(o.head_mean(l, c));
            }
        }
        let rgba: Vec<u8> = a.image.data.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        OverlayResources::upload(
            rs,
            a.id,
            &rgba,
            (a.image.width as u32, a.image.height as u32),
            atlas,
            &maps,
            GPU_SCENES,
        );
    }

    /// Applies one command.
    pub fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::ShowModels(show) => self.models.show = show,
            Command::Download(name) => self.models.start(&name, &self.ctx),
            Command::CancelDownload(name) => self.models.cancel(&name),
            Command::NamesInput(name, text) => {
                self.models.names_input.insert(name, text);
            }
            Command::UseNames(name, list) => match self.models.use_names(&name, &list) {
                Ok(()) => {
                    self.models.names_input.remove(&name);
                    // The open model is that one: open it again with its names.
                    let file = self.models.catalogue.iter().find(|e| e.name == name).map(|e| e.file);
                    if let Some(m) = &self.model
                        && file.is_some_and(|f| m.path.file_name().is_some_and(|n| n == f))
                    {
                        let spec = ModelSpec { path: Some(m.path.clone()), classes: Some(list), ..Default::default() };
                        self.load(spec, FocusRequest::default());
                    }
                }
                Err(e) => self.report(e, Cause::Other),
            },
            Command::OpenImagesDialog => self.dialogs.pick_images(self.picked_tx.clone(), self.ctx.clone()),
            Command::OpenModelDialog => self.dialogs.pick_model(self.picked_tx.clone(), self.ctx.clone()),
            Command::LoadModel(path) => {
                self.load(ModelSpec { path: Some(path), ..Default::default() }, FocusRequest::default())
            }
            Command::OpenImages(paths) => {
                let first_new = self.images.len();
                let files = match inputs::expand_nonempty(&paths) {
                    Ok(f) => f,
                    Err(e) => {
                        self.report(e.to_string(), Cause::Other);
                        return;
                    }
                };
                let mut added = Vec::new();
                for p in files {
                    if !self.images.iter().any(|e| e.path == p) {
                        added.push(p.clone());
                        self.images.push(ImageEntry {
                            path: p,
                            analysis: None,
                            error: None,
                            pending: None,
                            thumbnail: None,
                        });
                    }
                }
                if !added.is_empty() {
                    spawn_thumbnails(added, self.thumbs_tx.clone(), Arc::clone(&self.thumbs_pending), self.ctx.clone());
                }
                if self.images.len() > first_new {
                    self.apply(Command::SelectImage(first_new));
                }
            }
            Command::SelectImage(i) if i < self.images.len() => {
                self.selected = i;
                self.view.zoom = 1.0;
                self.view.pan = egui::Vec2::ZERO;
                match self.images[i].analysis.clone() {
                    Some(a) => self.reset_view_for(&a),
                    None => self.analyze(i),
                }
            }
            Command::SelectImage(_) => {}
            Command::CloseImage(i) if i < self.images.len() => {
                let closed = self.images.remove(i);
                if let Some(a) = &closed.analysis {
                    self.release(a);
                }
                self.errors.retain(|b| b.cause != Cause::Image(closed.path.clone()));
                if i < self.selected {
                    // The photo shown stays shown.
                    self.selected -= 1;
                } else if i == self.selected && !self.images.is_empty() {
                    // The next photo (or the last) is shown, and analysed if it is not yet.
                    self.apply(Command::SelectImage(i.min(self.images.len() - 1)));
                }
            }
            Command::CloseImage(_) => {}
            Command::SelectClass(c) => self.view.class = c,
            Command::GalleryByRank(on) => self.view.gallery_by_rank = on,
            Command::NameHead { class, head, name } => self.name_head(class, head, &name),
            Command::SaveSessionDialog => {
                self.dialogs.session_file(Purpose::SaveSession, self.picked_tx.clone(), self.ctx.clone());
            }
            Command::OpenSessionDialog => {
                self.dialogs.session_file(Purpose::OpenSession, self.picked_tx.clone(), self.ctx.clone());
            }
            Command::SaveSessionTo(path) => match self.saved_session().write(&path) {
                Ok(()) => self.session_status = Some(format!("saved session {}", path.display())),
                Err(e) => self.report(e.to_string(), Cause::Other),
            },
            Command::OpenSession(path) => self.open_session(&path),
            Command::ToggleCompare(c) => {
                if let Some(pos) = self.view.compare.iter().position(|&x| x == c) {
                    self.view.compare.remove(pos);
                } else {
                    self.view.compare.push(c);
                    self.view.show_compare = self.view.compare.len() >= 2;
                }
            }
            Command::SelectHead(h) => self.view.head = h,
            Command::SelectLayer(l) => self.view.layer = l,
            Command::Display(d) => self.display = d,
            Command::ShowCompare(b) => self.view.show_compare = b,
            Command::ShowContrast(on) => {
                self.view.contrast = on;
                // With fewer than two classes: the top class and its closest look-alike.
                if on
                    && self.view.compare.len() < 2
                    && let Some(a) = self.current()
                {
                    let ranking = a.output.ranking();
                    let first = self.view.compare.first().copied().or(ranking.first().copied());
                    if let Some(first) = first {
                        let second = ranking.iter().copied().find(|&c| c != first);
                        self.view.compare = std::iter::once(first).chain(second).collect();
                    }
                }
            }
            Command::ShowSheet(on) => self.view.show_sheet = on,
            Command::ShowParts(on) => self.parts.show = on,
            Command::PartsInput(text) => self.parts.input = text,
            Command::ScoreParts(dir) => match self.worker.send(Request::ScoreParts { dir }) {
                Ok(()) => {
                    self.parts.running = Some((0, 0));
                    self.parts.report = None;
                    self.parts.taken = None;
                }
                Err(e) => self.parts.report = Some(Err(e)),
            },
            Command::StopParts => self.worker.stop_parts(),
            Command::TakePartNames => {
                let Some(Ok(report)) = self.parts.report.clone() else { return };
                let changes = report.take_names(&mut self.head_names);
                self.keep_head_names();
                self.parts.taken = Some(if changes.is_empty() {
                    "the heads already had these names".to_string()
                } else {
                    format!("named for every class: {}", changes.join(", "))
                });
            }
            Command::SheetPhoto(path, on) => {
                self.view.sheet_left_out.retain(|p| *p != path);
                if !on {
                    self.view.sheet_left_out.push(path);
                }
            }
            Command::SwapContrast => {
                if self.view.compare.len() >= 2 {
                    self.view.compare.swap(0, 1);
                }
            }
            Command::ShowOverlay(b) => self.view.overlay = b,
            Command::ShowHelp(b) => self.view.show_help = b,
            Command::Search(s) => self.view.search = s,
            Command::ViewTransform { zoom, pan } => {
                self.view.zoom = zoom.clamp(1.0, 32.0);
                self.view.pan = pan;
            }
            Command::RenderPaper(key) => {
                let found = self.images.iter().filter_map(|e| e.analysis.as_ref()).find(|a| a.id == key.analysis);
                if let Some(a) = found {
                    let (gh, gw) = a.output.grid;
                    let map = a.output.map_values(key.layer, key.class, key.head);
                    let image = (a.image.width, a.image.height);
                    self.paper.request(PaperJob { key, map, grid: (gw, gh), image });
                }
            }
            Command::Cancel => {
                if let Some((id, _)) = self.busy.take() {
                    self.worker.cancel(id);
                    for e in &mut self.images {
                        if e.pending.is_some_and(|p| p <= id) {
                            e.pending = None;
                            e.error = Some("analysis cancelled".into());
                        }
                    }
                }
            }
            Command::DismissError(i) if i < self.errors.len() => {
                self.errors.remove(i);
            }
            Command::DismissError(_) => {}
            Command::ShowExport(b) => self.view.show_export = b,
            Command::ExportSettings(e) => self.export = e,
            Command::ExportDialog => {
                let name = export::suggested_name(self);
                self.dialogs.save_figure(name, self.export.format, self.picked_tx.clone(), self.ctx.clone());
            }
            Command::ExportTo(path) => match ExportJob::from_app(self, path) {
                Ok(job) => {
                    self.export_status = Some(format!("exporting {}…", job.out.display()));
                    export::spawn_export(job, self.export_tx.clone(), self.ctx.clone());
                }
                Err(e) => self.export_status = Some(e),
            },
        }
    }

    /// Asks the worker to open `spec` and check `focus` (the start view) against it.
    fn load(&mut self, spec: ModelSpec, focus: FocusRequest) {
        let shown = spec.model_path().unwrap_or_default();
        match self.worker.send(Request::LoadModel { spec, focus }) {
            Ok(()) => {
                self.model_loading = Some(shown);
                self.first_after_load = self.next_id;
            }
            Err(e) => self.report(e, Cause::Model),
        }
    }

    /// Acts on a dialog's answer; where the system's dialog could not open, opens the built-in one
    /// (in the current photo's folder, else the working folder) and says why, once.
    fn picked(&mut self, p: Picked) {
        match p {
            Picked::Images(v) => self.apply(Command::OpenImages(v)),
            Picked::Model(m) => self.apply(Command::LoadModel(m)),
            Picked::ExportTo(p) => self.apply(Command::ExportTo(p)),
            Picked::OpenSession(p) => self.apply(Command::OpenSession(p)),
            Picked::SaveSessionTo(p) => self.apply(Command::SaveSessionTo(p)),
            Picked::Unavailable { purpose, why } => {
                if !self.dialog_notice_given {
                    self.dialog_notice_given = true;
                    self.report(format!("no system file dialog here ({why}): using the built-in one"), Cause::Other);
                }
                // An absolute folder, so that the dialog can go up from it.
                let folder = self
                    .images
                    .get(self.selected)
                    .and_then(|e| e.path.parent().map(std::path::Path::to_path_buf))
                    .filter(|d| d.is_dir())
                    .or_else(|| std::env::current_dir().ok())
                    .map(|d| d.canonicalize().unwrap_or(d))
                    .unwrap_or_default();
                self.built_in = Some(BuiltIn::new(purpose, &folder));
            }
        }
    }

    /// Shows the built-in file dialog while it is open and acts on its answer.
    fn built_in_ui(&mut self, ctx: &egui::Context) {
        let Some(dialog) = self.built_in.as_mut() else { return };
        if let Some(answer) = dialog.show(ctx) {
            self.built_in = None;
            if let Some(p) = answer {
                self.picked(p);
            }
        }
    }

    /// Shows `text` over the view, once: a message already shown is not repeated.
    fn report(&mut self, text: String, cause: Cause) {
        if !self.errors.iter().any(|b| b.text == text) {
            self.errors.push(Banner { text, cause });
        }
    }

    fn analyze(&mut self, i: usize) {
        if self.model.is_none() && self.model_loading.is_none() {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let image = self.images[i].path.clone();
        match self.worker.send(Request::Analyze { id, image, options: PreprocessOptions::default() }) {
            Ok(()) => {
                // Every older request is stale now (the worker skips it): those photos are no
                // longer being analysed, and will be when shown again.
                for e in &mut self.images {
                    e.pending = None;
                }
                self.images[i].pending = Some(id);
                self.images[i].error = None;
                self.busy = Some((id, "queued"));
            }
            Err(e) => self.report(e, Cause::Other),
        }
    }

    /// Drains worker responses, dialog answers and dropped files.
    fn poll(&mut self, ctx: &egui::Context) {
        for e in self.paper.poll(ctx) {
            self.report(e, Cause::Other);
        }
        while let Some(r) = self.worker.try_recv() {
            match r {
                Response::ModelLoaded(info) => {
                    self.model_loading = None;
                    // "loading model" is over (with no photo to analyse it used to spin forever).
                    if self.busy.is_some_and(|(id, _)| id == 0) {
                        self.busy = None;
                    }
                    self.errors.retain(|b| b.cause != Cause::Model);
                    for e in &info.focus_errors {
                        self.report(e.clone(), Cause::Other);
                    }
                    self.recent_models.retain(|p| p != &info.path);
                    self.recent_models.insert(0, info.path.clone());
                    self.recent_models.truncate(RECENT);
                    self.head_names = info
                        .sha256
                        .as_deref()
                        .map(|sha| crate::session::head_names::Store::default().load(sha))
                        .unwrap_or_default();
                    self.model = Some(*info);
                    // Another model has other classes: the comparison's were the old model's.
                    self.view.compare.clear();
                    self.view.show_compare = false;
                    // A new model invalidates every result, and every request sent before it; a
                    // request sent after it runs on it already.
                    let after = self.first_after_load;
                    let old: Vec<Arc<Analysis>> = self.images.iter_mut().filter_map(|e| e.analysis.take()).collect();
                    for a in &old {
                        self.release(a);
                    }
                    for e in &mut self.images {
                        if e.pending.is_none_or(|p| p < after) {
                            e.pending = None;
                            e.error = None;
                        }
                    }
                    let selected = self.images.get(self.selected);
                    if selected.is_some_and(|e| e.pending.is_none()) {
                        self.analyze(self.selected);
                    }
                    self.finish_session();
                }
                Response::Progress { id, stage } => {
                    if id == 0 || self.images.iter().any(|e| e.pending == Some(id)) {
                        self.busy = Some((id, stage));
                    }
                }
                Response::Done(a) => {
                    if let Some(i) = self.images.iter().position(|e| e.pending == Some(a.id)) {
                        let path = self.images[i].path.clone();
                        self.errors.retain(|b| b.cause != Cause::Image(path.clone()));
                        self.accept(i, *a);
                    }
                    self.busy = None;
                }
                Response::PartsProgress { done, total } => self.parts.running = Some((done, total)),
                Response::Parts { report } => {
                    self.parts.running = None;
                    // The scoring's own messages name the file at fault; a stop says where it stopped.
                    self.parts.report = Some(report.map(Arc::from));
                }
                Response::Ranked { id, class, ranking } => {
                    // Kept only while the photo it was asked for is open with that analysis.
                    if self.rankings_asked.remove(&(id, class))
                        && self.images.iter().any(|e| e.analysis.as_ref().is_some_and(|a| a.id == id))
                    {
                        self.rankings.insert((id, class), ranking);
                    }
                }
                Response::Failed { id, what } => {
                    self.busy = None;
                    if id == 0 {
                        self.model_loading = None;
                        self.pending_session = None;
                        self.report(what, Cause::Model);
                    } else if let Some(e) = self.images.iter_mut().find(|e| e.pending == Some(id)) {
                        // The failure is shown in place, on the photo; the banner says it once.
                        // Without a model, "no model is loaded" repeats the model's own failure.
                        e.pending = None;
                        e.error = Some(what.clone());
                        let path = e.path.clone();
                        if self.model.is_some() {
                            self.report(what, Cause::Image(path));
                        }
                    }
                    // A failure of a superseded request is no news.
                }
            }
        }
        while let Ok((path, img)) = self.thumbs_rx.try_recv() {
            if let Some(e) = self.images.iter_mut().find(|e| e.path == path && e.thumbnail.is_none()) {
                e.thumbnail =
                    Some(ctx.load_texture(format!("thumb-{}", path.display()), img, egui::TextureOptions::LINEAR));
            }
        }
        while let Ok(p) = self.picked_rx.try_recv() {
            self.picked(p);
        }
        while let Ok(r) = self.export_rx.try_recv() {
            self.export_status = Some(match r {
                Ok(p) => format!("exported {}", p.display()),
                Err(e) => {
                    self.report(e.clone(), Cause::Other);
                    e
                }
            });
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
        });
        if let Some(session) = dropped.iter().find(|p| SavedSession::is_session_file(p)) {
            self.apply(Command::OpenSession(session.clone()));
            return;
        }
        if !dropped.is_empty() {
            let (models, images): (Vec<PathBuf>, Vec<PathBuf>) =
                dropped.into_iter().partition(|p| super::is_model_path(p));
            if let Some(m) = models.into_iter().next() {
                self.apply(Command::LoadModel(m));
            }
            if !images.is_empty() {
                self.apply(Command::OpenImages(images));
            }
        }
    }
}

/// A small texture of the photo for the image strip.
fn thumbnail(ctx: &egui::Context, a: &Analysis) -> egui::TextureHandle {
    ctx.load_texture(format!("thumb-{}", a.id), thumbnail_image(&a.image), egui::TextureOptions::LINEAR)
}

/// The strip's picture of a photo: at most 96 pixels a side, nearest pixel.
fn thumbnail_image(image: &crate::image::RgbImage) -> egui::ColorImage {
    let (w, h) = (image.width, image.height);
    let scale = (96.0 / w.max(h) as f32).min(1.0);
    let (tw, th) = (((w as f32 * scale) as usize).max(1), ((h as f32 * scale) as usize).max(1));
    let mut rgba = Vec::with_capacity(tw * th * 4);
    for y in 0..th {
        for x in 0..tw {
            let sx = (x * w / tw).min(w - 1);
            let sy = (y * h / th).min(h - 1);
            let p = (sy * w + sx) * 3;
            rgba.extend_from_slice(&[image.data[p], image.data[p + 1], image.data[p + 2], 255]);
        }
    }
    egui::ColorImage::from_rgba_unmultiplied([tw, th], &rgba)
}

/// Decodes `paths` one after another on a helper thread and sends each photo's strip picture, so
/// that photos opened together show before each is analysed. A photo that cannot be decoded sends
/// nothing (its analysis says why).
fn spawn_thumbnails(
    paths: Vec<PathBuf>,
    reply: std::sync::mpsc::Sender<(PathBuf, egui::ColorImage)>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    ctx: egui::Context,
) {
    use std::sync::atomic::Ordering;
    let total = paths.len();
    pending.fetch_add(total, Ordering::AcqRel);
    let started = std::thread::Builder::new().name("thumbnails".into()).spawn({
        let pending = Arc::clone(&pending);
        let n = paths.len();
        move || {
            let mut left = n;
            for p in paths {
                let img = super::worker::guarded("drawing a thumbnail", || {
                    crate::image::decode::decode_file(&p, true)
                        .map(|d| thumbnail_image(&d.image))
                        .map_err(|e| e.to_string())
                });
                pending.fetch_sub(1, Ordering::AcqRel);
                left -= 1;
                if let Ok(img) = img
                    && reply.send((p, img)).is_err()
                {
                    pending.fetch_sub(left, Ordering::AcqRel);
                    return;
                }
                ctx.request_repaint();
            }
        }
    });
    if started.is_err() {
        pending.fetch_sub(total, Ordering::AcqRel);
    }
}

impl eframe::App for ExplorerApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll(ctx);
        let downloading = self.models.poll();
        if self.busy.is_some() || self.model_loading.is_some() || downloading {
            // Keep repainting (progress) while the worker runs.
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.sync_contrast();
        self.sync_sheet();
        let commands = super::panels::layout(ui, self);
        for c in commands {
            self.apply(c);
        }
        self.sync_contrast();
        self.ask_ranking();
        self.built_in_ui(ui.ctx());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(
            storage,
            STORAGE_KEY,
            &Persisted {
                display: self.display,
                recent_models: self.recent_models.clone(),
                export: self.export.clone(),
            },
        );
    }
}
