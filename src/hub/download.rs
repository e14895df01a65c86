//! Downloading one file of a Hub repository into the shared cache, the way the Hub serves it:
//! `HEAD {endpoint}/{repo}/resolve/main/{file}` answers (often with a redirect to a storage URL)
//! with the commit (`X-Repo-Commit`), the file's ETag (`X-Linked-Etag` for large files: its
//! SHA-256) and its size (`X-Linked-Size`); the bytes then come from the redirect target, resumed
//! from `blobs/<etag>.incomplete` with a `Range` request (206 and `Content-Range` checked) after an
//! interruption, under the same lock file as Python's. Size and SHA-256 are always verified — the
//! catalogue's values for official checkpoints, the ETag for other large files — and a file that
//! fails is removed, never left where it would be used.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::{Cache, HubEnv, check_names};
use crate::error::{Error, Result};

/// What the file must be, when known beforehand (the catalogue's values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
}

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Downloaded now (`resumed_from` bytes were already there from an interrupted download).
    Downloaded { resumed_from: u64 },
    /// Already in the cache (the Hub confirmed it is current).
    Cached,
    /// From the cache without asking the Hub: offline, or the Hub did not answer (`why`).
    CachedOffline { why: String },
}

/// A file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `snapshots/<commit>/<file>`.
    pub path: PathBuf,
    pub source: Source,
}

/// What the Hub says about a file before sending it.
#[derive(Debug, Clone)]
struct Head {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where the bytes are (the redirect target, or the resolve URL itself).
    url: String,
}

/// Reads at most this much per write (and per progress report).
const CHUNK: usize = 1 << 20;

fn agent(redirects: u32) -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(redirects)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .user_agent(concat!("intr-explorer/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// An ETag without its weak marker and quotes.
fn clean_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Joins a `Location` header to the URL it answered.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    // Origin of `base`: scheme://host[:port].
    let origin_end = base.find("://").map_or(0, |i| i + 3);
    let origin = match base[origin_end..].find('/') {
        Some(j) => &base[..origin_end + j],
        None => base,
    };
    if location.starts_with('/') { format!("{origin}{location}") } else { format!("{origin}/{location}") }
}

fn head(env: &HubEnv, repo: &str, file: &str) -> std::result::Result<Head, HeadError> {
    let url = format!("{}/{repo}/resolve/main/{file}", env.endpoint);
    let resp = agent(0).head(&url).call().map_err(|e| HeadError::Unreachable(format!("{}: {e}", env.endpoint)))?;
    let status = resp.status().as_u16();
    match status {
        200..=299 | 301..=303 | 307 | 308 => {}
        401 | 403 => {
            return Err(HeadError::Refused(format!(
                "the Hub refused {repo}/{file} ({status}): the repository is private or gated (a token is not supported yet)"
            )));
        }
        404 => return Err(HeadError::Refused(not_found(env, repo, file))),
        _ => return Err(HeadError::Unreachable(format!("{url} answered {status}"))),
    }
    let commit = header(&resp, "x-repo-commit")
        .ok_or_else(|| HeadError::Refused(format!("{url}: the answer has no X-Repo-Commit: not a Hub endpoint?")))?;
    let etag = header(&resp, "x-linked-etag")
        .or_else(|| header(&resp, "etag"))
        .map(|e| clean_etag(&e))
        .filter(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .ok_or_else(|| HeadError::Refused(format!("{url}: the answer has no usable ETag")))?;
    let size = header(&resp, "x-linked-size")
        .or_else(|| if status == 200 { header(&resp, "content-length") } else { None })
        .and_then(|s| s.trim().parse().ok());
    let url = match header(&resp, "location") {
        Some(l) if (300..400).contains(&status) => absolute(&url, &l),
        _ => url,
    };
    Ok(Head { commit, etag, size, url })
}

/// Why a file is not there, with the repository's files from the model-info API when it answers.
fn not_found(env: &HubEnv, repo: &str, file: &str) -> String {
    let url = format!("{}/api/models/{repo}", env.endpoint);
    let info = agent(3).get(&url).call().ok().filter(|r| r.status().is_success()).and_then(|r| {
        let text = r.into_body().with_config().limit(4 << 20).read_to_string().ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()
    });
    let files: Option<Vec<String>> = info
        .as_ref()
        .and_then(|v| v.get("siblings")?.as_array())
        .map(|s| s.iter().filter_map(|f| f.get("rfilename")?.as_str().map(str::to_string)).take(20).collect());
    match files {
        Some(f) if !f.is_empty() => format!("`{repo}` has no file `{file}`; it has: {}", f.join(", ")),
        Some(_) => format!("`{repo}` has no file `{file}` (it has no files)"),
        None => format!("the Hub has no repository `{repo}` or no file `{file}` in it (404)"),
    }
}

enum HeadError {
    /// No answer (network, server down): the cache may serve.
    Unreachable(String),
    /// An answer that says no: the cache must not hide it.
    Refused(String),
}

/// Fetches `repo`/`file` into the cache (or finds it there), reporting `(done, total)` bytes to
/// `progress` and stopping, resumable, when `cancel` is set.
pub fn fetch(
    env: &HubEnv,
    repo: &str,
    file: &str,
    expected: &Expected,
    progress: &dyn Fn(u64, Option<u64>),
    cancel: &AtomicBool,
) -> Result<Fetched> {
    check_names(repo, file)?;
    let cache = &env.cache;
    let cached = || cache.cached(repo, "main", file);
    if env.offline {
        return match cached() {
            Some(path) => Ok(Fetched { path, source: Source::CachedOffline { why: "HF_HUB_OFFLINE is set".into() } }),
            None => Err(Error::Missing(format!(
                "HF_HUB_OFFLINE is set and {repo}/{file} is not in the cache ({})",
                cache.root.display()
            ))),
        };
    }
    let h = match head(env, repo, file) {
        Ok(h) => h,
        Err(HeadError::Unreachable(why)) => {
            return match cached() {
                Some(path) => {
                    Ok(Fetched { path, source: Source::CachedOffline { why: format!("no answer from {why}") } })
                }
                None => Err(Error::Missing(format!("cannot download {repo}/{file}: no answer from {why}"))),
            };
        }
        Err(HeadError::Refused(why)) => return Err(Error::Request(why)),
    };
    // The Hub names large files by their SHA-256; a catalogued file must be the catalogued one.
    let sha = expected.sha256.clone().or_else(|| is_sha256(&h.etag).then(|| h.etag.to_ascii_lowercase()));
    if let (Some(want), true) = (&expected.sha256, is_sha256(&h.etag))
        && !h.etag.eq_ignore_ascii_case(want)
    {
        return Err(Error::Request(format!(
            "the Hub now serves a different {file} (SHA-256 {}) than the catalogue's ({want}); not downloaded",
            h.etag
        )));
    }
    if let (Some(want), Some(got)) = (expected.bytes, h.size)
        && want != got
    {
        return Err(Error::Request(format!(
            "the Hub says {file} is {got} bytes, the catalogue {want}; not downloaded"
        )));
    }
    let total = expected.bytes.or(h.size);
    let blob = cache.blob(repo, &h.etag);
    if let Ok(m) = std::fs::metadata(&blob)
        && total.is_none_or(|t| m.len() == t)
    {
        let path = cache.link(repo, "main", &h.commit, file, &h.etag)?;
        return Ok(Fetched { path, source: Source::Cached });
    }
    let resumed_from = download_blob(cache, repo, &h, &blob, total, sha.as_deref(), progress, cancel)?;
    let path = cache.link(repo, "main", &h.commit, file, &h.etag)?;
    Ok(Fetched { path, source: Source::Downloaded { resumed_from } })
}

fn io_err(path: &Path, what: &str, e: &std::io::Error) -> Error {
    Error::file(path, format!("{what}: {e}"))
}

/// Downloads into `blob` (through `blob.incomplete`, resumed when present); returns the bytes that
/// were already there.
#[allow(clippy::too_many_arguments)]
fn download_blob(
    cache: &Cache,
    repo: &str,
    h: &Head,
    blob: &Path,
    total: Option<u64>,
    sha: Option<&str>,
    progress: &dyn Fn(u64, Option<u64>),
    cancel: &AtomicBool,
) -> Result<u64> {
    let blobs = blob.parent().unwrap_or(&cache.root);
    std::fs::create_dir_all(blobs).map_err(|e| io_err(blobs, "cannot create the cache folder", &e))?;
    // The lock Python's huggingface_hub takes for the same blob.
    let locks = cache.root.join(".locks").join(cache.repo_dir(repo).file_name().unwrap_or_default());
    std::fs::create_dir_all(&locks).map_err(|e| io_err(&locks, "cannot create the cache's lock folder", &e))?;
    let lock_path = locks.join(format!("{}.lock", h.etag));
    let lock = File::create(&lock_path).map_err(|e| io_err(&lock_path, "cannot create the lock", &e))?;
    if lock.try_lock().is_err() {
        return Err(Error::Request(format!(
            "another program is downloading {} into the cache now (lock {}); try again when it is done",
            h.url,
            lock_path.display()
        )));
    }
    let part = cache.partial(repo, &h.etag);
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .map_err(|e| io_err(&part, "cannot write the download", &e))?;
    let mut have = out.metadata().map_err(|e| io_err(&part, "cannot read the download", &e))?.len();
    if total.is_some_and(|t| have > t) {
        have = 0;
    }
    // The SHA-256 covers the bytes already there.
    let mut hasher = Sha256::new();
    out.seek(SeekFrom::Start(0)).map_err(|e| io_err(&part, "cannot read the download", &e))?;
    std::io::copy(&mut (&mut out).take(have), &mut hasher)
        .map_err(|e| io_err(&part, "cannot read the download", &e))?;
    let mut req = agent(5).get(&h.url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| Error::Missing(format!("cannot download {}: {e}", h.url)))?;
    let status = resp.status().as_u16();
    let resumed_from = match status {
        206 if have > 0 => {
            let range = header(&resp, "content-range").unwrap_or_default();
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            if start != Some(have) {
                return Err(Error::Missing(format!(
                    "{} answered a resumed download with the wrong range (`{range}` for bytes {have}-); \
                     delete {} to start again",
                    h.url,
                    part.display()
                )));
            }
            have
        }
        200 => {
            // A fresh download (or the server ignored the range): start from the beginning.
            hasher = Sha256::new();
            have = 0;
            0
        }
        _ => return Err(Error::Missing(format!("cannot download {}: the server answered {status}", h.url))),
    };
    out.set_len(have).map_err(|e| io_err(&part, "cannot write the download", &e))?;
    out.seek(SeekFrom::Start(have)).map_err(|e| io_err(&part, "cannot write the download", &e))?;
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut done = have;
    progress(done, total);
    loop {
        if cancel.load(Ordering::Acquire) {
            let _ = out.sync_all();
            return Err(Error::Request(format!(
                "download cancelled at {done} bytes; {} is kept, and the next download resumes from it",
                part.display()
            )));
        }
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = out.sync_all();
                return Err(Error::Missing(format!(
                    "the download of {} broke off at {done}{} bytes ({e}); run it again to resume",
                    h.url,
                    total.map(|t| format!(" of {t}")).unwrap_or_default()
                )));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| io_err(&part, "cannot write the download", &e))?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if total.is_some_and(|t| done > t) {
            drop(out);
            let _ = std::fs::remove_file(&part);
            return Err(Error::file(
                blob,
                format!("the server sent more than the {} bytes announced; removed", total.unwrap_or(0)),
            ));
        }
        progress(done, total);
    }
    out.sync_all().map_err(|e| io_err(&part, "cannot write the download", &e))?;
    drop(out);
    if let Some(t) = total
        && done != t
    {
        return Err(Error::Missing(format!(
            "the download of {} ended at {done} of {t} bytes; run it again to resume",
            h.url
        )));
    }
    let got = crate::files::hex(&hasher.finalize());
    if let Some(want) = sha
        && !got.eq_ignore_ascii_case(want)
    {
        let _ = std::fs::remove_file(&part);
        return Err(Error::file(
            blob,
            format!("failed verification: SHA-256 {got}, expected {want}; the download was removed"),
        ));
    }
    std::fs::rename(&part, blob).map_err(|e| io_err(blob, "cannot move the download into place", &e))?;
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    Ok(resumed_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_etags_are_read_as_the_hub_writes_them() {
        assert_eq!(absolute("http://127.0.0.1:9/a/b/resolve/main/f", "/blobs/x"), "http://127.0.0.1:9/blobs/x");
        assert_eq!(absolute("https://huggingface.co/a", "https://cdn.example/x?y=1"), "https://cdn.example/x?y=1");
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(clean_etag("\"6970e7\""), "6970e7");
        assert!(is_sha256("6970e7cca515193ff715e45f09ec17419e272436a736b7bb2b8eb9640fc066fa"));
        assert!(!is_sha256("6970e7"));
    }
}
