//! The inference worker: one named thread owns the [`Session`]; requests arrive on a bounded
//! channel, results leave as plain data, and a waker closure (the GUI's `request_repaint`) is
//! called after every message. Request ids let a newer analysis supersede an older one: stale work
//! is skipped between stages and stale results are never sent.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Instant;

use crate::image::preprocess::PreprocessOptions;
use crate::intr::IntrConfig;
use crate::session::{self, ModelSpec, Probes, Session};

/// Where the window should look first, as asked on the command line (`--class`, `--head`,
/// `--layer`, 1-based); checked against the model before any photo is analysed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FocusRequest {
    pub class: Option<String>,
    pub head: Option<usize>,
    pub layer: Option<usize>,
}

/// A [`FocusRequest`] resolved against the model: 0-based indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Focus {
    pub class: Option<usize>,
    pub head: Option<usize>,
    pub layer: Option<usize>,
}

/// What the UI asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Open a model (replacing the current one once it is ready) and check `focus` against it.
    LoadModel { spec: ModelSpec, focus: FocusRequest },
    /// Rank the classes of an image and return every attention map. `id` must increase.
    Analyze { id: u64, image: PathBuf, options: PreprocessOptions },
    /// Rank the last layer's heads for `class` of a finished analysis (made by the model loaded now).
    RankHeads { analysis: Arc<Analysis>, class: usize },
    /// Score every head against the part annotations of a folder ([`crate::batch::parts`]).
    ScoreParts { dir: PathBuf },
}

/// A finished analysis tagged with its request id.
#[derive(Debug)]
pub struct Analysis {
    pub id: u64,
    pub result: session::Analysis,
}

impl Deref for Analysis {
    type Target = session::Analysis;

    fn deref(&self) -> &session::Analysis {
        &self.result
    }
}

/// A model that is ready.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// How it was opened (class list, configuration), for the command recorded in exported figures.
    pub spec: ModelSpec,
    /// The model's name wherever a result appears (the demo model says so).
    pub name: String,
    /// Whether it is the bundled demo model, which knows only its invented species.
    pub demo: bool,
    pub config: IntrConfig,
    pub class_names: Arc<Vec<String>>,
    /// The start focus, where the model has it.
    pub focus: Focus,
    /// The model file's SHA-256 (head names are kept under it), if it could be hashed.
    pub sha256: Option<String>,
    /// Why a part of the focus asked for was dropped (the model opened all the same), e.g.
    /// "--head 9: head 9 is not one of the model's heads 1 to 8".
    pub focus_errors: Vec<String>,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Response {
    ModelLoaded(Box<ModelInfo>),
    /// A stage of request `id` has started ("loading model", "decoding", "running model").
    Progress {
        id: u64,
        stage: &'static str,
    },
    Done(Box<Analysis>),
    /// The heads of `class` ranked for analysis `id` (or why not).
    Ranked {
        id: u64,
        class: usize,
        ranking: Result<crate::probe::HeadRanking, String>,
    },
    /// Part scoring: photo `done` of `total` is next.
    PartsProgress {
        done: usize,
        total: usize,
    },
    /// The head × part table of a folder (or why not).
    Parts {
        report: Result<Box<crate::batch::parts::PartReport>, String>,
    },
    /// A readable message; `id` is 0 for model loading.
    Failed {
        id: u64,
        what: String,
    },
}

/// Handle to the worker thread.
pub struct Worker {
    tx: SyncSender<Request>,
    rx: Receiver<Response>,
    /// Requests with an id below this are stale.
    current: Arc<AtomicU64>,
    /// Makes the next analysis panic (tests of the panic boundary).
    fault: Arc<AtomicBool>,
    /// Stops a part scoring in progress.
    stop_parts: Arc<AtomicBool>,
    /// Requests sent and not yet finished (queued or running).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

/// Runs `f`, turning a panic anywhere below it (a reader, a probe, a renderer) into an error
/// message, so that the thread that called it — and the window — carry on.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(format!("internal error while {what}: {why} (this is a bug; the window stays usable)"))
        }
    }
}

/// Marks one request handled when dropped (also when its handling panicked past the guard).
struct Finished<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Pending requests the channel holds before `send` reports the worker busy.
const QUEUE: usize = 8;

impl Worker {
    /// Starts the thread `intr-worker`; `waker` is called after every response.
    pub fn spawn(waker: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (tx, requests) = mpsc::sync_channel::<Request>(QUEUE);
        let (responses, rx) = mpsc::channel::<Response>();
        let current = Arc::new(AtomicU64::new(0));
        let latest = Arc::clone(&current);
        let fault = Arc::new(AtomicBool::new(false));
        let inject = Arc::clone(&fault);
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let finished = Arc::clone(&in_flight);
        let stop_parts = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stop_parts);
        std::thread::Builder::new().name("intr-worker".into()).spawn(move || {
            let mut state: Option<Session> = None;
            let send = |r: Response| {
                let _ = responses.send(r);
                waker();
            };
            for req in requests {
                // Counted as finished once handled, whatever the outcome.
                let _done = Finished(&finished);
                match req {
                    Request::LoadModel { spec, focus } => {
                        send(Response::Progress { id: 0, stage: "loading model" });
                        match guarded("opening the model", || open(&spec, &focus)) {
                            Ok((s, info)) => {
                                state = Some(s);
                                send(Response::ModelLoaded(Box::new(info)));
                            }
                            Err(what) => send(Response::Failed { id: 0, what }),
                        }
                    }
                    Request::RankHeads { analysis, class } => {
                        let ranking = match &state {
                            Some(s) => guarded("ranking the heads", || {
                                s.rank_heads(&analysis.result, class).map_err(|e| e.to_string())
                            }),
                            None => Err("no model is loaded".into()),
                        };
                        send(Response::Ranked { id: analysis.id, class, ranking });
                    }
                    Request::ScoreParts { dir } => {
                        stop.store(false, Ordering::Release);
                        let report = match &state {
                            Some(s) => guarded("scoring the parts", || {
                                let data = crate::batch::parts::load(&dir).map_err(|e| e.to_string())?;
                                let go_on = |done, total| {
                                    send(Response::PartsProgress { done, total });
                                    !stop.load(Ordering::Acquire)
                                };
                                crate::batch::parts::score(s, &data, None, PreprocessOptions::default(), go_on)
                                    .map(Box::new)
                                    .map_err(|e| e.to_string())
                            }),
                            None => Err("no model is loaded".into()),
                        };
                        send(Response::Parts { report });
                    }
                    Request::Analyze { id, image, options } => {
                        if id < latest.load(Ordering::Acquire) {
                            continue;
                        }
                        let Some(s) = &state else {
                            send(Response::Failed { id, what: "no model is loaded: open a checkpoint first".into() });
                            continue;
                        };
                        let stale = || id < latest.load(Ordering::Acquire);
                        let run = || {
                            if inject.swap(false, Ordering::AcqRel) {
                                panic!("injected fault");
                            }
                            analyze(s, id, image, options, &stale, &send)
                        };
                        match guarded("analysing the photo", run) {
                            Ok(Some(a)) if !stale() => send(Response::Done(Box::new(a))),
                            Ok(_) => {}
                            Err(what) => send(Response::Failed { id, what }),
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx, rx, current, fault, stop_parts, in_flight })
    }

    /// Whether every request sent has been handled (nothing queued or running).
    #[must_use]
    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Makes the next analysis panic inside the worker, to test that the panic boundary holds.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.fault.store(true, Ordering::Release);
    }

    /// Queues a request. An analysis marks every older analysis stale. Fails if the queue is full
    /// or the worker is gone.
    pub fn send(&self, req: Request) -> Result<(), String> {
        let newest = match &req {
            Request::Analyze { id, .. } => Some(*id),
            _ => None,
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(req) {
            Ok(()) => {
                // Older analyses are stale only once this one is on its way: a request refused
                // because the queue is full leaves the one in flight to finish and answer.
                if let Some(id) = newest {
                    self.current.fetch_max(id, Ordering::AcqRel);
                }
                Ok(())
            }
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(_) => "the model is busy; try again in a moment".to_string(),
                    TrySendError::Disconnected(_) => "the inference worker has stopped".to_string(),
                })
            }
        }
    }

    /// Stops the part scoring in progress (it answers with an error saying where it stopped).
    pub fn stop_parts(&self) {
        self.stop_parts.store(true, Ordering::Release);
    }

    /// Marks every analysis up to and including `id` cancelled.
    pub fn cancel(&self, id: u64) {
        self.current.fetch_max(id + 1, Ordering::AcqRel);
    }

    /// The next response, if any (never blocks).
    pub fn try_recv(&self) -> Option<Response> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for the next response (tests and headless callers).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Response> {
        self.rx.recv_timeout(timeout).ok()
    }
}

/// Opens the session and checks the focus against it, with the messages the command line gives
/// (`--class`, `--head` and `--layer` name the flag, as there). A part of the focus the model does
/// not have is dropped with its message; the model opens all the same.
fn open(spec: &ModelSpec, focus: &FocusRequest) -> Result<(Session, ModelInfo), String> {
    let s = Session::open(spec).map_err(|e| e.to_string())?;
    let mut focus_errors = Vec::new();
    let mut keep =
        |r: crate::Result<usize>, flag: String| r.map_err(|e| focus_errors.push(format!("{flag}: {e}"))).ok();
    let class = focus.class.as_deref().and_then(|c| keep(s.class_index(c), format!("--class {c}")));
    let head = focus.head.and_then(|h| keep(s.head_indices(&[h]).map(|v| v[0]), format!("--head {h}")));
    let layer = focus.layer.and_then(|l| keep(s.layer_index(Some(l)), format!("--layer {l}")));
    focus_errors.extend(s.catalogue_mismatch());
    focus_errors.extend(s.names_note());
    let info = ModelInfo {
        path: absolute_keeping_name(s.path()),
        spec: spec.clone(),
        name: s.model_name(),
        demo: s.is_demo(),
        config: s.config().clone(),
        class_names: Arc::clone(s.class_names()),
        focus: Focus { class, head, layer },
        focus_errors,
        sha256: s.model_sha256().ok(),
    };
    Ok((s, info))
}

/// An absolute path to `p` that keeps its own name: a file in the Hugging Face cache is a link to a
/// blob named by its hash, and the link's name is the one people know.
fn absolute_keeping_name(p: &std::path::Path) -> PathBuf {
    match (p.parent().and_then(|d| d.canonicalize().ok()), p.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => p.canonicalize().unwrap_or_else(|_| p.to_path_buf()),
    }
}

fn analyze(
    s: &Session,
    id: u64,
    image: PathBuf,
    options: PreprocessOptions,
    stale: &dyn Fn() -> bool,
    send: &dyn Fn(Response),
) -> Result<Option<Analysis>, String> {
    let started = Instant::now();
    send(Response::Progress { id, stage: "decoding" });
    let prepared = s.prepare(&image, options).map_err(|e| e.to_string())?;
    if stale() {
        return Ok(None);
    }
    send(Response::Progress { id, stage: "running model" });
    let result = s.run(&image, prepared, Probes { evening: true }, started).map_err(|e| e.to_string())?;
    Ok(Some(Analysis { id, result }))
}
