//! Bit-exact preprocessing against the official transform (PIL + torchvision), and the size rule.

mod common;

use candle_core::DType;
use common::*;
use intr_explorer::image::decode;
use intr_explorer::image::preprocess::{self, PreprocessOptions};

fn u8_values(t: &candle_core::Tensor) -> Vec<u8> {
    t.to_dtype(DType::U8).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn count_diff<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    assert_eq!(a.len(), b.len(), "length");
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn bunting_decodes_resizes_and_normalises_exactly_like_the_official_pipeline() {
    let fx = load_st("preprocess_fixtures.safetensors");
    let path = parity_dir().join("Painted_Bunting_0004_16641.jpg");
    let d = decode::decode_file(&path, false).unwrap();
    assert_eq!((d.image.width, d.image.height), (500, 389));
    assert_eq!(count_diff(&d.image.data, &u8_values(&fx["decoded_u8"])), 0, "decoded pixels differ");
    for (size, max, key) in [(800, 1333, "800"), (224, 400, "224")] {
        let opts = PreprocessOptions { size, max_size: Some(max), apply_orientation: false };
        let (w, h) = preprocess::target_size(500, 389, size, Some(max));
        let resized = preprocess::resize_bilinear(&d.image, w, h);
        let want = u8_values(&fx[&format!("resized_u8_{key}")]);
        assert_eq!(count_diff(&resized.data, &want), 0, "resized {key} differs");
        let prepared = preprocess::prepare_file(&path, &opts).unwrap();
        assert_eq!(prepared.input_size, (w, h));
        let want: Vec<f32> = fx[&format!("input_{key}")].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = prepared.chw.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(prepared.chw.len(), want.len());
        assert_eq!(diff, 0, "normalised input {key}: {diff} values differ");
    }
}

#[test]
fn all_size_rule_cases_pass() {
    let text = std::fs::read_to_string(parity_dir().join("resize_rule_cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 44);
    for c in cases {
        let g = |k: &str| c[k].as_u64().unwrap() as usize;
        let got = preprocess::target_size(g("w"), g("h"), g("size"), Some(g("max_size")));
        assert_eq!(got, (g("out_w"), g("out_h")), "case {c}");
    }
}
