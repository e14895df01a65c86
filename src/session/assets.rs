//! The bundled demo (`assets/demo/`): the trained model, its sample images and three real photos.
//! Found next to the executable (an installed copy), above it (`target/<profile>/` in a checkout),
//! or in the source tree the binary was built from.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File name of the demo model inside the demo folder.
pub const DEMO_MODEL: &str = "model.safetensors";

/// The demo folder, if one is found.
#[must_use]
pub fn demo_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("INTR_EXPLORER_DEMO") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(exe_dir.join("assets/demo"));
        for up in exe_dir.ancestors().skip(1).take(3) {
            candidates.push(up.join("assets/demo"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo"));
    candidates.into_iter().find(|d| d.join(DEMO_MODEL).is_file())
}

/// The bundled demo model.
pub fn demo_model() -> Result<PathBuf> {
    match demo_dir() {
        Some(d) => Ok(d.join(DEMO_MODEL)),
        None => Err(Error::Missing(format!(
            "the bundled demo model (assets/demo/{DEMO_MODEL}) was not found next to the program or in its \
             source tree; give a model with --model, or set INTR_EXPLORER_DEMO to the demo folder"
        ))),
    }
}

/// The demo's images (generated samples, then the real photos), sorted by name.
#[must_use]
pub fn demo_images() -> Vec<PathBuf> {
    let Some(dir) = demo_dir() else { return Vec::new() };
    let mut out = Vec::new();
    for sub in ["samples", "photos"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else { continue };
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| crate::image::decode::has_image_extension(p))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}
