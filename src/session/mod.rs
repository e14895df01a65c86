//! The one layer both front ends use: open a model ([`ModelSpec`] → [`Session`]: the checkpoint,
//! its configuration and its class names, by one rule) → analyse a photo (decode, preprocess,
//! forward pass, probes) → a plain-data [`Analysis`] that can cross threads. The command line and
//! the window's worker both go through here, so a class list of the wrong length, a folder of
//! photos or a class that does not exist mean the same everywhere.

pub mod assets;
pub mod classes;
pub mod head_names;
pub mod inputs;
pub mod saved;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::image::grid::GridMapping;
use crate::image::preprocess::{self, Prepared, PreprocessOptions};
use crate::intr::{ConfigOverrides, Intr, IntrConfig, IntrOutput};
use crate::probe;

/// Which model to open and how to read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSpec {
    /// A checkpoint (official `.pth` or a `.safetensors` of ours); `None` = the bundled demo model.
    pub path: Option<PathBuf>,
    /// A class list (CUB `classes.txt`, one name per line, or a dataset folder); `None` = the names
    /// stored in the checkpoint, or numbered classes.
    pub classes: Option<PathBuf>,
    /// Configuration the checkpoint does not carry (heads, dilation).
    pub overrides: ConfigOverrides,
}

impl ModelSpec {
    /// The model file: the one given, a catalogued official model by name (`cub`: its downloaded
    /// file in the Hugging Face cache), or the bundled demo model.
    pub fn model_path(&self) -> Result<PathBuf> {
        match &self.path {
            Some(p) if !p.exists() && crate::hub::catalogue::find(&p.to_string_lossy()).is_some() => {
                crate::hub::catalogued_path(&p.to_string_lossy(), &crate::hub::HubEnv::from_env())
            }
            Some(p) => Ok(p.clone()),
            None => assets::demo_model(),
        }
    }
}

/// Which analyses run beside the forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probes {
    /// Each head of the last decoder layer evened in turn ([`probe::evening`]).
    pub evening: bool,
}

/// An open model with its class names.
pub struct Session {
    model: Intr,
    path: PathBuf,
    names: Arc<Vec<String>>,
    demo: bool,
    sha256: std::sync::OnceLock<String>,
}

/// What the bundled demo model is called wherever a result appears.
pub const DEMO_NAME: &str = "demo model (16 invented bird species)";

/// One analysed photo: everything the views, figures and summaries need, as plain data.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub image_path: PathBuf,
    /// The decoded (and EXIF-oriented) photo.
    pub image: RgbImage,
    /// Whether an EXIF orientation was applied.
    pub oriented: bool,
    /// Network input (width, height).
    pub input_size: (usize, usize),
    pub output: IntrOutput,
    /// Per head of the last decoder layer, every class's logit when that head attends evenly to the
    /// whole grid ([`probe::evened_logits`]): what each class's score owes to where the head looks.
    /// Empty when not asked for.
    pub evened: Vec<Vec<f32>>,
    /// What the last decoder layer read, kept with the evening probe so that a class's heads can be
    /// ranked later without another forward pass ([`Session::rank_heads`]).
    pub last_layer: Option<Arc<crate::intr::model::LastLayerInput>>,
    pub mapping: GridMapping,
    pub class_names: Arc<Vec<String>>,
    /// Whether the photo looks like something the model knows ([`probe::ood`]).
    pub ood: probe::OutOfDomain,
    /// Wall time of decoding + preprocessing + forward pass (+ probes).
    pub took: Duration,
}

impl Session {
    /// Opens the model of `spec` on the default device (CUDA or Metal when built with them).
    pub fn open(spec: &ModelSpec) -> Result<Self> {
        Self::open_on(spec, &crate::intr::default_device())
    }

    /// Opens the model of `spec` on `device`. The class names come from `spec.classes`, else from
    /// the checkpoint, else they are numbered; a list of the wrong length is an error naming its file.
    pub fn open_on(spec: &ModelSpec, device: &Device) -> Result<Self> {
        let path = spec.model_path()?;
        let (model, ckpt) = crate::intr::load_model(&path, &spec.overrides, device)?;
        let names = class_names(spec, &path, &ckpt, model.config().num_queries)?;
        let demo = assets::demo_model().ok().is_some_and(|d| same_file(&d, &path));
        Ok(Self { model, path, names: Arc::new(names), demo, sha256: std::sync::OnceLock::new() })
    }

    /// The model file's SHA-256 (hashed once, and remembered across runs by path, size and time).
    pub fn model_sha256(&self) -> Result<String> {
        if let Some(s) = self.sha256.get() {
            return Ok(s.clone());
        }
        let sha = head_names::model_sha256(&self.path)?;
        Ok(self.sha256.get_or_init(|| sha).clone())
    }

    /// The head names given for this model ([`head_names::Store`]).
    pub fn head_names(&self) -> Result<head_names::HeadNames> {
        Ok(head_names::Store::default().load(&self.model_sha256()?))
    }

    /// The network.
    #[must_use]
    pub fn model(&self) -> &Intr {
        &self.model
    }

    /// The model's configuration.
    #[must_use]
    pub fn config(&self) -> &IntrConfig {
        self.model.config()
    }

    /// The model file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file carries an official checkpoint's name but not its number of classes, says so
    /// (the catalogue's class names are then not used).
    #[must_use]
    pub fn catalogue_mismatch(&self) -> Option<String> {
        let entry = crate::hub::catalogue::by_file(&self.path.file_name()?.to_string_lossy())?;
        let n = self.model.config().num_queries;
        (n != entry.classes).then(|| {
            format!(
                "{}: named like the official {} checkpoint, which has {} classes, but this file has {n}; \
                 it is not that checkpoint, and the catalogue's class names are not used",
                self.path.display(),
                entry.name,
                entry.classes
            )
        })
    }

    /// Why the classes are numbered, where the model is an official checkpoint whose names ship
    /// nowhere and none were given (or remembered).
    #[must_use]
    pub fn names_note(&self) -> Option<String> {
        let n = self.model.config().num_queries;
        let e = catalogued(&self.path, n)?;
        (e.bundled_names().is_none() && *self.names == classes::numbered(n))
            .then(|| format!("{} ({}): classes are {}", e.name, e.dataset, e.names_hint()))
    }

    /// Whether this is the bundled demo model, which knows only its invented species.
    #[must_use]
    pub fn is_demo(&self) -> bool {
        self.demo
    }

    /// The model's name wherever a result appears: [`DEMO_NAME`] for the bundled demo, else the
    /// file name.
    #[must_use]
    pub fn model_name(&self) -> String {
        if self.demo {
            return DEMO_NAME.to_string();
        }
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// One name per class, in the model's order.
    #[must_use]
    pub fn class_names(&self) -> &Arc<Vec<String>> {
        &self.names
    }

    /// Decodes and preprocesses `image` as this model wants it (`base` adjusted to a model trained
    /// at its own input size).
    pub fn prepare(&self, image: &Path, base: PreprocessOptions) -> Result<Prepared> {
        preprocess::prepare_file(image, &self.model.preprocess_options(base))
    }

    /// Runs the model (and `probes`) on a prepared photo. `started` is when its decoding began.
    pub fn run(&self, image: &Path, prepared: Prepared, probes: Probes, started: Instant) -> Result<Analysis> {
        let (w, h) = prepared.input_size;
        let failed = |e: Error| match e {
            Error::File { .. } => e,
            other => Error::file(image, format!("forward pass failed: {other}")),
        };
        let (output, evened, last_layer) = if probes.evening {
            let (o, e, kept) =
                probe::forward_evening_heads_keeping(&self.model, &prepared.chw, h, w).map_err(failed)?;
            (o, e, Some(Arc::new(kept)))
        } else {
            (self.model.forward(&prepared.chw, h, w).map_err(failed)?, Vec::new(), None)
        };
        let mapping = prepared.mapping(output.grid, self.model.config().stride());
        let ood = probe::out_of_domain(&output.logits);
        Ok(Analysis {
            ood,
            image_path: image.to_path_buf(),
            image: prepared.original,
            oriented: prepared.oriented,
            input_size: prepared.input_size,
            output,
            evened,
            last_layer,
            mapping,
            class_names: Arc::clone(&self.names),
            took: started.elapsed(),
        })
    }

    /// Ranks the last layer's heads for `class` (0-based) of an analysis made with the evening
    /// probe ([`probe::rank_heads`]: greedy cumulative evening of that class's query).
    pub fn rank_heads(&self, a: &Analysis, class: usize) -> Result<probe::HeadRanking> {
        let kept = a.last_layer.as_ref().ok_or_else(|| {
            Error::Request(format!(
                "{} was analysed without the evening probe; its heads cannot be ranked",
                a.image_path.display()
            ))
        })?;
        if class >= a.output.classes {
            return Err(Error::Request(format!("class {} is not one of the model's {}", class + 1, a.output.classes)));
        }
        probe::rank_heads(&self.model, kept, &a.output.logits, class)
    }

    /// [`Session::prepare`] then [`Session::run`].
    pub fn analyse(&self, image: &Path, base: PreprocessOptions, probes: Probes) -> Result<Analysis> {
        let started = Instant::now();
        let prepared = self.prepare(image, base)?;
        self.run(image, prepared, probes, started)
    }

    /// The index of the class `name` names ([`classes::find`]: any case, CUB spellings, with
    /// suggestions when there is none).
    pub fn class_index(&self, name: &str) -> Result<usize> {
        classes::find(&self.names, name)
    }

    /// The 0-based decoder layer of 1-based `layer`; `None` is the last.
    pub fn layer_index(&self, layer: Option<usize>) -> Result<usize> {
        let layers = self.config().dec_layers;
        match layer {
            None => Ok(layers.saturating_sub(1)),
            Some(l) if (1..=layers).contains(&l) => Ok(l - 1),
            Some(l) => Err(Error::Request(format!("layer {l} is not one of the model's layers 1 to {layers}"))),
        }
    }

    /// The 0-based heads of 1-based `heads`.
    pub fn head_indices(&self, heads: &[usize]) -> Result<Vec<usize>> {
        let n = self.config().nheads;
        heads
            .iter()
            .map(|&h| {
                if (1..=n).contains(&h) {
                    Ok(h - 1)
                } else {
                    Err(Error::Request(format!("head {h} is not one of the model's heads 1 to {n}")))
                }
            })
            .collect()
    }
}

/// Reads a small JSON file of ours (head names, sessions): at most `max` bytes, checked before
/// reading. `limit` and `kind` word the errors ("head names are" at most N; "is not a head-names
/// file").
fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path, max: u64, limit: &str, kind: &str) -> Result<T> {
    let meta = std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    if meta.len() > max {
        return Err(Error::file(path, format!("is {} bytes; {limit} at most {max}", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::file(path, format!("is not {kind}: {e}")))
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The one rule for class names: the list given, else the checkpoint's own, else those of a
/// catalogued official checkpoint — CUB's bundled list, or the list given for it before — else
/// numbered; a list must have one name per class. A list given for a catalogued checkpoint is
/// remembered for it.
fn class_names(spec: &ModelSpec, model: &Path, ckpt: &Checkpoint, n: usize) -> Result<Vec<String>> {
    let official = catalogued(model, n);
    match &spec.classes {
        Some(p) => {
            let names = classes::load(p)?;
            classes::check_count(p, &names, n)?;
            if let Some(e) = official
                && e.bundled_names().is_none()
            {
                crate::hub::names::remember(e.sha256, p);
            }
            Ok(names)
        }
        None => match ckpt.stored_class_names()? {
            Some(names) => {
                classes::check_count(model, &names, n)?;
                Ok(names)
            }
            None => {
                if let Some(names) = official.and_then(|e| e.bundled_names()).map(classes::parse_list)
                    && names.len() == n
                {
                    return Ok(names);
                }
                if let Some(list) = official.and_then(|e| crate::hub::names::remembered(e.sha256))
                    && let Ok(names) = classes::load(&list)
                    && names.len() == n
                {
                    return Ok(names);
                }
                Ok(classes::numbered(n))
            }
        },
    }
}

/// The catalogue entry of an official checkpoint (known by its file name and number of classes).
fn catalogued(model: &Path, n: usize) -> Option<&'static crate::hub::Entry> {
    crate::hub::catalogue::by_file(&model.file_name()?.to_string_lossy()).filter(|e| e.classes == n)
}
