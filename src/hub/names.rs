//! Class names remembered per official checkpoint: where the catalogue has none (`birds-525`,
//! `butterfly`), the list the user gave once (`--classes`, or in the window) is used from then on.
//! Kept in `names.json` in the user's config folder (`$INTR_EXPLORER_CONFIG`, else
//! `$XDG_CONFIG_HOME/intr-explorer`, else `~/.config/intr-explorer`), keyed by the checkpoint's SHA-256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config folder.
#[must_use]
pub fn config_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("INTR_EXPLORER_CONFIG")
        .or_else(|| var("XDG_CONFIG_HOME").map(|x| x.join("intr-explorer")))
        .unwrap_or_else(|| var("HOME").unwrap_or_else(|| ".".into()).join(".config/intr-explorer"))
}

fn store() -> PathBuf {
    config_dir().join("names.json")
}

fn read() -> BTreeMap<String, PathBuf> {
    let Ok(meta) = std::fs::metadata(store()) else { return BTreeMap::new() };
    if meta.len() > 1 << 20 {
        return BTreeMap::new();
    }
    std::fs::read(store()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The class list remembered for the checkpoint with this SHA-256, if it still exists.
#[must_use]
pub fn remembered(sha256: &str) -> Option<PathBuf> {
    read().remove(sha256).filter(|p| p.exists())
}

/// Remembers `list` (a names file or a dataset folder) for the checkpoint with this SHA-256.
/// Failing to write is not an error worth stopping for: the names were given this time.
pub fn remember(sha256: &str, list: &Path) {
    let list = list.canonicalize().unwrap_or_else(|_| list.to_path_buf());
    let mut all = read();
    if all.get(sha256) == Some(&list) {
        return;
    }
    all.insert(sha256.to_string(), list);
    let dir = config_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Ok(json) = serde_json::to_vec_pretty(&all) {
        let _ = crate::files::write_atomic(&store(), |tmp| Ok(std::fs::write(tmp, json)?));
    }
}
