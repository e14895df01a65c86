//! Helpers shared by the integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

pub mod hub_server;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// `../shared` next to the repository (read-only fixtures).
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn parity_dir() -> PathBuf {
    shared().join("fixtures/intr-parity")
}

pub fn load_st(name: &str) -> HashMap<String, Tensor> {
    let p = parity_dir().join(name);
    candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Values of a tensor as f64, row-major.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// Largest absolute difference; panics with `what` if shapes differ.
pub fn max_abs_diff(what: &str, ours: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "{what}: {} values vs {} in the reference", ours.len(), reference.len());
    ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

/// Asserts `ours` matches `reference` within `atol`, reporting the worst difference.
pub fn assert_close(what: &str, ours: &[f64], reference: &[f64], atol: f64) {
    let d = max_abs_diff(what, ours, reference);
    assert!(d <= atol, "{what}: max |diff| {d:.3e} > {atol:.0e}");
    eprintln!("{what}: max |diff| {d:.2e}");
}

/// (rows, cols) row-major → (cols, rows) row-major.
pub fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

use intr_explorer::checkpoint::Checkpoint;
use intr_explorer::checkpoint::DType as StoredType;
use intr_explorer::checkpoint::pth_writer::{Py, StorageData, TensorRef, write_pth};

/// The tiny post-norm sine fixture's state dict as (name, shape, values).
pub fn tiny_state_dict() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let ck = Checkpoint::open(&parity_dir().join("tiny_postnorm_sine.pth")).unwrap();
    ck.tensors()
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, t)| (k.clone(), t.shape.clone(), ck.read_f32(k).unwrap()))
        .collect()
}

/// Training args of the tiny fixtures (as `main.py` would pickle them).
pub fn tiny_args() -> Py {
    Py::Namespace(vec![
        ("hidden_dim".into(), Py::Int(64)),
        ("nheads".into(), Py::Int(4)),
        ("enc_layers".into(), Py::Int(2)),
        ("dec_layers".into(), Py::Int(2)),
        ("dim_feedforward".into(), Py::Int(128)),
        ("num_queries".into(), Py::Int(10)),
        ("pre_norm".into(), Py::Bool(false)),
        ("position_embedding".into(), Py::Str("sine".into())),
        ("dilation".into(), Py::Bool(false)),
    ])
}

/// One tensor to store: its values are encoded as `dtype`.
pub struct Stored {
    pub name: String,
    pub dtype: StoredType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

pub fn encode(values: &[f32], dtype: StoredType) -> Vec<u8> {
    match dtype {
        StoredType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        StoredType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        StoredType::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        StoredType::F64 => values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect(),
        StoredType::I64 => values.iter().flat_map(|v| (*v as i64).to_le_bytes()).collect(),
        other => panic!("encode {other:?}"),
    }
}

/// Writes `{'model': OrderedDict(tensors), 'epoch': 3, 'args': args}` in the official layout.
pub fn write_checkpoint(path: &std::path::Path, tensors: Vec<Stored>, args: Option<Py>) {
    let mut model = Vec::new();
    let mut storages = Vec::new();
    for (i, t) in tensors.into_iter().enumerate() {
        let key = i.to_string();
        let mut r = TensorRef::contiguous(&key, t.dtype, &t.shape);
        r.storage_numel = t.bytes.len() / t.dtype.size();
        model.push((Py::Str(t.name), Py::Tensor(r)));
        storages.push((key, StorageData::Bytes(t.bytes)));
    }
    let mut root = vec![(Py::Str("model".into()), Py::OrderedDict(model)), (Py::Str("epoch".into()), Py::Int(3))];
    if let Some(a) = args {
        root.push((Py::Str("args".into()), a));
    }
    write_pth(path, "checkpoint", &Py::Dict(root), storages).unwrap();
}

/// The tiny fixture re-encoded with every tensor as `dtype`.
pub fn tiny_as(dtype: StoredType) -> Vec<Stored> {
    tiny_state_dict()
        .into_iter()
        .map(|(name, shape, v)| Stored { name, dtype, shape, bytes: encode(&v, dtype) })
        .collect()
}
