//! Blurred overlays in the official renderer's look ([`crate::overlay::paper`]): rendered on a background
//! thread (`paper-render`, newest request first) and kept as egui textures, so the window never
//! waits for a median filter. Until a texture arrives the view shows the unblurred shader overlay.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};

use eframe::egui;

use crate::overlay::colormap::Colormap;
use crate::overlay::paper;

/// Longest side of a blurred texture in pixels. The official renderer works on the photo scaled by
/// 0.8; for photos larger than 1280 px the texture is computed at this size (the blur then covers
/// proportionally more of the picture) so that memory stays bounded.
pub const MAX_SIDE: usize = 1024;
/// Textures kept; the least recently drawn go first.
const KEEP: usize = 48;
/// Requests queued at most; older ones are dropped (the user has moved on).
const QUEUE: usize = 32;

/// What one blurred texture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PaperKey {
    pub analysis: u64,
    pub layer: usize,
    pub class: usize,
    pub head: Option<usize>,
    pub colormap: Colormap,
    /// `None`: the official per-map min–max; otherwise the bits of the shared range (lo, hi).
    pub range: Option<(u32, u32)>,
}

/// One render request: the map and how to draw it.
pub struct PaperJob {
    pub key: PaperKey,
    pub map: Vec<f32>,
    /// (gw, gh)
    pub grid: (usize, usize),
    /// The photo's (w, h).
    pub image: (usize, usize),
}

enum Reply {
    Done(PaperKey, egui::ColorImage),
    Dropped(PaperKey),
    /// The render panicked; the key is not tried again.
    Failed(PaperKey, String),
}

/// The texture cache and its render thread.
pub struct PaperCache {
    jobs: Sender<PaperJob>,
    replies: Receiver<Reply>,
    pending: HashSet<PaperKey>,
    /// Renders that panicked: never asked again.
    failed: HashSet<PaperKey>,
    textures: HashMap<PaperKey, (egui::TextureHandle, Cell<u64>)>,
    /// Analyses forgotten while renders for them were queued.
    forgotten: HashSet<u64>,
    frame: Cell<u64>,
}

/// Size of the blurred texture for a `w × h` photo.
#[must_use]
pub fn texture_size(w: usize, h: usize) -> (usize, usize) {
    let (pw, ph) = paper::official_size(w, h);
    let longest = pw.max(ph);
    if longest <= MAX_SIDE {
        return (pw, ph);
    }
    let s = MAX_SIDE as f64 / longest as f64;
    (((pw as f64 * s).round() as usize).max(1), ((ph as f64 * s).round() as usize).max(1))
}

fn render(job: &PaperJob) -> egui::ColorImage {
    let size = texture_size(job.image.0, job.image.1);
    let range = job.key.range.map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
    let rgb = paper::blurred_heatmap(&job.map, job.grid, size, job.key.colormap, range);
    egui::ColorImage::from_rgb([size.0, size.1], &rgb)
}

impl PaperCache {
    /// Starts the render thread; `waker` is called after each finished texture.
    pub fn spawn(waker: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (jobs, incoming) = mpsc::channel::<PaperJob>();
        let (reply, replies) = mpsc::channel::<Reply>();
        std::thread::Builder::new().name("paper-render".into()).spawn(move || {
            let mut stack: Vec<PaperJob> = Vec::new();
            loop {
                if stack.is_empty() {
                    match incoming.recv() {
                        Ok(j) => stack.push(j),
                        Err(_) => return,
                    }
                }
                stack.extend(incoming.try_iter());
                while stack.len() > QUEUE {
                    let old = stack.remove(0);
                    if reply.send(Reply::Dropped(old.key)).is_err() {
                        return;
                    }
                }
                let Some(job) = stack.pop() else { continue };
                let r = match super::worker::guarded("drawing the paper-style map", || Ok(render(&job))) {
                    Ok(image) => Reply::Done(job.key, image),
                    Err(e) => Reply::Failed(job.key, e),
                };
                if reply.send(r).is_err() {
                    return;
                }
                waker();
            }
        })?;
        Ok(Self {
            jobs,
            replies,
            pending: HashSet::new(),
            failed: HashSet::new(),
            textures: HashMap::new(),
            forgotten: HashSet::new(),
            frame: Cell::new(0),
        })
    }

    /// The texture of `key` if it is ready (and marks it as drawn this frame).
    #[must_use]
    pub fn texture(&self, key: &PaperKey) -> Option<egui::TextureId> {
        self.textures.get(key).map(|(t, used)| {
            used.set(self.frame.get());
            t.id()
        })
    }

    /// Queues a render unless it is ready or already queued.
    pub fn request(&mut self, job: PaperJob) {
        if self.textures.contains_key(&job.key) || self.failed.contains(&job.key) || !self.pending.insert(job.key) {
            return;
        }
        let key = job.key;
        if self.jobs.send(job).is_err() {
            self.pending.remove(&key);
        }
    }

    /// Drops every texture of analysis `id` (its photo was closed or analysed again); renders
    /// still queued for it are dropped when they arrive.
    pub fn forget(&mut self, id: u64) {
        self.textures.retain(|k, _| k.analysis != id);
        self.failed.retain(|k| k.analysis != id);
        self.forgotten.insert(id);
    }

    /// How many textures are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.textures.len()
    }

    /// Whether no texture is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.textures.is_empty()
    }

    /// Whether any render is still queued or running.
    #[must_use]
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes finished textures into the cache; drops the least recently drawn beyond [`KEEP`].
    /// Returns why renders failed since the last poll.
    pub fn poll(&mut self, ctx: &egui::Context) -> Vec<String> {
        let mut errors = Vec::new();
        self.frame.set(self.frame.get() + 1);
        for r in self.replies.try_iter() {
            match r {
                Reply::Done(key, _) if self.forgotten.contains(&key.analysis) => {
                    self.pending.remove(&key);
                }
                Reply::Done(key, image) => {
                    self.pending.remove(&key);
                    let name = format!("paper-{}-{}-{}-{:?}", key.analysis, key.layer, key.class, key.head);
                    let tex = ctx.load_texture(name, image, egui::TextureOptions::LINEAR);
                    self.textures.insert(key, (tex, Cell::new(self.frame.get())));
                }
                Reply::Dropped(key) => {
                    self.pending.remove(&key);
                }
                Reply::Failed(key, why) => {
                    self.pending.remove(&key);
                    self.failed.insert(key);
                    errors.push(why);
                }
            }
        }
        if self.pending.is_empty() {
            self.forgotten.clear();
        }
        while self.textures.len() > KEEP {
            let Some(oldest) = self.textures.iter().min_by_key(|(_, (_, used))| used.get()).map(|(k, _)| *k) else {
                break;
            };
            self.textures.remove(&oldest);
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texture_size_is_the_official_scale_capped_at_max_side() {
        assert_eq!(texture_size(500, 375), (400, 300));
        assert_eq!(texture_size(4000, 3000), (1024, 768));
        assert_eq!(texture_size(1, 1), (1, 1));
    }
}
