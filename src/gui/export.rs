//! Figure export from the window: settings (remembered), the Export window (Ctrl+E), and the
//! export itself, which runs on a helper thread (hashing, composing and writing never block the
//! window). Figures come from [`crate::figure::compose()`], so they show what the window shows.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use eframe::egui::{self, RichText};

use super::state::{Command, ExplorerApp, ExportSettings, ExportWhat};
use super::worker::Analysis;
use crate::batch::remake::{self, Recipe};
use crate::figure::{self, FigureOptions, Format, Source, View};
use crate::overlay::Look;

/// Everything an export needs, copied out of the app so it can run on another thread.
pub struct ExportJob {
    pub analysis: Arc<Analysis>,
    pub model_path: Option<PathBuf>,
    /// The model's name, written under the figure.
    pub model_name: Option<String>,
    /// How the model was opened, for the command that re-makes the figure.
    pub spec: Option<crate::session::ModelSpec>,
    pub view: View,
    pub look: Look,
    pub layer: usize,
    pub settings: ExportSettings,
    /// The window's comparison set (shares one scale under the shared-classes normalisation).
    pub compare: Vec<usize>,
    /// The names given to the model's heads.
    pub head_names: crate::session::head_names::HeadNames,
    /// The specimen sheet's photos, when the sheet is exported (then `view` names its class).
    pub sheet: Vec<Arc<Analysis>>,
    pub out: PathBuf,
}

impl ExportJob {
    /// The job for the app's current state, or why there is none.
    pub fn from_app(app: &ExplorerApp, out: PathBuf) -> Result<Self, String> {
        let a = app.current().ok_or("no analysed image to export")?.clone();
        let o = &a.output;
        let layer = app.view.layer.min(o.layers.saturating_sub(1));
        let heads: Vec<usize> = (0..o.heads).collect();
        let view = match app.export.what {
            ExportWhat::Current => View::Single { class: app.view.class, head: app.view.head },
            ExportWhat::Gallery => View::Gallery { class: app.view.class, heads, mean: true },
            ExportWhat::Comparison if app.view.compare.len() >= 2 => {
                View::Compare { classes: app.view.compare.clone(), heads, mean: true }
            }
            ExportWhat::Comparison => return Err("the comparison needs two or more classes (+ in the ranking)".into()),
            ExportWhat::Contrast if app.view.compare.len() >= 2 => {
                View::Contrast { first: app.view.compare[0], second: app.view.compare[1], heads, mean: true }
            }
            ExportWhat::Contrast => {
                return Err("the contrast needs two classes: tick \"contrast\" in the comparison".into());
            }
            ExportWhat::Sheet => View::Gallery { class: app.view.class, heads, mean: true },
        };
        Ok(Self {
            analysis: a,
            model_path: app.model.as_ref().map(|m| m.path.clone()),
            model_name: app.model.as_ref().map(|m| m.name.clone()),
            spec: app.model.as_ref().map(|m| m.spec.clone()),
            view,
            look: app.display,
            layer,
            settings: app.export.clone(),
            compare: app.view.compare.clone(),
            head_names: app.head_names.clone(),
            sheet: if app.export.what == ExportWhat::Sheet { app.sheet_photos() } else { Vec::new() },
            out,
        })
    }

    /// Composes and writes the specimen sheet of the view's class over the sheet's photos.
    fn run_sheet(self) -> anyhow::Result<PathBuf> {
        let View::Gallery { class, heads, .. } = &self.view else { anyhow::bail!("a sheet shows one class") };
        let names: &[String] = &self.analysis.class_names;
        let s = &self.settings;
        let format = Format::from_path(&self.out).unwrap_or(s.format);
        let rows: Vec<figure::SheetRow> =
            self.sheet.iter().map(|a| figure::SheetRow::of_analysis(a, self.layer, *class, None)).collect();
        // Of the model and class list, not of the photo shown (the sheet has many).
        let source = Source::of_model(self.model_path.as_deref(), names)?;
        let what = (self.layer, *class, heads.as_slice());
        let prov = figure::sheet::sheet_provenance(&self.look, what, names, &rows, &source, &self.head_names)?;
        let opts = FigureOptions {
            look: self.look,
            layer: self.layer,
            labels: s.labels,
            title: Some(s.title.clone()).filter(|t| !t.trim().is_empty()),
            caption: Some(s.caption.clone()).filter(|t| !t.trim().is_empty()),
            model: self.model_name.clone(),
            width_mm: s.set_width.then_some(s.width_mm),
            head_names: self.head_names.clone(),
            ..Default::default()
        };
        let fig = figure::compose_sheet(&rows, &names[*class], heads, self.layer, &opts, prov);
        figure::write(&fig, &self.out, format, s.dpi)?;
        Ok(self.out)
    }

    /// Composes and writes the figure (atomically); returns the path written.
    pub fn run(self) -> anyhow::Result<PathBuf> {
        if !self.sheet.is_empty() {
            return self.run_sheet();
        }
        let a = &self.analysis;
        let names: &[String] = &a.class_names;
        let mut prov = figure::look_provenance(&self.look, self.layer, &self.view, names);
        Source::hash(self.model_path.as_deref(), names, &a.image_path)?.add_to(&mut prov);
        let s = &self.settings;
        let format = Format::from_path(&self.out).unwrap_or(s.format);
        if let Some(model) = &self.model_path {
            // The `explain` command that makes this figure again (`intr-explorer remake`).
            let spec = self.spec.clone().unwrap_or_default();
            let recipe = Recipe {
                model: model.clone(),
                classes: spec.classes,
                nheads: spec.overrides.nheads,
                dilation: spec.overrides.dilation,
                config: None,
                no_exif_orientation: false,
                heads: "all".into(),
                look: self.look,
                format,
                dpi: s.dpi,
                panel_width: Some(a.image.width as u32),
                scale: s.scale_bar.then(|| format!("{}{}", s.scale_per_pixel, s.scale_unit)),
                title: Some(s.title.clone()).filter(|t| !t.trim().is_empty()),
                caption: Some(s.caption.clone()).filter(|t| !t.trim().is_empty()),
                width: s.set_width.then(|| format!("{}mm", s.width_mm)),
                photo_panel: s.photo_panel,
                labels: s.labels,
                letters: s.letters,
                out: self.out.parent().map(std::path::Path::to_path_buf).unwrap_or_default(),
            };
            let args = remake::args(&recipe.remake(), &a.image_path, &self.view, names, self.layer);
            prov.insert("remake".into(), remake::shell_join(&args));
            prov.insert("remake_args".into(), serde_json::to_string(&args)?);
            if !self.head_names.is_empty() {
                prov.insert("head_names".into(), serde_json::to_string(&self.head_names)?);
            }
        }
        let opts = FigureOptions {
            look: self.look,
            layer: self.layer,
            panel_width: Some(a.image.width as u32),
            letters: s.letters,
            labels: s.labels,
            title: Some(s.title.clone()).filter(|t| !t.trim().is_empty()),
            caption: Some(s.caption.clone()).filter(|t| !t.trim().is_empty()),
            scale: s.scale_bar.then(|| (s.scale_per_pixel, s.scale_unit.clone())),
            shared_with: self.compare.clone(),
            model: self.model_name.clone(),
            out_of_domain: Some(a.ood),
            photo_panel: s.photo_panel,
            evened: a.evened.clone(),
            width_mm: s.set_width.then_some(s.width_mm),
            head_names: self.head_names.clone(),
        };
        let fig = figure::compose(&a.image, &a.output, names, &self.view, &opts, prov);
        figure::write(&fig, &self.out, format, s.dpi)?;
        Ok(self.out)
    }
}

/// Runs `job` on a helper thread; the outcome arrives on `reply` (then the window repaints).
pub fn spawn_export(job: ExportJob, reply: Sender<Result<PathBuf, String>>, ctx: egui::Context) {
    std::thread::spawn(move || {
        let out = job.out.clone();
        let r = super::worker::guarded("exporting the figure", || job.run().map_err(|e| format!("{e:#}")))
            .map_err(|e| format!("export to {} failed: {e}", out.display()));
        let _ = reply.send(r);
        ctx.request_repaint();
    });
}

/// A file name suggestion for the current view.
#[must_use]
pub fn suggested_name(app: &ExplorerApp) -> String {
    let stem = app
        .current()
        .and_then(|a| a.image_path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "figure".into());
    if app.export.what == ExportWhat::Sheet {
        // A sheet covers several photos: named after its class.
        let class = app.model.as_ref().and_then(|m| m.class_names.get(app.view.class).cloned()).unwrap_or_default();
        let class: String = class.chars().map(|c| if c.is_alphanumeric() { c } else { '_' }).collect();
        return format!("{class}_sheet.{}", app.export.format.extension());
    }
    let what = match app.export.what {
        ExportWhat::Current => "view",
        ExportWhat::Gallery => "heads",
        ExportWhat::Comparison => "compare",
        ExportWhat::Contrast => "contrast",
        ExportWhat::Sheet => "sheet",
    };
    format!("{stem}_{what}.{}", app.export.format.extension())
}

/// The Export window.
pub fn export_window(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    let mut open = true;
    let mut s = app.export.clone();
    egui::Window::new("Export figure").open(&mut open).resizable(false).show(ctx, |ui| {
        egui::Grid::new("export").num_columns(2).show(ui, |ui| {
            ui.label("shows");
            ui.horizontal(|ui| {
                ui.selectable_value(&mut s.what, ExportWhat::Current, "current view");
                ui.selectable_value(&mut s.what, ExportWhat::Gallery, "all heads");
                ui.selectable_value(&mut s.what, ExportWhat::Comparison, "comparison");
                ui.selectable_value(&mut s.what, ExportWhat::Contrast, "contrast");
                ui.selectable_value(&mut s.what, ExportWhat::Sheet, "sheet");
            });
            ui.end_row();
            ui.label("format");
            ui.horizontal(|ui| {
                ui.selectable_value(&mut s.format, Format::Svg, "SVG");
                ui.selectable_value(&mut s.format, Format::Pdf, "PDF");
                ui.selectable_value(&mut s.format, Format::Png, "PNG");
            });
            ui.end_row();
            ui.label("PNG resolution");
            let dpi_text = format!("{:.0} dpi", s.dpi);
            ui.add_enabled(
                s.format == Format::Png,
                egui::Slider::new(&mut s.dpi, 72.0..=600.0).show_value(false).text(dpi_text),
            );
            ui.end_row();
            ui.label("labels");
            ui.horizontal(|ui| {
                ui.checkbox(&mut s.labels, "class, probability, layer, head");
                ui.checkbox(&mut s.letters, "panel letters");
                ui.checkbox(&mut s.photo_panel, "plain photo first");
            });
            ui.end_row();
            ui.label("printed width");
            ui.horizontal(|ui| {
                ui.checkbox(&mut s.set_width, "set")
                    .on_hover_text("otherwise the figure's natural size, at most 180 mm (a journal page)");
                let label = ui.label("mm");
                ui.add_enabled(s.set_width, egui::DragValue::new(&mut s.width_mm).speed(1.0).range(10.0..=2000.0))
                    .labelled_by(label.id);
            });
            ui.end_row();
            ui.label("scale bar");
            ui.horizontal(|ui| {
                ui.checkbox(&mut s.scale_bar, "draw");
                let size = ui.label("1 px =");
                ui.add_enabled(
                    s.scale_bar,
                    egui::DragValue::new(&mut s.scale_per_pixel).speed(0.001).range(1e-6..=1e6),
                )
                .labelled_by(size.id);
                egui::ComboBox::from_label("unit").selected_text(s.scale_unit.clone()).show_ui(ui, |ui| {
                    for u in ["µm", "mm", "cm"] {
                        ui.selectable_value(&mut s.scale_unit, u.to_string(), u);
                    }
                });
            });
            ui.end_row();
            let title = ui.label("title");
            ui.text_edit_singleline(&mut s.title).labelled_by(title.id);
            ui.end_row();
            let caption = ui.label("caption");
            ui.text_edit_multiline(&mut s.caption).labelled_by(caption.id);
            ui.end_row();
        });
        ui.label(
            RichText::new("Overlays use the display settings (colormap, normalisation, threshold, interpolation).")
                .small()
                .weak(),
        );
        ui.horizontal(|ui| {
            let ready = app.current().is_some();
            if ui.add_enabled(ready, egui::Button::new("Save figure…")).clicked() {
                cmds.push(Command::ExportDialog);
            }
            if let Some(msg) = &app.export_status {
                ui.label(RichText::new(msg).small());
            }
        });
    });
    if s != app.export {
        cmds.push(Command::ExportSettings(s));
    }
    if !open {
        cmds.push(Command::ShowExport(false));
    }
}
