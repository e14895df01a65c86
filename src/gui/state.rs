//! The explorer's state, as the panels read it: open images and their analyses, where the user is
//! looking, display and export settings, and [`Command`], everything the UI can ask for. The
//! commands are applied by [`super::app`], after layout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use eframe::egui;
use serde::{Deserialize, Serialize};

use super::dialogs::{Dialogs, Picked};
use super::gpu::pipeline::AtlasLayout;
use super::paper_cache::{PaperCache, PaperKey};
use super::worker::{Analysis, FocusRequest, ModelInfo, Worker};
use crate::figure::Format;
use crate::intr::IntrOutput;
use crate::overlay::Look;
use crate::overlay::colormap::{ABSOLUTE_MAX, Normalization, OverlayStyle};
use crate::overlay::range::{range_over, style, value_range};
use crate::session::ModelSpec;

/// What is remembered between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct Persisted {
    pub(super) display: Look,
    pub(super) recent_models: Vec<PathBuf>,
    pub(super) export: ExportSettings,
}

pub(super) const STORAGE_KEY: &str = "intr-explorer";
/// Recent models remembered.
pub(super) const RECENT: usize = 8;
/// Analyses kept on the GPU at once.
pub(super) const GPU_SCENES: usize = 16;

/// One open image.
pub struct ImageEntry {
    pub path: PathBuf,
    pub analysis: Option<Arc<Analysis>>,
    pub error: Option<String>,
    /// Request id of the analysis in flight, if any.
    pub pending: Option<u64>,
    pub thumbnail: Option<egui::TextureHandle>,
}

/// Where the user is looking.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewState {
    pub class: usize,
    /// `None` = mean over heads.
    pub head: Option<usize>,
    pub layer: usize,
    pub compare: Vec<usize>,
    pub show_compare: bool,
    /// Whether the comparison also shows the contrast of its first two classes.
    pub contrast: bool,
    /// Whether the specimen sheet is open, and the photos left out of it (all analysed photos of
    /// the strip are in it unless unticked).
    pub show_sheet: bool,
    pub sheet_left_out: Vec<PathBuf>,
    /// Whether the attention is drawn over the photo (V).
    pub overlay: bool,
    pub show_help: bool,
    pub show_export: bool,
    /// Whether the head gallery is ordered by the heads' ranking (most important first).
    pub gallery_by_rank: bool,
    pub search: String,
    /// Zoom factor (1 = fit) and pan in fractions of the image.
    pub zoom: f32,
    pub pan: egui::Vec2,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            class: 0,
            head: None,
            layer: usize::MAX,
            compare: Vec::new(),
            show_compare: false,
            contrast: false,
            show_sheet: false,
            sheet_left_out: Vec::new(),
            overlay: true,
            show_help: false,
            show_export: false,
            gallery_by_rank: false,
            search: String::new(),
            zoom: 1.0,
            pan: egui::Vec2::ZERO,
        }
    }
}

/// Everything the UI can ask for; applied after layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    OpenImagesDialog,
    OpenModelDialog,
    LoadModel(PathBuf),
    OpenImages(Vec<PathBuf>),
    SelectImage(usize),
    CloseImage(usize),
    SelectClass(usize),
    ToggleCompare(usize),
    SelectHead(Option<usize>),
    SelectLayer(usize),
    Display(Look),
    ShowCompare(bool),
    /// Show the contrast of the first two compared classes (with fewer, the top class and its
    /// closest look-alike are compared).
    ShowContrast(bool),
    /// Swap the first two compared classes (which is subtracted from which).
    SwapContrast,
    /// Open or close the specimen sheet (the viewed class's heads over the strip's photos).
    ShowSheet(bool),
    /// Put a photo of the strip on the sheet or leave it out.
    SheetPhoto(PathBuf, bool),
    ShowOverlay(bool),
    /// Order the head gallery by the heads' ranking (or by number).
    GalleryByRank(bool),
    ShowHelp(bool),
    Search(String),
    ViewTransform {
        zoom: f32,
        pan: egui::Vec2,
    },
    /// Render the blurred (official-look) overlay of a map in the background.
    RenderPaper(PaperKey),
    Cancel,
    DismissError(usize),
    ShowExport(bool),
    ExportSettings(ExportSettings),
    /// Ask where to save the figure, then export.
    ExportDialog,
    /// Export the figure to this file (on a helper thread).
    ExportTo(PathBuf),
    ShowModels(bool),
    /// Download a catalogued model (by name) in the background, resuming what is there.
    Download(String),
    CancelDownload(String),
    /// The text of a model's class-names field in the Models window.
    NamesInput(String, String),
    /// Use (and remember) this class list for the catalogued model `name`.
    UseNames(String, PathBuf),
    /// Ask for a file to save the session to / a session to open.
    SaveSessionDialog,
    OpenSessionDialog,
    /// Save the exact view (model, photos, class, layer, head, comparison, look, head names).
    SaveSessionTo(PathBuf),
    /// Open a saved session: a missing file is reported and the rest opens.
    OpenSession(PathBuf),
    /// Open or close the Parts window.
    ShowParts(bool),
    /// The text of the Parts window's folder field.
    PartsInput(String),
    /// Score every head against the part annotations of this folder (in the worker).
    ScoreParts(PathBuf),
    StopParts,
    /// Name every head by the part scoring's suggestion.
    TakePartNames,
    /// Name a head (0-based) of the open model, for one class (0-based) or every class (`None`);
    /// an empty name removes it. Kept for the model.
    NameHead {
        class: Option<usize>,
        head: usize,
        name: String,
    },
}

/// What a banner is about, so that it goes when its cause does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Opening a model: cleared when a model opens.
    Model,
    /// One photo: cleared when it is analysed or closed.
    Image(PathBuf),
    /// Anything else: stays until dismissed.
    Other,
}

/// One message over the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub text: String,
    pub cause: Cause,
}

/// What the window opens on: a model (and the focus asked for on the command line) and photos.
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub model: Option<ModelSpec>,
    pub images: Vec<PathBuf>,
    pub focus: FocusRequest,
    /// A saved session to open (instead of `model` and `images`).
    pub session: Option<PathBuf>,
}

/// The explorer application.
pub struct ExplorerApp {
    pub(super) worker: Worker,
    pub(super) dialogs: Box<dyn Dialogs>,
    pub(super) picked_tx: Sender<Picked>,
    pub(super) picked_rx: Receiver<Picked>,
    pub model: Option<ModelInfo>,
    pub model_loading: Option<PathBuf>,
    pub images: Vec<ImageEntry>,
    pub selected: usize,
    pub view: ViewState,
    pub display: Look,
    pub recent_models: Vec<PathBuf>,
    /// Messages shown over the view, newest last, each once.
    pub errors: Vec<Banner>,
    /// (request id, stage) of the work in progress.
    pub busy: Option<(u64, &'static str)>,
    /// Strip pictures decoded in the background, and how many are still to come.
    pub(super) thumbs_tx: Sender<(PathBuf, egui::ColorImage)>,
    pub(super) thumbs_rx: Receiver<(PathBuf, egui::ColorImage)>,
    pub(super) thumbs_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// What the last session save or open did.
    pub session_status: Option<String>,
    /// A session being opened: the parts that need the model's classes wait for it.
    pub(super) pending_session: Option<crate::session::saved::SavedSession>,
    /// The names given to the open model's heads.
    pub head_names: crate::session::head_names::HeadNames,
    /// Head rankings by (analysis id, class), as the worker answered (or why it could not).
    pub rankings: std::collections::HashMap<(u64, usize), Result<crate::probe::HeadRanking, String>>,
    /// Rankings asked of the worker and not yet answered.
    pub(super) rankings_asked: std::collections::HashSet<(u64, usize)>,
    /// Blurred overlays (official look), rendered in the background.
    pub paper: PaperCache,
    /// The Parts window: its folder field, the scoring in progress (done, total) and its result.
    pub parts: PartsState,
    /// The contrast on the GPU (scene [`super::app::CONTRAST_SCENE`]): of which analysis, classes
    /// and layer, and its symmetric value range.
    pub(super) contrast: Option<ContrastScene>,
    pub export: ExportSettings,
    /// The Models window: the catalogue, the cache, downloads in progress.
    pub models: super::models::ModelsState,
    /// Outcome of the last export.
    pub export_status: Option<String>,
    pub(super) export_tx: Sender<Result<PathBuf, String>>,
    pub(super) export_rx: Receiver<Result<PathBuf, String>>,
    pub(super) next_id: u64,
    /// Requests with an id from this on were sent after the last model request, so they run on
    /// the model it opens.
    pub(super) first_after_load: u64,
    /// The built-in file dialog, open where the system's could not.
    pub(super) built_in: Option<super::dialogs::BuiltIn>,
    /// Whether the window has said there is no system file dialog (it says so once).
    pub(super) dialog_notice_given: bool,
    pub(super) gpu: Option<eframe::egui_wgpu::RenderState>,
    pub(super) ctx: egui::Context,
}

/// The Parts window.
#[derive(Debug, Default)]
pub struct PartsState {
    pub show: bool,
    pub input: String,
    /// (photos done, of) while the worker scores.
    pub running: Option<(usize, usize)>,
    pub report: Option<Result<Arc<crate::batch::parts::PartReport>, String>>,
    /// What taking over the suggested names changed.
    pub taken: Option<String>,
}

/// What the contrast scene on the GPU holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContrastScene {
    pub analysis: u64,
    /// (first, second): first's attention minus second's.
    pub pair: (usize, usize),
    pub layer: usize,
    /// The symmetric range of its maps.
    pub range: (f32, f32),
}

/// Which view a figure shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExportWhat {
    /// The map in the main view.
    #[default]
    Current,
    /// Every head of the selected class and their mean.
    Gallery,
    /// The comparison grid.
    Comparison,
    /// The contrast of the first two compared classes.
    Contrast,
    /// The specimen sheet: the class's heads over the sheet's photos.
    Sheet,
}

/// Export settings, remembered between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportSettings {
    pub format: Format,
    pub dpi: f32,
    pub what: ExportWhat,
    pub labels: bool,
    pub letters: bool,
    pub scale_bar: bool,
    /// Size of one photo pixel in `scale_unit`.
    pub scale_per_pixel: f64,
    pub scale_unit: String,
    pub title: String,
    pub caption: String,
    /// The plain photo as the first panel.
    pub photo_panel: bool,
    /// Print at `width_mm` (else the natural size, at most a journal page).
    pub set_width: bool,
    pub width_mm: f32,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            format: Format::Svg,
            dpi: 300.0,
            what: ExportWhat::Gallery,
            labels: true,
            letters: true,
            scale_bar: false,
            scale_per_pixel: 0.05,
            scale_unit: "mm".into(),
            title: String::new(),
            caption: String::new(),
            photo_panel: false,
            set_width: false,
            width_mm: crate::figure::MAX_WIDTH_MM,
        }
    }
}

impl ExplorerApp {
    /// How many analyses the window has asked the worker for.
    #[must_use]
    pub fn analyses_requested(&self) -> u64 {
        self.next_id - 1
    }

    /// The texts of the banners shown, oldest first.
    #[must_use]
    pub fn banner_texts(&self) -> Vec<String> {
        self.errors.iter().map(|b| b.text.clone()).collect()
    }
    /// The analysis of the selected image, if finished.
    #[must_use]
    pub fn current(&self) -> Option<&Arc<Analysis>> {
        self.images.get(self.selected).and_then(|e| e.analysis.as_ref())
    }

    /// How head `head` (0-based) of class `class` is written: `head 3 · crown`, or `head 3`.
    #[must_use]
    pub fn head_label(&self, class: usize, head: usize) -> String {
        let name = self.model.as_ref().and_then(|m| m.class_names.get(class)).map_or("", String::as_str);
        self.head_names.label(name, head)
    }

    /// Whether the worker has handled every request sent to it and every strip picture asked for
    /// is drawn (tests).
    #[must_use]
    pub fn worker_idle(&self) -> bool {
        self.worker.idle() && self.thumbs_pending.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// The ranking of the viewed class's heads for the current photo, once the worker has it.
    #[must_use]
    pub fn current_ranking(&self) -> Option<&Result<crate::probe::HeadRanking, String>> {
        let a = self.current()?;
        self.rankings.get(&(a.id, self.view.class))
    }

    /// The atlas holding every head map and head mean of every layer and class of `o`.
    #[must_use]
    pub fn atlas_layout(o: &IntrOutput) -> Option<AtlasLayout> {
        AtlasLayout::new(o.layers * o.classes * (o.heads + 1), o.grid.1 as u32, o.grid.0 as u32)
    }

    /// Atlas index of (layer, class, head or mean).
    #[must_use]
    pub fn atlas_index(o: &IntrOutput, layer: usize, class: usize, head: Option<usize>) -> usize {
        (layer * o.classes + class) * (o.heads + 1) + head.unwrap_or(o.heads)
    }

    /// The style (colour scale included) of one map under the current normalisation.
    #[must_use]
    pub fn style_for(&self, a: &Analysis, class: usize, head: Option<usize>) -> OverlayStyle {
        let layer = self.view.layer.min(a.output.layers - 1);
        let range = value_range(&a.output, layer, self.display.normalization, (class, head), &self.view.compare);
        style(&self.display, range)
    }

    /// The key of the blurred overlay of (class, head) drawn with `style`.
    #[must_use]
    pub fn paper_key(&self, a: &Analysis, class: usize, head: Option<usize>, style: &OverlayStyle) -> PaperKey {
        PaperKey {
            analysis: a.id,
            layer: self.view.layer.min(a.output.layers - 1),
            class,
            head,
            colormap: style.colormap,
            range: (self.display.normalization != Normalization::PerMap)
                .then(|| (style.lo.to_bits(), style.hi.to_bits())),
        }
    }

    /// The style of the comparison grid: one value range over every compared class and head.
    #[must_use]
    pub fn compare_style(&self, a: &Analysis) -> OverlayStyle {
        let layer = self.view.layer.min(a.output.layers - 1);
        let range = match self.display.normalization {
            Normalization::Absolute => (0.0, ABSOLUTE_MAX),
            _ => range_over(&a.output, layer, &self.view.compare),
        };
        style(&self.display, range)
    }
}
