//! Deterministic random weights for any [`IntrConfig`], under the official state-dict names (as the
//! model's own structs ask for them).
//!
//! Used by the benchmarks (the official configuration at full size, with no download) and by tests
//! that need a complete, well-formed state dict. Never uses candle's RNG (it cannot be seeded).

use candle_core::Device;

use super::config::{IntrConfig, PositionEmbedding};
use super::weights::{FreshStore, MemorySource, WeightsRoot};
use crate::error::{Error, Result};

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

/// One named tensor: (state-dict name, shape, row-major values).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A small INTR (4 heads, width 32, one encoder layer, a four-stage basic-block backbone 8 to 64
/// channels wide) with `classes` classes and `dec_layers` decoder layers, for tests: its random
/// weights are a few hundred KB.
#[must_use]
pub fn small_config(classes: usize, dec_layers: usize) -> IntrConfig {
    use super::config::{BackboneConfig, BlockKind};
    IntrConfig {
        hidden_dim: 32,
        nheads: 4,
        enc_layers: 1,
        dec_layers,
        dim_feedforward: 64,
        backbone: BackboneConfig {
            block: BlockKind::Basic,
            blocks_per_stage: vec![1, 1, 1, 1],
            stage_channels: vec![8, 16, 32, 64],
            num_channels: 64,
        },
        ..IntrConfig::official(classes)
    }
}

/// A complete state dict of `cfg` with a ResNet stem of `stem` channels, each value drawn by
/// `init(name, shape, rng)`: the names, shapes and order are those the model's structs ask for when
/// built ([`super::Intr::new`]), so there is no second list of them.
pub fn state_dict(
    cfg: &IntrConfig,
    stem: usize,
    seed: u64,
    init: impl Fn(&str, &[usize], &mut Rng) -> Vec<f32> + 'static,
) -> Result<Vec<NamedTensor>> {
    let mut rng = Rng::new(seed);
    let fresh = FreshStore::new(move |name, shape| init(name, shape, &mut rng));
    {
        let root = WeightsRoot::fresh(&fresh, &Device::Cpu);
        super::Intr::new(&root.weights(), cfg, stem)?;
    }
    let order = fresh.order();
    let (vars, buffers) = fresh.into_parts();
    order
        .into_iter()
        .map(|name| {
            let t = match vars.get(&name) {
                Some(v) => v.as_tensor().clone(),
                None => buffers.get(&name).cloned().ok_or_else(|| Error::Config(format!("`{name}` was not made")))?,
            };
            Ok((name, t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
        })
        .collect()
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

/// A complete random state dict for `cfg` (torchvision's 64-channel stem).
pub fn random_weights(cfg: &IntrConfig, seed: u64) -> Result<MemorySource> {
    let mut src = MemorySource::default();
    for (name, shape, values) in state_dict(cfg, 64, seed, random_values)? {
        src.tensors.insert(name, (shape, values));
    }
    Ok(src)
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

/// Writes a checkpoint in the layout the official `main.py` saves (the model's keys in the order the
/// structs are built, which differs from PyTorch's module order): `{'model': OrderedDict,
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
    let weights = state_dict(cfg, 64, seed, random_values).map_err(std::io::Error::other)?;
    let mut storages = Vec::new();
    let mut model = Vec::new();
    let mut params = Vec::new();
    let mut key = 0usize;
    let mut next_key = || {
        key += 1;
        (key - 1).to_string()
    };
    for (name, shape, values) in &weights {
        let k = next_key();
        model.push((Py::Str(name.clone()), Py::Tensor(TensorRef::contiguous(&k, DType::F32, shape))));
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
