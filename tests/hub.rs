//! Downloads against a loopback server that behaves like the Hugging Face Hub: the model-info API,
//! `/resolve/main/` answering with a redirect to a blob URL, `X-Repo-Commit`, `ETag` and
//! `X-Linked-Etag`/`X-Linked-Size`, ranged requests answered with 206 and `Content-Range`. It serves
//! a small official-format checkpoint. No network beyond it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::*;
use intr_explorer::hub::{Cache, Expected, HubEnv, Source, fetch};

const REPO: &str = "someone/intr-tiny";
const FILE: &str = "tiny_postnorm_sine.pth";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How the server misbehaves.
#[derive(Default)]
struct Faults {
    /// Close the next blob download after this many bytes (once).
    cut_after: Option<usize>,
    /// Serve bytes that do not match the ETag.
    corrupt: bool,
}

struct Hub {
    addr: String,
    content: Arc<Vec<u8>>,
    sha: String,
    faults: Arc<Mutex<Faults>>,
    /// `Range` headers of blob requests, in order ("" for none).
    ranges: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    fn start(content: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let sha = intr_explorer::files::sha256_hex(&content);
        let content = Arc::new(content);
        let faults = Arc::new(Mutex::new(Faults::default()));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (content, sha, faults, ranges, requests, stop) = (
                Arc::clone(&content),
                sha.clone(),
                Arc::clone(&faults),
                Arc::clone(&ranges),
                Arc::clone(&requests),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    requests.fetch_add(1, Ordering::AcqRel);
                    let _ = serve(conn, &content, &sha, &faults, &ranges);
                }
            })
        };
        Self { addr, content, sha, faults, ranges, requests, stop, thread: Some(thread) }
    }

    fn env(&self, cache: &Path) -> HubEnv {
        HubEnv { endpoint: self.addr.clone(), cache: Cache { root: cache.to_path_buf() }, offline: false }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request, answered as the Hub would, then the connection is closed.
fn serve(
    mut conn: TcpStream,
    content: &[u8],
    sha: &str,
    faults: &Mutex<Faults>,
    ranges: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut range = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = v.trim().to_string();
        }
    }
    let resolve = format!("/{REPO}/resolve/main/{FILE}");
    let blob = format!("/xet-bridge/{sha}");
    let mut head = String::new();
    let mut body: Vec<u8> = Vec::new();
    let mut cut = None;
    if target == format!("/api/models/{REPO}") {
        let json = format!(
            r#"{{"id":"{REPO}","sha":"{COMMIT}","siblings":[{{"rfilename":".gitattributes"}},{{"rfilename":"{FILE}"}}]}}"#
        );
        head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", json.len());
        body = json.into_bytes();
    } else if target == resolve {
        head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {blob}?expires=1\r\nX-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{sha}\"\r\n\
             X-Linked-Size: {}\r\nETag: W/\"git-sha1-of-the-pointer\"\r\nContent-Length: 0\r\n",
            content.len()
        );
    } else if target.starts_with(&blob) {
        ranges.lock().unwrap().push(range.clone());
        let mut f = faults.lock().unwrap();
        let mut data = content.to_vec();
        if f.corrupt {
            let mid = data.len() / 2;
            data[mid] ^= 0x55;
        }
        let start = range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&s| s < data.len());
        match start {
            Some(s) => {
                head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\nContent-Length: {}\r\nETag: \"{sha}\"\r\n",
                    data.len() - 1,
                    data.len(),
                    data.len() - s
                );
                body = data[s..].to_vec();
            }
            None => {
                head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{sha}\"\r\n", data.len());
                body = data;
            }
        }
        cut = f.cut_after.take();
    } else {
        head.push_str("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = cut.unwrap_or(body.len()).min(body.len());
        conn.write_all(&body[..n])?;
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    // Drain what the client may still send, so the close is clean.
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}

fn fixture() -> Vec<u8> {
    std::fs::read(parity_dir().join(FILE)).unwrap()
}

fn no_progress(_: u64, _: Option<u64>) {}

fn blobs(cache: &Path) -> Vec<PathBuf> {
    let dir = Cache { root: cache.to_path_buf() }.repo_dir(REPO).join("blobs");
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_download_lands_in_the_hub_cache_layout_verified_and_opens() {
    let hub = Hub::start(fixture());
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    let seen = Mutex::new(Vec::new());
    let progress = |done: u64, total: Option<u64>| seen.lock().unwrap().push((done, total));
    let f = fetch(&env, REPO, FILE, &Expected::default(), &progress, &AtomicBool::new(false)).unwrap();
    assert_eq!(f.source, Source::Downloaded { resumed_from: 0 });
    // models--ORG--NAME/{blobs/<sha>, refs/main, snapshots/<commit>/<file> → ../../blobs/<sha>}.
    let repo_dir = cache.path().join("models--someone--intr-tiny");
    assert_eq!(f.path, repo_dir.join("snapshots").join(COMMIT).join(FILE));
    assert_eq!(std::fs::read_link(&f.path).unwrap(), Path::new("../../blobs").join(&hub.sha));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(), COMMIT);
    assert_eq!(std::fs::read(&f.path).unwrap(), *hub.content);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.last(), Some(&(hub.content.len() as u64, Some(hub.content.len() as u64))));
    assert!(seen.len() > 2, "progress is reported as the bytes arrive");
    // The downloaded checkpoint opens like any other.
    let s = intr_explorer::session::Session::open(&intr_explorer::session::ModelSpec {
        path: Some(f.path.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.class_names().len(), 10);
    // Asked again: the Hub confirms the cached copy, nothing is downloaded.
    let before = hub.ranges.lock().unwrap().len();
    let again = fetch(&env, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap();
    assert_eq!((again.source, again.path), (Source::Cached, f.path));
    assert_eq!(hub.ranges.lock().unwrap().len(), before);
}

#[test]
fn a_connection_cut_halfway_is_resumed_by_the_next_run_and_verified() {
    let hub = Hub::start(fixture());
    let half = hub.content.len() / 2;
    hub.faults.lock().unwrap().cut_after = Some(half);
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    let expected = Expected { bytes: Some(hub.content.len() as u64), sha256: Some(hub.sha.clone()) };
    let e = fetch(&env, REPO, FILE, &expected, &no_progress, &AtomicBool::new(false)).unwrap_err().to_string();
    assert!(e.contains("broke off") && e.contains("resume"), "{e}");
    // Nothing usable yet: only the partial blob, and no snapshot link.
    let partial = blobs(cache.path());
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert!(partial[0].to_string_lossy().ends_with(".incomplete"));
    assert!(Cache { root: cache.path().into() }.cached(REPO, "main", FILE).is_none());
    let kept = std::fs::metadata(&partial[0]).unwrap().len();
    assert!(kept > 0 && kept <= half as u64, "{kept} of {half}");

    let f = fetch(&env, REPO, FILE, &expected, &no_progress, &AtomicBool::new(false)).unwrap();
    assert_eq!(f.source, Source::Downloaded { resumed_from: kept });
    assert_eq!(hub.ranges.lock().unwrap().as_slice(), ["".to_string(), format!("bytes={kept}-")]);
    assert_eq!(std::fs::read(&f.path).unwrap(), *hub.content);
    assert_eq!(blobs(cache.path()), vec![cache.path().join("models--someone--intr-tiny/blobs").join(&hub.sha)]);
}

#[test]
fn a_sha256_mismatch_is_refused_and_leaves_nothing_usable_behind() {
    let hub = Hub::start(fixture());
    hub.faults.lock().unwrap().corrupt = true;
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    // The ETag (the Hub's SHA-256) is the reference when the catalogue has none.
    let e =
        fetch(&env, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap_err().to_string();
    assert!(e.contains("failed verification") && e.contains(&hub.sha) && e.contains("removed"), "{e}");
    assert!(blobs(cache.path()).is_empty(), "{:?}", blobs(cache.path()));
    assert!(Cache { root: cache.path().into() }.cached(REPO, "main", FILE).is_none());
    // A catalogued file whose SHA-256 differs from what the Hub announces is not even downloaded.
    let wrong = Expected { bytes: None, sha256: Some("0".repeat(64)) };
    let before = hub.ranges.lock().unwrap().len();
    let e = fetch(&env, REPO, FILE, &wrong, &no_progress, &AtomicBool::new(false)).unwrap_err().to_string();
    assert!(e.contains("different") && e.contains("not downloaded"), "{e}");
    assert_eq!(hub.ranges.lock().unwrap().len(), before);
}

#[test]
fn with_the_server_stopped_or_offline_the_cache_serves_and_a_missing_file_says_why() {
    let mut hub = Hub::start(fixture());
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    let f = fetch(&env, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap();
    // A file the repository does not have: the model-info API lists what it has.
    let e = fetch(&env, REPO, "nope.pth", &Expected::default(), &no_progress, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no file `nope.pth`") && e.contains(FILE), "{e}");
    hub.stop();
    let served = fetch(&env, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap();
    assert_eq!(served.path, f.path);
    assert!(matches!(served.source, Source::CachedOffline { .. }), "{:?}", served.source);
    let offline = HubEnv { offline: true, ..env.clone() };
    let served = fetch(&offline, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap();
    assert_eq!(served.path, f.path);
    let e = fetch(&offline, REPO, "other.pth", &Expected::default(), &no_progress, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("not in the cache"), "{e}");
    let e = fetch(&env, REPO, "other.pth", &Expected::default(), &no_progress, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no answer"), "{e}");
}

#[test]
fn a_cancelled_download_keeps_its_bytes_for_the_next_run() {
    let hub = Hub::start(fixture());
    let cache = tempfile::tempdir().unwrap();
    let env = hub.env(cache.path());
    let cancel = AtomicBool::new(false);
    let progress = |done: u64, _: Option<u64>| {
        if done >= 4 << 20 {
            cancel.store(true, Ordering::Release);
        }
    };
    let e = fetch(&env, REPO, FILE, &Expected::default(), &progress, &cancel).unwrap_err().to_string();
    assert!(e.contains("cancelled") && e.contains("resumes"), "{e}");
    let kept = std::fs::metadata(&blobs(cache.path())[0]).unwrap().len();
    assert!(kept >= 4 << 20, "{kept}");
    let f = fetch(&env, REPO, FILE, &Expected::default(), &no_progress, &AtomicBool::new(false)).unwrap();
    assert_eq!(f.source, Source::Downloaded { resumed_from: kept });
    assert_eq!(std::fs::read(&f.path).unwrap(), *hub.content);
}

#[test]
fn the_command_line_downloads_through_hf_endpoint_into_hf_home_and_honours_offline() {
    let hub = Hub::start(fixture());
    let home = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_intr-explorer");
    let run = |offline: bool, args: &[&str]| {
        let mut c = std::process::Command::new(exe);
        c.args(args).env("HF_ENDPOINT", &hub.addr).env("HF_HOME", home.path()).env_remove("HF_HUB_CACHE");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        } else {
            c.env_remove("HF_HUB_OFFLINE");
        }
        c.output().unwrap()
    };
    let out = run(false, &["download", REPO, FILE]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8(out.stdout).unwrap();
    let expect = home.path().join("hub/models--someone--intr-tiny/snapshots").join(COMMIT).join(FILE);
    assert_eq!(path.trim(), expect.display().to_string());
    assert!(String::from_utf8_lossy(&out.stderr).contains("downloaded and verified"));
    let out = run(true, &["download", REPO, FILE]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HF_HUB_OFFLINE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(true, &["download", "cub"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the cache"));
    let out = run(true, &["predict", "--model", "cub", "x.jpg"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the cache"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(true, &["models"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("cub")
            && text.contains("birds-525")
            && text.contains("butterfly")
            && text.contains("not downloaded")
    );
    assert!(hub.requests.load(Ordering::Acquire) >= 2);
}
