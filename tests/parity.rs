//! Parity with the official implementation: every intermediate of the three tiny fixtures, loaded
//! from the `.pth` files as shipped, against the float64 reference (atol 1e-4).

mod common;

use candle_core::Device;
use common::*;
use intr_explorer::intr::{ConfigOverrides, load_model};
use intr_explorer::kernels::conv::Fmap;

const ATOL: f64 = 1e-4;

fn check_fixture(name: &str) {
    let (model, _ckpt) =
        load_model(&parity_dir().join(format!("{name}.pth")), &ConfigOverrides::default(), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    let io = load_st(&format!("{name}_io.safetensors"));
    let r = load_st(&format!("{name}_io_f64.safetensors"));
    let input = values(&io["input"]);
    let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
    let t = model.forward_traced(&input, 224, 287).unwrap();
    let (gh, gw) = t.grid;
    let hw = gh * gw;
    assert_eq!((gh, gw), (7, 9), "{name}: grid");
    let cfg = model.config();
    let (d, q, heads) = (cfg.hidden_dim, cfg.num_queries, cfg.nheads);
    let c = cfg.backbone.num_channels;
    let tag = |s: &str| format!("{name}/{s}");

    assert_close(
        &tag("backbone_features"),
        &transpose(&values(&t.backbone_features), hw, c),
        &values(&r["backbone_features"]),
        ATOL,
    );
    assert_close(&tag("pos_embed"), &transpose(&values(&t.pos_embed), hw, d), &values(&r["pos_embed"]), ATOL);
    assert_close(&tag("input_proj"), &transpose(&values(&t.input_proj), hw, d), &values(&r["input_proj"]), ATOL);
    let enc: Vec<f64> = t.encoder_layer_outputs.iter().flat_map(values).collect();
    assert_close(&tag("encoder_layer_outputs"), &enc, &values(&r["encoder_layer_outputs"]), ATOL);
    assert_close(
        &tag("encoder_output"),
        &transpose(&values(&t.encoder_output), hw, d),
        &values(&r["encoder_output"]),
        ATOL,
    );
    let dec: Vec<f64> = t.decoder_layer_outputs.iter().flat_map(values).collect();
    assert_close(&tag("decoder_layer_outputs_prenorm"), &dec, &values(&r["decoder_layer_outputs_prenorm"]), ATOL);
    let hs: Vec<f64> = t.hs.iter().flat_map(values).collect();
    assert_close(&tag("hs"), &hs, &values(&r["hs"]), ATOL);
    assert_close(&tag("query_logits"), &values(&t.logits), &values(&r["query_logits"]), ATOL);
    let att: Vec<f64> = t.attention.iter().flat_map(values).collect();
    let ref_att = values(&r["attention_scores"]);
    assert_close(&tag("attention_scores"), &att, &ref_att, ATOL);

    // The plain output agrees with the trace and carries (layers, heads, classes, h, w).
    let out = model.forward(&input, 224, 287).unwrap();
    assert_eq!(out.attention.len(), cfg.dec_layers * heads * q * hw);
    let out_att: Vec<f64> = out.attention.iter().map(|&v| f64::from(v)).collect();
    assert_close(&tag("output attention"), &out_att, &ref_att, ATOL);
    // Head mean: the official average for post-norm models; for pre-norm the official code averages
    // with an un-normalised query (a quirk), so compare with the true mean of the heads instead.
    let mut mean = Vec::new();
    for l in 0..cfg.dec_layers {
        for c in 0..q {
            mean.extend(out.head_mean(l, c).into_iter().map(f64::from));
        }
    }
    if cfg.pre_norm {
        let mut true_mean = vec![0.0; cfg.dec_layers * q * hw];
        for l in 0..cfg.dec_layers {
            for h in 0..heads {
                for i in 0..q * hw {
                    true_mean[l * q * hw + i] += ref_att[(l * heads + h) * q * hw + i] / heads as f64;
                }
            }
        }
        assert_close(&tag("head mean"), &mean, &true_mean, ATOL);
    } else {
        assert_close(&tag("avg_attention_scores"), &mean, &values(&r["avg_attention_scores"]), ATOL);
    }
}

#[test]
fn tiny_postnorm_sine_matches_official() {
    check_fixture("tiny_postnorm_sine");
}

#[test]
fn tiny_prenorm_sine_matches_official() {
    check_fixture("tiny_prenorm_sine");
}

#[test]
fn tiny_postnorm_learned_matches_official() {
    check_fixture("tiny_postnorm_learned");
}

#[test]
fn backbone_stages_match_official() {
    let name = "tiny_postnorm_sine";
    let (model, ckpt) =
        load_model(&parity_dir().join(format!("{name}.pth")), &ConfigOverrides::default(), &Device::Cpu).unwrap();
    drop(ckpt);
    let io = load_st(&format!("{name}_io.safetensors"));
    let stages = load_st(&format!("{name}_backbone_stages.safetensors"));
    let input: Vec<f32> = values(&io["input"]).iter().map(|&v| v as f32).collect();
    let outs = model.backbone_stage_outputs(Fmap::from_chw(3, 224, 287, &input)).unwrap();
    for (i, key) in ["backbone_stem", "backbone_layer1", "backbone_layer2", "backbone_layer3"].iter().enumerate() {
        let ours: Vec<f64> = outs[i].to_chw().iter().map(|&v| f64::from(v)).collect();
        assert_close(key, &ours, &values(&stages[*key]), ATOL);
    }
}

#[test]
fn candle_conv_backbone_agrees_with_fast_backbone() {
    let name = "tiny_postnorm_learned";
    let (mut model, _) =
        load_model(&parity_dir().join(format!("{name}.pth")), &ConfigOverrides::default(), &Device::Cpu).unwrap();
    let io = load_st(&format!("{name}_io.safetensors"));
    let input: Vec<f32> = values(&io["input"]).iter().map(|&v| v as f32).collect();
    let fast = model.forward(&input, 224, 287).unwrap();
    model.set_force_candle_backbone(true);
    let slow = model.forward(&input, 224, 287).unwrap();
    let f: Vec<f64> = fast.logits.iter().map(|&v| f64::from(v)).collect();
    let s: Vec<f64> = slow.logits.iter().map(|&v| f64::from(v)).collect();
    assert_close("logits fast vs candle conv2d", &f, &s, ATOL);
    let fa: Vec<f64> = fast.attention.iter().map(|&v| f64::from(v)).collect();
    let sa: Vec<f64> = slow.attention.iter().map(|&v| f64::from(v)).collect();
    assert_close("attention fast vs candle conv2d", &fa, &sa, ATOL);
}

#[test]
fn loading_reads_every_weight_of_the_state_dict_and_nothing_else() {
    use intr_explorer::checkpoint::Checkpoint;
    use intr_explorer::intr::weights::WeightStore;
    use intr_explorer::intr::{Intr, resolve_config};
    use std::collections::BTreeSet;
    for name in ["tiny_postnorm_sine", "tiny_prenorm_sine", "tiny_postnorm_learned"] {
        let ck = Checkpoint::open(&parity_dir().join(format!("{name}.pth"))).unwrap();
        let cfg = resolve_config(&ck, &ConfigOverrides::default()).unwrap();
        let ws = WeightStore::new(&ck);
        Intr::load(&ws, &cfg, &Device::Cpu).unwrap();
        let listed: BTreeSet<String> = std::fs::read_to_string(parity_dir().join(format!("{name}_keys.txt")))
            .unwrap()
            .lines()
            .filter_map(|l| l.split('\t').next())
            .filter(|k| !k.is_empty() && !k.ends_with("num_batches_tracked"))
            .map(str::to_string)
            .collect();
        assert_eq!(ws.consumed(), listed, "{name}: weights read differ from the official key list");
    }
}

/// The parity tests above run once more for every other SIMD path this CPU has (`INTR_SIMD`), in
/// child runs of this test binary: each path must match the official code within the same 1e-4.
#[test]
fn parity_holds_on_every_simd_path_this_cpu_has() {
    use intr_explorer::kernels::{Simd, simd};
    if std::env::var_os("INTR_SIMD").is_some() {
        // A child run (or a run on a forced path): the other tests are what it checks.
        return;
    }
    let others: Vec<Simd> = Simd::available_paths().into_iter().filter(|&p| p != simd()).collect();
    for path in others {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--skip", "parity_holds_on_every_simd_path", "--test-threads", "1"])
            .env("INTR_SIMD", path.name())
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "parity on {}:\n{stdout}\n{stderr}", path.name());
        let ran = stdout.lines().find_map(|l| l.strip_prefix("test result: ok. ")).unwrap_or_default();
        assert!(!ran.starts_with("0 passed") && !ran.is_empty(), "parity on {}:\n{stdout}", path.name());
        assert!(!stderr.contains("warning: INTR_SIMD"), "{} was not used: {stderr}", path.name());
    }
}
