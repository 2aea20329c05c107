//! PyTorch's `Adam` with coupled L2 weight decay, after a global gradient-norm clip, as the
//! official training loop runs it (candle ships only AdamW, whose decay is decoupled).

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var, WithDType,
};
use candle_nn::VarMap;
use rayon::prelude::*;

/// The parameters the optimiser updates, in name order: everything of `varmap` but BatchNorm
/// statistics (which the forward pass updates).
pub fn trainable(varmap: &VarMap) -> Vec<Var> {
    trainable_named(varmap)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// [`trainable`], each parameter with its name.
pub fn trainable_named(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(n, _)| !dra_model::weights::is_buffer(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Adam's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Decay rate of the first-moment (mean) estimate (0.9).
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate (0.999).
    pub beta2: f64,
    /// Added to the denominator, after the bias-corrected square root, for stability (1e-8).
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
    /// The moment estimates `[m; v]`, flattened: `(2, numel)`.
    moments: Tensor,
    steps: i32,
}

/// The optimiser over a fixed list of parameters.
pub struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
}

impl Adam {
    /// An optimiser over `vars`, with zero moment estimates and no step taken.
    pub fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|var| {
                let moments = Tensor::zeros((2, var.elem_count()), var.dtype(), var.device())?;
                Ok(Slot {
                    moments,
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
        self.step_with(&grads, lr)
    }

    /// The parameters, in the order [`Adam::step_with`] takes their gradients.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|s| &s.var)
    }

    /// Each parameter's moment estimates `[m; v]` (shape `(2, numel)`) and step count, in
    /// [`Adam::vars`] order: what a checkpoint keeps of the optimiser. The tensors share the
    /// optimiser's storage, which the next step changes in place: save them before it.
    pub fn state(&self) -> Vec<(Tensor, i32)> {
        self.slots
            .iter()
            .map(|s| (s.moments.clone(), s.steps))
            .collect()
    }

    /// Puts back a [`Adam::state`]: the run goes on exactly where it was. Fails, changing
    /// nothing, when the state does not fit these parameters.
    pub fn restore(&mut self, state: Vec<(Tensor, i32)>) -> Result<()> {
        if state.len() != self.slots.len() {
            candle_core::bail!(
                "optimiser state of {} parameters for {}",
                state.len(),
                self.slots.len()
            );
        }
        for (slot, (moments, _)) in self.slots.iter().zip(&state) {
            let want = (2, slot.var.elem_count());
            if moments.dims() != [want.0, want.1] || moments.dtype() != slot.var.dtype() {
                candle_core::bail!(
                    "optimiser state of shape {:?} ({:?}) for a parameter of {} values ({:?})",
                    moments.dims(),
                    moments.dtype(),
                    want.1,
                    slot.var.dtype()
                );
            }
        }
        for (slot, (moments, steps)) in self.slots.iter_mut().zip(state) {
            // A copy of its own: the fused update writes the moments in place.
            slot.moments = moments.to_device(slot.var.device())?.copy()?;
            slot.steps = steps;
        }
        Ok(())
    }

    /// [`Adam::step`] with the gradients given one per parameter, in [`Adam::vars`] order:
    /// for gradients summed by hand (AHL's outer update adds up those of adapted copies).
    pub fn step_with(&mut self, grads: &[Option<&Tensor>], lr: f64) -> Result<f64> {
        if grads.len() != self.slots.len() {
            candle_core::bail!(
                "{} gradients for {} parameters",
                grads.len(),
                self.slots.len()
            );
        }
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
            let Some(grad) = *grad else { continue };
            // Detached: a gradient references the step's autograd graph, which the moment
            // estimates must not keep alive from one step to the next.
            let theta = slot.var.as_tensor().detach();
            let grad = grad.detach();
            slot.steps += 1;
            let update = Update {
                scale,
                config: c,
                lr,
                bias1: 1.0 - c.beta1.powi(slot.steps),
                bias2_sqrt: (1.0 - c.beta2.powi(slot.steps)).sqrt(),
            };
            if in_place(&theta) {
                // `theta` shares the variable's storage, which this updates in place.
                update.fused(&theta, &grad, &slot.moments)?;
            } else {
                let (theta, moments) = update.composed(&theta, &grad, &slot.moments)?;
                slot.var.set(&theta)?;
                slot.moments = moments;
            }
        }
        Ok(norm)
    }
}

/// Whether the in-place CPU kernels serve a parameter.
fn in_place(theta: &Tensor) -> bool {
    theta.device().is_cpu()
        && matches!(theta.dtype(), DType::F32 | DType::F64)
        && theta.is_contiguous()
}

/// One parameter's Adam update at one step.
#[derive(Clone, Copy, Debug)]
struct Update {
    /// The clipping factor (1 when not clipped).
    scale: f64,
    config: AdamConfig,
    lr: f64,
    /// 1 − β₁ᵗ and √(1 − β₂ᵗ).
    bias1: f64,
    bias2_sqrt: f64,
}

impl Update {
    /// The update from candle's tensor ops, for devices other than the CPU: θ′ and `[m′; v′]`.
    fn composed(
        &self,
        theta: &Tensor,
        grad: &Tensor,
        moments: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let c = self.config;
        let shape = theta.shape();
        let mut g = if self.scale < 1.0 {
            grad.affine(self.scale, 0.0)?
        } else {
            grad.clone()
        };
        if c.weight_decay != 0.0 {
            g = (g + theta.affine(c.weight_decay, 0.0)?)?;
        }
        let (m, v) = (
            moments.get(0)?.reshape(shape)?,
            moments.get(1)?.reshape(shape)?,
        );
        let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
        let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
        let denom = ((v.sqrt()? / self.bias2_sqrt)? + c.eps)?;
        let step = ((&m / denom)? * (self.lr / self.bias1))?;
        let theta = (theta - step)?;
        let moments = Tensor::stack(&[m.flatten_all()?, v.flatten_all()?], 0)?;
        Ok((theta, moments))
    }

    /// The same update in place, in two passes (CPU): the moments from θ and the gradient,
    /// then θ from the moments. About seventeen element-wise ops, each with a buffer of the
    /// parameter's size, become two passes that allocate nothing.
    fn fused(&self, theta: &Tensor, grad: &Tensor, moments: &Tensor) -> Result<()> {
        moments.inplace_op3(
            &theta.contiguous()?,
            &grad.contiguous()?,
            &MomentsStep(*self),
        )?;
        theta.inplace_op2(moments, &ParamStep(*self))
    }

    /// The clipped, decayed gradient of a parameter, in f64.
    fn gradient(&self, theta: f64, grad: f64) -> f64 {
        let g = if self.scale < 1.0 {
            grad * self.scale
        } else {
            grad
        };
        g + self.config.weight_decay * theta
    }
}

/// Where a contiguous operand of the in-place kernels lies in its storage.
fn span(l: &Layout, what: &str) -> Result<std::ops::Range<usize>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("adam: {what} must be contiguous")))?;
    Ok(start..end)
}

/// A read-only operand of the in-place kernels: a contiguous f32 or f64 slice.
fn operand<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    Ok(&T::cpu_storage_as_slice(s)?[span(l, what)?])
}

/// Chunks of the in-place kernels' parallel loops.
const CHUNK: usize = 1 << 14;

/// `[m; v] ← [β₁m + (1−β₁)g; β₂v + (1−β₂)g²]` in place, from θ and the raw gradient.
struct MomentsStep(Update);

impl MomentsStep {
    fn run<T: WithDType>(&self, mv: &mut [T], theta: &[T], grad: &[T]) -> Result<()> {
        let n = theta.len();
        if grad.len() != n || mv.len() != 2 * n {
            candle_core::bail!(
                "adam: {n} parameters, {} gradients, {} moments",
                grad.len(),
                mv.len()
            );
        }
        let c = self.0.config;
        let (m, v) = mv.split_at_mut(n);
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(theta.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
            .for_each(|((m, v), (theta, grad))| {
                for ((m, v), (&th, &g)) in m.iter_mut().zip(v).zip(theta.iter().zip(grad)) {
                    let g = self.0.gradient(th.to_f64(), g.to_f64());
                    *m = T::from_f64(c.beta1 * m.to_f64() + (1.0 - c.beta1) * g);
                    *v = T::from_f64(c.beta2 * v.to_f64() + (1.0 - c.beta2) * g * g);
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for MomentsStep {
    fn name(&self) -> &'static str {
        "adam-moments"
    }

    fn cpu_fwd(
        &self,
        ms: &mut CpuStorage,
        ml: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let range = span(ml, "moments")?;
        match ms {
            CpuStorage::F32(mv) => self.run::<f32>(
                &mut mv[range],
                operand(ts, tl, "θ")?,
                operand(gs, gl, "the gradient")?,
            ),
            CpuStorage::F64(mv) => self.run::<f64>(
                &mut mv[range],
                operand(ts, tl, "θ")?,
                operand(gs, gl, "the gradient")?,
            ),
            _ => candle_core::bail!("adam: only f32 and f64 on the CPU"),
        }
    }
}

/// `θ ← θ − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)` in place, from the updated moments.
struct ParamStep(Update);

impl ParamStep {
    fn run<T: WithDType>(&self, theta: &mut [T], mv: &[T]) -> Result<()> {
        let n = theta.len();
        if mv.len() != 2 * n {
            candle_core::bail!("adam: {n} parameters, {} moments", mv.len());
        }
        let u = self.0;
        let step = u.lr / u.bias1;
        let (m, v) = mv.split_at(n);
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(theta, (m, v))| {
                for (th, (&m, &v)) in theta.iter_mut().zip(m.iter().zip(v)) {
                    let denom = v.to_f64().sqrt() / u.bias2_sqrt + u.config.eps;
                    *th = T::from_f64(th.to_f64() - step * (m.to_f64() / denom));
                }
            });
        Ok(())
    }
}

impl InplaceOp2 for ParamStep {
    fn name(&self) -> &'static str {
        "adam-param"
    }

    fn cpu_fwd(
        &self,
        ts: &mut CpuStorage,
        tl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> Result<()> {
        let range = span(tl, "θ")?;
        match ts {
            CpuStorage::F32(theta) => {
                self.run::<f32>(&mut theta[range], operand(ms, ml, "moments")?)
            }
            CpuStorage::F64(theta) => {
                self.run::<f64>(&mut theta[range], operand(ms, ml, "moments")?)
            }
            _ => candle_core::bail!("adam: only f32 and f64 on the CPU"),
        }
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

    /// An optimiser rebuilt from another's state goes on with the very same bytes, and a state
    /// that does not fit is refused.
    #[test]
    fn a_restored_optimiser_goes_on_where_the_other_stood() -> Result<()> {
        let dev = Device::Cpu;
        let config = AdamConfig {
            weight_decay: 0.01,
            clip_norm: Some(1.0),
            ..Default::default()
        };
        let step = |adam: &mut Adam, w: &Var, k: f32| -> Result<()> {
            let x = Tensor::new(&[3f32 * k, -4., 0.5], &dev)?;
            let loss = (w.as_tensor() * &x)?.sqr()?.sum_all()?;
            adam.step(&loss.backward()?, 0.05)?;
            Ok(())
        };
        let w = Var::new(&[1.0f32, -2.0, 0.25], &dev)?;
        let mut adam = Adam::new(vec![w.clone()], config)?;
        for k in 0..5 {
            step(&mut adam, &w, k as f32)?;
        }
        let w2 = Var::new(&[1.0f32, -2.0, 0.25], &dev)?;
        let mut first = Adam::new(vec![w2.clone()], config)?;
        for k in 0..3 {
            step(&mut first, &w2, k as f32)?;
        }
        let w3 = Var::from_tensor(&w2.as_tensor().copy()?)?;
        let mut second = Adam::new(vec![w3.clone()], config)?;
        second.restore(first.state())?;
        for k in 3..5 {
            step(&mut second, &w3, k as f32)?;
        }
        assert_eq!(
            w.as_tensor().to_vec1::<f32>()?,
            w3.as_tensor().to_vec1::<f32>()?
        );

        let other = Var::new(&[1.0f32, 2.0], &dev)?;
        let mut wrong = Adam::new(vec![other], config)?;
        assert!(wrong.restore(first.state()).is_err());
        Ok(())
    }

    /// The in-place kernels against the composition of tensor ops, over three steps with and
    /// without clipping and weight decay, in f64 (tight) and f32.
    #[test]
    fn fused_matches_composed() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
            for (scale, weight_decay) in [(1.0, 0.0), (0.3, 1e-2)] {
                let theta0 = (Tensor::arange(0f32, 35., &dev)?.reshape((5, 7))? * 0.37)?
                    .sin()?
                    .to_dtype(dtype)?;
                // The fused kernel writes in place: θ and the moments get storages of their own.
                let (ta, mut tb) = (theta0.copy()?, theta0);
                let ma = Tensor::zeros((2, 35), dtype, &dev)?;
                let mut mb = ma.copy()?;
                for t in 1..=3 {
                    let grad = (ta.cos()? * (t as f64))?;
                    let update = Update {
                        scale,
                        config: AdamConfig {
                            weight_decay,
                            ..Default::default()
                        },
                        lr: 0.05,
                        bias1: 1.0 - 0.9f64.powi(t),
                        bias2_sqrt: (1.0 - 0.999f64.powi(t)).sqrt(),
                    };
                    update.fused(&ta, &grad, &ma)?;
                    (tb, mb) = update.composed(&tb, &grad, &mb)?;
                    let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                        (a - b)?
                            .abs()?
                            .flatten_all()?
                            .max(0)?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()
                    };
                    assert!(diff(&ta, &tb)? < tol, "{dtype:?} step {t} θ");
                    assert!(diff(&ma, &mb)? < tol, "{dtype:?} step {t} moments");
                    assert_eq!(ta.dims(), &[5, 7]);
                }
            }
        }
        Ok(())
    }
}
