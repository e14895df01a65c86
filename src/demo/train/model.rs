//! INTR for training: the engine's own structs ([`crate::intr::Intr::new`]) built over fresh
//! trainable variables, named exactly as the official state dict, so a trained model is written as
//! a checkpoint the engine loads. Batch norm trains on batch statistics and keeps running
//! statistics, which become the checkpoint's frozen batch norm.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;
use crate::intr::Intr;
use crate::intr::config::IntrConfig;
use crate::intr::model::TrainOutput;
use crate::intr::pass::TrainPass;
use crate::intr::random::Rng;
use crate::intr::weights::{FreshStore, WeightsRoot};

/// Named values: name → (shape, row-major f32 values).
pub type NamedValues = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The trainable model: the network, its parameters (official names) and batch-norm running
/// statistics.
pub struct TrainModel {
    /// The network, holding the variables below.
    pub intr: Intr,
    /// Trainable parameters by official state-dict name.
    pub params: BTreeMap<String, Var>,
    /// `*.running_mean` / `*.running_var` by name.
    pub buffers: BTreeMap<String, Tensor>,
    pub device: Device,
    /// Transformer dropout of training passes (DETR's places: attention weights, each residual
    /// branch, the feed-forward hidden layer): probability.
    dropout: f32,
    /// Head drop of training passes (see [`TrainPass::head_drop`]).
    head_drop: f32,
    /// Draws the dropout and head-drop masks.
    mask_rng: Rng,
}

/// Initial values in the spirit of the official recipe: He-normal convolutions (torchvision),
/// Xavier-uniform transformer matrices (DETR), unit batch/layer norms with the last batch norm of
/// each residual branch at zero (torchvision's `zero_init_residual`), N(0, 1) class queries.
fn init_values(name: &str, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let normal = |rng: &mut Rng, std: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (rng.next_f32().max(1e-7), rng.next_f32());
                std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect()
    };
    let is_bn = name.contains(".bn") || name.contains("downsample.1");
    if name.ends_with("running_var") {
        return vec![1.0; n];
    }
    if name.ends_with("running_mean") || name.ends_with("bias") {
        return vec![0.0; n];
    }
    if is_bn || name.contains("norm") {
        let last_bn = name.contains("layer") && (name.ends_with("bn3.weight"));
        return vec![if last_bn { 0.0 } else { 1.0 }; n];
    }
    if name == "query_embed.weight" {
        return normal(rng, 1.0);
    }
    if shape.len() == 4 {
        // He normal, fan-out (torchvision's ResNet init).
        let fan_out = shape[0] * shape[2] * shape[3];
        return normal(rng, (2.0 / fan_out as f32).sqrt());
    }
    let (fan_out, fan_in) = (shape[0], shape.get(1).copied().unwrap_or(1));
    let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
    (0..n).map(|_| rng.uniform(a)).collect()
}

impl TrainModel {
    /// A freshly initialised model of `cfg` with a stem of `stem` channels.
    pub fn new(cfg: &IntrConfig, stem: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let fresh = FreshStore::new(move |name, shape| init_values(name, shape, &mut rng));
        let intr = {
            let root = WeightsRoot::fresh(&fresh, device);
            Intr::new(&root.weights(), cfg, stem)?
        };
        let (params, buffers) = fresh.into_parts();
        Ok(Self { intr, params, buffers, device: device.clone(), dropout: 0.0, head_drop: 0.0, mask_rng: Rng::new(0) })
    }

    /// Sets the dropout and head drop of the following training passes (0 switches either off);
    /// `rng` draws their masks, so a pass is reproducible from it.
    pub fn set_dropout(&mut self, dropout: f32, head_drop: f32, rng: Rng) {
        self.dropout = dropout;
        self.head_drop = head_drop;
        self.mask_rng = rng;
    }

    /// All values (parameters and buffers) by name, as (shape, f32 values).
    pub fn state_dict(&self) -> Result<NamedValues> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.params {
            out.insert(k.clone(), (v.dims().to_vec(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?));
        }
        for (k, t) in &self.buffers {
            out.insert(k.clone(), (t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?));
        }
        Ok(out)
    }

    /// Replaces values by name (resuming); every name must exist with the same shape.
    pub fn load_state(&mut self, values: &NamedValues) -> Result<()> {
        for (k, (shape, v)) in values {
            let t = Tensor::from_vec(v.clone(), shape.as_slice(), &self.device)?;
            if let Some(var) = self.params.get(k) {
                if var.dims() != shape.as_slice() {
                    return Err(crate::Error::Config(format!(
                        "`{k}` has shape {shape:?}, the model expects {:?}",
                        var.dims()
                    )));
                }
                var.set(&t)?;
            } else if self.buffers.contains_key(k) {
                self.buffers.insert(k.clone(), t);
            }
        }
        Ok(())
    }

    /// Forward pass of a normalised batch (B, 3, H, W); `train` uses batch statistics, dropout and
    /// head drop, otherwise running statistics and none.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<TrainOutput> {
        let mut pass = TrainPass {
            train,
            dropout: self.dropout,
            head_drop: self.head_drop,
            rng: &mut self.mask_rng,
            buffers: &mut self.buffers,
        };
        self.intr.forward_train(x, &mut pass)
    }
}
