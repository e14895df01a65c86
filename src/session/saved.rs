//! Saved sessions: the exact view of the explorer as a small, versioned JSON file — the model and
//! its class list, the photos and which one is shown, the class, layer and head, the comparison,
//! the display settings and the head names — with paths relative to the session file where they
//! lie beside or below it, so a folder of photos and its session can be moved or shared together.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::overlay::look::Look;
use crate::session::head_names::HeadNames;

/// The format written, and the only one read.
pub const VERSION: u32 = 1;
/// The largest session file read (bytes).
const MAX_FILE: u64 = 4 << 20;

/// One saved view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    pub version: u32,
    /// The model file; `None`: the bundled demo model.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// The class list the model was opened with, if one was given.
    #[serde(default)]
    pub classes: Option<PathBuf>,
    /// The open photos, in the strip's order.
    #[serde(default)]
    pub photos: Vec<PathBuf>,
    /// 0-based index into `photos` of the one shown.
    #[serde(default)]
    pub selected: usize,
    /// The class shown, by name.
    #[serde(default)]
    pub class: Option<String>,
    /// 1-based decoder layer.
    #[serde(default)]
    pub layer: Option<usize>,
    /// 1-based head; `None`: the mean of the heads.
    #[serde(default)]
    pub head: Option<usize>,
    /// The comparison's classes, by name.
    #[serde(default)]
    pub compare: Vec<String>,
    #[serde(default)]
    pub show_compare: bool,
    /// Whether the comparison shows the contrast of its first two classes.
    #[serde(default)]
    pub contrast: bool,
    /// Whether the head gallery follows the heads' ranking.
    #[serde(default)]
    pub gallery_by_rank: bool,
    /// The display settings.
    pub look: Look,
    /// The model's head names when the session was saved.
    #[serde(default)]
    pub head_names: HeadNames,
}

/// `path` as written into a session in `dir`: relative where it lies in `dir` or below it.
fn relative(path: &Path, dir: &Path) -> PathBuf {
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    match abs(path).strip_prefix(abs(dir)) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_path_buf(),
        _ => path.to_path_buf(),
    }
}

/// `path` read from a session in `dir`. A relative path may not climb out with `..` further
/// than it could have been written (it is read as given).
fn resolved(path: &Path, dir: &Path) -> PathBuf {
    if path.is_absolute() || path.components().next().is_some_and(|c| matches!(c, Component::Prefix(_))) {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

fn map_paths(s: &SavedSession, f: impl Fn(&Path) -> PathBuf) -> SavedSession {
    SavedSession {
        model: s.model.as_deref().map(&f),
        classes: s.classes.as_deref().map(&f),
        photos: s.photos.iter().map(|p| f(p)).collect(),
        ..s.clone()
    }
}

fn dir_of(file: &Path) -> PathBuf {
    file.parent().filter(|d| !d.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl SavedSession {
    /// Writes the session to `file` (atomically), paths relative to its folder where possible.
    pub fn write(&self, file: &Path) -> Result<()> {
        let dir = dir_of(file);
        let out = map_paths(self, |p| relative(p, &dir));
        let json = serde_json::to_vec_pretty(&out).map_err(|e| Error::file(file, e.to_string()))?;
        crate::files::write_atomic(file, |tmp| Ok(std::fs::write(tmp, &json)?))
            .map_err(|e| Error::file(file, format!("cannot write the session: {e:#}")))
    }

    /// Reads a session from `file`, its paths made usable from here.
    pub fn read(file: &Path) -> Result<Self> {
        let s: Self = super::read_json_file(file, MAX_FILE, "a session is", "an INTR Explorer session")?;
        if s.version != VERSION {
            return Err(Error::file(
                file,
                format!("is a session of version {}; this build reads {VERSION}", s.version),
            ));
        }
        let dir = dir_of(file);
        Ok(map_paths(&s, |p| resolved(p, &dir)))
    }

    /// Whether `path` looks like a session file (a `.json` whose start says so), for the command
    /// line and dropped files.
    #[must_use]
    pub fn is_session_file(path: &Path) -> bool {
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
            && std::fs::read(path)
                .ok()
                .filter(|b| b.len() as u64 <= MAX_FILE)
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v.get("version").is_some() && v.get("look").is_some() && v.get("photos").is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_session_folder_are_written_relative_and_read_back_from_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::write(photos.join("a.jpg"), b"x").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("model.pth"), b"x").unwrap();
        let s = SavedSession {
            version: VERSION,
            model: Some(outside.path().join("model.pth")),
            classes: None,
            photos: vec![photos.join("a.jpg")],
            selected: 0,
            class: Some("Painted Bunting".into()),
            layer: Some(2),
            head: Some(3),
            compare: vec!["Painted Bunting".into(), "Indigo Bunting".into()],
            show_compare: true,
            contrast: true,
            gallery_by_rank: true,
            look: Look::default(),
            head_names: HeadNames::default(),
        };
        let file = dir.path().join("view.json");
        s.write(&file).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(raw["photos"][0], "photos/a.jpg");
        assert!(Path::new(raw["model"].as_str().unwrap()).is_absolute());
        // Moved with its photos, it still finds them.
        let moved = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(moved.path().join("photos")).unwrap();
        std::fs::copy(&file, moved.path().join("view.json")).unwrap();
        let back = SavedSession::read(&moved.path().join("view.json")).unwrap();
        assert_eq!(back.photos, vec![moved.path().join("photos/a.jpg")]);
        assert_eq!(back.model, s.model);
        assert_eq!(SavedSession { photos: s.photos.clone(), ..back }, s);
        assert!(SavedSession::is_session_file(&file));
        assert!(!SavedSession::is_session_file(&photos.join("a.jpg")));
    }

    #[test]
    fn a_damaged_or_newer_session_is_a_clear_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.json");
        std::fs::write(&file, b"{\"version\": 9, \"look\": {}}").unwrap();
        let e = SavedSession::read(&file).unwrap_err().to_string();
        assert!(e.contains("s.json"), "{e}");
        std::fs::write(&file, "[".repeat(100_000)).unwrap();
        let e = SavedSession::read(&file).unwrap_err().to_string();
        assert!(e.contains("s.json") && e.contains("is not an INTR Explorer session"), "{e}");
    }
}
