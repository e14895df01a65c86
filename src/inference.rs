//! The inference worker: one named thread owns the model; requests arrive on a bounded channel,
//! results leave as plain data, and a waker closure (the GUI's `request_repaint`) is called after
//! every message. Request ids let a newer analysis supersede an older one: stale work is skipped
//! between stages and stale results are never sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use crate::classes;
use crate::model::decode::RgbImage;
use crate::model::preprocess::{self, GridMapping, PreprocessOptions};
use crate::model::{self, ConfigOverrides, Intr, IntrConfig, IntrOutput};

/// What the UI asks for.
#[derive(Debug, Clone)]
pub enum Request {
    /// Load a checkpoint (and optionally a class list); replaces the current model.
    LoadModel { path: PathBuf, classes: Option<PathBuf>, overrides: ConfigOverrides },
    /// Rank the classes of an image and return every attention map. `id` must increase.
    Analyze { id: u64, image: PathBuf, options: PreprocessOptions },
}

/// A finished analysis: everything the views need, as plain data.
#[derive(Debug)]
pub struct Analysis {
    pub id: u64,
    pub image_path: PathBuf,
    /// The decoded (and EXIF-oriented) photo.
    pub image: RgbImage,
    pub output: IntrOutput,
    /// Per head of the last decoder layer, every class's logit when that head attends evenly to the
    /// whole grid ([`crate::model::Intr::forward_evening_heads`]): what each class's score owes to where the head
    /// looks. Empty when not computed.
    pub evened: Vec<Vec<f32>>,
    pub mapping: GridMapping,
    pub class_names: Arc<Vec<String>>,
    /// Wall time of decoding + preprocessing + forward pass.
    pub took: Duration,
}

/// A model that is ready.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub config: IntrConfig,
    pub class_names: Arc<Vec<String>>,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Response {
    ModelLoaded(ModelInfo),
    /// A stage of request `id` has started ("loading model", "decoding", "running model").
    Progress {
        id: u64,
        stage: &'static str,
    },
    Done(Box<Analysis>),
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
        std::thread::Builder::new().name("intr-worker".into()).spawn(move || {
            let mut state: Option<(Intr, Arc<Vec<String>>)> = None;
            let send = |r: Response| {
                let _ = responses.send(r);
                waker();
            };
            for req in requests {
                match req {
                    Request::LoadModel { path, classes, overrides } => {
                        send(Response::Progress { id: 0, stage: "loading model" });
                        match load(&path, classes.as_deref(), &overrides) {
                            Ok((m, names)) => {
                                let names = Arc::new(names);
                                let info =
                                    ModelInfo { path, config: m.config().clone(), class_names: Arc::clone(&names) };
                                state = Some((m, names));
                                send(Response::ModelLoaded(info));
                            }
                            Err(what) => send(Response::Failed { id: 0, what }),
                        }
                    }
                    Request::Analyze { id, image, options } => {
                        if id < latest.load(Ordering::Acquire) {
                            continue;
                        }
                        let Some((m, names)) = &state else {
                            send(Response::Failed { id, what: "no model is loaded: open a checkpoint first".into() });
                            continue;
                        };
                        let stale = || id < latest.load(Ordering::Acquire);
                        match analyze(m, names, id, &image, &options, &stale, &send) {
                            Ok(Some(a)) if !stale() => send(Response::Done(Box::new(a))),
                            Ok(_) => {}
                            Err(what) => send(Response::Failed { id, what }),
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx, rx, current })
    }

    /// Queues a request. An analysis marks every older analysis stale. Fails if the queue is full
    /// or the worker is gone.
    pub fn send(&self, req: Request) -> Result<(), String> {
        if let Request::Analyze { id, .. } = &req {
            self.current.fetch_max(*id, Ordering::AcqRel);
        }
        self.tx.try_send(req).map_err(|e| match e {
            TrySendError::Full(_) => "the model is busy; try again in a moment".to_string(),
            TrySendError::Disconnected(_) => "the inference worker has stopped".to_string(),
        })
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
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Response> {
        self.rx.recv_timeout(timeout).ok()
    }
}

fn load(path: &Path, classes_path: Option<&Path>, overrides: &ConfigOverrides) -> Result<(Intr, Vec<String>), String> {
    let (m, ckpt) = model::load_model(path, overrides, &model::default_device()).map_err(|e| e.to_string())?;
    let n = m.config().num_queries;
    let names = match classes_path {
        Some(p) => {
            let names = classes::load(p).map_err(|e| e.to_string())?;
            classes::check_count(p, &names, n).map_err(|e| e.to_string())?;
            names
        }
        None => match model::stored_class_names(&ckpt).map_err(|e| e.to_string())? {
            Some(names) if names.len() == n => names,
            _ => classes::numbered(n),
        },
    };
    Ok((m, names))
}

fn analyze(
    m: &Intr,
    names: &Arc<Vec<String>>,
    id: u64,
    image: &Path,
    options: &PreprocessOptions,
    stale: &dyn Fn() -> bool,
    send: &dyn Fn(Response),
) -> Result<Option<Analysis>, String> {
    let t = Instant::now();
    send(Response::Progress { id, stage: "decoding" });
    let prepared = preprocess::prepare_file(image, &m.preprocess_options(*options)).map_err(|e| e.to_string())?;
    if stale() {
        return Ok(None);
    }
    send(Response::Progress { id, stage: "running model" });
    let (w, h) = prepared.input_size;
    let (output, evened) =
        m.forward_evening_heads(&prepared.chw, h, w).map_err(|e| format!("{}: {e}", image.display()))?;
    let mapping = prepared.mapping(output.grid, m.config().stride());
    Ok(Some(Analysis {
        id,
        image_path: image.to_path_buf(),
        image: prepared.original,
        output,
        evened,
        mapping,
        class_names: Arc::clone(names),
        took: t.elapsed(),
    }))
}
