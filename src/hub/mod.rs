//! Official models in one step: the catalogue of the official INTR checkpoints
//! ([`catalogue`]), the standard Hugging Face cache shared with Python tools ([`cache`]) and
//! verified, resumable downloads into it ([`download`]), honouring `HF_ENDPOINT`, `HF_HOME`,
//! `HF_HUB_CACHE` and `HF_HUB_OFFLINE`.

pub mod cache;
pub mod catalogue;
pub mod download;
pub mod names;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

pub use cache::{Cache, HubEnv};
pub use catalogue::{CATALOGUE, Entry};
pub use download::{Expected, Fetched, Source, fetch};

use crate::error::{Error, Result};

impl Entry {
    /// The size and SHA-256 the file must have.
    #[must_use]
    pub fn expected(&self) -> Expected {
        Expected { bytes: Some(self.bytes), sha256: Some(self.sha256.to_string()) }
    }

    /// Where the file is in the cache, if it has been downloaded.
    #[must_use]
    pub fn cached(&self, env: &HubEnv) -> Option<PathBuf> {
        env.cache.cached(self.repo, "main", self.file)
    }

    /// Downloads the file (or finds it in the cache).
    pub fn fetch(&self, env: &HubEnv, progress: &dyn Fn(u64, Option<u64>), cancel: &AtomicBool) -> Result<Fetched> {
        fetch(env, self.repo, self.file, &self.expected(), progress, cancel)
    }
}

/// The downloaded file of the catalogue model `name`, or an error saying how to get it.
pub fn catalogued_path(name: &str, env: &HubEnv) -> Result<PathBuf> {
    let entry = catalogue::find(name).ok_or_else(|| Error::Request(format!("`{name}` is not a catalogued model")))?;
    entry.cached(env).ok_or_else(|| {
        Error::Missing(format!(
            "the {} model ({}, {:.0} MB) is not downloaded yet: run `intr-explorer download {}` (cache: {})",
            entry.name,
            entry.file,
            entry.bytes as f64 / 1e6,
            entry.name,
            env.cache.root.display()
        ))
    })
}
