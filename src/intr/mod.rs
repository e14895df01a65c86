//! The INTR network as plain structs with PyTorch's parameter names: the configuration
//! ([`config`]), the ResNet backbone ([`backbone`]), the transformer's blocks ([`layers`]) and
//! layers ([`transformer`]) and the whole model ([`model`]), defined once and built from named
//! weights ([`weights`]): over a checkpoint for inference (the fast CPU kernels are their
//! inference path), over fresh variables for training ([`pass`]). No UI, no threads.
//!
//! In: a checkpoint (official `.pth` or our `.safetensors`) and a preprocessed image. Out: class
//! logits and the cross-attention maps of every decoder layer, head and class ([`IntrOutput`]).

pub mod backbone;
pub mod config;
pub mod layers;
pub mod model;
pub mod pass;
pub mod random;
pub mod transformer;
pub mod weights;

use std::path::Path;

use candle_core::Device;

pub use config::{ConfigOverrides, IntrConfig};
pub use model::{Intr, IntrOutput};

use crate::checkpoint::{Checkpoint, META_CONFIG, META_INPUT_SIZE};
use crate::error::{Error, Result};

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
