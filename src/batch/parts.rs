//! Part alignment over a folder of annotated photos (`intr-explorer parts`): where does each head
//! of each class look? Every photo is analysed; for its class (the annotated one, else the model's
//! best) each last-layer head's peak — the receptive centre of its most attended cell — is scored
//! against the photo's parts: a CUB keypoint counts when it lies within a radius of the peak, a
//! generated bird's part mask when the peak lies inside it. The result is a head × part table of hit
//! rates (over all classes and per class) with a suggested name per head ("crown 0.81").
//!
//! Two annotation formats: CUB-200-2011's (`images.txt`, `parts/parts.txt`, `parts/part_locs.txt`,
//! optionally `image_class_labels.txt`, photos under `images/`) and the demo generator's
//! (`dataset.json`, `train/` and `val/` class folders, part masks under `masks/`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::preprocess::PreprocessOptions;
use crate::session::{Probes, Session};

/// A head is given a suggested name only when its peak falls on that part at least this often.
pub const MIN_SUGGESTED_RATE: f64 = 0.25;

/// Annotation files are read whole; larger ones are refused.
const MAX_ANNOTATION_BYTES: u64 = 256 << 20;

/// What is known of one photo's parts.
#[derive(Debug, Clone)]
pub enum Truth {
    /// Visible keypoints: (part index, x, y) in photo pixels.
    Keypoints(Vec<(usize, f64, f64)>),
    /// A label mask of the photo's size; `labels[y·w + x]` indexes [`Annotated::parts`] (through
    /// `label_part`), or is background.
    Mask { width: usize, height: usize, labels: Vec<u8>, label_part: BTreeMap<u8, usize> },
}

/// One annotated photo.
#[derive(Debug, Clone)]
pub struct Item {
    pub image: PathBuf,
    /// The annotated class (0-based), if the annotations give one.
    pub class: Option<usize>,
    pub truth: Truth,
}

/// An annotated folder.
#[derive(Debug, Clone)]
pub struct Annotated {
    /// "CUB" or "generated".
    pub format: &'static str,
    pub parts: Vec<String>,
    pub items: Vec<Item>,
}

fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if meta.len() > MAX_ANNOTATION_BYTES {
        return Err(Error::file(path, format!("is {} MB, more than annotations can be", meta.len() >> 20)));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Error::file(path, "is not UTF-8 text"))
}

/// `id rest…` lines (blank lines skipped); a line whose id is not a number is an error naming it.
fn id_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (id, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let id =
            id.parse::<usize>().map_err(|_| Error::file(path, format!("line {}: `{id}` is not a number", n + 1)))?;
        out.push((id, rest.trim().to_string()));
    }
    Ok(out)
}

/// Reads an annotated folder, in either format.
pub fn load(dir: &Path) -> Result<Annotated> {
    if !dir.exists() {
        return Err(Error::file(dir, "does not exist"));
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder"));
    }
    if dir.join("parts/part_locs.txt").is_file() && dir.join("images.txt").is_file() {
        load_cub(dir)
    } else if dir.join("dataset.json").is_file() && dir.join("masks").is_dir() {
        load_generated(dir)
    } else {
        Err(Error::file(
            dir,
            "holds no part annotations: expected CUB's images.txt, parts/parts.txt and parts/part_locs.txt, \
             or a generated dataset (dataset.json and masks/, from `intr-explorer synth`)",
        ))
    }
}

fn load_cub(dir: &Path) -> Result<Annotated> {
    let parts_file = dir.join("parts/parts.txt");
    let part_ids = id_lines(&parts_file)?;
    if part_ids.is_empty() {
        return Err(Error::file(&parts_file, "lists no parts"));
    }
    let parts: Vec<String> = part_ids.iter().map(|(_, n)| n.clone()).collect();
    let part_index: BTreeMap<usize, usize> = part_ids.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let images_file = dir.join("images.txt");
    let images = id_lines(&images_file)?;
    let labels_file = dir.join("image_class_labels.txt");
    let labels: BTreeMap<usize, usize> = if labels_file.is_file() {
        id_lines(&labels_file)?
            .into_iter()
            .map(|(id, c)| match c.parse::<usize>() {
                Ok(c) if c >= 1 => Ok((id, c - 1)),
                _ => Err(Error::file(&labels_file, format!("image {id}: `{c}` is not a class number (from 1)"))),
            })
            .collect::<Result<_>>()?
    } else {
        BTreeMap::new()
    };
    let locs_file = dir.join("parts/part_locs.txt");
    let mut keypoints: BTreeMap<usize, Vec<(usize, f64, f64)>> = BTreeMap::new();
    for (n, line) in read_text(&locs_file)?.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = || Error::file(&locs_file, format!("line {}: expected `image part x y visible`", n + 1));
        let [img, part, x, y, visible] = f[..] else { return Err(bad()) };
        let (img, part): (usize, usize) = (img.parse().map_err(|_| bad())?, part.parse().map_err(|_| bad())?);
        let (x, y, visible): (f64, f64, f64) =
            (x.parse().map_err(|_| bad())?, y.parse().map_err(|_| bad())?, visible.parse().map_err(|_| bad())?);
        let part = *part_index
            .get(&part)
            .ok_or_else(|| Error::file(&locs_file, format!("line {}: part {part} is not in parts.txt", n + 1)))?;
        if visible > 0.0 && x.is_finite() && y.is_finite() {
            keypoints.entry(img).or_default().push((part, x, y));
        }
    }
    let items = images
        .into_iter()
        .map(|(id, rel)| Item {
            image: dir.join("images").join(rel),
            class: labels.get(&id).copied(),
            truth: Truth::Keypoints(keypoints.remove(&id).unwrap_or_default()),
        })
        .collect();
    Ok(Annotated { format: "CUB", parts, items })
}

fn load_generated(dir: &Path) -> Result<Annotated> {
    let info_file = dir.join("dataset.json");
    let info: serde_json::Value = serde_json::from_str(&read_text(&info_file)?)
        .map_err(|e| Error::file(&info_file, format!("is not valid JSON: {e}")))?;
    let names = info
        .get("parts")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| Error::file(&info_file, "has no `parts` (mask label → part name)"))?;
    let mut label_part = BTreeMap::new();
    let mut parts = Vec::new();
    for (label, name) in names {
        let label: u8 = label.parse().map_err(|_| Error::file(&info_file, format!("part label `{label}`")))?;
        let name = name.as_str().unwrap_or_default();
        if label == 0 || name == "background" {
            continue;
        }
        label_part.insert(label, parts.len());
        parts.push(name.to_string());
    }
    let mut items = Vec::new();
    for split in ["train", "val"] {
        let root = dir.join(split);
        if !root.is_dir() {
            continue;
        }
        for (class, folder) in crate::session::classes::class_folders(&root)?.into_iter().enumerate() {
            let Some(class_name) = folder.file_name() else { continue };
            let mask_dir = dir.join("masks").join(split).join(class_name);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(|e| Error::file(&folder, format!("cannot list folder: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::image::decode::has_image_extension(p))
                .collect();
            files.sort();
            for image in files {
                let Some(stem) = image.file_stem() else { continue };
                let mask = mask_dir.join(stem).with_extension("png");
                if !mask.is_file() {
                    continue;
                }
                let m = image::open(&mask)
                    .map_err(|e| Error::file(&mask, format!("cannot read the part mask: {e}")))?
                    .into_luma8();
                let (width, height) = (m.width() as usize, m.height() as usize);
                items.push(Item {
                    image,
                    class: Some(class),
                    truth: Truth::Mask { width, height, labels: m.into_raw(), label_part: label_part.clone() },
                });
            }
        }
    }
    Ok(Annotated { format: "generated", parts, items })
}

/// Hits and cases of every head against every part.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HitTable {
    /// Photos scored.
    pub photos: usize,
    /// `rates[h][p]`: `hits / cases` (0 where the part could never be hit); filled by [`score`].
    pub rates: Vec<Vec<f64>>,
    /// `hits[h][p]`: photos where head h's peak fell on part p.
    pub hits: Vec<Vec<usize>>,
    /// `cases[h][p]`: photos where part p could be hit (annotated and visible).
    pub cases: Vec<Vec<usize>>,
}

impl HitTable {
    fn new(heads: usize, parts: usize) -> Self {
        Self { photos: 0, rates: Vec::new(), hits: vec![vec![0; parts]; heads], cases: vec![vec![0; parts]; heads] }
    }

    fn fill_rates(&mut self) {
        self.rates = (0..self.hits.len()).map(|h| (0..self.hits[h].len()).map(|p| self.rate(h, p)).collect()).collect();
    }

    /// The hit rate of head `h` on part `p` (0 when it could never be hit).
    #[must_use]
    pub fn rate(&self, h: usize, p: usize) -> f64 {
        let c = self.cases[h][p];
        if c == 0 { 0.0 } else { self.hits[h][p] as f64 / c as f64 }
    }

    /// Head `h`'s best part and its hit rate, if it hit any.
    #[must_use]
    pub fn best(&self, h: usize) -> Option<(usize, f64)> {
        (0..self.hits[h].len())
            .map(|p| (p, self.rate(h, p)))
            .filter(|&(_, r)| r > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }
}

/// A head's suggested name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// 1-based, as everywhere heads are shown.
    pub head: usize,
    pub part: String,
    pub hit_rate: f64,
}

/// The result of `parts`.
#[derive(Debug, Clone, Serialize)]
pub struct PartReport {
    pub format: &'static str,
    pub parts: Vec<String>,
    /// Decoder layer (1-based) whose heads were scored: the last.
    pub layer: usize,
    /// The keypoint radius in photo pixels (CUB), or `None` (masks).
    pub radius: Option<f64>,
    /// Every class together.
    pub all: HitTable,
    /// Per class (by name), for the classes with photos.
    pub per_class: BTreeMap<String, HitTable>,
    /// Per head (index 0-based), its suggested name: the part its peak falls on most often, if at
    /// least [`MIN_SUGGESTED_RATE`] of the time.
    pub suggested: Vec<Option<Suggestion>>,
    /// Photos that could not be analysed, with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// Where a peak cell's features look, in photo pixels: its receptive centre.
fn peak_point(a: &crate::session::Analysis, cell: usize) -> (f64, f64) {
    let m = &a.mapping;
    let (row, col) = (cell / m.grid.1.max(1), cell % m.grid.1.max(1));
    let sx = m.original.0 as f64 / m.input.0.max(1) as f64;
    let sy = m.original.1 as f64 / m.input.1.max(1) as f64;
    let x = ((col * m.stride) as f64 * sx).min(m.original.0.saturating_sub(1) as f64);
    let y = ((row * m.stride) as f64 * sy).min(m.original.1.saturating_sub(1) as f64);
    (x, y)
}

/// Scores every photo of `data` with the session's model. `radius`: a keypoint counts within this
/// many photo pixels of a peak (default: one grid cell). `progress(k, n)` is called before photo k
/// of n; when it returns `false` the run stops there (an error saying so).
pub fn score(
    s: &Session,
    data: &Annotated,
    radius: Option<f64>,
    options: PreprocessOptions,
    mut progress: impl FnMut(usize, usize) -> bool,
) -> Result<PartReport> {
    let heads = s.config().nheads;
    let names = s.class_names();
    let np = data.parts.len();
    let mut all = HitTable::new(heads, np);
    let mut per_class: BTreeMap<usize, HitTable> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut used_radius = None;
    for (k, item) in data.items.iter().enumerate() {
        if !progress(k, data.items.len()) {
            return Err(Error::Request(format!("stopped after {k} of {} photos", data.items.len())));
        }
        let a = match s.analyse(&item.image, options, Probes::default()) {
            Ok(a) => a,
            Err(e) => {
                failed.push((item.image.clone(), e.to_string()));
                continue;
            }
        };
        let o = &a.output;
        let class = item.class.filter(|&c| c < o.classes).unwrap_or_else(|| o.ranking()[0]);
        let last = o.layers - 1;
        let table = per_class.entry(class).or_insert_with(|| HitTable::new(heads, np));
        all.photos += 1;
        table.photos += 1;
        for h in 0..heads {
            let (cell, _) = crate::probe::stats::peak(o.map(last, h, class));
            let (x, y) = peak_point(&a, cell);
            let mut mark = |p: usize, hit: bool| {
                for t in [&mut all, &mut *table] {
                    t.cases[h][p] += 1;
                    t.hits[h][p] += usize::from(hit);
                }
            };
            match &item.truth {
                Truth::Keypoints(points) => {
                    // One grid cell in photo pixels, unless asked otherwise.
                    let r = radius.unwrap_or(
                        a.mapping.stride as f64 * a.mapping.original.0 as f64 / a.mapping.input.0.max(1) as f64,
                    );
                    used_radius = Some(r);
                    let mut seen = vec![false; np];
                    for &(p, _, _) in points {
                        if p < np && !seen[p] {
                            seen[p] = true;
                            let near =
                                points.iter().filter(|q| q.0 == p).any(|&(_, qx, qy)| (qx - x).hypot(qy - y) <= r);
                            mark(p, near);
                        }
                    }
                }
                Truth::Mask { width, height, labels, label_part } => {
                    // The mask is of the photo's size; a peak outside it hits nothing.
                    let (mx, my) = (
                        (x * *width as f64 / a.mapping.original.0.max(1) as f64) as usize,
                        (y * *height as f64 / a.mapping.original.1.max(1) as f64) as usize,
                    );
                    let under = labels.get(my.min(height - 1) * width + mx.min(width - 1)).copied();
                    let hit_part = under.and_then(|l| label_part.get(&l)).copied();
                    for p in 0..np {
                        mark(p, hit_part == Some(p));
                    }
                }
            }
        }
    }
    if all.photos == 0 {
        return Err(Error::Missing(match failed.first() {
            Some((_, e)) => format!("no photo of the annotations could be analysed; the first: {e}"),
            None => "the annotations list no photos".to_string(),
        }));
    }
    all.fill_rates();
    per_class.values_mut().for_each(HitTable::fill_rates);
    let suggested = (0..heads)
        .map(|h| {
            all.best(h).filter(|&(_, r)| r >= MIN_SUGGESTED_RATE).map(|(p, r)| Suggestion {
                head: h + 1,
                part: data.parts[p].clone(),
                hit_rate: r,
            })
        })
        .collect();
    Ok(PartReport {
        format: data.format,
        parts: data.parts.clone(),
        layer: s.config().dec_layers,
        radius: used_radius,
        all,
        per_class: per_class.into_iter().map(|(c, t)| (names[c].clone(), t)).collect(),
        suggested,
        failed,
    })
}

impl PartReport {
    /// Names every head that has a suggestion by it, for every class, in `names`; returns what
    /// changed ("head 2: wing (was crown)"; no arrow, the window's font has none).
    pub fn take_names(&self, names: &mut crate::session::head_names::HeadNames) -> Vec<String> {
        let mut changes = Vec::new();
        for sug in self.suggested.iter().flatten() {
            let before = names.heads.get(&sug.head).cloned();
            if before.as_deref() != Some(sug.part.as_str()) {
                changes.push(match before {
                    Some(b) => format!("head {}: {} (was {b})", sug.head, sug.part),
                    None => format!("head {}: {}", sug.head, sug.part),
                });
            }
            names.set(None, sug.head - 1, &sug.part);
        }
        changes
    }

    /// The head × part table as aligned text, with each head's suggested name.
    #[must_use]
    pub fn table(&self) -> String {
        let w = self.parts.iter().map(|p| p.chars().count()).max().unwrap_or(4).max(5);
        // The attention head, not the body part that may be called "head".
        let mut s = format!("{:<10}", "attn head");
        for p in &self.parts {
            s.push_str(&format!(" {p:>w$}"));
        }
        s.push_str("   suggested name\n");
        for h in 0..self.all.hits.len() {
            s.push_str(&format!("{:<10}", h + 1));
            for p in 0..self.parts.len() {
                s.push_str(&format!(" {:>w$.2}", self.all.rate(h, p)));
            }
            match &self.suggested[h] {
                Some(sug) => s.push_str(&format!("   {} {:.2}\n", sug.part, sug.hit_rate)),
                None => s.push_str(&format!("   (none: no part reaches {:.0} %)\n", MIN_SUGGESTED_RATE * 100.0)),
            }
        }
        s
    }

    /// The head × part table as a figure: one cell per head and part, coloured by its hit rate
    /// (0–1, viridis), the rate written under it; rows are heads with their suggested names.
    #[must_use]
    pub fn figure(&self, model: &str) -> crate::figure::Figure {
        use crate::figure::{ColourBar, Figure, Panel};
        let colormap = crate::overlay::colormap::Colormap::Viridis;
        let lut = colormap.lut();
        const SIDE: u32 = 56;
        let mut panels = Vec::new();
        for h in 0..self.all.hits.len() {
            for (p, part) in self.parts.iter().enumerate() {
                let rate = self.all.rate(h, p);
                let c = lut[((rate.clamp(0.0, 1.0) * 255.0).round() as usize).min(255)];
                let rgba = (0..SIDE * SIDE).flat_map(|_| [c[0], c[1], c[2], 255]).collect();
                let title = if h == 0 { part.clone() } else { String::new() };
                panels.push(Panel { rgba, width: SIDE, height: SIDE, title, subtitle: format!("{rate:.2}") });
            }
        }
        let row_labels = (0..self.all.hits.len())
            .map(|h| match &self.suggested[h] {
                Some(sug) => format!("attention head {}\n{} {:.2}", h + 1, sug.part, sug.hit_rate),
                None => format!("attention head {}", h + 1),
            })
            .collect();
        let what = match self.radius {
            Some(r) => format!("keypoint within {r:.0} px of the peak"),
            None => "peak inside the part's mask".to_string(),
        };
        let mut fig = Figure {
            title: Some(format!("Where each head looks · layer {}", self.layer)),
            subtitle: Some(format!("{} photos ({}) · hit rate: {what}", self.all.photos, self.format)),
            footer: Some(format!("Model: {model}")),
            panels,
            columns: self.parts.len().max(1),
            row_labels,
            colour_bar: Some(ColourBar {
                lut,
                lo: 0.0,
                hi: 1.0,
                label: "hit rate".into(),
                colormap: colormap.name().into(),
            }),
            ..Default::default()
        };
        crate::figure::fit_to_print(&mut fig, None, false);
        fig
    }
}
