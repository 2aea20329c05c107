//! PyTorch's `Adam` with coupled L2 weight decay, after a global gradient-norm clip, as the
//! official training loop runs it (candle ships only AdamW, whose decay is decoupled).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Coupled L2: `weight_decay · θ` is added to the gradient (after clipping).
    pub weight_decay: f64,
    /// Global L2 norm the gradients are clipped to before the step (`clip_grad_norm_`).
    pub clip_norm: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: None,
        }
    }
}

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
    steps: i32,
}

/// The optimiser over a fixed list of parameters.
pub struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
}

impl Adam {
    pub fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|var| {
                let zeros = var.zeros_like()?;
                Ok(Slot {
                    m: zeros.clone(),
                    v: zeros,
                    var,
                    steps: 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots, config })
    }

    /// One step at learning rate `lr`. Parameters without a gradient are left alone, as
    /// PyTorch skips parameters whose `.grad` is `None`. Returns the gradients' global norm
    /// before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let grads: Vec<Option<&Tensor>> = self
            .slots
            .iter()
            .map(|s| grads.get(s.var.as_tensor()))
            .collect();
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        let norm = sq.sqrt();
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
        let scale = match self.config.clip_norm {
            Some(max) => (max / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let c = self.config;
        for (slot, grad) in self.slots.iter_mut().zip(grads) {
            let Some(grad) = grad else { continue };
            // Detached: a gradient references the step's autograd graph, which the moment
            // estimates must not keep alive from one step to the next.
            let theta = slot.var.as_tensor().detach();
            let grad = grad.detach();
            let mut g = if scale < 1.0 {
                grad.affine(scale, 0.0)?
            } else {
                grad
            };
            if c.weight_decay != 0.0 {
                g = (g + theta.affine(c.weight_decay, 0.0)?)?;
            }
            slot.steps += 1;
            slot.m = ((&slot.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let bias1 = 1.0 - c.beta1.powi(slot.steps);
            let bias2_sqrt = (1.0 - c.beta2.powi(slot.steps)).sqrt();
            let denom = ((slot.v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = ((&slot.m / denom)? * (lr / bias1))?;
            slot.var.set(&(&theta - update)?)?;
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Reference values from `torch.optim.Adam(lr=0.1, weight_decay=0.01)` after
    /// `clip_grad_norm_(…, 1.0)`, re-derived here by hand in f64 for two steps.
    #[test]
    fn two_steps_by_hand() -> Result<()> {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0], &dev)?;
        let config = AdamConfig {
            weight_decay: 0.01,
            clip_norm: Some(1.0),
            ..Default::default()
        };
        let mut adam = Adam::new(vec![w.clone()], config)?;
        // loss = 3·w0 + 4·w1 → gradient (3, 4), norm 5, clipped to (0.6, 0.8).
        let mut theta = [1.0f64, -2.0];
        let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
        for t in 1..=2 {
            let loss = (w.as_tensor() * &Tensor::new(&[3f32, 4.], &dev)?)?.sum_all()?;
            let norm = adam.step(&loss.backward()?, 0.1)?;
            assert!((norm - 5.0).abs() < 1e-6);
            for i in 0..2 {
                let g = [3.0, 4.0][i] * (1.0 / (5.0 + 1e-6)) + 0.01 * theta[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let mhat = m[i] / (1.0 - 0.9f64.powi(t));
                let denom = v[i].sqrt() / (1.0 - 0.999f64.powi(t)).sqrt() + 1e-8;
                theta[i] -= 0.1 * mhat / denom;
            }
        }
        let got = w.as_tensor().to_vec1::<f32>()?;
        for i in 0..2 {
            assert!(
                (got[i] as f64 - theta[i]).abs() < 1e-6,
                "{got:?} vs {theta:?}"
            );
        }
        Ok(())
    }
}
