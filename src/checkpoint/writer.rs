//! Writing safetensors files: f32 tensors with string metadata, atomically, and models in the
//! format the engine reads back (configuration and class names in the metadata).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{META_CLASSES, META_CONFIG, META_FORMAT, MODEL_FORMAT};
use crate::files::write_atomic;

/// One f32 tensor to write.
pub struct F32Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl F32Tensor {
    #[must_use]
    pub fn new(name: &str, shape: Vec<usize>, values: &[f32]) -> Self {
        Self { name: name.into(), shape, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }
}

/// Writes f32 tensors and string metadata to a safetensors file, atomically.
pub fn write_safetensors(path: &Path, tensors: &[F32Tensor], metadata: HashMap<String, String>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("cannot build tensors: {e:?}"))?;
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| anyhow::anyhow!("{e:?}"))
    })
}

/// Writes a model the engine opens without further settings: `tensors` under their state-dict
/// names, `config` (the model configuration) and the class names in the metadata, plus `extra`
/// entries (epoch, source, input size, training options).
pub fn write_model(
    path: &Path,
    tensors: &[F32Tensor],
    config: &impl serde::Serialize,
    classes: Option<&[String]>,
    extra: HashMap<String, String>,
) -> Result<()> {
    let mut meta = extra;
    meta.insert(META_FORMAT.to_string(), MODEL_FORMAT.to_string());
    meta.insert(META_CONFIG.to_string(), serde_json::to_string(config)?);
    if let Some(names) = classes {
        meta.insert(META_CLASSES.to_string(), serde_json::to_string(names)?);
    }
    write_safetensors(path, tensors, meta)
}
