//! Helpers shared by the integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

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
