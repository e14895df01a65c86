//! Names users give to heads ("head 3 = crown"), per model and optionally per class, shown wherever
//! a head is named: the gallery, the comparison, the ranking, figures and summaries.
//!
//! Kept in `head-names.json` in the user's config folder ([`crate::hub::names::config_dir`]), keyed
//! by the model file's SHA-256, so a renamed or moved copy keeps its names and another model never
//! inherits them. A model's names can be exported to a file and imported from one (for a colleague,
//! or a paper's supplement).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest name kept (characters); longer ones are cut.
pub const MAX_NAME: usize = 40;
/// The largest head-names file read (bytes).
const MAX_FILE: u64 = 4 << 20;
/// The format written, and the only one read.
const VERSION: u32 = 1;

/// One model's head names: for every class, and for one class (which wins).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadNames {
    /// 1-based head → name, for every class.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub heads: BTreeMap<usize, String>,
    /// Class name → 1-based head → name, for that class only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, BTreeMap<usize, String>>,
}

impl HeadNames {
    /// The name of `head` (0-based) for `class` (its name): the class's own, else the model's.
    #[must_use]
    pub fn name(&self, class: &str, head: usize) -> Option<&str> {
        self.classes
            .get(class)
            .and_then(|m| m.get(&(head + 1)))
            .or_else(|| self.heads.get(&(head + 1)))
            .map(String::as_str)
    }

    /// How a head is written wherever it appears: `head 3 · crown`, or `head 3` without a name.
    #[must_use]
    pub fn label(&self, class: &str, head: usize) -> String {
        match self.name(class, head) {
            Some(n) => format!("head {} · {n}", head + 1),
            None => format!("head {}", head + 1),
        }
    }

    /// Names `head` (0-based) for every class (`class` `None`) or for one; an empty name removes it.
    pub fn set(&mut self, class: Option<&str>, head: usize, name: &str) {
        let name: String = name.trim().chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
        let map = match class {
            Some(c) => self.classes.entry(c.to_string()).or_default(),
            None => &mut self.heads,
        };
        if name.is_empty() {
            map.remove(&(head + 1));
        } else {
            map.insert(head + 1, name);
        }
        self.classes.retain(|_, m| !m.is_empty());
    }

    /// Whether no head is named.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.classes.is_empty()
    }

    /// Checks the heads against a model with `heads` heads.
    fn check(&self, heads: usize, file: &Path) -> Result<()> {
        let all = self.heads.keys().chain(self.classes.values().flat_map(BTreeMap::keys));
        if let Some(h) = all.into_iter().find(|&&h| h == 0 || h > heads) {
            return Err(Error::file(file, format!("names head {h}, but the model has heads 1 to {heads}")));
        }
        Ok(())
    }
}

/// The file of every model's head names.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    /// Model SHA-256 → its names.
    models: BTreeMap<String, HeadNames>,
}

/// One model's names as exported.
#[derive(Debug, Serialize, Deserialize)]
struct ExportFile {
    version: u32,
    /// The model they were given for.
    model_sha256: String,
    #[serde(default)]
    heads: BTreeMap<usize, String>,
    #[serde(default)]
    classes: BTreeMap<String, BTreeMap<usize, String>>,
}

/// Where head names are kept.
#[derive(Debug, Clone)]
pub struct Store {
    pub path: PathBuf,
}

impl Default for Store {
    fn default() -> Self {
        Self { path: crate::hub::names::config_dir().join("head-names.json") }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    super::read_json_file(path, MAX_FILE, "head names are", "a head-names file")
}

impl Store {
    fn read(&self) -> Result<StoreFile> {
        if !self.path.exists() {
            return Ok(StoreFile { version: VERSION, models: BTreeMap::new() });
        }
        let f: StoreFile = read_json(&self.path)?;
        if f.version != VERSION {
            return Err(Error::file(&self.path, format!("has version {}; this build reads {VERSION}", f.version)));
        }
        Ok(f)
    }

    /// The names given for the model with this SHA-256 (none if the store is missing or damaged:
    /// a damaged store is reported when names are saved).
    #[must_use]
    pub fn load(&self, sha256: &str) -> HeadNames {
        self.read().ok().and_then(|mut f| f.models.remove(sha256)).unwrap_or_default()
    }

    /// Keeps `names` for the model with this SHA-256 (atomically; the other models' are kept).
    pub fn save(&self, sha256: &str, names: &HeadNames) -> Result<()> {
        let mut f = self.read()?;
        if names.is_empty() {
            f.models.remove(sha256);
        } else {
            f.models.insert(sha256.to_string(), names.clone());
        }
        write_json(&self.path, &f)
    }

    /// Writes the model's names to `file`, with the SHA-256 of the model they were given for.
    pub fn export(&self, sha256: &str, file: &Path) -> Result<()> {
        let n = self.load(sha256);
        write_json(
            file,
            &ExportFile { version: VERSION, model_sha256: sha256.to_string(), heads: n.heads, classes: n.classes },
        )
    }

    /// Reads names exported for the model with this SHA-256 (with `heads` heads) and keeps them.
    /// A file exported for another model is refused.
    pub fn import(&self, sha256: &str, heads: usize, file: &Path) -> Result<HeadNames> {
        let e: ExportFile = read_json(file)?;
        if e.version != VERSION {
            return Err(Error::file(file, format!("has version {}; this build reads {VERSION}", e.version)));
        }
        if e.model_sha256 != sha256 {
            return Err(Error::file(
                file,
                format!(
                    "holds head names for another model (SHA-256 {}), not this one",
                    e.model_sha256.get(..12).map_or_else(|| e.model_sha256.clone(), |s| format!("{s}…"))
                ),
            ));
        }
        let names = HeadNames { heads: e.heads, classes: e.classes };
        names.check(heads, file)?;
        self.save(sha256, &names)?;
        Ok(names)
    }
}

/// Files smaller than this are hashed every time (a fraction of a second); larger ones once.
const HASH_CACHE_FROM: u64 = 64 << 20;

/// A model file's SHA-256. For large files it is remembered by (canonical path, size, modification
/// time) in `hashes.json` beside the head names, so that reopening a 500 MB checkpoint does not
/// hash it again.
pub fn model_sha256(model: &Path) -> Result<String> {
    #[derive(Default, Serialize, Deserialize)]
    struct Hashes {
        /// "path\tsize\tmtime_ns" → SHA-256.
        files: BTreeMap<String, String>,
    }
    let meta = std::fs::metadata(model).map_err(|e| Error::file(model, format!("cannot read: {e}")))?;
    let hash = || crate::files::sha256_file(model).map_err(|e| Error::file(model, format!("cannot hash: {e:#}")));
    if meta.len() < HASH_CACHE_FROM {
        return hash();
    }
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let path = model.canonicalize().unwrap_or_else(|_| model.to_path_buf());
    let key = format!("{}\t{}\t{mtime}", path.display(), meta.len());
    let store = crate::hub::names::config_dir().join("hashes.json");
    let mut hashes: Hashes = read_json(&store).unwrap_or_default();
    if let Some(h) = hashes.files.get(&key) {
        return Ok(h.clone());
    }
    let sha = hash()?;
    // A small cache: the newest 64 files.
    if hashes.files.len() >= 64 {
        hashes.files.clear();
    }
    hashes.files.insert(key, sha.clone());
    let _ = write_json(&store, &hashes);
    Ok(sha)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the folder: {e}")))?;
    }
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::file(path, e.to_string()))?;
    crate::files::write_atomic(path, |tmp| Ok(std::fs::write(tmp, &json)?))
        .map_err(|e| Error::file(path, format!("cannot write: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_name_wins_over_the_model_name_and_an_empty_name_removes_it() {
        let mut n = HeadNames::default();
        n.set(None, 2, " crown ");
        n.set(Some("Painted Bunting"), 2, "red breast");
        assert_eq!(n.label("Painted Bunting", 2), "head 3 · red breast");
        assert_eq!(n.label("Indigo Bunting", 2), "head 3 · crown");
        assert_eq!(n.label("Indigo Bunting", 0), "head 1");
        n.set(Some("Painted Bunting"), 2, "");
        assert_eq!(n.label("Painted Bunting", 2), "head 3 · crown");
        assert!(n.classes.is_empty());
        n.set(None, 2, &"x".repeat(100));
        assert_eq!(n.name("any", 2).unwrap().chars().count(), MAX_NAME);
    }

    #[test]
    fn names_are_kept_per_model_exported_and_imported_only_for_that_model() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store { path: dir.path().join("config/head-names.json") };
        let mut n = HeadNames::default();
        n.set(None, 0, "crown");
        store.save("aaaa", &n).unwrap();
        let mut m = HeadNames::default();
        m.set(Some("Species 1"), 1, "tail");
        store.save("bbbb", &m).unwrap();
        assert_eq!(store.load("aaaa"), n);
        assert_eq!(store.load("bbbb"), m);
        assert!(store.load("cccc").is_empty());

        let file = dir.path().join("names for the paper.json");
        store.export("aaaa", &file).unwrap();
        let other = Store { path: dir.path().join("elsewhere/head-names.json") };
        assert_eq!(other.import("aaaa", 8, &file).unwrap(), n);
        assert_eq!(other.load("aaaa"), n);
        let e = other.import("bbbb", 8, &file).unwrap_err().to_string();
        assert!(e.contains("names for the paper.json") && e.contains("another model"), "{e}");
        let e = other.import("aaaa", 0, &file).unwrap_err().to_string();
        assert!(e.contains("names head 1, but the model has heads 1 to 0"), "{e}");
        std::fs::write(&file, b"[[[[").unwrap();
        assert!(other.import("aaaa", 8, &file).unwrap_err().to_string().contains("is not a head-names file"));
    }
}
