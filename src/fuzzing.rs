//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Each feeds untrusted bytes to one reader the way the application does
//! and must return — an error is fine, a panic, a hang or a crash is a bug.

use std::io::{Cursor, Write};

use crate::checkpoint::{Checkpoint, pickle, zipindex};
use crate::image::{decode, preprocess};
use crate::intr::{ConfigOverrides, IntrConfig};
use crate::session::classes;

/// One fuzz target: untrusted bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name (the folders of `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 6] = [
    ("pickle", pickle),
    ("zip_index", zip_index),
    ("checkpoint", checkpoint),
    ("config", config),
    ("image", image),
    ("provenance", provenance),
];

/// The pickle machine, and the display conversion every value read goes through.
pub fn pickle(data: &[u8]) {
    if let Ok(v) = pickle::parse(data) {
        let mut budget = 100_000;
        let _ = pickle::to_json(&v, &mut budget);
    }
}

/// The zip central-directory reader.
pub fn zip_index(data: &[u8]) {
    let _ = zipindex::read_index(&mut Cursor::new(data), data.len() as u64);
}

/// Opening a checkpoint (`.pth` or `.safetensors`, told apart by content, as for any file), then
/// its configuration, its class names and every small tensor.
pub fn checkpoint(data: &[u8]) {
    let Ok(mut file) = tempfile::NamedTempFile::new() else { return };
    if file.write_all(data).and_then(|()| file.flush()).is_err() {
        return;
    }
    let Ok(ckpt) = Checkpoint::open(file.path()) else { return };
    let _ = crate::intr::resolve_config(&ckpt, &ConfigOverrides::default());
    let _ = ckpt.stored_class_names();
    for (name, t) in ckpt.tensors() {
        if t.numel() <= 1 << 16 {
            let _ = ckpt.read_f32(name);
        }
    }
}

/// The configuration JSON (`--config`, stored configs, training options) and class lists.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = ConfigOverrides::from_json_str(text) {
        let _ = c.or(&ConfigOverrides::default());
    }
    if let Ok(c) = serde_json::from_str::<IntrConfig>(text) {
        let _ = c.validate();
    }
    if let Ok(serde_json::Value::Object(args)) = serde_json::from_str(text) {
        let _ = ConfigOverrides::from_training_args(&args);
    }
    let names = classes::parse_list(text);
    if let Some(first) = names.first() {
        let _ = classes::find(&names, first);
        let _ = classes::find(&names, "painted bunting");
    }
}

/// Decoding a photo (size limits first) and preprocessing it: the official evaluation's size rule
/// for the photo's dimensions, then the resize and normalisation at a tenth of its scale (the same
/// code; at full scale every input costs a 0.8-megapixel resize, a hundred times fewer runs).
pub fn image(data: &[u8]) {
    if let Ok(d) = decode::decode_bytes(data, true) {
        let official = preprocess::PreprocessOptions::default();
        let (w, h) = preprocess::target_size(d.image.width, d.image.height, official.size, official.max_size);
        assert!(w > 0 && h > 0, "the size rule gave an empty input");
        let small = preprocess::PreprocessOptions { size: 80, max_size: Some(133), ..official };
        let (chw, (w, h), _) = preprocess::prepare_image(d.image, &small);
        assert_eq!(chw.len(), 3 * w * h);
    }
}

/// Reading a figure's provenance back (SVG, PNG or PDF).
pub fn provenance(data: &[u8]) {
    let _ = crate::figure::read_provenance_bytes(data);
}
