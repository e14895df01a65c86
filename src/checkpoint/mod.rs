//! Opening INTR checkpoints: official PyTorch `.pth` zips (read as data, tensors fetched on demand,
//! optimizer state never read) and `.safetensors` files (memory-mapped).
//!
//! Opening a file reads only its index: the zip central directory and `data.pkl` for `.pth`, the JSON
//! header for `.safetensors`. Tensor bytes are read one tensor at a time by [`Checkpoint::read_f32`],
//! so loading a 496 MB official checkpoint costs about the 166 MB of its model weights.
//!
//! Everything here treats the file as data: [`pickle`] never executes anything, [`zipindex`] checks
//! every offset against the file, and [`writer`] writes models and results atomically.

pub mod pickle;
pub mod pth_writer;
mod reader;
pub mod writer;
pub mod zipindex;

pub use reader::*;
pub use writer::{F32Tensor, write_model, write_safetensors};

use crate::error::{Error, Result};

/// safetensors metadata key holding the model configuration (`IntrConfig`) as JSON.
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
/// The value of [`META_FORMAT`] in models this program writes.
pub const MODEL_FORMAT: &str = "intr-explorer model v1";

impl Checkpoint {
    /// Class names stored in the checkpoint's metadata, if any.
    pub fn stored_class_names(&self) -> Result<Option<Vec<String>>> {
        match self.extras().metadata.get(META_CLASSES) {
            Some(json) => serde_json::from_str(json)
                .map(Some)
                .map_err(|e| Error::file(self.path(), format!("stored class names are invalid: {e}"))),
            None => Ok(None),
        }
    }
}
