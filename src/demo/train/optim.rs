//! AdamW (decoupled weight decay, as `torch.optim.AdamW`) with global gradient-norm clipping, and
//! its moments exposed so that a run can be saved and resumed. candle-nn's `AdamW` keeps its moments
//! private, which would make resuming restart them from zero.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};

use super::TrainModel;
use super::model::NamedValues;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Optimiser state for every parameter of a [`TrainModel`].
pub struct AdamW {
    weight_decay: f64,
    step: usize,
    /// (first moment, second moment) by parameter name.
    moments: BTreeMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(model: &TrainModel, weight_decay: f64) -> Result<Self> {
        let mut moments = BTreeMap::new();
        for (k, v) in &model.params {
            moments.insert(k.clone(), (v.zeros_like()?, v.zeros_like()?));
        }
        Ok(Self { weight_decay, step: 0, moments })
    }

    /// One update with learning rate `lr`, after scaling the gradients so that their global L2
    /// norm is at most `clip` (0 = no clipping). Norms and biases are not decayed (DETR's recipe
    /// decays everything; decaying norms of a small model trained from scratch only hurts).
    pub fn step(&mut self, model: &TrainModel, grads: &GradStore, lr: f64, clip: f64) -> Result<f64> {
        let mut sq = 0f64;
        for v in model.params.values() {
            if let Some(g) = grads.get(v) {
                sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
            }
        }
        let norm = sq.sqrt();
        let scale = if clip > 0.0 && norm > clip { clip / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (k, v) in &model.params {
            let Some(g) = grads.get(v) else { continue };
            let g = (g * scale)?;
            let Some((m, s)) = self.moments.get_mut(k) else { continue };
            *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?;
            *s = ((&*s * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&*m / c1)? / ((&*s / c2)?.sqrt()? + EPS)?)?;
            let decays = v.rank() > 1 && !k.contains("norm") && !k.contains(".bn") && !k.contains("downsample.1");
            let mut w = v.as_tensor().clone();
            if decays && self.weight_decay > 0.0 {
                w = (w * (1.0 - lr * self.weight_decay))?;
            }
            v.set(&(w - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moments and step count as named tensors (`adam.m.*`, `adam.v.*`, `adam.step`).
    pub fn state(&self) -> Result<NamedValues> {
        let mut out = NamedValues::new();
        out.insert("adam.step".to_string(), (vec![1], vec![self.step as f32]));
        for (k, (m, s)) in &self.moments {
            out.insert(format!("adam.m.{k}"), (m.dims().to_vec(), m.flatten_all()?.to_vec1()?));
            out.insert(format!("adam.v.{k}"), (s.dims().to_vec(), s.flatten_all()?.to_vec1()?));
        }
        Ok(out)
    }

    /// Restores what [`Self::state`] wrote.
    pub fn load_state(&mut self, values: &NamedValues) -> Result<()> {
        if let Some((_, v)) = values.get("adam.step") {
            self.step = v.first().copied().unwrap_or(0.0) as usize;
        }
        for (k, (m, s)) in &mut self.moments {
            let dev = m.device().clone();
            if let Some((shape, v)) = values.get(&format!("adam.m.{k}")) {
                *m = Tensor::from_vec(v.clone(), shape.as_slice(), &dev)?;
            }
            if let Some((shape, v)) = values.get(&format!("adam.v.{k}")) {
                *s = Tensor::from_vec(v.clone(), shape.as_slice(), &dev)?;
            }
        }
        Ok(())
    }
}
