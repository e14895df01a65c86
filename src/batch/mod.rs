//! `explain`: figures and a summary for many photos, headless. The [`plan`] is checked before any
//! work; then each photo of the shard is analysed through the session, its figures written and its
//! [`records`] kept beside them, so reruns skip finished photos and a bad photo is reported and
//! skipped; the [`summary`] is rebuilt from all records at the end. Each figure records the command
//! that re-makes it ([`remake`]).

pub mod plan;
pub mod records;
pub mod remake;
pub mod summary;

use std::path::Path;

use anyhow::{Context, Result};

use plan::ClassPick;
pub use plan::{Plan, Request};
use records::{PhotoRecord, head_records};

use crate::figure::{self, FigureOptions, Source, View};
use crate::files::write_atomic;
use crate::image::preprocess::PreprocessOptions;
use crate::session::{Probes, Session};

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Photos of the whole run and of this shard.
    pub photos: usize,
    pub in_shard: usize,
    /// Photos of this shard that could not be explained.
    pub failed: usize,
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
    let mut failures = 0;
    for (k, &i) in plan.mine.iter().enumerate() {
        let (file, stem) = (&plan.files[i], &plan.stems[i]);
        progress(k, stem);
        let record_path = records_dir.join(format!("{stem}.json"));
        if !plan.output.force && records::finished(&record_path, &plan.output.out) {
            continue;
        }
        let record = match explain_one(plan, s, options, &info, file, stem) {
            Ok(r) => r,
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
    Ok(Outcome { photos: plan.files.len(), in_shard: plan.mine.len(), failed: failures })
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// Analyses one photo (with each last-layer head's evening, for the summary's
/// `probability_if_evened`), writes its figures and returns its record.
fn explain_one(
    plan: &Plan,
    s: &Session,
    options: PreprocessOptions,
    info: &Source,
    file: &Path,
    stem: &str,
) -> Result<PhotoRecord> {
    let source = info.with_image(file)?;
    let a = s.analyse(file, options, Probes { evening: true })?;
    let (out, names) = (&a.output, s.class_names());
    let ranking = out.ranking();
    let probs = out.probabilities();
    let classes: Vec<usize> = match plan.classes {
        ClassPick::Top(n) => ranking.iter().copied().take(n).collect(),
        ClassPick::One(c) => vec![c],
    };
    let opts = FigureOptions {
        look: plan.output.look,
        layer: plan.layer,
        panel_width: Some(plan.output.panel_width.unwrap_or_else(|| (a.image.width as u32).min(480))),
        letters: true,
        labels: true,
        title: plan.output.title.clone(),
        caption: plan.output.caption.clone(),
        scale: plan.output.scale.as_ref().map(|sc| (sc.per_pixel, sc.unit.clone())),
        shared_with: plan.compare.clone(),
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
    let mut figures_out = Vec::new();
    for (view, name) in &views {
        let mut prov = figure::look_provenance(&plan.output.look, plan.layer, view, names);
        source.add_to(&mut prov);
        let args = remake::args(&plan.output.remake, file, view, names, plan.layer);
        prov.insert("remake".into(), remake::shell_join(&args));
        prov.insert("remake_args".into(), serde_json::to_string(&args)?);
        let fig = figure::compose(&a.image, out, names, view, &opts, prov);
        let fname = format!("{stem}__{name}.{}", plan.output.format.extension());
        figure::write(&fig, &plan.output.out.join(&fname), plan.output.format, plan.output.dpi)?;
        figures_out.push(fname);
    }
    Ok(PhotoRecord {
        image: file.display().to_string(),
        image_sha256: source.image_sha256.clone(),
        top: ranking.iter().take(5).map(|&c| (names[c].clone(), probs[c])).collect(),
        heads: head_records(out, &probs, &a.evened, plan.layer, &classes, heads, names),
        figures: figures_out,
        error: None,
    })
}
