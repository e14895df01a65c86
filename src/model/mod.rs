//! The INTR engine: pure candle, no UI, no threads.
//!
//! In: a checkpoint (official `.pth` or our `.safetensors`) and an image. Out: class logits and the
//! cross-attention maps of every decoder layer, head and class ([`IntrOutput`]).

pub mod backbone;
pub mod checkpoint;
pub mod config;
pub mod conv_cpu;
pub mod decode;
pub mod error;
pub mod fastattn;
pub mod fastconv;
pub mod intr;
pub mod pickle;
pub mod preprocess;
pub mod pth_writer;
pub mod synthetic;
pub mod transformer;
pub mod weights;
pub mod zipindex;

use std::path::Path;

use candle_core::Device;

pub use checkpoint::Checkpoint;
pub use config::{ConfigOverrides, IntrConfig};
pub use error::{Error, Result};
pub use intr::{Intr, IntrOutput};

/// safetensors metadata key holding the [`IntrConfig`] as JSON.
pub const META_CONFIG: &str = "intr.config";
/// safetensors metadata key holding the class names as a JSON list.
pub const META_CLASSES: &str = "intr.classes";
/// safetensors metadata key holding the shorter input side a model was trained at.
pub const META_INPUT_SIZE: &str = "intr.input_size";
/// safetensors metadata key holding the options a model was trained with (JSON object; shown by
/// `inspect` as the training arguments, like the official checkpoints' `args`).
pub const META_TRAINING: &str = "intr.training";
/// safetensors metadata key naming the writer.
pub const META_FORMAT: &str = "format";

/// A checkpoint's configuration, resolved from its weights, stored config, training args and
/// explicit settings (see [`config::resolve`]).
pub fn resolve_config(ckpt: &Checkpoint, explicit: &ConfigOverrides) -> Result<IntrConfig> {
    let shapes = ckpt.tensors().iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect();
    let inferred = config::infer(&shapes).map_err(|e| Error::file(ckpt.path(), e.to_string()))?;
    let stored = match ckpt.extras().metadata.get(META_CONFIG) {
        Some(json) => {
            let cfg: IntrConfig = serde_json::from_str(json)
                .map_err(|e| Error::file(ckpt.path(), format!("stored model config is invalid: {e}")))?;
            ConfigOverrides::from(&cfg)
        }
        None => ConfigOverrides::default(),
    };
    let args = match &ckpt.extras().args {
        Some(a) => ConfigOverrides::from_training_args(a)?,
        None => ConfigOverrides::default(),
    };
    config::resolve(&inferred, explicit, &stored, &args).map_err(|e| Error::file(ckpt.path(), e.to_string()))
}

/// Class names stored in a checkpoint's metadata, if any.
pub fn stored_class_names(ckpt: &Checkpoint) -> Result<Option<Vec<String>>> {
    match ckpt.extras().metadata.get(META_CLASSES) {
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .map_err(|e| Error::file(ckpt.path(), format!("stored class names are invalid: {e}"))),
        None => Ok(None),
    }
}

/// Opens a checkpoint and builds the model on `device`.
pub fn load_model(path: &Path, explicit: &ConfigOverrides, device: &Device) -> Result<(Intr, Checkpoint)> {
    let ckpt = Checkpoint::open(path)?;
    let cfg = resolve_config(&ckpt, explicit)?;
    let ws = weights::WeightStore::new(&ckpt);
    let mut model = Intr::load(&ws, &cfg, device).map_err(|e| match e {
        Error::Config(m) if !m.contains(&path.display().to_string()) => Error::file(path, m),
        other => other,
    })?;
    if let Some(v) = ckpt.extras().metadata.get(META_INPUT_SIZE) {
        let size: usize =
            v.parse().ok().filter(|s| (16..=4096).contains(s)).ok_or_else(|| {
                Error::file(path, format!("stored input size `{v}` is not a side length in 16..=4096"))
            })?;
        model.set_input_size(Some(size));
    }
    Ok((model, ckpt))
}

/// The compute device: CUDA or Metal when built with those features and available, else CPU.
#[must_use]
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    #[cfg(feature = "metal")]
    if let Ok(d) = Device::new_metal(0) {
        return d;
    }
    Device::Cpu
}
