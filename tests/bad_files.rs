//! Hostile and unusual inputs: every one gives a clear error naming the file and the problem, or a
//! correct result — never a panic, a hang or unbounded memory.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::*;
use intr_explorer::checkpoint::DType;
use intr_explorer::checkpoint::pth_writer::{Py, StorageData, write_pth};
use intr_explorer::intr::{ConfigOverrides, load_model};
use intr_explorer::session::classes;

fn load_err(path: &Path) -> String {
    match load_model(path, &ConfigOverrides::default(), &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn tiny_logits(path: &Path) -> Vec<f32> {
    let (model, _) = load_model(path, &ConfigOverrides::default(), &Device::Cpu).unwrap();
    let io = load_st("tiny_postnorm_sine_io.safetensors");
    let input: Vec<f32> = values(&io["input"]).iter().map(|&v| v as f32).collect();
    model.forward(&input, 224, 287).unwrap().logits
}

#[test]
fn truncated_zip_is_refused() {
    let dir = tmp();
    let src = std::fs::read(parity_dir().join("tiny_postnorm_sine.pth")).unwrap();
    for cut in [src.len() / 2, src.len() - 30, 100] {
        let p = dir.path().join(format!("cut{cut}.pth"));
        std::fs::write(&p, &src[..cut]).unwrap();
        let e = load_err(&p);
        assert!(e.contains(&p.display().to_string()) && e.contains("truncated"), "{e}");
    }
}

#[test]
fn zip_without_data_pkl_is_refused() {
    let dir = tmp();
    let p = dir.path().join("nopkl.pth");
    let f = std::fs::File::create(&p).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/version", o).unwrap();
    std::io::Write::write_all(&mut z, b"3\n").unwrap();
    z.finish().unwrap();
    let e = load_err(&p);
    assert!(e.contains("data.pkl"), "{e}");
}

#[test]
fn unexpected_pickle_opcodes_are_refused() {
    let dir = tmp();
    let p = dir.path().join("badop.pth");
    // An EXT1 opcode (extension registry): never written by torch, not supported.
    write_pth(&p, "checkpoint", &Py::Raw(b"\x82\x01".to_vec()), vec![]).unwrap();
    let e = load_err(&p);
    assert!(e.contains("unsupported pickle opcode 0x82"), "{e}");
}

#[test]
fn code_execution_payloads_stay_inert() {
    let dir = tmp();
    let marker = dir.path().join("pwned");
    let cmd = format!("touch {}", marker.display());
    let payload = format!("cos\nsystem\n(S'{cmd}'\ntR");
    // As the whole pickle, and hidden as the value of `model` and of `args`.
    let variants = [
        Py::Raw(payload.as_bytes().to_vec()),
        Py::Dict(vec![(Py::Str("model".into()), Py::Raw(payload.as_bytes().to_vec()))]),
    ];
    for (i, root) in variants.iter().enumerate() {
        let p = dir.path().join(format!("evil{i}.pth"));
        write_pth(&p, "checkpoint", root, vec![]).unwrap();
        let e = load_err(&p);
        assert!(e.contains("does not hold a dict") || e.contains("not a state dict"), "{e}");
    }
    let p = dir.path().join("evil_args.pth");
    let mut t = tiny_as(DType::F32);
    t.truncate(3);
    write_checkpoint(&p, t, Some(Py::Raw(payload.as_bytes().to_vec())));
    let _ = load_model(&p, &ConfigOverrides::default(), &Device::Cpu);
    assert!(!marker.exists(), "the pickle executed code");
}

#[test]
fn tensor_data_shorter_than_declared_is_named() {
    let dir = tmp();
    let p = dir.path().join("short.pth");
    let mut t = tiny_as(DType::F32);
    let victim = t.iter_mut().find(|s| s.name == "input_proj.weight").unwrap();
    victim.bytes.truncate(victim.bytes.len() / 2);
    // Declare the full size in the pickle while the storage holds half of it.
    let name = victim.name.clone();
    let mut model = Vec::new();
    let mut storages = Vec::new();
    for (i, s) in t.into_iter().enumerate() {
        let key = i.to_string();
        let r = intr_explorer::checkpoint::pth_writer::TensorRef::contiguous(&key, s.dtype, &s.shape);
        model.push((Py::Str(s.name), Py::Tensor(r)));
        storages.push((key, StorageData::Bytes(s.bytes)));
    }
    let root = Py::Dict(vec![(Py::Str("model".into()), Py::OrderedDict(model)), (Py::Str("args".into()), tiny_args())]);
    write_pth(&p, "checkpoint", &root, storages).unwrap();
    let e = load_err(&p);
    assert!(e.contains(&name) && e.contains("shorter than declared"), "{e}");
}

#[test]
fn integer_weights_are_refused() {
    let dir = tmp();
    let p = dir.path().join("int.pth");
    let mut t = tiny_as(DType::F32);
    let victim = t.iter_mut().find(|s| s.name == "query_embed.weight").unwrap();
    let n: usize = victim.shape.iter().product();
    victim.dtype = DType::I64;
    victim.bytes = encode(&vec![1.0; n], DType::I64);
    write_checkpoint(&p, t, Some(tiny_args()));
    let e = load_err(&p);
    assert!(e.contains("query_embed.weight") && e.contains("integers"), "{e}");
}

#[test]
fn half_precision_weights_are_converted() {
    let dir = tmp();
    let reference = tiny_logits(&parity_dir().join("tiny_postnorm_sine.pth"));
    for (dtype, tol) in [(DType::F16, 0.05), (DType::BF16, 0.3), (DType::F64, 1e-5)] {
        let p = dir.path().join(format!("{dtype:?}.pth"));
        write_checkpoint(&p, tiny_as(dtype), Some(tiny_args()));
        let logits = tiny_logits(&p);
        let worst = logits.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < tol, "{dtype:?}: logits off by {worst}");
    }
}

#[test]
fn non_intr_state_dict_is_refused() {
    let dir = tmp();
    let p = dir.path().join("resnet.pth");
    let t = vec![
        Stored { name: "fc.weight".into(), dtype: DType::F32, shape: vec![2, 2], bytes: encode(&[1.0; 4], DType::F32) },
        Stored { name: "fc.bias".into(), dtype: DType::F32, shape: vec![2], bytes: encode(&[1.0; 2], DType::F32) },
    ];
    write_checkpoint(&p, t, None);
    let e = load_err(&p);
    assert!(e.contains("does not look like an INTR state dict"), "{e}");
}

#[test]
fn missing_and_unknown_weights_are_named() {
    let dir = tmp();
    let p = dir.path().join("missing.pth");
    let mut t = tiny_as(DType::F32);
    t.retain(|s| s.name != "transformer.decoder.layers.1.norm2.bias");
    write_checkpoint(&p, t, Some(tiny_args()));
    let e = load_err(&p);
    assert!(e.contains("transformer.decoder.layers.1.norm2.bias") && e.contains("missing"), "{e}");

    let p = dir.path().join("extra.pth");
    let mut t = tiny_as(DType::F32);
    t.push(Stored {
        name: "transformer.decoder.extra_head.weight".into(),
        dtype: DType::F32,
        shape: vec![3],
        bytes: encode(&[0.0; 3], DType::F32),
    });
    write_checkpoint(&p, t, Some(tiny_args()));
    let e = load_err(&p);
    assert!(e.contains("transformer.decoder.extra_head.weight") && e.contains("does not use"), "{e}");
}

#[test]
fn missing_heads_without_args_is_a_clear_error() {
    let dir = tmp();
    let p = dir.path().join("noargs.pth");
    write_checkpoint(&p, tiny_as(DType::F32), None);
    let e = load_err(&p);
    assert!(e.contains("nheads"), "{e}");
    let explicit = ConfigOverrides { nheads: Some(4), dilation: Some(false), ..Default::default() };
    assert!(load_model(&p, &explicit, &Device::Cpu).is_ok());
    let wrong = ConfigOverrides { nheads: Some(4), dilation: Some(false), hidden_dim: Some(128), ..Default::default() };
    let e = load_model(&p, &wrong, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("hidden_dim") && e.contains("128") && e.contains("64"), "{e}");
}

#[test]
fn strided_and_offset_views_are_honoured() {
    // Store input_proj.weight transposed inside a larger storage, read through offset + strides.
    let dir = tmp();
    let p = dir.path().join("views.pth");
    let sd = tiny_state_dict();
    let mut model = Vec::new();
    let mut storages = Vec::new();
    for (i, (name, shape, v)) in sd.into_iter().enumerate() {
        let key = i.to_string();
        if name == "input_proj.weight" {
            // shape (64, 2048, 1, 1) stored column-major after 7 padding values.
            let (o, c) = (shape[0], shape[1]);
            let mut buf = vec![9.0f32; 7];
            let mut t = vec![0.0f32; o * c];
            for a in 0..o {
                for b in 0..c {
                    t[b * o + a] = v[a * c + b];
                }
            }
            buf.extend(t);
            let r = intr_explorer::checkpoint::pth_writer::TensorRef {
                storage_key: key.clone(),
                dtype: DType::F32,
                storage_numel: buf.len(),
                offset: 7,
                shape: shape.clone(),
                stride: vec![1, o, 1, 1],
            };
            model.push((Py::Str(name), Py::Tensor(r)));
            storages.push((key, StorageData::Bytes(encode(&buf, DType::F32))));
        } else {
            let r = intr_explorer::checkpoint::pth_writer::TensorRef::contiguous(&key, DType::F32, &shape);
            model.push((Py::Str(name), Py::Tensor(r)));
            storages.push((key, StorageData::Bytes(encode(&v, DType::F32))));
        }
    }
    let root = Py::Dict(vec![(Py::Str("model".into()), Py::OrderedDict(model)), (Py::Str("args".into()), tiny_args())]);
    write_pth(&p, "renamed_stem", &root, storages).unwrap();
    assert_eq!(tiny_logits(&p), tiny_logits(&parity_dir().join("tiny_postnorm_sine.pth")));
}

#[test]
fn legacy_and_garbage_checkpoints_are_refused() {
    let dir = tmp();
    let p = dir.path().join("legacy.pth");
    std::fs::write(&p, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert!(load_err(&p).contains("legacy"));
    let p = dir.path().join("garbage.safetensors");
    std::fs::write(&p, b"this is not a model at all").unwrap();
    assert!(load_err(&p).contains("neither a PyTorch zip checkpoint nor a valid safetensors"));
    let p = dir.path().join("missing.pth");
    assert!(load_err(&p).contains("cannot open"));
}

#[test]
fn class_list_of_the_wrong_length_is_named() {
    let names = classes::load(&shared().join("fixtures/cub_classes.txt")).unwrap();
    assert_eq!(names.len(), 200);
    assert_eq!(names[0], "Black-footed Albatross");
    let e = classes::check_count(Path::new("cub_classes.txt"), &names, 10).unwrap_err().to_string();
    assert!(e.contains("cub_classes.txt") && e.contains("200") && e.contains("10"), "{e}");
}

fn edge(name: &str) -> PathBuf {
    shared().join("images/edge-cases").join(name)
}

#[test]
fn every_edge_case_image_is_decoded_or_refused_clearly() {
    use intr_explorer::image::decode::decode_file;
    let upright = decode_file(&edge("macaw_upright.png"), true).unwrap().image;
    let mean_abs = |a: &[u8], b: &[u8]| {
        a.iter().zip(b).map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs() as f64).sum::<f64>() / a.len() as f64
    };
    // Files that must decode to the macaw, upright, close to the PNG reference.
    for (name, tol) in [
        ("macaw.bmp", 0.0),
        ("macaw_lzw.tif", 0.0),
        ("macaw.gif", 6.0),
        ("macaw_palette.png", 6.0),
        ("macaw_lossy.webp", 6.0),
        ("macaw_progressive.jpg", 6.0),
        ("macaw_cmyk.jpg", 6.0),
        ("macaw_exif_orient3.jpg", 6.0),
        ("macaw_exif_orient6.jpg", 6.0),
    ] {
        let d = decode_file(&edge(name), true).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((d.image.width, d.image.height), (upright.width, upright.height), "{name}");
        let m = mean_abs(&d.image.data, &upright.data);
        eprintln!("{name}: mean |diff| {m:.2}");
        assert!(m <= tol, "{name}: mean |diff| {m:.2} from the upright reference");
    }
    // Orientation off keeps the stored pixel order, as PIL does.
    let raw = decode_file(&edge("macaw_exif_orient6.jpg"), false).unwrap();
    assert_eq!((raw.image.width, raw.image.height), (upright.height, upright.width));
    assert_eq!(raw.exif_orientation, 6);
    // Grey files: grey replicated into RGB, alpha dropped.
    for name in ["macaw_gray16.png", "macaw_gray_alpha.png"] {
        let d = decode_file(&edge(name), true).unwrap();
        assert!(d.image.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]), "{name}");
    }
    let tiny = decode_file(&edge("tiny_black_1x1.png"), true).unwrap();
    assert_eq!(tiny.image.data, vec![0, 0, 0]);
    let wide = decode_file(&edge("fish_wide_2000x40.jpg"), true).unwrap();
    assert_eq!((wide.image.width, wide.image.height), (2000, 40));
    // Refused with a reason that names the file.
    for (name, why) in [
        ("macaw_truncated.jpg", "truncated"),
        ("not_an_image.jpg", "not an image"),
        ("bomb_20000x20000_gray.png", "megapixel limit"),
    ] {
        let e = decode_file(&edge(name), true).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(why), "{name}: {e}");
    }
}

#[test]
fn extreme_aspect_ratios_and_tiny_images_run_through_the_model() {
    use intr_explorer::image::preprocess::{PreprocessOptions, prepare_file};
    let (model, _) =
        load_model(&parity_dir().join("tiny_postnorm_learned.pth"), &ConfigOverrides::default(), &Device::Cpu).unwrap();
    for name in ["fish_wide_2000x40.jpg", "tiny_black_1x1.png"] {
        let p = prepare_file(&edge(name), &PreprocessOptions::default()).unwrap();
        let out = model.forward(&p.chw, p.input_size.1, p.input_size.0).unwrap();
        assert!(out.logits.iter().all(|v| v.is_finite()), "{name}");
        let s: f32 = out.map(0, 0, 0).iter().sum();
        assert!((s - 1.0).abs() < 1e-4, "{name}: attention sums to {s}");
    }
}

#[test]
fn an_image_given_as_the_model_says_it_is_an_image() {
    for (name, kind) in [("not_an_image.jpg", None), ("macaw.bmp", Some("BMP")), ("macaw_progressive.jpg", Some("JPG"))]
    {
        let p = edge(name);
        let e = load_err(&p);
        match kind {
            Some(k) => {
                assert!(e.contains(name) && e.contains(&format!("is an image ({k}), not a model checkpoint")), "{e}")
            }
            None => assert!(!e.contains("is an image"), "{e}"),
        }
    }
}

/// Opcodes for `n` empty lists, each appended to the one below: `[[[…]]]`, n deep.
fn deep_lists(n: usize) -> Vec<u8> {
    let mut b = vec![b']'; n];
    b.extend(std::iter::repeat_n(b'a', n - 1));
    b
}

#[test]
fn a_pickle_nested_200000_deep_is_an_error_naming_the_file_not_a_stack_overflow() {
    let dir = tmp();
    let n = 200_000;
    let deep = || Py::Raw(deep_lists(n));
    // {0: {0: …}} and ((…),) as well as lists, as the whole pickle and under each key the reader walks.
    let mut dicts = Vec::new();
    for _ in 0..n {
        dicts.extend_from_slice(b"}K\x00");
    }
    dicts.truncate(dicts.len() - 2);
    dicts.extend(std::iter::repeat_n(b's', n - 1));
    let mut tuples = b")".to_vec();
    tuples.extend(std::iter::repeat_n(0x85u8, n));
    let variants = [
        ("lists", deep()),
        ("dicts", Py::Raw(dicts)),
        ("tuples", Py::Raw(tuples)),
        ("model", Py::Dict(vec![(Py::Str("model".into()), deep())])),
        ("args", Py::Dict(vec![(Py::Str("model".into()), Py::OrderedDict(vec![])), (Py::Str("args".into()), deep())])),
        (
            "optimizer",
            Py::Dict(vec![(Py::Str("model".into()), Py::OrderedDict(vec![])), (Py::Str("optimizer".into()), deep())]),
        ),
    ];
    for (what, root) in variants {
        let p = dir.path().join(format!("deep_{what}.pth"));
        write_pth(&p, "checkpoint", &root, vec![]).unwrap();
        let e = load_err(&p);
        assert!(e.contains(&p.display().to_string()) && e.contains("nests deeper than 1000"), "{what}: {e}");
    }
}

/// xorshift64: the mutation stream of the test below (seeded, so a failure can be replayed).
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn random_mutations_of_an_official_checkpoint_are_refused_or_read_never_a_crash() {
    // Each of 300 (or INTR_MUTANTS) copies of a full official-format fixture gets a few random edits where they hurt
    // most — the pickle, the zip records at the end, a storage — or is cut short; every one must open
    // with a model or fail with an error naming the file. A panic fails the test, a crash kills it.
    let dir = tmp();
    let src = std::fs::read(parity_dir().join("tiny_postnorm_sine.pth")).unwrap();
    let pkl = src.windows(8).position(|w| w == b"data.pkl").unwrap() + 8;
    let mut seed =
        std::env::var("INTR_MUTANT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x1d2c_3b4a_5968_7786u64);
    let n: usize = std::env::var("INTR_MUTANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let (mut opened, mut refused) = (0, 0);
    for i in 0..n {
        let mut bytes = src.clone();
        let edits = 1 + xorshift(&mut seed) % 8;
        for _ in 0..edits {
            let r = xorshift(&mut seed);
            let at = match r % 4 {
                // In the pickle (its first 40 KB follow the local header).
                0 | 1 => pkl + (r >> 8) as usize % 40_000,
                // In the central directory and end records.
                2 => bytes.len() - 1 - (r >> 8) as usize % 30_000,
                _ => (r >> 8) as usize % bytes.len(),
            };
            bytes[at] = match (r >> 40) % 3 {
                0 => bytes[at] ^ (1 << ((r >> 48) % 8)),
                1 => 0xff,
                _ => (r >> 56) as u8,
            };
        }
        if xorshift(&mut seed).is_multiple_of(10) {
            bytes.truncate((xorshift(&mut seed) as usize) % bytes.len());
        }
        let p = dir.path().join(format!("mutant{i}.pth"));
        std::fs::write(&p, &bytes).unwrap();
        match load_model(&p, &ConfigOverrides::default(), &Device::Cpu) {
            Ok(_) => opened += 1,
            Err(e) => {
                assert!(e.to_string().contains(&p.display().to_string()), "mutant {i}: {e}");
                refused += 1;
            }
        }
        std::fs::remove_file(&p).unwrap();
    }
    println!("{n} mutants: {opened} opened, {refused} refused");
    assert!(refused > 0 && opened + refused == n, "{opened} opened, {refused} refused");
}
