//! The standard Hugging Face cache, shared with Python tools (`huggingface_hub`):
//! `$HF_HUB_CACHE` or `$HF_HOME/hub` (default `~/.cache/huggingface/hub`), one folder per repository,
//! `models--ORG--NAME/`, holding `blobs/<etag>` (the files, named by their ETag: the SHA-256 for
//! large files), `refs/<revision>` (the commit a revision points at) and
//! `snapshots/<commit>/<file>` (relative links to the blobs). A download in progress is
//! `blobs/<etag>.incomplete`, as Python's; either tool can resume the other's.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cache root (the `hub` folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub root: PathBuf,
}

/// What the environment says about the Hub: where it is, where the cache is, whether to go online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEnv {
    /// `HF_ENDPOINT` (default `https://huggingface.co`), without a trailing slash.
    pub endpoint: String,
    pub cache: Cache,
    /// `HF_HUB_OFFLINE` set to 1/true/yes/on.
    pub offline: bool,
}

impl HubEnv {
    /// Reads `HF_ENDPOINT`, `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME` and `HF_HUB_OFFLINE`.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .map_or_else(|| "https://huggingface.co".to_string(), |v| v.to_string_lossy().into_owned());
        let root = if let Some(c) = var("HF_HUB_CACHE") {
            PathBuf::from(c)
        } else if let Some(h) = var("HF_HOME") {
            PathBuf::from(h).join("hub")
        } else if let Some(x) = var("XDG_CACHE_HOME") {
            PathBuf::from(x).join("huggingface/hub")
        } else {
            PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache/huggingface/hub")
        };
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_string_lossy().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Self { endpoint: endpoint.trim_end_matches('/').to_string(), cache: Cache { root }, offline }
    }
}

/// Checks a repository id (`ORG/NAME`) and a file name in it, so neither can step outside the cache.
pub fn check_names(repo: &str, file: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() != 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(Error::Request(format!("`{repo}` is not a Hub repository id (ORG/NAME)")));
    }
    if !file.split('/').all(part_ok) {
        return Err(Error::Request(format!("`{file}` is not a file name in a Hub repository")));
    }
    Ok(())
}

impl Cache {
    /// `models--ORG--NAME`.
    #[must_use]
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The blob named by `etag`.
    #[must_use]
    pub fn blob(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    /// The blob of `etag` while it is being downloaded (`<etag>.incomplete`, Python's name).
    #[must_use]
    pub fn partial(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(format!("{etag}.incomplete"))
    }

    /// The commit `revision` points at, if recorded.
    #[must_use]
    pub fn commit(&self, repo: &str, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let c = text.trim();
        (!c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric())).then(|| c.to_string())
    }

    /// The cached copy of `file` at `revision`, if there is one whose blob exists.
    #[must_use]
    pub fn cached(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = self.commit(repo, revision)?;
        let p = self.repo_dir(repo).join("snapshots").join(commit).join(file);
        p.is_file().then_some(p)
    }

    /// Records a finished blob: `refs/<revision>` → `commit`, and the snapshot link to the blob.
    pub fn link(&self, repo: &str, revision: &str, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let dir = self.repo_dir(repo);
        let snap = dir.join("snapshots").join(commit).join(file);
        let parent = snap.parent().unwrap_or(&dir).to_path_buf();
        let io = |p: &Path, e: std::io::Error| Error::file(p, format!("cannot write the Hub cache: {e}"));
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        let depth = file.split('/').count() + 1;
        let target: PathBuf = std::iter::repeat_n("..", depth).collect::<PathBuf>().join("blobs").join(etag);
        let _ = std::fs::remove_file(&snap);
        link_or_copy(&target, &snap, &self.blob(repo, etag)).map_err(|e| io(&snap, e))?;
        let refs = dir.join("refs");
        std::fs::create_dir_all(&refs).map_err(|e| io(&refs, e))?;
        let r = refs.join(revision);
        crate::files::write_atomic(&r, |tmp| Ok(std::fs::write(tmp, commit)?))
            .map_err(|e| Error::file(&r, format!("cannot write the Hub cache: {e:#}")))?;
        Ok(snap)
    }
}

#[cfg(unix)]
fn link_or_copy(relative: &Path, at: &Path, _blob: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative, at)
}

#[cfg(not(unix))]
fn link_or_copy(_relative: &Path, at: &Path, blob: &Path) -> std::io::Result<()> {
    // Without symbolic links (Windows without developer mode), the Hub's own library copies too.
    std::fs::copy(blob, at).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_cache_are_refused() {
        assert!(check_names("imageomics/INTR", "intr_checkpoint_cub_detr_r50.pth").is_ok());
        assert!(check_names("imageomics/INTR", "sub/dir/model.safetensors").is_ok());
        for (repo, file) in [("../x", "f"), ("a", "f"), ("a/b/c", "f"), ("a/b", "../f"), ("a/b", ""), ("a/b", "x/../y")]
        {
            assert!(check_names(repo, file).is_err(), "{repo} {file}");
        }
    }
}
