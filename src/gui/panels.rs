//! Pure layout: reads the app state, draws it, returns commands. No I/O, no threads.

use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText, Sense, Vec2};

use super::gpu::callback::OverlayCallback;
use super::gpu::pipeline::OverlayUniforms;
use super::state::{Command, ExplorerApp};
use super::worker::Analysis;
use crate::overlay::Look;
use crate::overlay::colormap::{Colormap, Interpolation, Normalization};

/// Classes listed in the ranking when the search box is empty.
const TOP_LIST: usize = 25;
/// Probability gap under which the top two classes count as a close call.
const CLOSE_CALL: f32 = 0.1;

/// Lays out the whole window; returns what the user asked for.
pub fn layout(ui: &mut egui::Ui, app: &ExplorerApp) -> Vec<Command> {
    let mut cmds = Vec::new();
    keyboard(ui.ctx(), app, &mut cmds);
    egui::Panel::top("toolbar").show(ui, |ui| toolbar_ui(ui, app, &mut cmds));
    egui::Panel::bottom("display").show(ui, |ui| display_ui(ui, app, &mut cmds));
    egui::Panel::left("images").default_size(150.0).show(ui, |ui| images_ui(ui, app, &mut cmds));
    egui::Panel::right("ranking").default_size(300.0).show(ui, |ui| ranking_ui(ui, app, &mut cmds));
    let mut slot = 0;
    egui::CentralPanel::default_margins().show(ui, |ui| central_ui(ui, app, &mut cmds, &mut slot));
    if app.view.show_sheet {
        sheet_window(ui.ctx(), app, &mut cmds, &mut slot);
    }
    if app.parts.show {
        parts_window(ui.ctx(), app, &mut cmds);
    }
    if app.view.show_compare {
        compare_window(ui.ctx(), app, &mut cmds, &mut slot);
    }
    if app.view.show_help {
        help_window(ui.ctx(), &mut cmds);
    }
    if app.view.show_export {
        super::export::export_window(ui.ctx(), app, &mut cmds);
    }
    if app.models.show {
        super::models::models_window(ui.ctx(), app, &mut cmds);
    }
    cmds
}

fn keyboard(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    if ctx.egui_wants_keyboard_input() {
        return;
    }
    let (ctrl, pressed) = ctx.input(|i| {
        let keys: Vec<egui::Key> = i
            .events
            .iter()
            .filter_map(|e| match e {
                egui::Event::Key { key, pressed: true, .. } => Some(*key),
                _ => None,
            })
            .collect();
        (i.modifiers.command, keys)
    });
    let a = app.current();
    for key in pressed {
        match (key, a) {
            (egui::Key::O, _) if ctrl => cmds.push(Command::OpenImagesDialog),
            (egui::Key::E, _) if ctrl => cmds.push(Command::ShowExport(true)),
            (egui::Key::F1, _) => cmds.push(Command::ShowHelp(!app.view.show_help)),
            (egui::Key::Delete, _) if !app.images.is_empty() => cmds.push(Command::CloseImage(app.selected)),
            (egui::Key::Escape, _) => cmds.push(Command::ShowHelp(false)),
            (egui::Key::ArrowDown | egui::Key::ArrowUp, Some(a)) => {
                let ranking = a.output.ranking();
                let pos = ranking.iter().position(|&c| c == app.view.class).unwrap_or(0);
                let next =
                    if key == egui::Key::ArrowDown { (pos + 1).min(ranking.len() - 1) } else { pos.saturating_sub(1) };
                cmds.push(Command::SelectClass(ranking[next]));
            }
            (egui::Key::ArrowRight | egui::Key::ArrowLeft, Some(a)) => {
                // Order: head 0 … head H−1, then the mean.
                let h = a.output.heads;
                let cur = app.view.head.unwrap_or(h);
                let next = if key == egui::Key::ArrowRight { (cur + 1) % (h + 1) } else { (cur + h) % (h + 1) };
                cmds.push(Command::SelectHead((next < h).then_some(next)));
            }
            (egui::Key::L, Some(a)) => cmds.push(Command::SelectLayer((app.view.layer + 1) % a.output.layers)),
            (egui::Key::V, _) => cmds.push(Command::ShowOverlay(!app.view.overlay)),
            (egui::Key::Num0, Some(_)) => cmds.push(Command::SelectHead(None)),
            (k, Some(a)) => {
                if let Some(d) = digit(k)
                    && d >= 1
                    && d <= a.output.heads
                {
                    cmds.push(Command::SelectHead(Some(d - 1)));
                }
            }
            _ => {}
        }
    }
}

fn digit(k: egui::Key) -> Option<usize> {
    use egui::Key::*;
    [Num0, Num1, Num2, Num3, Num4, Num5, Num6, Num7, Num8, Num9].iter().position(|&x| x == k)
}

fn toolbar_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    ui.horizontal(|ui| {
        if ui.button("Open images…").on_hover_text("Ctrl+O").clicked() {
            cmds.push(Command::OpenImagesDialog);
        }
        if ui.button("Open model…").clicked() {
            cmds.push(Command::OpenModelDialog);
        }
        if ui.button("Models…").on_hover_text("The official checkpoints: download and open").clicked() {
            cmds.push(Command::ShowModels(!app.models.show));
        }
        let parts = ui.button("Parts…").on_hover_text("which part each head looks at, over an annotated folder");
        if parts.clicked() {
            cmds.push(Command::ShowParts(!app.parts.show));
        }
        if ui.add_enabled(app.current().is_some(), egui::Button::new("Export…")).on_hover_text("Ctrl+E").clicked() {
            cmds.push(Command::ShowExport(true));
        }
        ui.menu_button("Session", |ui| {
            if ui.button("Save session…").on_hover_text("the exact view, to reopen later or share").clicked() {
                cmds.push(Command::SaveSessionDialog);
                ui.close();
            }
            if ui.button("Open session…").clicked() {
                cmds.push(Command::OpenSessionDialog);
                ui.close();
            }
        });
        ui.menu_button("Recent models", |ui| {
            if app.recent_models.is_empty() {
                ui.label("none yet");
            }
            for p in &app.recent_models {
                if ui.button(p.display().to_string()).clicked() {
                    cmds.push(Command::LoadModel(p.clone()));
                }
            }
        });
        ui.separator();
        match (&app.model, &app.model_loading) {
            (_, Some(p)) => {
                ui.spinner();
                ui.label(format!("loading {}", p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
            }
            (Some(m), None) => {
                let label = ui.label(format!(
                    "model: {} · {} classes · {} heads · {} layers",
                    m.name, m.config.num_queries, m.config.nheads, m.config.dec_layers
                ));
                label.on_hover_text(m.path.display().to_string());
                if m.demo {
                    ui.colored_label(ui.visuals().warn_fg_color, "(!) knows only its invented species").on_hover_text(
                        "The bundled demo model was trained on generated look-alike birds: it puts any real \
                             photo into one of its 16 species. Open an official checkpoint for real birds.",
                    );
                }
            }
            (None, None) => {
                ui.label(RichText::new("no model").weak());
            }
        }
        if let Some(st) = &app.session_status {
            ui.separator();
            ui.label(RichText::new(st).weak().small());
        }
        if let Some((_, stage)) = app.busy {
            ui.separator();
            ui.spinner();
            ui.label(stage);
            if ui.button("Cancel").clicked() {
                cmds.push(Command::Cancel);
            }
        }
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Help (F1)").clicked() {
                cmds.push(Command::ShowHelp(!app.view.show_help));
            }
        });
    });
}

fn images_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    ui.heading("Images");
    egui::ScrollArea::vertical().show(ui, |ui| {
        for (i, e) in app.images.iter().enumerate() {
            let selected = i == app.selected;
            let name = e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let resp = ui.scope(|ui| {
                let thumb = e.thumbnail.as_ref().map(|t| {
                    ui.add(egui::Image::new(t).max_size(Vec2::splat(96.0)).sense(Sense::click()))
                        .on_hover_text("show this photo")
                });
                let mut text = RichText::new(&name);
                if selected {
                    text = text.strong();
                }
                let (label, close) = ui
                    .horizontal(|ui| {
                        let close = ui.small_button("×").on_hover_text("close this photo");
                        (ui.selectable_label(selected, text), close)
                    })
                    .inner;
                (label.clicked() || thumb.is_some_and(|t| t.clicked()), close.clicked())
            });
            let (select, close) = resp.inner;
            if close {
                cmds.push(Command::CloseImage(i));
            } else if select {
                cmds.push(Command::SelectImage(i));
            }
            if e.pending.is_some() {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("analysing");
                });
            }
            if let Some(err) = &e.error {
                ui.colored_label(ui.visuals().error_fg_color, "(!) failed").on_hover_text(err);
            }
            ui.separator();
        }
        if app.images.is_empty() {
            ui.label("Drop images or folders here, or use Open images… (Ctrl+O).");
        }
    });
}

fn ranking_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    if let Some(a) = app.current().filter(|a| a.last_layer.is_some()) {
        egui::Panel::bottom("heads-ranked").show(ui, |ui| heads_ranked_ui(ui, app, a, cmds));
    }
    ui.heading("Classes");
    let Some(a) = app.current() else {
        ui.label(RichText::new("No result yet.").weak());
        return;
    };
    let mut search = app.view.search.clone();
    if ui.add(egui::TextEdit::singleline(&mut search).hint_text("search classes")).changed() {
        cmds.push(Command::Search(search.clone()));
    }
    let probs = a.output.probabilities();
    let ranking = a.output.ranking();
    if a.ood.flagged {
        ui.colored_label(ui.visuals().warn_fg_color, "(!) this photo may be outside what the model knows")
            .on_hover_text(format!(
                "The model cannot decide between its best classes (out-of-domain score {:.2}; photos it was trained \
                 on score below {:.2}). It still ranks its own classes, but the answer may mean little.",
                a.ood.score,
                crate::probe::ood::THRESHOLD
            ));
    } else if ranking.len() >= 2 && probs[ranking[0]] - probs[ranking[1]] < CLOSE_CALL {
        let top = probs[ranking[0]];
        let msg = if top < 2.0 / ranking.len() as f32 {
            "(!) flat ranking: the model is unsure"
        } else {
            "(!) close call between the top classes"
        };
        ui.colored_label(ui.visuals().warn_fg_color, msg);
    }
    ui.label(RichText::new("click: show · Ctrl+click or +: compare").weak().small());
    let needle = search.to_lowercase();
    egui::ScrollArea::vertical().show(ui, |ui| {
        let shown: Vec<(usize, usize)> = ranking
            .iter()
            .enumerate()
            .filter(|(_, c)| needle.is_empty() || a.class_names[**c].to_lowercase().contains(&needle))
            .take(if needle.is_empty() { TOP_LIST } else { usize::MAX })
            .map(|(r, &c)| (r, c))
            .collect();
        for (rank, c) in shown {
            ranking_row(ui, app, a, rank, c, probs[c], cmds);
        }
    });
}

fn ranking_row(
    ui: &mut egui::Ui,
    app: &ExplorerApp,
    a: &Analysis,
    rank: usize,
    c: usize,
    p: f32,
    cmds: &mut Vec<Command>,
) {
    ui.horizontal(|ui| {
        let in_compare = app.view.compare.contains(&c);
        if ui
            .small_button(if in_compare { "-" } else { "+" })
            .on_hover_text("add to / remove from the comparison")
            .clicked()
        {
            cmds.push(Command::ToggleCompare(c));
        }
        let text = format!("{:>3}. {}", rank + 1, a.class_names[c]);
        let resp = ui.selectable_label(app.view.class == c, text);
        if resp.clicked() {
            if ui.input(|i| i.modifiers.command) {
                cmds.push(Command::ToggleCompare(c));
            } else {
                cmds.push(Command::SelectClass(c));
            }
        }
    });
    ui.horizontal(|ui| {
        ui.add(egui::ProgressBar::new(p).desired_width(160.0).text(format!("{:.1} %", p * 100.0)));
        ui.label(RichText::new(format!("logit {:.2}", a.output.logits[c])).small().weak());
    });
}

/// The viewed class's heads ranked by what its decision rests on (greedy evening of its query in
/// the last layer), with the curve of its probability as heads are evened; a row shows its head.
fn heads_ranked_ui(ui: &mut egui::Ui, app: &ExplorerApp, a: &Analysis, cmds: &mut Vec<Command>) {
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.strong("Heads ranked").on_hover_text(
            "Which heads of the last layer this class's score rests on, in order. Starting from the photo as it \
             is, each step makes one more head look evenly over the whole image (for this class only) — the head \
             the class needs least — until all do; the head evened last ranks first. Each row: the class's \
             probability before and after that head was evened.",
        );
        let mut by_rank = app.view.gallery_by_rank;
        if ui.checkbox(&mut by_rank, "order gallery").on_hover_text("order the head gallery by this ranking").changed()
        {
            cmds.push(Command::GalleryByRank(by_rank));
        }
    });
    let ranking = match app.current_ranking() {
        None => {
            ui.label(RichText::new("ranking…").weak());
            return;
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().warn_fg_color, format!("(!) {e}"));
            return;
        }
        Some(Ok(r)) => r,
    };
    probability_curve(ui, &ranking.curve());
    ui.label(
        RichText::new("rank · head · the class's probability once it and the heads ranked below it are evened").weak(),
    );
    let class = &a.class_names[ranking.class];
    for r in ranking.ranked() {
        let name = app.head_names.name(class, r.head).map(|n| format!(" · {n}")).unwrap_or_default();
        let text = format!("{:>2}. head {:<2} {:>5.1} %{name}", r.rank, r.head + 1, r.after * 100.0);
        let hover = format!(
            "head {}, rank {} for {class}: with the {} head(s) ranked below it evened, {class} scores {:.1} %; \
             evening this one too leaves {:.1} %. Click to show the head.",
            r.head + 1,
            r.rank,
            ranking.steps.len() - r.rank,
            r.before * 100.0,
            r.after * 100.0
        );
        let resp = ui.selectable_label(app.view.head == Some(r.head), RichText::new(text).monospace());
        if resp.on_hover_text(hover).clicked() {
            cmds.push(Command::SelectHead(Some(r.head)));
        }
    }
}

/// The gallery's right-click menu on a head: its name, for this class or for every class.
fn name_head_menu(ui: &mut egui::Ui, app: &ExplorerApp, head: usize, cmds: &mut Vec<Command>) {
    let class = app.view.class;
    let class_name = app.current().and_then(|a| a.class_names.get(class).cloned()).unwrap_or_default();
    let id = egui::Id::unique(("name-head", class, head));
    let (mut text, mut only) = ui.data_mut(|d| {
        d.get_temp::<(String, bool)>(id).unwrap_or_else(|| {
            let own = app.head_names.classes.get(&class_name).and_then(|m| m.get(&(head + 1))).cloned();
            let only = own.is_some();
            (own.or_else(|| app.head_names.heads.get(&(head + 1)).cloned()).unwrap_or_default(), only)
        })
    });
    ui.label(format!("Name head {} (e.g. crown, wing bars, tail)", head + 1));
    let field = ui.add(egui::TextEdit::singleline(&mut text).hint_text("name").desired_width(180.0));
    ui.checkbox(&mut only, format!("for {class_name} only"));
    let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
    let chosen = ui
        .horizontal(|ui| {
            if ui.button("Save").clicked() || entered {
                Some(text.clone())
            } else if ui.button("Clear").clicked() {
                Some(String::new())
            } else {
                None
            }
        })
        .inner;
    match chosen {
        Some(name) => {
            cmds.push(Command::NameHead { class: only.then_some(class), head, name });
            ui.data_mut(|d| d.remove::<(String, bool)>(id));
            ui.close();
        }
        None => {
            ui.data_mut(|d| d.insert_temp(id, (text, only)));
        }
    }
}

/// A small line plot of the class's probability (0–100 %) as heads are evened, one point per step,
/// with its axes named.
fn probability_curve(ui: &mut egui::Ui, curve: &[f32]) {
    let width = ui.available_width().min(280.0);
    let (outer, resp) = ui.allocate_exact_size(Vec2::new(width, 70.0), Sense::hover());
    // Room on the left for the probability axis and below for the steps.
    let rect = egui::Rect::from_min_max(outer.min + Vec2::new(34.0, 4.0), outer.max - Vec2::new(4.0, 16.0));
    let painter = ui.painter_at(outer);
    let visuals = ui.visuals();
    painter.rect_stroke(rect, 2.0, visuals.widgets.noninteractive.bg_stroke, egui::StrokeKind::Inside);
    let n = curve.len().max(2) - 1;
    let point = |i: usize, p: f32| {
        egui::pos2(
            rect.min.x + 3.0 + (rect.width() - 6.0) * i as f32 / n as f32,
            rect.max.y - 3.0 - (rect.height() - 6.0) * p.clamp(0.0, 1.0),
        )
    };
    let points: Vec<egui::Pos2> = curve.iter().enumerate().map(|(i, &p)| point(i, p)).collect();
    let stroke = egui::Stroke::new(1.5, visuals.selection.bg_fill);
    painter.add(egui::Shape::line(points.clone(), stroke));
    for p in &points {
        painter.circle_filled(*p, 2.0, stroke.color);
    }
    let font = egui::FontId::proportional(10.0);
    let weak = visuals.weak_text_color();
    painter.text(egui::pos2(rect.min.x - 3.0, rect.min.y), egui::Align2::RIGHT_TOP, "100 %", font.clone(), weak);
    painter.text(egui::pos2(rect.min.x - 3.0, rect.max.y), egui::Align2::RIGHT_BOTTOM, "0 %", font.clone(), weak);
    painter.text(egui::pos2(rect.min.x, rect.max.y + 2.0), egui::Align2::LEFT_TOP, "none", font.clone(), weak);
    painter.text(
        egui::pos2(rect.max.x, rect.max.y + 2.0),
        egui::Align2::RIGHT_TOP,
        format!("{n} heads evened"),
        font,
        weak,
    );
    let steps: Vec<String> = curve.iter().map(|p| format!("{:.1}", p * 100.0)).collect();
    resp.on_hover_text(format!(
        "the class's probability as heads are evened one after another, the least needed first (%): {}",
        steps.join(", ")
    ));
}

fn display_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    let mut d = app.display;
    ui.horizontal_wrapped(|ui| {
        egui::ComboBox::from_label("colormap").selected_text(d.colormap.name()).show_ui(ui, |ui| {
            for cm in Colormap::ALL {
                ui.selectable_value(&mut d.colormap, cm, cm.name());
            }
        });
        ui.add(egui::Slider::new(&mut d.opacity, 0.0..=1.0).text("opacity"));
        egui::ComboBox::from_label("normalisation").selected_text(d.normalization.describe()).show_ui(ui, |ui| {
            for n in Normalization::ALL {
                ui.selectable_value(&mut d.normalization, n, n.describe());
            }
        });
        ui.add(egui::Slider::new(&mut d.threshold, 0.0..=1.0).text("threshold"));
        egui::ComboBox::from_label("interpolation").selected_text(format!("{:?}", d.interpolation)).show_ui(ui, |ui| {
            for i in Interpolation::ALL {
                ui.selectable_value(&mut d.interpolation, i, format!("{i:?}"));
            }
        });
        let mut overlay = app.view.overlay;
        if ui.checkbox(&mut overlay, "overlay").on_hover_text("V: the photo alone, or with the attention").changed() {
            cmds.push(Command::ShowOverlay(overlay));
        }
        ui.checkbox(&mut d.official_blur, "official blur")
            .on_hover_text("median + Gaussian blur, 15 px each, as the official renderer (threshold off)");
        if ui
            .button("Paper style")
            .on_hover_text(
                "the official renderer: bicubic, per-map min–max, OpenCV JET, blur, 50 % blend; like it, the grid is \
                 drawn as tiles from the corner, half a cell right of and below where the features look",
            )
            .clicked()
        {
            d = Look::paper_style();
        }
        if ui.button("Defaults").clicked() {
            d = Look::default();
        }
    });
    if d != app.display {
        cmds.push(Command::Display(d));
    }
}

/// Draws a photo with one overlay into `rect` through the GPU callback. With the official blur on,
/// the overlay is the blurred texture once it is ready (the photo still comes from the callback);
/// until then the unblurred overlay is shown and the texture is requested.
#[allow(clippy::too_many_arguments)]
fn overlay_in(
    ui: &egui::Ui,
    app: &ExplorerApp,
    a: &Analysis,
    rect: egui::Rect,
    (class, head): (usize, Option<usize>),
    style: &crate::overlay::colormap::OverlayStyle,
    uv: ([f32; 2], [f32; 2]),
    slot: &mut usize,
    cmds: &mut Vec<Command>,
) {
    let o = &a.output;
    let layer = app.view.layer.min(o.layers - 1);
    let Some(atlas) = ExplorerApp::atlas_layout(o) else { return };
    let index = ExplorerApp::atlas_index(o, layer, class, head);
    let blurred = if app.display.official_blur {
        let key = app.paper_key(a, class, head, style);
        let tex = app.paper.texture(&key);
        if tex.is_none() {
            cmds.push(Command::RenderPaper(key));
        }
        tex
    } else {
        None
    };
    let mut shown = *style;
    if blurred.is_some() || !app.view.overlay {
        shown.opacity = 0.0;
    }
    let uniforms = OverlayUniforms::new(&atlas, index, a.mapping.placement(), &shown, uv, true);
    ui.painter().add(OverlayCallback { scene: a.id, slot: *slot, uniforms }.paint(rect));
    *slot += 1;
    if let Some(tex) = blurred {
        // The visible part of the image: uv clipped to [0, 1], and the matching part of `rect`.
        let (off, scale) = uv;
        let lo = egui::pos2(off[0].max(0.0), off[1].max(0.0));
        let hi = egui::pos2((off[0] + scale[0]).min(1.0), (off[1] + scale[1]).min(1.0));
        if lo.x < hi.x && lo.y < hi.y {
            let to_screen = |p: egui::Pos2| {
                egui::pos2(
                    rect.min.x + (p.x - off[0]) / scale[0] * rect.width(),
                    rect.min.y + (p.y - off[1]) / scale[1] * rect.height(),
                )
            };
            let alpha = (style.opacity.clamp(0.0, 1.0) * 255.0).round() as u8;
            ui.painter().with_clip_rect(rect).image(
                tex,
                egui::Rect::from_min_max(to_screen(lo), to_screen(hi)),
                egui::Rect::from_min_max(lo, hi),
                Color32::from_white_alpha(alpha),
            );
        }
    }
}

/// The image region shown by the main view (zoom and pan) as (uv offset, uv scale).
fn view_uv(app: &ExplorerApp) -> ([f32; 2], [f32; 2]) {
    let (zoom, pan) = (app.view.zoom, app.view.pan);
    let scale = 1.0 / zoom;
    ([0.5 - 0.5 * scale - pan.x, 0.5 - 0.5 * scale - pan.y], [scale, scale])
}

/// The largest rect with the image's aspect ratio inside `avail`, centred.
fn fit(avail: egui::Rect, w: usize, h: usize) -> egui::Rect {
    let aspect = w as f32 / h.max(1) as f32;
    let size = if avail.width() / avail.height().max(1.0) > aspect {
        Vec2::new(avail.height() * aspect, avail.height())
    } else {
        Vec2::new(avail.width(), avail.width() / aspect)
    };
    egui::Rect::from_center_size(avail.center(), size)
}

/// The banners, floating over the top of the view so that they never push it down; each can be
/// dismissed.
fn banners_ui(ui: &egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    if app.errors.is_empty() {
        return;
    }
    let top = ui.max_rect();
    egui::Area::new(ui.scope_id().with("banners")).order(egui::Order::Foreground).fixed_pos(top.min).show(
        ui.ctx(),
        |ui| {
            ui.set_max_width(top.width());
            egui::Frame::popup(ui.style()).show(ui, |ui| {
                for (i, b) in app.errors.iter().enumerate() {
                    ui.horizontal(|ui| {
                        if ui.small_button("x").on_hover_text("dismiss").clicked() {
                            cmds.push(Command::DismissError(i));
                        }
                        ui.add(
                            egui::Label::new(
                                RichText::new(format!("(!) {}", b.text)).color(ui.visuals().error_fg_color),
                            )
                            .wrap(),
                        );
                    });
                }
            });
        },
    );
}

fn central_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>, slot: &mut usize) {
    banners_ui(ui, app, cmds);
    let Some(a) = app.current() else {
        let entry = app.images.get(app.selected);
        ui.centered_and_justified(|ui| {
            let msg = if app.model.is_none() && app.model_loading.is_none() {
                "No model loaded.\n\nOpen an INTR checkpoint (.pth from the official code, or .safetensors) with \"Open model…\", \
                 or drop it on the window; then open or drop photos."
                    .to_string()
            } else if app.images.is_empty() {
                "Open photos with \"Open images…\" (Ctrl+O) or drop images and folders on the window.".to_string()
            } else if let Some(err) = entry.and_then(|e| e.error.as_ref()) {
                let name = entry.and_then(|e| e.path.file_name()).map(|n| n.to_string_lossy()).unwrap_or_default();
                format!("(!) {name} could not be analysed:\n\n{err}")
            } else {
                "Analysing…".to_string()
            };
            ui.label(RichText::new(msg).size(16.0));
        });
        return;
    };
    let o = &a.output;
    let layer = app.view.layer.min(o.layers - 1);
    ui.horizontal(|ui| {
        ui.heading(&a.class_names[app.view.class]);
        let p = o.probabilities()[app.view.class];
        ui.label(format!("{:.1} %", p * 100.0));
        ui.separator();
        ui.label("layer");
        for l in 0..o.layers {
            if ui.selectable_label(l == layer, format!("{}", l + 1)).clicked() {
                cmds.push(Command::SelectLayer(l));
            }
        }
        ui.separator();
        let head_name = app.view.head.map_or("mean of heads".to_string(), |h| app.head_label(app.view.class, h));
        ui.label(head_name);
        if ui.button(if app.view.show_compare { "Hide comparison" } else { "Compare…" }).clicked() {
            cmds.push(Command::ShowCompare(!app.view.show_compare));
        }
        let sheet = ui.button(if app.view.show_sheet { "Hide sheet" } else { "Sheet…" });
        if sheet.on_hover_text("this class's heads over several photos of the strip (a specimen sheet)").clicked() {
            cmds.push(Command::ShowSheet(!app.view.show_sheet));
        }
    });
    let gallery_h = 110.0;
    let avail = ui.available_rect_before_wrap();
    let main = egui::Rect::from_min_max(avail.min, egui::pos2(avail.max.x - 120.0, avail.max.y - gallery_h));
    let bar = egui::Rect::from_min_max(egui::pos2(main.max.x + 10.0, main.min.y), egui::pos2(avail.max.x, main.max.y));
    let img_rect = fit(main, a.image.width, a.image.height);
    let resp = ui.allocate_rect(img_rect, Sense::click_and_drag());
    let uv = view_uv(app);
    let style = app.style_for(a, app.view.class, app.view.head);
    overlay_in(ui, app, a, img_rect, (app.view.class, app.view.head), &style, uv, slot, cmds);
    view_interaction(ui, app, a, &resp, img_rect, uv, cmds);
    colour_bar(ui, app, &style, bar);
    let strip = egui::Rect::from_min_max(egui::pos2(avail.min.x, main.max.y + 6.0), avail.max);
    gallery(ui, app, a, strip, cmds, slot);
}

fn view_interaction(
    ui: &egui::Ui,
    app: &ExplorerApp,
    a: &Analysis,
    resp: &egui::Response,
    rect: egui::Rect,
    uv: ([f32; 2], [f32; 2]),
    cmds: &mut Vec<Command>,
) {
    let (mut zoom, mut pan) = (app.view.zoom, app.view.pan);
    if resp.double_clicked() {
        cmds.push(Command::ViewTransform { zoom: 1.0, pan: Vec2::ZERO });
        return;
    }
    if resp.dragged() {
        let d = resp.drag_delta();
        pan += Vec2::new(d.x / rect.width(), d.y / rect.height()) / zoom;
    }
    if resp.hovered() {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = pinch * (scroll / 200.0).exp();
        if (factor - 1.0).abs() > 1e-4 {
            zoom = (zoom * factor).clamp(1.0, 32.0);
        }
        if let Some(pos) = resp.hover_pos() {
            let q = (pos - rect.min) / rect.size();
            let u = uv.0[0] + q.x * uv.1[0];
            let v = uv.0[1] + q.y * uv.1[1];
            let o = &a.output;
            let gw = o.grid.1;
            let (w, h) = a.mapping.original;
            // The cell whose features read the pixel under the pointer (as the overlay places it).
            if let Some((row, col)) = a.mapping.cell_at(f64::from(u) * w as f64, f64::from(v) * h as f64) {
                let layer = app.view.layer.min(o.layers - 1);
                let map = a.output.map_values(layer, app.view.class, app.view.head);
                // Next to the pointer, so it never covers the head gallery; cells counted from 1, as in
                // the summaries.
                resp.clone().on_hover_text_at_pointer(format!(
                    "grid row {}, column {} (from 1) · attention {:.5}",
                    row + 1,
                    col + 1,
                    map[row * gw + col]
                ));
            }
        }
    }
    if (zoom, pan) != (app.view.zoom, app.view.pan) {
        cmds.push(Command::ViewTransform { zoom, pan });
    }
}

/// The colour bar of the main view's `style`, with its value range and normalisation.
fn colour_bar(ui: &egui::Ui, app: &ExplorerApp, style: &crate::overlay::colormap::OverlayStyle, rect: egui::Rect) {
    ui.interact(rect, ui.scope_id().with("colour-bar"), Sense::hover())
        .on_hover_text(format!("colours from {:e} (bottom) to {:e} (top)", style.lo, style.hi));
    let lut = style.colormap.lut();
    let painter = ui.painter_at(rect);
    let bar = egui::Rect::from_min_size(rect.min + Vec2::new(0.0, 18.0), Vec2::new(18.0, rect.height() - 40.0));
    let n = 64;
    for i in 0..n {
        let t = 1.0 - i as f32 / (n - 1) as f32;
        let c = lut[((t * 255.0).round() as usize).min(255)];
        let y0 = bar.min.y + bar.height() * i as f32 / n as f32;
        let r = egui::Rect::from_min_max(
            egui::pos2(bar.min.x, y0),
            egui::pos2(bar.max.x, y0 + bar.height() / n as f32 + 1.0),
        );
        painter.rect_filled(r, 0.0, Color32::from_rgb(c[0], c[1], c[2]));
    }
    let font = egui::FontId::proportional(11.0);
    let text = ui.visuals().text_color();
    painter.text(
        egui::pos2(bar.max.x + 4.0, bar.min.y),
        egui::Align2::LEFT_CENTER,
        scale_value(style.hi),
        font.clone(),
        text,
    );
    painter.text(
        egui::pos2(bar.max.x + 4.0, bar.max.y),
        egui::Align2::LEFT_CENTER,
        scale_value(style.lo),
        font.clone(),
        text,
    );
    let scale_name = match app.display.normalization {
        Normalization::PerMap => "per-map min–max",
        Normalization::SharedHeads => "shared by heads",
        Normalization::SharedClasses => "shared by classes",
        Normalization::Absolute => "probability",
    };
    painter.text(rect.min, egui::Align2::LEFT_TOP, scale_name, font.clone(), text);
    if app.display.official_blur {
        painter.text(
            egui::pos2(rect.min.x, rect.max.y - 4.0),
            egui::Align2::LEFT_BOTTOM,
            "blurred 15 px",
            font.clone(),
            text,
        );
    } else if style.threshold > 0.0 {
        let y = bar.max.y - bar.height() * style.threshold;
        painter.hline(bar.x_range(), y, egui::Stroke::new(2.0, Color32::WHITE));
        painter.text(egui::pos2(bar.max.x + 4.0, y), egui::Align2::LEFT_CENTER, "cut", font, text);
    }
}

/// A colour-bar end as a person reads it: attention values below 0.0001 are "0" for any purpose
/// (the exact value is in the hover), others with four decimals.
fn scale_value(v: f32) -> String {
    if v.abs() < 1e-4 { "0".to_string() } else { format!("{v:.4}") }
}

fn gallery(
    ui: &mut egui::Ui,
    app: &ExplorerApp,
    a: &Analysis,
    strip: egui::Rect,
    cmds: &mut Vec<Command>,
    slot: &mut usize,
) {
    let o = &a.output;
    let n = o.heads + 1;
    let w = (strip.width() / n as f32 - 6.0).max(20.0);
    // The viewed class's probability, which every head's evening figure compares with.
    let now = o.probabilities().get(app.view.class).copied();
    // By number, or by the ranking (most important first) when asked for and known; the mean last.
    let ranked = match app.current_ranking() {
        Some(Ok(r)) => Some(r.ranked()),
        _ => None,
    };
    let order: Vec<Option<usize>> = match &ranked {
        Some(r) if app.view.gallery_by_rank => r.iter().map(|x| Some(x.head)).chain([None]).collect(),
        _ => (0..o.heads).map(Some).chain([None]).collect(),
    };
    let rank_of = |h: usize| ranked.as_ref().and_then(|r| r.iter().find(|x| x.head == h)).map(|x| x.rank);
    for (k, &head) in order.iter().enumerate() {
        let cell = egui::Rect::from_min_size(
            strip.min + Vec2::new(k as f32 * (w + 6.0), 0.0),
            Vec2::new(w, strip.height() - 16.0),
        );
        let r = fit(cell, a.image.width, a.image.height);
        let resp = ui.interact(r, ui.scope_id().with(("head", head)), Sense::click());
        let style = app.style_for(a, app.view.class, head);
        overlay_in(ui, app, a, r, (app.view.class, head), &style, ([0.0, 0.0], [1.0, 1.0]), slot, cmds);
        if app.view.head == head {
            ui.painter().rect_stroke(
                r.expand(2.0),
                2.0,
                egui::Stroke::new(2.0, ui.visuals().selection.bg_fill),
                egui::StrokeKind::Outside,
            );
        }
        // The evening is of the last layer's heads: shown only under that layer's maps.
        let last_layer = app.view.layer >= o.layers - 1;
        let reliance = head.filter(|_| last_layer).and_then(|h| evened_effect(a, h, app.view.class, now));
        // The ranking is of the last layer's heads: shown only under that layer's maps.
        let rank = head.filter(|_| last_layer).and_then(rank_of).map(|r| format!("#{r} ")).unwrap_or_default();
        let label = match (head, reliance) {
            (None, _) => "mean".to_string(),
            // From and to, in percent: "+53 %" read as a relative change.
            (Some(h), Some(e)) if e.points.abs() >= 0.5 => {
                format!(
                    "{rank}{} · {:.0} to {:.0} %",
                    app.head_label(app.view.class, h),
                    e.now * 100.0,
                    e.evened * 100.0
                )
            }
            (Some(h), _) => format!("{rank}{}", app.head_label(app.view.class, h)),
        };
        let hover = match (head, reliance) {
            (Some(h), Some(e)) => format!(
                "head {}: if it looked evenly over the whole image (last layer), {} would score {:.1} % instead \
                 of {:.1} % (logit {:+.2})",
                h + 1,
                a.class_names[app.view.class],
                e.evened * 100.0,
                e.now * 100.0,
                e.logit
            ),
            _ => label.clone(),
        };
        let text_rect =
            egui::Rect::from_center_size(egui::pos2(r.center().x, cell.max.y + 8.0), Vec2::new(w + 6.0, 14.0));
        ui.put(text_rect, egui::Label::new(RichText::new(&label).size(11.0)).wrap_mode(egui::TextWrapMode::Truncate));
        let plain = head.map_or("mean".to_string(), |h| format!("head {}", h + 1));
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, format!("gallery: {plain}")));
        let resp = resp.on_hover_text(format!("{hover}\n(right-click to name this head)"));
        if let Some(h) = head {
            // Clicks in the menu (its text field, its checkbox) must not close it.
            egui::Popup::context_menu(&resp)
                .close_behavior(egui::PopupCloseBehavior::CloseOnClickOutside)
                .show(|ui| name_head_menu(ui, app, h, cmds));
        }
        if resp.clicked() {
            cmds.push(Command::SelectHead(head));
        }
    }
}

/// What one class's score owes to where one head of the last layer looks.
#[derive(Debug, Clone, Copy)]
struct Evened {
    /// The class's probability now and with the head attending evenly.
    now: f32,
    evened: f32,
    /// Change of the probability, in percentage points.
    points: f32,
    /// Change of the class logit.
    logit: f32,
}

/// `now` is the class's current probability.
fn evened_effect(a: &Analysis, head: usize, class: usize, now: Option<f32>) -> Option<Evened> {
    let ev = a.evened.get(head)?;
    let now = now?;
    let evened = *crate::intr::model::softmax(ev).get(class)?;
    let logit = ev.get(class)? - a.output.logits.get(class)?;
    Some(Evened { now, evened, points: (evened - now) * 100.0, logit })
}

/// The comparison window's id (its size and place are remembered under it).
pub const COMPARE_WINDOW: &str = "compare-window";

/// The comparison: classes × heads on one colour scale. Its size is set once to fit the screen and
/// never follows what it drew last frame (it used to grow on every repaint); rows scroll. A click
/// on a cell shows that class and head in the main view.
fn compare_window(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>, slot: &mut usize) {
    let mut open = true;
    let max = ctx.content_rect().size() * Vec2::new(0.9, 0.75);
    let size = Vec2::new(900.0f32.min(max.x), 440.0f32.min(max.y));
    egui::Window::new("Compare classes")
        .id(egui::Id::unique(COMPARE_WINDOW))
        .open(&mut open)
        .default_size(size)
        .max_size(max)
        .constrain(true)
        .show(ctx, |ui| compare_ui(ui, app, cmds, slot));
    if !open {
        cmds.push(Command::ShowCompare(false));
    }
}

fn compare_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>, slot: &mut usize) {
    let Some(a) = app.current() else {
        ui.label("No result yet.");
        return;
    };
    if app.view.compare.len() < 2 {
        ui.label("Add two or more classes with + (or Ctrl+click) in the ranking.");
    }
    let o = &a.output;
    let probs = o.probabilities();
    let cols = o.heads + 1;
    // One colour scale shared by every row and column of the comparison.
    let shared = app.compare_style(a);
    ui.horizontal(|ui| {
        ui.label(format!(
            "classes: one scale {} – {} ({}) · click a cell to show it",
            scale_value(shared.lo),
            scale_value(shared.hi),
            shared.colormap.name()
        ));
        let mut on = app.view.contrast;
        let hint = "a row of where the first two classes look differently: per head, the first's attention minus \
                    the second's on one scale (red: the first looks more, blue: the second)";
        if ui.checkbox(&mut on, "contrast").on_hover_text(hint).changed() {
            cmds.push(Command::ShowContrast(on));
        }
    });
    const LABEL_W: f32 = 170.0;
    egui::ScrollArea::both().auto_shrink([false, false]).show(ui, |ui| {
        // Cells share the scroll area's width: what is drawn never widens the window.
        let gap = ui.spacing().item_spacing.x;
        let cell_w = ((ui.available_width() - LABEL_W - gap) / cols as f32 - gap).floor().clamp(24.0, 200.0);
        let cell_h = cell_w * a.image.height as f32 / a.image.width.max(1) as f32;
        ui.horizontal(|ui| {
            ui.add_space(LABEL_W);
            for k in 0..cols {
                // A name given for every class heads its column; names for one class are in its cells.
                let label = if k < o.heads {
                    app.head_names
                        .heads
                        .get(&(k + 1))
                        .map_or(format!("head {}", k + 1), |n| format!("head {} · {n}", k + 1))
                } else {
                    "mean".to_string()
                };
                ui.add_sized(
                    [cell_w, 14.0],
                    egui::Label::new(RichText::new(label).small()).wrap_mode(egui::TextWrapMode::Truncate),
                );
            }
        });
        if let (Some((first, second)), Some(cs)) = (app.contrast_pair(), app.contrast_scene()) {
            contrast_row(ui, app, a, (first, second), &cs, (LABEL_W, cell_w, cell_h), slot, cmds);
        }
        for &c in &app.view.compare {
            ui.horizontal(|ui| {
                ui.vertical(|ui| {
                    ui.set_width(LABEL_W - gap);
                    ui.add(egui::Label::new(RichText::new(&a.class_names[c]).strong()).wrap());
                    ui.label(format!("{:.1} %", probs[c] * 100.0));
                    if ui.small_button("remove").clicked() {
                        cmds.push(Command::ToggleCompare(c));
                    }
                });
                for k in 0..cols {
                    let head = (k < o.heads).then_some(k);
                    let (r, resp) = ui.allocate_exact_size(Vec2::new(cell_w, cell_h), Sense::click());
                    let what =
                        format!("{} · {}", a.class_names[c], head.map_or("mean".to_string(), |h| app.head_label(c, h)));
                    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &what));
                    // Zoom and pan follow the main view, so every cell shows the same region.
                    overlay_in(ui, app, a, r, (c, head), &shared, view_uv(app), slot, cmds);
                    if resp.on_hover_text(format!("show {what} in the main view")).clicked() {
                        cmds.push(Command::SelectClass(c));
                        cmds.push(Command::SelectHead(head));
                    }
                }
            });
        }
    });
}

/// The comparison's contrast row: per head and for the mean, `first`'s attention minus
/// `second`'s, drawn from the contrast scene on one symmetric red–blue scale.
#[allow(clippy::too_many_arguments)]
fn contrast_row(
    ui: &mut egui::Ui,
    app: &ExplorerApp,
    a: &Analysis,
    (first, second): (usize, usize),
    cs: &crate::gui::state::ContrastScene,
    (label_w, cell_w, cell_h): (f32, f32, f32),
    slot: &mut usize,
    cmds: &mut Vec<Command>,
) {
    let o = &a.output;
    let (gh, gw) = o.grid;
    let Some(atlas) = crate::gui::gpu::pipeline::AtlasLayout::new(o.heads + 1, gw as u32, gh as u32) else { return };
    let style = crate::overlay::colormap::OverlayStyle {
        colormap: crate::overlay::colormap::Colormap::RedBlue,
        interpolation: app.display.interpolation,
        lo: cs.range.0,
        hi: cs.range.1,
        threshold: 0.0,
        opacity: if app.view.overlay { app.display.opacity } else { 0.0 },
    };
    let gap = ui.spacing().item_spacing.x;
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            ui.set_width(label_w - gap);
            let (a_name, b_name) = (&a.class_names[first], &a.class_names[second]);
            ui.add(egui::Label::new(RichText::new(format!("{a_name} minus {b_name}")).strong()).wrap());
            ui.label(format!("red: {a_name} looks more · blue: {b_name} · scale ±{}", scale_value(cs.range.1)));
            if ui.small_button("swap").on_hover_text("subtract the other way round").clicked() {
                cmds.push(Command::SwapContrast);
            }
        });
        for k in 0..=o.heads {
            let head = (k < o.heads).then_some(k);
            let (r, resp) = ui.allocate_exact_size(Vec2::new(cell_w, cell_h), Sense::hover());
            let what = format!("contrast · {}", head.map_or("mean".to_string(), |h| app.head_label(first, h)));
            resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &what));
            let uniforms = OverlayUniforms::new(&atlas, k, a.mapping.placement(), &style, view_uv(app), true);
            ui.painter()
                .add(OverlayCallback { scene: crate::gui::app::CONTRAST_SCENE, slot: *slot, uniforms }.paint(r));
            *slot += 1;
            resp.on_hover_text(format!(
                "{what}: red where {} looks more than {}, blue where it looks less",
                a.class_names[first], a.class_names[second]
            ));
        }
    });
}

/// The Parts window: an annotated folder scored head by head against its parts in the worker,
/// the head × part table of hit rates, and a button that names the heads by their best parts.
fn parts_window(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>) {
    let mut open = true;
    egui::Window::new("Parts")
        .open(&mut open)
        .default_width(640.0)
        // Clear of the photo strip and the toolbar.
        .default_pos(egui::pos2(ctx.content_rect().width() * 0.25, 60.0))
        .show(ctx, |ui| {
            ui.label(
                "Where does each head look? Give a folder with part annotations: CUB-200-2011's layout \
             (images.txt, parts/, images/) or a generated dataset (intr-explorer synth). Each photo's class \
             is scored: a keypoint near a head's peak, or the peak inside a part's mask, is a hit.",
            );
            ui.horizontal(|ui| {
                let mut text = app.parts.input.clone();
                let edit =
                    ui.add(egui::TextEdit::singleline(&mut text).hint_text("annotated folder").desired_width(380.0));
                if edit.changed() {
                    cmds.push(Command::PartsInput(text.clone()));
                }
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let ready = app.model.is_some() && app.parts.running.is_none() && !text.trim().is_empty();
                if (ui.add_enabled(ready, egui::Button::new("Score")).clicked() || (enter && ready))
                    && !text.trim().is_empty()
                {
                    cmds.push(Command::ScoreParts(PathBuf::from(text.trim())));
                }
            });
            if let Some((done, total)) = app.parts.running {
                ui.horizontal(|ui| {
                    let f = if total > 0 { done as f32 / total as f32 } else { 0.0 };
                    ui.add(egui::ProgressBar::new(f).text(format!("scoring {done} / {total}")).desired_width(300.0));
                    if ui.button("Stop").clicked() {
                        cmds.push(Command::StopParts);
                    }
                });
            }
            match &app.parts.report {
                None => {}
                Some(Err(e)) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
                Some(Ok(r)) => parts_table(ui, r, cmds),
            }
            if let Some(t) = &app.parts.taken {
                ui.label(t);
            }
        });
    if !open {
        cmds.push(Command::ShowParts(false));
    }
}

fn parts_table(ui: &mut egui::Ui, r: &crate::batch::parts::PartReport, cmds: &mut Vec<Command>) {
    let what = match r.radius {
        Some(px) => format!("a keypoint within {px:.0} px of the head's peak"),
        None => "the head's peak inside the part's mask".to_string(),
    };
    ui.label(format!("{} photos ({}) · layer {} · hit rate: {what}", r.all.photos, r.format, r.layer));
    if !r.failed.is_empty() {
        let first = r.failed.first().map(|(p, e)| format!(" (first: {}: {e})", p.display())).unwrap_or_default();
        ui.colored_label(ui.visuals().warn_fg_color, format!("{} photos could not be analysed{first}", r.failed.len()));
    }
    egui::ScrollArea::both().max_height(360.0).show(ui, |ui| {
        egui::Grid::new("parts-table").striped(true).show(ui, |ui| {
            // The attention head, not the body part that may be called "head".
            ui.label(RichText::new("attn head").strong());
            for p in &r.parts {
                ui.label(RichText::new(p).strong());
            }
            ui.label(RichText::new("suggested name").strong());
            ui.end_row();
            for h in 0..r.all.hits.len() {
                ui.label(format!("{}", h + 1));
                for p in 0..r.parts.len() {
                    let rate = r.all.rate(h, p);
                    let best = r.suggested[h].as_ref().is_some_and(|s| s.part == r.parts[p]);
                    let text = RichText::new(format!("{rate:.2}")).monospace();
                    ui.label(if best { text.strong() } else { text.weak() });
                }
                match &r.suggested[h] {
                    Some(s) => ui.label(format!("{} {:.2}", s.part, s.hit_rate)),
                    None => ui.label("(none)").on_hover_text(format!(
                        "no part is under this head's peak {:.0} % of the time or more",
                        crate::batch::parts::MIN_SUGGESTED_RATE * 100.0
                    )),
                };
                ui.end_row();
            }
        });
    });
    let any = r.suggested.iter().any(Option::is_some);
    let take = ui.add_enabled(any, egui::Button::new("Use the suggested names"));
    let hint = "name each head that has a suggestion by it, for every class (kept for the model; names given \
                before to those heads are replaced, the change is listed)";
    if take.on_hover_text(hint).clicked() {
        cmds.push(Command::TakePartNames);
    }
}

/// The specimen sheet's window id.
pub const SHEET_WINDOW: &str = "sheet-window";

/// The specimen sheet: the viewed class's heads and their mean (columns) over the strip's analysed
/// photos (rows), each photo ticked in or out. Photos are analysed when shown.
fn sheet_window(ctx: &egui::Context, app: &ExplorerApp, cmds: &mut Vec<Command>, slot: &mut usize) {
    let mut open = true;
    let max = ctx.content_rect().size() * Vec2::new(0.9, 0.8);
    let size = Vec2::new(900.0f32.min(max.x), 520.0f32.min(max.y));
    egui::Window::new("Specimen sheet")
        .id(egui::Id::unique(SHEET_WINDOW))
        // Clear of the photo strip on the left, whose photos it lists.
        .default_pos(egui::pos2(ctx.content_rect().width() * 0.25, 60.0))
        .open(&mut open)
        .default_size(size)
        .max_size(max)
        .constrain(true)
        .show(ctx, |ui| sheet_ui(ui, app, cmds, slot));
    if !open {
        cmds.push(Command::ShowSheet(false));
    }
}

fn sheet_ui(ui: &mut egui::Ui, app: &ExplorerApp, cmds: &mut Vec<Command>, slot: &mut usize) {
    let Some(shown) = app.current() else {
        ui.label("No result yet.");
        return;
    };
    let class = app.view.class;
    let layer = app.view.layer.min(shown.output.layers.saturating_sub(1));
    let rows = app.sheet_photos();
    ui.label(format!(
        "{} · layer {} · {} photo{} · columns: heads, then their mean · export it with Export (sheet)",
        shown.class_names[class],
        layer + 1,
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    // The strip's photos: ticked ones are on the sheet; a photo not analysed yet is when shown.
    ui.horizontal_wrapped(|ui| {
        for (i, e) in app.images.iter().enumerate() {
            let name = e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if e.analysis.is_some() {
                let mut on = !app.view.sheet_left_out.contains(&e.path);
                if ui.checkbox(&mut on, &name).changed() {
                    cmds.push(Command::SheetPhoto(e.path.clone(), on));
                }
            } else if ui.small_button(format!("{name} (show to analyse)")).clicked() {
                cmds.push(Command::SelectImage(i));
            }
        }
    });
    if app.images.iter().filter(|e| e.analysis.is_some()).count() > crate::gui::app::SHEET_PHOTOS {
        ui.label(RichText::new(format!("the first {} ticked photos are shown", crate::gui::app::SHEET_PHOTOS)).small());
    }
    ui.separator();
    const LABEL_W: f32 = 150.0;
    let cols = shown.output.heads + 1;
    egui::ScrollArea::both().auto_shrink([false, false]).show(ui, |ui| {
        let gap = ui.spacing().item_spacing.x;
        let cell_w = ((ui.available_width() - LABEL_W - gap) / cols as f32 - gap).floor().clamp(24.0, 160.0);
        ui.horizontal(|ui| {
            ui.add_space(LABEL_W);
            for k in 0..cols {
                let label = if k + 1 < cols { app.head_label(class, k) } else { "mean".to_string() };
                ui.add_sized(
                    [cell_w, 14.0],
                    egui::Label::new(RichText::new(label).small()).wrap_mode(egui::TextWrapMode::Truncate),
                );
            }
        });
        for a in &rows {
            if a.output.classes <= class || a.output.heads + 1 != cols {
                continue;
            }
            let cell_h = cell_w * a.image.height as f32 / a.image.width.max(1) as f32;
            let name = a.image_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let p = a.output.probabilities()[class];
            let rank = a.output.ranking().iter().position(|&c| c == class).map_or(0, |r| r + 1);
            ui.horizontal(|ui| {
                ui.vertical(|ui| {
                    ui.set_width(LABEL_W - gap);
                    ui.add(egui::Label::new(RichText::new(&name).strong()).wrap());
                    ui.label(format!("{:.1} % · rank {rank}", p * 100.0));
                });
                for k in 0..cols {
                    let head = (k + 1 < cols).then_some(k);
                    let (r, resp) = ui.allocate_exact_size(Vec2::new(cell_w, cell_h), Sense::hover());
                    let what = format!("{name} · {}", head.map_or("mean".to_string(), |h| app.head_label(class, h)));
                    resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, &what));
                    let style = app.style_for(a, class, head);
                    overlay_in(ui, app, a, r, (class, head), &style, ([0.0, 0.0], [1.0, 1.0]), slot, cmds);
                    resp.on_hover_text(what);
                }
            });
        }
    });
}

fn help_window(ctx: &egui::Context, cmds: &mut Vec<Command>) {
    let mut open = true;
    egui::Window::new("Help").open(&mut open).default_width(560.0).show(ctx, |ui| {
        egui::ScrollArea::vertical().max_height(520.0).show(ui, |ui| {
            ui.heading("What you see");
            for (what, means) in [
                (
                    "Class",
                    "INTR has one query per class; each asks the photo whether its class is there. The ranking is \
                     the softmax of their answers.",
                ),
                (
                    "Head",
                    "Each class query looks at the photo through several attention heads; a head's map shows where \
                     it looked (brighter = more attention). Heads often specialise in a part (crown, wing, tail).",
                ),
                (
                    "Layer",
                    "The decoder runs its class queries through several layers; the last layer's maps are the ones \
                     the decision is read from.",
                ),
                ("Mean", "The average of the heads' maps of the chosen class and layer."),
                (
                    "Head · 62 to 7 %",
                    "Under each head of the last layer: the class's probability now, then if that head alone looked \
                     evenly over the whole image, for every class at once (everything else unchanged). A large drop \
                     means the decision rests on where that head looks; a head on the background may be checking \
                     that a mark is absent.",
                ),
                (
                    "Head names",
                    "Right-click a head in the gallery to name it (\"crown\"), for every class or for the class \
                     shown only. Names are kept for the model and appear in the gallery, ranking, comparison, \
                     figures and summaries.",
                ),
                (
                    "Heads ranked",
                    "The order of the last layer's heads by what this class's decision rests on (as Prompt-CAM ranks \
                     heads). Heads are evened one after another, for this class only, each step taking the head \
                     whose evening leaves the class's probability highest — the one it needs least; the head left \
                     to the end ranks first. Each row gives the class's probability once that head and every head \
                     ranked below it are evened; the curve shows the probability after 0, 1, 2, … heads. Because \
                     heads act together, a head's rank can differ from its figure under the gallery (one head \
                     alone); early steps can even raise the probability, when a head was weighing against the class.",
                ),
                (
                    "Contrast",
                    "In the comparison, tick \"contrast\" for where its first two classes look differently (with \
                     fewer classes, the top class and its closest look-alike): per head, the first class's attention \
                     minus the second's, on one scale — red where the first looks more, blue where the second does, \
                     white where they agree.",
                ),
                (
                    "Sheet",
                    "A specimen sheet: the class shown, its heads and their mean across the strip's photos, one \
                     row per photo (untick photos to leave them out; a photo is analysed when shown). Does head 3 \
                     find the crown on every specimen? Export it as a figure with Export (sheet).",
                ),
                (
                    "Parts",
                    "Parts… (toolbar) scores every head against a folder of photos with part annotations \
                     (CUB's keypoints, or generated birds' masks): how often each head's peak falls on each \
                     part, and a suggested name per head, which one button takes over as the head names.",
                ),
                ("Colour bar", "Which attention values the colours stand for, under the chosen normalisation."),
                (
                    "Normalisation",
                    "Per map: each map stretched from its own lowest to highest value (the official renderer). \
                     Shared by heads / by compared classes: one scale, so maps can be compared. Absolute: the \
                     attention probability itself on a fixed 0–0.25 scale, comparable across photos.",
                ),
                (
                    "Out of domain",
                    "A notice when the model cannot decide between its best classes: the photo may show \
                     something it was never trained on, and its ranking may mean little.",
                ),
            ] {
                ui.horizontal_wrapped(|ui| {
                    ui.label(RichText::new(what).strong());
                    ui.label(means);
                });
            }
            ui.separator();
            ui.heading("Keys");
            egui::Grid::new("keys").striped(true).show(ui, |ui| {
                for (k, what) in [
                    ("Up / Down", "previous / next class in the ranking"),
                    ("Left / Right", "previous / next head (the mean after the last head)"),
                    ("1 to 9", "show that head"),
                    ("0", "mean of the heads"),
                    ("L", "next decoder layer"),
                    ("V", "overlay on / off (the photo alone)"),
                    ("Ctrl+O", "open images"),
                    ("Delete", "close the photo shown"),
                    ("Ctrl+E", "export a figure (SVG, PDF, PNG)"),
                    ("wheel / drag / double-click", "zoom / pan / fit"),
                    ("F1", "this help"),
                ] {
                    ui.label(RichText::new(k).monospace());
                    ui.label(what);
                    ui.end_row();
                }
            });
        });
    });
    if !open {
        cmds.push(Command::ShowHelp(false));
    }
}

#[cfg(test)]
mod tests {
    use super::scale_value;

    #[test]
    fn colour_bar_ends_read_as_numbers_a_person_needs() {
        assert_eq!(scale_value(7.145e-29), "0");
        assert_eq!(scale_value(1.175e-38), "0");
        assert_eq!(scale_value(0.0), "0");
        assert_eq!(scale_value(0.09601), "0.0960");
        assert_eq!(scale_value(2.275e-3), "0.0023");
    }
}
