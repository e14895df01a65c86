//! Deterministic random weights for any [`IntrConfig`], under the official state-dict names.
//!
//! Used by the benchmarks (the official configuration at full size, with no download) and by tests
//! that need a complete, well-formed state dict. Never uses candle's RNG (it cannot be seeded).

use super::config::{BlockKind, IntrConfig, PositionEmbedding};
use super::weights::MemorySource;

/// A small xorshift generator: reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-a, a).
    pub fn uniform(&mut self, a: f32) -> f32 {
        (self.next_f32() * 2.0 - 1.0) * a
    }

    fn fill(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
}

/// Every weight name and shape an INTR model of `cfg` has, in state-dict order. Bottleneck inner
/// widths are a quarter of the stage output (torchvision's default `width_per_group`).
#[must_use]
pub fn state_dict_shapes(cfg: &IntrConfig) -> Vec<(String, Vec<usize>)> {
    state_dict_shapes_with_stem(cfg, 64)
}

/// [`state_dict_shapes`] with a ResNet stem of `stem` channels (torchvision's is 64).
#[must_use]
pub fn state_dict_shapes_with_stem(cfg: &IntrConfig, stem: usize) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let d = cfg.hidden_dim;
    let f = cfg.dim_feedforward;
    let attn = |v: &mut Vec<(String, Vec<usize>)>, p: &str| {
        v.push((format!("{p}.in_proj_weight"), vec![3 * d, d]));
        v.push((format!("{p}.in_proj_bias"), vec![3 * d]));
        v.push((format!("{p}.out_proj.weight"), vec![d, d]));
        v.push((format!("{p}.out_proj.bias"), vec![d]));
    };
    let norm = |v: &mut Vec<(String, Vec<usize>)>, p: &str| {
        v.push((format!("{p}.weight"), vec![d]));
        v.push((format!("{p}.bias"), vec![d]));
    };
    let ffn = |v: &mut Vec<(String, Vec<usize>)>, p: &str| {
        v.push((format!("{p}.linear1.weight"), vec![f, d]));
        v.push((format!("{p}.linear1.bias"), vec![f]));
        v.push((format!("{p}.linear2.weight"), vec![d, f]));
        v.push((format!("{p}.linear2.bias"), vec![d]));
    };
    for i in 0..cfg.enc_layers {
        let p = format!("transformer.encoder.layers.{i}");
        attn(&mut v, &format!("{p}.self_attn"));
        ffn(&mut v, &p);
        norm(&mut v, &format!("{p}.norm1"));
        norm(&mut v, &format!("{p}.norm2"));
    }
    if cfg.pre_norm {
        norm(&mut v, "transformer.encoder.norm");
    }
    for i in 0..cfg.dec_layers {
        let p = format!("transformer.decoder.layers.{i}");
        attn(&mut v, &format!("{p}.self_attn"));
        attn(&mut v, &format!("{p}.multihead_attn"));
        ffn(&mut v, &p);
        for n in 1..=3 {
            norm(&mut v, &format!("{p}.norm{n}"));
        }
    }
    norm(&mut v, "transformer.decoder.norm");
    v.push(("query_embed.weight".into(), vec![cfg.num_queries, d]));
    v.push(("presence_vector.weight".into(), vec![1, d]));
    v.push(("presence_vector.bias".into(), vec![1]));
    v.push(("input_proj.weight".into(), vec![d, cfg.backbone.num_channels, 1, 1]));
    v.push(("input_proj.bias".into(), vec![d]));
    let conv_bn = |v: &mut Vec<(String, Vec<usize>)>, conv: &str, bn: &str, o: usize, i: usize, k: usize| {
        v.push((format!("{conv}.weight"), vec![o, i, k, k]));
        for s in ["weight", "bias", "running_mean", "running_var"] {
            v.push((format!("{bn}.{s}"), vec![o]));
        }
    };
    let b = "backbone.0.body";
    conv_bn(&mut v, &format!("{b}.conv1"), &format!("{b}.bn1"), stem, 3, 7);
    let mut cin = stem;
    for (s, (&n, &out)) in cfg.backbone.blocks_per_stage.iter().zip(&cfg.backbone.stage_channels).enumerate() {
        for blk in 0..n {
            let p = format!("{b}.layer{}.{blk}", s + 1);
            match cfg.backbone.block {
                BlockKind::Bottleneck => {
                    let inner = out / 4;
                    conv_bn(&mut v, &format!("{p}.conv1"), &format!("{p}.bn1"), inner, cin, 1);
                    conv_bn(&mut v, &format!("{p}.conv2"), &format!("{p}.bn2"), inner, inner, 3);
                    conv_bn(&mut v, &format!("{p}.conv3"), &format!("{p}.bn3"), out, inner, 1);
                }
                BlockKind::Basic => {
                    conv_bn(&mut v, &format!("{p}.conv1"), &format!("{p}.bn1"), out, cin, 3);
                    conv_bn(&mut v, &format!("{p}.conv2"), &format!("{p}.bn2"), out, out, 3);
                }
            }
            // torchvision: a projection where the block strides or changes the width.
            if blk == 0 && ((s > 0 && !cfg.dilated_stages()[s]) || cin != out) {
                conv_bn(&mut v, &format!("{p}.downsample.0"), &format!("{p}.downsample.1"), out, cin, 1);
            }
            cin = out;
        }
    }
    if cfg.position_embedding == PositionEmbedding::Learned {
        v.push(("backbone.1.row_embed.weight".into(), vec![50, d / 2]));
        v.push(("backbone.1.col_embed.weight".into(), vec![50, d / 2]));
    }
    v
}

/// Random values for one named weight, scaled so activations stay in a sane range.
pub fn random_values(name: &str, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    if name.ends_with("running_var") {
        return (0..n).map(|_| 0.5 + rng.next_f32()).collect();
    }
    // The last batch norm of each residual branch starts small (as with zero-init-residual training)
    // so that sixteen random blocks do not blow activations up.
    let last_bn = name.contains("layer")
        && (name.ends_with("bn3.weight") || name.ends_with("bn2.weight") && !name.contains("bn3"));
    if last_bn {
        return (0..n).map(|_| 0.1 + 0.1 * rng.next_f32()).collect();
    }
    let is_norm_weight =
        (name.contains(".bn") || name.contains("norm") || name.contains("downsample.1")) && name.ends_with(".weight");
    if is_norm_weight {
        return (0..n).map(|_| 0.5 + 0.5 * rng.next_f32()).collect();
    }
    // Embeddings are initialised with unit variance (nn.Embedding's default).
    if name.contains("embed") {
        return rng.fill(n, 3f32.sqrt());
    }
    if name.ends_with("bias") || name.ends_with("running_mean") {
        return rng.fill(n, 0.05);
    }
    rng.fill(n, (3.0 / fan_in as f32).sqrt())
}

/// A complete random state dict for `cfg`.
#[must_use]
pub fn random_weights(cfg: &IntrConfig, seed: u64) -> MemorySource {
    let mut rng = Rng::new(seed);
    let mut src = MemorySource::default();
    for (name, shape) in state_dict_shapes(cfg) {
        let values = random_values(&name, &shape, &mut rng);
        src.tensors.insert(name, (shape, values));
    }
    src
}

/// The `main.py` options of an official run with configuration `cfg`, as pickled in `args`.
#[must_use]
pub fn official_args(cfg: &IntrConfig) -> Vec<(String, crate::checkpoint::pth_writer::Py)> {
    use crate::checkpoint::pth_writer::Py;
    let s = |v: &str| Py::Str(v.into());
    let i = |v: usize| Py::Int(v as i64);
    vec![
        ("lr".into(), Py::Float(5e-5)),
        ("lr_backbone".into(), Py::Float(0.0)),
        ("batch_size".into(), i(12)),
        ("weight_decay".into(), Py::Float(1e-6)),
        ("epochs".into(), i(140)),
        ("lr_drop".into(), i(80)),
        ("clip_max_norm".into(), Py::Float(0.1)),
        ("backbone".into(), s("resnet50")),
        ("dilation".into(), Py::Bool(cfg.dilation)),
        (
            "position_embedding".into(),
            s(if cfg.position_embedding == PositionEmbedding::Sine { "sine" } else { "learned" }),
        ),
        ("enc_layers".into(), i(cfg.enc_layers)),
        ("dec_layers".into(), i(cfg.dec_layers)),
        ("dim_feedforward".into(), i(cfg.dim_feedforward)),
        ("hidden_dim".into(), i(cfg.hidden_dim)),
        ("dropout".into(), Py::Float(0.1)),
        ("nheads".into(), i(cfg.nheads)),
        ("num_queries".into(), i(cfg.num_queries)),
        ("pre_norm".into(), Py::Bool(cfg.pre_norm)),
        ("dataset_name".into(), s("cub")),
        ("dataset_path".into(), s("/path/to/datasets")),
        ("output_dir".into(), s("output")),
        ("device".into(), s("cuda")),
        ("seed".into(), i(42)),
        ("resume".into(), s("")),
        ("start_epoch".into(), i(0)),
        ("eval".into(), Py::Bool(false)),
        ("num_workers".into(), i(2)),
        ("world_size".into(), i(1)),
        ("dist_url".into(), s("env://")),
        ("distributed".into(), Py::Bool(false)),
    ]
}

/// Writes a checkpoint exactly as the official `main.py` saves one: `{'model': OrderedDict,
/// 'optimizer': AdamW state (exp_avg, exp_avg_sq, step per parameter), 'lr_scheduler', 'epoch',
/// 'args': argparse.Namespace}`, with `num_batches_tracked` buffers, random weights from
/// [`random_weights`] and filler optimizer moments (two thirds of the file, as in official files).
pub fn write_official_pth(
    path: &std::path::Path,
    cfg: &IntrConfig,
    seed: u64,
    with_optimizer: bool,
) -> std::io::Result<()> {
    use crate::checkpoint::DType;
    use crate::checkpoint::pth_writer::{Py, StorageData, TensorRef, f32_bytes, write_pth};
    let weights = random_weights(cfg, seed);
    let mut storages = Vec::new();
    let mut model = Vec::new();
    let mut params = Vec::new();
    let mut key = 0usize;
    let mut next_key = || {
        key += 1;
        (key - 1).to_string()
    };
    for (name, shape) in state_dict_shapes(cfg) {
        let k = next_key();
        let (_, values) = &weights.tensors[&name];
        model.push((Py::Str(name.clone()), Py::Tensor(TensorRef::contiguous(&k, DType::F32, &shape))));
        storages.push((k, StorageData::Bytes(f32_bytes(values))));
        let is_buffer = name.ends_with("running_mean") || name.ends_with("running_var");
        if !is_buffer {
            params.push(shape.clone());
        }
        if name.ends_with("running_var") {
            let k = next_key();
            let nbt = name.replace("running_var", "num_batches_tracked");
            model.push((Py::Str(nbt), Py::Tensor(TensorRef::contiguous(&k, DType::I64, &[]))));
            storages.push((k, StorageData::Bytes(0i64.to_le_bytes().to_vec())));
        }
    }
    let mut state = Vec::new();
    if with_optimizer {
        for (i, shape) in params.iter().enumerate() {
            let n: usize = shape.iter().product();
            let mut moments = vec![(Py::Str("step".into()), {
                let k = next_key();
                storages.push((k.clone(), StorageData::Bytes(1000f32.to_le_bytes().to_vec())));
                Py::Tensor(TensorRef::contiguous(&k, DType::F32, &[]))
            })];
            for m in ["exp_avg", "exp_avg_sq"] {
                let k = next_key();
                storages.push((k.clone(), StorageData::Filler { len: n * 4, seed: (i * 2 + 1) as u32 }));
                moments.push((Py::Str(m.into()), Py::Tensor(TensorRef::contiguous(&k, DType::F32, shape))));
            }
            state.push((Py::Int(i as i64), Py::Dict(moments)));
        }
    }
    let group = Py::Dict(vec![
        (Py::Str("lr".into()), Py::Float(5e-5)),
        (Py::Str("betas".into()), Py::Tuple(vec![Py::Float(0.9), Py::Float(0.999)])),
        (Py::Str("eps".into()), Py::Float(1e-8)),
        (Py::Str("weight_decay".into()), Py::Float(1e-6)),
        (Py::Str("amsgrad".into()), Py::Bool(false)),
        (Py::Str("params".into()), Py::List((0..params.len()).map(|i| Py::Int(i as i64)).collect())),
    ]);
    let optimizer = Py::Dict(vec![
        (Py::Str("state".into()), Py::Dict(state)),
        (Py::Str("param_groups".into()), Py::List(vec![group])),
    ]);
    let scheduler = Py::Dict(vec![
        (Py::Str("step_size".into()), Py::Int(80)),
        (Py::Str("gamma".into()), Py::Float(0.1)),
        (Py::Str("last_epoch".into()), Py::Int(140)),
    ]);
    let root = Py::Dict(vec![
        (Py::Str("model".into()), Py::OrderedDict(model)),
        (Py::Str("optimizer".into()), optimizer),
        (Py::Str("lr_scheduler".into()), scheduler),
        (Py::Str("epoch".into()), Py::Int(139)),
        (Py::Str("args".into()), Py::Namespace(official_args(cfg))),
    ]);
    write_pth(path, "checkpoint", &root, storages)
}
