//! A deterministic, procedural fine-grained dataset of bird-like animals, for training and
//! evaluating an interpretable classifier.
//!
//! Sixteen species ([`species`]) differ in four binary traits, each drawn on one body part; pairs
//! of species that differ in one trait differ in one part only. Every sample ([`draw`]) comes with
//! a per-pixel part-label mask, so an evaluation can measure whether a model's attention lands on
//! the discriminative part. This module owns writing the dataset to disk as an ImageFolder tree
//! (plus masks and `dataset.json`) and reading it back.

mod canvas;
pub mod draw;
pub mod species;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, ensure};
use image::ImageEncoder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use draw::{DEFAULT_SIZE, Sample, render};
pub use species::{Part, Species, Trait, all_species, differing_part, one_part_pairs};

/// Name of the metadata file at the dataset root.
pub const INFO_FILE: &str = "dataset.json";
/// Folder (under the dataset root) that mirrors the split folders with label masks.
pub const MASKS_DIR: &str = "masks";
/// The two splits.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthOptions {
    /// Number of samples over both splits.
    pub count: usize,
    /// Base seed; sample `i` uses [`sample_seed`]`(seed, i)`.
    pub seed: u64,
    /// Image side in pixels.
    pub size: usize,
    /// Fraction of each species' samples that go to `val`.
    pub val_fraction: f32,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self { count: 1600, seed: 0, size: DEFAULT_SIZE, val_fraction: 0.2 }
    }
}

/// A trait as described in `dataset.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraitInfo {
    pub name: String,
    pub part: Part,
    /// Value names for `false` and `true`.
    pub values: [String; 2],
}

/// Two species (`a < b`) that differ in `part` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPair {
    pub a: usize,
    pub b: usize,
    pub part: Part,
}

/// Samples per split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub train: usize,
    pub val: usize,
}

/// The contents of `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub species: Vec<Species>,
    /// Mask label → part name.
    pub parts: BTreeMap<u8, String>,
    pub traits: Vec<TraitInfo>,
    pub pairs: Vec<PartPair>,
    pub seed: u64,
    pub size: usize,
    pub val_fraction: f32,
    pub counts: SplitCounts,
}

impl DatasetInfo {
    fn new(opts: &SynthOptions, counts: SplitCounts) -> Self {
        Self {
            species: all_species(),
            parts: Part::ALL.iter().map(|p| (p.label(), p.name().to_string())).collect(),
            traits: Trait::ALL
                .iter()
                .map(|t| TraitInfo {
                    name: t.name().to_string(),
                    part: t.part(),
                    values: t.values().map(str::to_string),
                })
                .collect(),
            pairs: one_part_pairs().into_iter().map(|(a, b, part)| PartPair { a, b, part }).collect(),
            seed: opts.seed,
            size: opts.size,
            val_fraction: opts.val_fraction,
            counts,
        }
    }
}

/// One image of a split, its class label and its part mask when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetItem {
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub label: usize,
}

/// The seed of sample `index` of a dataset with base seed `seed`.
#[must_use]
pub fn sample_seed(seed: u64, index: usize) -> u64 {
    canvas::derive_seed(seed, index as u64)
}

/// Whether sample `index` goes to `val`. Sample `i` is the `i / 16`-th of species `i % 16`; each
/// species sends every `1 / val_fraction`-th of its samples to `val`, phase-shifted by the species
/// index so that small datasets still get a validation split. Exact integer arithmetic.
#[must_use]
pub fn is_val(index: usize, val_fraction: f32) -> bool {
    let per_million = (f64::from(val_fraction.clamp(0.0, 1.0)) * 1e6).round() as u64;
    let k = (index / species::SPECIES_COUNT + index % species::SPECIES_COUNT) as u64;
    (k + 1) * per_million / 1_000_000 > k * per_million / 1_000_000
}

fn file_name(index: usize, count: usize) -> String {
    let width = count.saturating_sub(1).to_string().len().max(5);
    format!("{index:0width$}.png")
}

/// Writes `bytes` to `path` atomically, with the permissions the umask gives ([`crate::files::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("writing {}", path.display()))
    })
}

fn write_png(path: &Path, data: &[u8], size: usize, colour: image::ExtendedColorType) -> Result<()> {
    let side = u32::try_from(size).context("image size")?;
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(data, side, side, colour)
        .with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Generates the dataset under `out`: `train/<class>/<n>.png`, `val/<class>/<n>.png`, the label
/// masks at `masks/<split>/<class>/<n>.png` (8-bit grey, [`Part`] labels) and `dataset.json`.
/// Sample `i` is of species `i % 16`. Files of the same name are replaced; other files in `out`
/// are left alone. `progress(done, total)` is called from worker threads after each sample.
pub fn write_dataset(out: &Path, opts: &SynthOptions, progress: impl Fn(usize, usize) + Sync) -> Result<DatasetInfo> {
    ensure!(
        (draw::MIN_SIZE..=draw::MAX_SIZE).contains(&opts.size),
        "image size {} outside {}..={}",
        opts.size,
        draw::MIN_SIZE,
        draw::MAX_SIZE
    );
    ensure!((0.0..=1.0).contains(&opts.val_fraction), "validation fraction {} outside 0..=1", opts.val_fraction);
    let species = all_species();
    for split in SPLITS {
        for s in &species {
            for dir in [out.join(split).join(s.dir_name()), out.join(MASKS_DIR).join(split).join(s.dir_name())] {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            }
        }
    }

    let done = AtomicUsize::new(0);
    (0..opts.count).into_par_iter().try_for_each(|i| -> Result<()> {
        let s = &species[i % species.len()];
        let sample = render(s, opts.size, sample_seed(opts.seed, i))?;
        let split = if is_val(i, opts.val_fraction) { "val" } else { "train" };
        let name = file_name(i, opts.count);
        let image = out.join(split).join(s.dir_name()).join(&name);
        write_png(&image, &sample.rgb, opts.size, image::ExtendedColorType::Rgb8)?;
        let mask = out.join(MASKS_DIR).join(split).join(s.dir_name()).join(&name);
        write_png(&mask, &sample.labels, opts.size, image::ExtendedColorType::L8)?;
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, opts.count);
        Ok(())
    })?;

    let val = (0..opts.count).filter(|&i| is_val(i, opts.val_fraction)).count();
    let info = DatasetInfo::new(opts, SplitCounts { train: opts.count - val, val });
    let json = serde_json::to_vec_pretty(&info).context("serialising the dataset description")?;
    write_atomic(&out.join(INFO_FILE), &json)?;
    Ok(info)
}

/// Reads `dataset.json` from a dataset folder.
pub fn read_info(dir: &Path) -> Result<DatasetInfo> {
    let path = dir.join(INFO_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The files (not folders) of `dir`, sorted.
fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if !path.is_dir() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads split `split` of an ImageFolder tree: class index = position of the class folder among
/// [`crate::session::classes::class_folders`] (the listing the class names come from); images are
/// `.png`, `.jpg` or `.jpeg` files, sorted by name. The mask is the file
/// of the same name under `masks/<split>/<class>/` with a `.png` extension, when present.
pub fn load_dataset(dir: &Path, split: &str) -> Result<Vec<DatasetItem>> {
    let mut items = Vec::new();
    for (label, class_dir) in crate::session::classes::class_folders(&dir.join(split))?.into_iter().enumerate() {
        let Some(class) = class_dir.file_name() else { continue };
        let mask_dir = dir.join(MASKS_DIR).join(split).join(class);
        for image in sorted_files(&class_dir)? {
            let ext = image.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
                continue;
            }
            let mask = image.file_stem().map(|stem| mask_dir.join(stem).with_extension("png")).filter(|m| m.is_file());
            items.push(DatasetItem { image, mask, label });
        }
    }
    Ok(items)
}

/// Reads a label mask written by [`write_dataset`]: (width, height, row-major [`Part`] labels).
pub fn read_mask(path: &Path) -> Result<(usize, usize, Vec<u8>)> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?.into_luma8();
    let (w, h) = img.dimensions();
    Ok((w as usize, h as usize, img.into_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_files(dir: &Path) -> usize {
        walk(dir).iter().filter(|p| p.extension().is_some_and(|e| e == "png")).count()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
        out
    }

    #[test]
    fn split_is_balanced_and_deterministic() {
        let val: Vec<usize> = (0..1600).filter(|&i| is_val(i, 0.2)).collect();
        assert_eq!(val.len(), 320);
        for s in 0..16 {
            assert_eq!(val.iter().filter(|&&i| i % 16 == s).count(), 20);
        }
        assert!((0..100).all(|i| !is_val(i, 0.0)));
        assert!((0..100).all(|i| is_val(i, 1.0)));
        assert_eq!(file_name(7, 32), "00007.png");
        assert_eq!(file_name(7, 1_000_001), "0000007.png");
    }

    #[test]
    fn write_and_load_dataset() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = SynthOptions { count: 32, seed: 5, size: 64, val_fraction: 0.2 };
        let calls = AtomicUsize::new(0);
        let info = write_dataset(tmp.path(), &opts, |_, total| {
            assert_eq!(total, 32);
            calls.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 32);
        assert_eq!(info.counts.train + info.counts.val, 32);
        assert!(info.counts.val > 0);
        assert_eq!(info.pairs.len(), 32);
        assert_eq!(info.parts.len(), 9);
        assert_eq!(read_info(tmp.path()).unwrap(), info);

        let images = count_files(&tmp.path().join("train")) + count_files(&tmp.path().join("val"));
        assert_eq!(images, 32);
        assert_eq!(count_files(&tmp.path().join(MASKS_DIR)), 32);

        let train = load_dataset(tmp.path(), "train").unwrap();
        let val = load_dataset(tmp.path(), "val").unwrap();
        assert_eq!((train.len(), val.len()), (info.counts.train, info.counts.val));
        for item in train.iter().chain(&val) {
            let index: usize = item.image.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            assert_eq!(item.label, index % 16);
            let mask = item.mask.as_ref().unwrap();
            let (w, h, labels) = read_mask(mask).unwrap();
            assert_eq!((w, h), (64, 64));
            let expected = render(&Species::from_index(index % 16), 64, sample_seed(5, index)).unwrap();
            assert_eq!(labels, expected.labels);
            let rgb = image::open(&item.image).unwrap().into_rgb8().into_raw();
            assert_eq!(rgb, expected.rgb);
        }
        assert!(load_dataset(tmp.path(), "test").is_err());
    }
}
