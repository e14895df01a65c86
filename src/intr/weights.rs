//! Where the model builder gets its weights: a [`TensorSource`] (a checkpoint or tensors in memory)
//! wrapped in a recording [`WeightStore`] that checks shapes, names missing weights and, at the end,
//! names every weight that was never used.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Something that holds named f32-convertible tensors.
pub trait TensorSource {
    /// Every tensor's name and shape.
    fn shapes(&self) -> BTreeMap<String, Vec<usize>>;
    /// One tensor as contiguous row-major f32.
    fn read(&self, name: &str) -> Result<Vec<f32>>;
    /// A human-readable origin for error messages (usually the file path).
    fn label(&self) -> String;
}

impl TensorSource for Checkpoint {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors().iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect()
    }

    fn read(&self, name: &str) -> Result<Vec<f32>> {
        self.read_f32(name)
    }

    fn label(&self) -> String {
        self.path().display().to_string()
    }
}

/// Tensors held in memory: name → (shape, row-major values).
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl TensorSource for MemorySource {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect()
    }

    fn read(&self, name: &str) -> Result<Vec<f32>> {
        self.tensors
            .get(name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| Error::Config(format!("no tensor `{name}` in memory")))
    }

    fn label(&self) -> String {
        "in-memory weights".into()
    }
}

/// Keys a state dict may carry that the model legitimately has no use for.
fn is_ignorable(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// Hands out weights by name, checking shapes and recording what was used.
pub struct WeightStore<'a> {
    src: &'a dyn TensorSource,
    shapes: BTreeMap<String, Vec<usize>>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> WeightStore<'a> {
    #[must_use]
    pub fn new(src: &'a dyn TensorSource) -> Self {
        Self { shapes: src.shapes(), src, used: RefCell::new(BTreeSet::new()) }
    }

    /// Every tensor's shape, as listed by the source.
    #[must_use]
    pub fn shapes(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.shapes
    }

    /// Whether the source has `name`.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// The values of `name`, which must have exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some(actual) = self.shapes.get(name) else {
            return Err(Error::Config(format!("{}: weight `{name}` is missing", self.src.label())));
        };
        if actual.as_slice() != shape {
            return Err(Error::Config(format!(
                "{}: weight `{name}` has shape {actual:?}, expected {shape:?}",
                self.src.label()
            )));
        }
        let v = self.src.read(name)?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(v)
    }

    /// The shape of `name`, or an error naming it.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Config(format!("{}: weight `{name}` is missing", self.src.label())))
    }

    /// Names that have been read so far.
    #[must_use]
    pub fn consumed(&self) -> BTreeSet<String> {
        self.used.borrow().clone()
    }

    /// Fails if any weight of the source was never used (other than ignorable buffers).
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&str> =
            self.shapes.keys().filter(|k| !used.contains(*k) && !is_ignorable(k)).map(String::as_str).collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(8).copied().collect();
        let more = if unused.len() > shown.len() {
            format!(" and {} more", unused.len() - shown.len())
        } else {
            String::new()
        };
        Err(Error::Config(format!(
            "{}: {} weight(s) this INTR configuration does not use: {}{more}",
            self.src.label(),
            unused.len(),
            shown.join(", ")
        )))
    }
}
