//! `explain`: figures and a summary for many photos, headless. The [`plan`] is checked before any
//! work; then each photo of the shard is analysed through the session, its figures written and its
//! [`records`] kept beside them, so reruns skip finished photos and a bad photo is reported and
//! skipped; the [`summary`] is rebuilt from all records at the end. Each figure records the command
//! that re-makes it ([`remake`]).

pub mod parts;
pub mod plan;
pub mod records;
pub mod remake;
pub mod summary;

use std::path::Path;

use anyhow::{Context, Result};

use plan::{ClassPick, ContrastPick};
pub use plan::{Plan, Request};
use records::{PhotoRecord, head_records};

use crate::figure::{self, Figure, FigureOptions, SheetRow, Source, View};
use crate::files::write_atomic;
use crate::image::preprocess::PreprocessOptions;
use crate::session::{Analysis, Probes, Session};

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Photos of the whole run and of this shard.
    pub photos: usize,
    pub in_shard: usize,
    /// Photos of this shard whose figures were made, reused from an earlier run of the same plan,
    /// or that could not be explained.
    pub made: usize,
    pub reused: usize,
    pub failed: usize,
    /// Specimen sheets written.
    pub sheets: usize,
}

/// Runs `plan` on the session's model; `options` say how photos are read; `progress(k, stem)` is
/// called before the k-th photo of the shard (0-based) and `failed(message)` after each failure.
pub fn run(
    plan: &Plan,
    s: &Session,
    options: PreprocessOptions,
    mut progress: impl FnMut(usize, &str),
    mut failed: impl FnMut(&str),
) -> Result<Outcome> {
    std::fs::create_dir_all(&plan.output.out)
        .with_context(|| format!("{}: cannot create the output folder", plan.output.out.display()))?;
    let records_dir = plan.output.out.join(".records");
    std::fs::create_dir_all(&records_dir).with_context(|| format!("{}: cannot create", records_dir.display()))?;
    // The run's provenance entries that do not depend on the photo.
    let info = Source::of_model(Some(s.path()), s.class_names())?;
    let (mut made, mut reused, mut failures) = (0, 0, 0);
    // Specimen sheets' rows, per class in the order the classes first appear.
    let mut sheets: Vec<(usize, Vec<SheetRow>)> = Vec::new();
    let mut add_rows = |rows: Vec<(usize, SheetRow)>| {
        for (c, row) in rows {
            match sheets.iter_mut().find(|(k, _)| *k == c) {
                Some((_, v)) => v.push(row),
                None => sheets.push((c, vec![row])),
            }
        }
    };
    for (k, &i) in plan.mine.iter().enumerate() {
        let (file, stem) = (&plan.files[i], &plan.stems[i]);
        progress(k, stem);
        let record_path = records_dir.join(format!("{stem}.json"));
        // A finished photo is reused only if it was made from the same photo by the same plan.
        let source = info.with_image(file);
        if let Ok(source) = &source
            && !plan.output.force
            && records::finished(&record_path, &plan.output.out, &plan.fingerprint(source))
        {
            reused += 1;
            // Its figures stand; a sheet still needs what the photo shows.
            if plan.sheet {
                match s.analyse(file, options, Probes::default()) {
                    Ok(a) => add_rows(sheet_rows(plan, &a)),
                    Err(e) => failed(&format!("{e:#}")),
                }
            }
            continue;
        }
        let record = match source.and_then(|source| explain_one(plan, s, options, &source, file, stem)) {
            Ok((r, rows)) => {
                made += 1;
                add_rows(rows);
                r
            }
            Err(e) => {
                failures += 1;
                let msg = format!("{e:#}");
                failed(&msg);
                PhotoRecord::failed(file, msg)
            }
        };
        let json = serde_json::to_vec_pretty(&record)?;
        write_atomic(&record_path, |tmp| Ok(std::fs::write(tmp, &json)?))?;
    }
    summary::write_summaries(&plan.output.out, &records_dir, &plan.stems)?;
    let mut written = 0;
    for (class, rows) in &sheets {
        written += write_sheets(plan, s, *class, rows)?;
    }
    Ok(Outcome { photos: plan.files.len(), in_shard: plan.mine.len(), made, reused, failed: failures, sheets: written })
}

/// The classes a photo's figures explain.
fn explained(plan: &Plan, out: &crate::intr::IntrOutput) -> Vec<usize> {
    match plan.classes {
        ClassPick::Top(n) => out.ranking().into_iter().take(n).collect(),
        ClassPick::One(c) => vec![c],
    }
}

/// A photo's rows of the specimen sheets (one per explained class), if sheets are asked for.
fn sheet_rows(plan: &Plan, a: &Analysis) -> Vec<(usize, SheetRow)> {
    if !plan.sheet {
        return Vec::new();
    }
    explained(plan, &a.output)
        .into_iter()
        .map(|c| (c, SheetRow::of_analysis(a, plan.layer, c, plan.output.panel_width)))
        .collect()
}

/// Writes the specimen sheets of `class` (`sheet__CLASS`, then `sheet__CLASS__2`… for each
/// further [`figure::sheet::SHEET_ROWS`] photos); returns how many.
fn write_sheets(plan: &Plan, s: &Session, class: usize, rows: &[SheetRow]) -> Result<usize> {
    let names = s.class_names();
    let source = Source::of_model(Some(s.path()), names)?;
    let pages: Vec<&[SheetRow]> = rows.chunks(figure::sheet::SHEET_ROWS).collect();
    for (k, page) in pages.iter().enumerate() {
        let what = (plan.layer, class, plan.heads.as_slice());
        let prov = figure::sheet::sheet_provenance(&plan.output.look, what, names, page, &source, &plan.head_names)?;
        let o = &plan.output;
        let opts = FigureOptions {
            look: o.look,
            layer: plan.layer,
            letters: o.letters,
            labels: o.labels,
            title: o.title.clone(),
            caption: o.caption.clone(),
            model: Some(plan.model.clone()),
            width_mm: o.width_mm,
            head_names: plan.head_names.clone(),
            ..Default::default()
        };
        let fig = figure::compose_sheet(page, &names[class], &plan.heads, plan.layer, &opts, prov);
        let part = if k == 0 { String::new() } else { format!("__{}", k + 1) };
        let fname = format!("sheet__{}{part}.{}", slug(&names[class]), o.format.extension());
        figure::write(&fig, &o.out.join(fname), o.format, o.dpi)?;
    }
    Ok(pages.len())
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// The options a figure of analysed photo `a` is drawn with.
fn figure_options(plan: &Plan, a: &Analysis) -> FigureOptions {
    let (o, width) = (&plan.output, a.image.width);
    FigureOptions {
        look: o.look,
        layer: plan.layer,
        panel_width: Some(o.panel_width.unwrap_or_else(|| (width as u32).min(480))),
        letters: o.letters,
        labels: o.labels,
        title: o.title.clone(),
        caption: o.caption.clone(),
        scale: o.scale.as_ref().map(|sc| (sc.per_pixel, sc.unit.clone())),
        shared_with: plan.compare.clone(),
        model: Some(plan.model.clone()),
        out_of_domain: Some(a.ood),
        photo_panel: o.photo_panel,
        evened: a.evened.clone(),
        width_mm: o.width_mm,
        head_names: plan.head_names.clone(),
    }
}

/// The figure of `view` of an analysed photo, with its provenance (how it was made, from what,
/// and the command that re-makes it).
fn figure_of(plan: &Plan, a: &Analysis, names: &[String], source: &Source, view: &View) -> Result<Figure> {
    let mut prov = figure::look_provenance(&plan.output.look, plan.layer, view, names);
    source.add_to(&mut prov);
    let args = remake::args(&plan.output.remake, &a.image_path, view, names, plan.layer);
    prov.insert("remake".into(), remake::shell_join(&args));
    prov.insert("remake_args".into(), serde_json::to_string(&args)?);
    // The names on the panels, so that a remake draws the same ones whatever the store says then.
    if !plan.head_names.is_empty() {
        prov.insert("head_names".into(), serde_json::to_string(&plan.head_names)?);
    }
    Ok(figure::compose(&a.image, &a.output, names, view, &figure_options(plan, a), prov))
}

/// Makes one figure again: `view` of the plan's only photo, written to `dest` (and nothing else:
/// no record, no summary). Returns the path written.
pub fn remake_figure(plan: &Plan, s: &Session, options: PreprocessOptions, view: &View, dest: &Path) -> Result<()> {
    let file = plan.files.first().context("the recorded command names no photo")?;
    let source = Source::of_model(Some(s.path()), s.class_names())?.with_image(file)?;
    let a = s.analyse(file, options, Probes { evening: true })?;
    let fig = figure_of(plan, &a, s.class_names(), &source, view)?;
    figure::write(&fig, dest, plan.output.format, plan.output.dpi)
}

/// Analyses one photo (with each last-layer head's evening, for the summary's
/// `probability_if_evened`, and each explained class's head ranking), writes its figures and
/// returns its record and its rows of the specimen sheets.
fn explain_one(
    plan: &Plan,
    s: &Session,
    options: PreprocessOptions,
    source: &Source,
    file: &Path,
    stem: &str,
) -> Result<(PhotoRecord, Vec<(usize, SheetRow)>)> {
    let a = s.analyse(file, options, Probes { evening: true })?;
    let (out, names) = (&a.output, s.class_names());
    let ranking = out.ranking();
    let probs = out.probabilities();
    let classes = explained(plan, out);
    // Each explained class's heads ranked by greedy evening (the summary's rank columns).
    let rankings = if plan.layer + 1 == out.layers {
        classes.iter().map(|&c| s.rank_heads(&a, c)).collect::<crate::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let heads = &plan.heads;
    let mut views: Vec<(View, String)> = classes
        .iter()
        .map(|&c| (View::Gallery { class: c, heads: heads.clone(), mean: true }, slug(&names[c])))
        .collect();
    if !plan.compare.is_empty() {
        views.push((
            View::Compare { classes: plan.compare.clone(), heads: heads.clone(), mean: true },
            "compare".into(),
        ));
    }
    // Each explained class against its contrast class (its closest look-alike: the photo's best
    // other class, or the one named).
    for &c in &classes {
        // A class named that is the one explained is contrasted with its runner-up instead.
        let runner_up = ranking.iter().copied().find(|&k| k != c);
        let other = match plan.contrast {
            None => continue,
            Some(ContrastPick::Class(k)) if k != c => k,
            Some(_) => match runner_up {
                Some(k) => k,
                None => continue,
            },
        };
        if other != c {
            let view = View::Contrast { first: c, second: other, heads: heads.clone(), mean: true };
            views.push((view, format!("{}__minus__{}", slug(&names[c]), slug(&names[other]))));
        }
    }
    let mut figures_out = Vec::new();
    for (view, name) in &views {
        let fig = figure_of(plan, &a, names, source, view)?;
        let fname = format!("{stem}__{name}.{}", plan.output.format.extension());
        figure::write(&fig, &plan.output.out.join(&fname), plan.output.format, plan.output.dpi)?;
        figures_out.push(fname);
    }
    // The gallery figure of each class (the comparison and contrasts, if any, come after).
    let gallery = |c: usize| classes.iter().position(|&k| k == c).and_then(|i| figures_out.get(i).cloned());
    let record = PhotoRecord {
        image: file.display().to_string(),
        image_sha256: source.image_sha256.clone(),
        top: ranking.iter().take(5).map(|&c| (names[c].clone(), probs[c])).collect(),
        heads: head_records(&a, &probs, plan, &classes, &rankings, gallery),
        figures: figures_out,
        error: None,
        plan: Some(plan.fingerprint(source)),
        model: Some(plan.model.clone()),
        out_of_domain: Some(a.ood),
    };
    Ok((record, sheet_rows(plan, &a)))
}
