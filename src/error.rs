//! The error type of the library: every failure names the file, the setting or the request that
//! caused it.

use std::path::{Path, PathBuf};

/// Errors raised by the INTR engine (checkpoints, configuration, images, forward pass).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be used; `what` says precisely why.
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    /// The model configuration is missing a value or contradicts itself or the weights.
    #[error("model configuration: {0}")]
    Config(String),
    /// A class, layer or head that was asked for does not exist in the model; says which exist.
    #[error("{0}")]
    Request(String),
    /// Something the program needs is not where it looks for it (the bundled demo model).
    #[error("{0}")]
    Missing(String),
    /// A tensor numerical failure inside candle (shape mismatch etc.); a bug, not user input.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// A [`Error::File`] for `path`.
    pub fn file(path: &Path, what: impl Into<String>) -> Self {
        Error::File { path: path.to_path_buf(), what: what.into() }
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
