//! Downloads against a loopback server that behaves like the Hugging Face Hub
//! (`common/hub_server.rs`), serving a small official-format checkpoint. No network beyond it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::hub_server::{COMMIT, FILE, Hub, REPO};
use common::*;
use intr_explorer::hub::{Cache, Expected, HubEnv, Source, fetch};

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

/// A small random official-format checkpoint with `classes` classes at `path`.
fn small_official(path: &Path, classes: usize) {
    let cfg = intr_explorer::intr::random::small_config(classes, 1);
    intr_explorer::intr::random::write_official_pth(path, &cfg, 7, false).unwrap();
}

#[test]
fn the_official_cub_file_gets_cubs_names_and_a_file_merely_named_so_is_told_apart() {
    use intr_explorer::session::{ModelSpec, Session};
    let dir = tempfile::tempdir().unwrap();
    let cub = intr_explorer::hub::catalogue::find("cub").unwrap();
    let p = dir.path().join(cub.file);
    small_official(&p, 200);
    let s = Session::open(&ModelSpec { path: Some(p.clone()), ..Default::default() }).unwrap();
    assert_eq!(s.class_names()[15], "Painted Bunting");
    assert!(s.catalogue_mismatch().is_none());
    // The same name on a 10-class file: numbered classes and a warning that names the file.
    small_official(&p, 10);
    let s = Session::open(&ModelSpec { path: Some(p.clone()), ..Default::default() }).unwrap();
    assert_eq!(s.class_names()[0], "class 0");
    let w = s.catalogue_mismatch().unwrap();
    assert!(w.contains(&p.display().to_string()) && w.contains("200 classes") && w.contains("has 10"), "{w}");
    // Given names always win.
    let names = dir.path().join("names.txt");
    std::fs::write(&names, (1..=10).map(|i| format!("bird {i}\n")).collect::<String>()).unwrap();
    let s = Session::open(&ModelSpec { path: Some(p), classes: Some(names), ..Default::default() }).unwrap();
    assert_eq!(s.class_names()[0], "bird 1");
}

#[test]
fn names_given_once_for_an_official_checkpoint_without_a_list_are_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let birds = intr_explorer::hub::catalogue::find("birds-525").unwrap();
    let model = dir.path().join(birds.file);
    small_official(&model, birds.classes);
    let names = dir.path().join("birds.txt");
    std::fs::write(&names, (1..=525).map(|i| format!("Species {i:03}\n")).collect::<String>()).unwrap();
    let photo = parity_dir().join("Painted_Bunting_0004_16641.jpg");
    let predict = |classes: Option<&Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_intr-explorer"));
        c.args(["predict", "-k", "1", "--json", "--model"]).arg(&model).arg(&photo);
        if let Some(p) = classes {
            c.arg("--classes").arg(p);
        }
        let out = c.env("INTR_EXPLORER_CONFIG", dir.path().join("config")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // Until names are given, the classes are numbered and the window and CLI say why.
    let (out, err) = predict(None);
    assert!(out.contains("\"class ") && err.contains("numbered until given"), "{out}\n{err}");
    let (out, _) = predict(Some(&names));
    assert!(out.contains("Species "), "{out}");
    // Remembered (by the checkpoint's SHA-256) for the next run.
    let (out, err) = predict(None);
    assert!(out.contains("Species ") && !err.contains("numbered"), "{out}\n{err}");
    assert!(dir.path().join("config/names.json").is_file());
}
