//! A loopback server that behaves like the Hugging Face Hub for one repository and file: the
//! model-info API, `/resolve/main/` answering with a redirect to a blob URL, `X-Repo-Commit`,
//! `ETag` and `X-Linked-Etag`/`X-Linked-Size`, ranged requests answered with 206 and
//! `Content-Range`; and faults on demand (a cut connection, corrupt bytes, a slow link).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use intr_explorer::hub::{Cache, HubEnv};

pub const REPO: &str = "someone/intr-tiny";
pub const FILE: &str = "tiny_postnorm_sine.pth";
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// How the server misbehaves.
#[derive(Default)]
pub struct Faults {
    /// Close the next blob download after this many bytes (once).
    pub cut_after: Option<usize>,
    /// Serve bytes that do not match the ETag.
    pub corrupt: bool,
    /// Pause this long after every 256 KB of a blob (a slow link).
    pub slow: Option<std::time::Duration>,
}

pub struct Hub {
    pub addr: String,
    pub content: Arc<Vec<u8>>,
    pub sha: String,
    pub faults: Arc<Mutex<Faults>>,
    /// `Range` headers of blob requests, in order ("" for none).
    pub ranges: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    pub fn start(content: Vec<u8>) -> Self {
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

    pub fn env(&self, cache: &Path) -> HubEnv {
        HubEnv { endpoint: self.addr.clone(), cache: Cache { root: cache.to_path_buf() }, offline: false }
    }

    pub fn stop(&mut self) {
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
    let mut slow = None;
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
        slow = f.slow;
    } else {
        head.push_str("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let n = cut.unwrap_or(body.len()).min(body.len());
        for chunk in body[..n].chunks(256 << 10) {
            conn.write_all(chunk)?;
            if let Some(pause) = slow {
                std::thread::sleep(pause);
            }
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    // Drain what the client may still send, so the close is clean.
    let _ = reader.read(&mut [0u8; 64]);
    Ok(())
}
