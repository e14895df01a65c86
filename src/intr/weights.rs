//! Where the model's structs get their weights: [`Weights`], a name tree over either a recording
//! [`WeightStore`] (a checkpoint or tensors in memory, for inference: it checks shapes, names missing
//! weights and, at the end, names every weight that was never used) or a [`FreshStore`] (new
//! trainable variables, for training). One builder per struct serves both.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use candle_core::{Device, Tensor, Var};

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

/// Draws the initial values of one weight: `(name, shape)` → row-major values.
pub type Init = Box<dyn FnMut(&str, &[usize]) -> Vec<f32>>;

/// Fresh weights for a model built from scratch (training, or random weights for benchmarks and
/// tests): each value drawn by `init(name, shape)` in the order the model asks for them, and
/// recorded as a trainable variable or, for batch-norm running statistics, a buffer.
pub struct FreshStore {
    init: RefCell<Init>,
    vars: RefCell<BTreeMap<String, Var>>,
    buffers: RefCell<BTreeMap<String, Tensor>>,
    order: RefCell<Vec<String>>,
}

impl FreshStore {
    /// A store drawing every value with `init` (which owns its random generator).
    pub fn new(init: impl FnMut(&str, &[usize]) -> Vec<f32> + 'static) -> Self {
        Self {
            init: RefCell::new(Box::new(init)),
            vars: RefCell::new(BTreeMap::new()),
            buffers: RefCell::new(BTreeMap::new()),
            order: RefCell::new(Vec::new()),
        }
    }

    /// The names made so far, in the order the model asked for them.
    #[must_use]
    pub fn order(&self) -> Vec<String> {
        self.order.borrow().clone()
    }

    /// The trainable variables and the buffers made so far, by state-dict name.
    #[must_use]
    pub fn into_parts(self) -> (BTreeMap<String, Var>, BTreeMap<String, Tensor>) {
        (self.vars.into_inner(), self.buffers.into_inner())
    }

    fn make(&self, name: &str, shape: &[usize], dev: &Device, buffer: bool) -> Result<Tensor> {
        let values = (self.init.borrow_mut())(name, shape);
        self.order.borrow_mut().push(name.to_string());
        let t = Tensor::from_vec(values, shape, dev)?;
        if buffer {
            self.buffers.borrow_mut().insert(name.to_string(), t.clone());
            return Ok(t);
        }
        let var = Var::from_tensor(&t)?;
        let t = var.as_tensor().clone();
        self.vars.borrow_mut().insert(name.to_string(), var);
        Ok(t)
    }
}

enum Origin<'a> {
    /// Read from a checkpoint or memory, for inference.
    Load(&'a WeightStore<'a>),
    /// Made fresh, trainable.
    Fresh(&'a FreshStore),
}

/// What a model's structs are built from, candle-transformers style: `pp("layer")` extends the
/// path, so every name a struct asks for is its state-dict name. Built over a [`WeightStore`] the
/// structs are for inference (weights folded and packed for the fast kernels); over a
/// [`FreshStore`] they hold trainable variables and differentiate.
pub struct Weights<'a> {
    origin: &'a Origin<'a>,
    prefix: String,
    device: Device,
}

/// The origin of a [`Weights`] tree; keep it alive while the model is built.
pub struct WeightsRoot<'a> {
    origin: Origin<'a>,
    device: Device,
}

impl<'a> WeightsRoot<'a> {
    /// Weights read from `ws`, for inference on `device`.
    #[must_use]
    pub fn load(ws: &'a WeightStore<'a>, device: &Device) -> Self {
        Self { origin: Origin::Load(ws), device: device.clone() }
    }

    /// Fresh trainable weights from `fs` on `device`.
    #[must_use]
    pub fn fresh(fs: &'a FreshStore, device: &Device) -> Self {
        Self { origin: Origin::Fresh(fs), device: device.clone() }
    }

    /// The root of the name tree.
    #[must_use]
    pub fn weights(&self) -> Weights<'_> {
        Weights { origin: &self.origin, prefix: String::new(), device: self.device.clone() }
    }
}

impl Weights<'_> {
    /// The weights under `name` (`backbone.0.body` → `backbone.0.body.conv1` …).
    #[must_use]
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { origin: self.origin, prefix, device: self.device.clone() }
    }

    /// The state-dict path of these weights (`backbone.0.body.bn1`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full state-dict name of `name` here.
    #[must_use]
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) }
    }

    /// Whether the structs being built are trainable (else: for inference).
    #[must_use]
    pub fn trains(&self) -> bool {
        matches!(self.origin, Origin::Fresh(_))
    }

    /// The device the tensors go to.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The values of `name`, which must have exactly `shape` (inference: read from the source).
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.origin {
            Origin::Load(ws) => ws.get(&self.path(name), shape),
            Origin::Fresh(_) => {
                Err(Error::Config(format!("`{}`: plain values are read only from a checkpoint", self.path(name))))
            }
        }
    }

    /// `name` as a tensor of `shape`: a trainable variable when training.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self.origin {
            Origin::Load(ws) => Ok(Tensor::from_vec(ws.get(&self.path(name), shape)?, shape, &self.device)?),
            Origin::Fresh(fs) => fs.make(&self.path(name), shape, &self.device, false),
        }
    }

    /// `name` as a tensor that training updates but does not differentiate (batch-norm running
    /// statistics).
    pub fn buffer(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        match self.origin {
            Origin::Load(ws) => Ok(Tensor::from_vec(ws.get(&self.path(name), shape)?, shape, &self.device)?),
            Origin::Fresh(fs) => fs.make(&self.path(name), shape, &self.device, true),
        }
    }

    /// The shape the source holds for `name`: the checkpoint's when loading, `fresh` when training.
    /// For the widths a configuration does not record (the ResNet stem, Bottleneck inner widths).
    pub fn shape_or(&self, name: &str, fresh: &[usize]) -> Result<Vec<usize>> {
        match self.origin {
            Origin::Load(ws) => Ok(ws.shape(&self.path(name))?.to_vec()),
            Origin::Fresh(_) => Ok(fresh.to_vec()),
        }
    }
}
