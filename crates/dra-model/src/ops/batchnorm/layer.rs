//! The BatchNorm2d layer: PyTorch's semantics, on this crate's kernels where they serve and on
//! candle's element-wise ops elsewhere.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use super::eval::EvalApply;
use super::stats::Stats;
use super::train::{AddRelu, Apply};
use super::Act;
use crate::onnx::{Attr, Graph};
use crate::ops::Kernels;

/// PyTorch's `BatchNorm2d` (eps 1e-5, momentum 0.1, affine): batch statistics and running
/// statistic updates (with the unbiased variance) in training, running statistics in eval.
/// Tensors: `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
    kernels: Kernels,
}

impl BatchNorm2d {
    /// A layer over `channels` channels run by `kernels`, its tensors read from `vb` or
    /// initialised as PyTorch does: γ = 1, β = 0, running mean 0, running variance 1.
    pub fn new(channels: usize, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        let stat = |name, v| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(channels, name, Init::Const(v))?)
        };
        Ok(Self {
            running_mean: stat("running_mean", 0.0)?,
            running_var: stat("running_var", 1.0)?,
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            eps: 1e-5,
            momentum: 0.1,
            kernels,
        })
    }

    /// Normalises an `(n, c, h, w)` input per channel: with the batch statistics (updating the
    /// running ones) when `train`, with the running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train, Act::None)
    }

    /// `relu(forward_t(x))`, fused into the normalisation's pass in training mode on the CPU.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train, Act::Relu)
    }

    /// `min(relu(forward_t(x)), 6)` (MobileNetV2's ReLU6), fused into the normalisation's pass
    /// and its backward on the CPU: no tensor of its own, no mask; its gradient passes where the
    /// pre-activation lies strictly between 0 and 6, as PyTorch's. Elsewhere candle's ops.
    pub fn forward_relu6_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train, Act::Relu6)
    }

    /// `relu(forward_t(x) + residual)`, the end of a ResNet basic block. In training mode on
    /// the CPU the forward is one pass that keeps only its output, and the backward one masking
    /// pass (which is the residual's gradient) before the normalisation's closed form, where
    /// candle's ops would keep the sum as well and build the ReLU's mask in several passes.
    /// Its ReLU is PyTorch's, as in [`BatchNorm2d::forward_relu_t`]: NaN propagates, and no
    /// gradient passes where the pre-activation is exactly zero (candle's `relu` passes it).
    /// Elsewhere it is that composition of candle's ops.
    pub fn forward_add_relu_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.eval_fused(&[x, residual]) {
            let op = EvalApply {
                eps: self.eps,
                act: Act::Relu,
            };
            return x
                .contiguous()?
                .apply_op3(&residual.contiguous()?, &self.eval_params()?, op);
        }
        if !(train && self.fused(x)) {
            return (self.forward(x, train, Act::None)? + residual)?.relu();
        }
        let x = x.contiguous()?;
        let stats = self.batch_stats(&x)?;
        let params = Tensor::cat(
            &[&stats, &self.weight.unsqueeze(0)?, &self.bias.unsqueeze(0)?],
            0,
        )?;
        x.apply_op3(&residual.contiguous()?, &params, AddRelu { eps: self.eps })
    }

    /// The layer in eval mode (the running statistics) as an ONNX `BatchNormalization` on the
    /// value `x`, followed by a `Relu` when `relu`; its tensors as constants named from
    /// `name`. Returns the output's name.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str, relu: bool) -> Result<String> {
        let scale = g.constant(&format!("{name}.weight"), &self.weight)?;
        let bias = g.constant(&format!("{name}.bias"), &self.bias)?;
        let mean = g.constant(
            &format!("{name}.running_mean"),
            self.running_mean.as_tensor(),
        )?;
        let var = g.constant(&format!("{name}.running_var"), self.running_var.as_tensor())?;
        let y = g.node(
            "BatchNormalization",
            name,
            &[x, &scale, &bias, &mean, &var],
            &[Attr::Float("epsilon", self.eps as f32)],
        );
        Ok(if relu {
            g.node("Relu", &format!("{name}.relu"), &[&y], &[])
        } else {
            y
        })
    }

    /// `[γ; β]` (`2 × C`, differentiable) and eps, for ops that fuse the training-mode
    /// normalisation with its neighbours.
    pub(crate) fn affine_params(&self) -> Result<(Tensor, f64)> {
        Ok((Tensor::stack(&[&self.weight, &self.bias], 0)?, self.eps))
    }

    /// Whether the fused CPU kernels serve `x`.
    pub(crate) fn fused(&self, x: &Tensor) -> bool {
        self.kernels.custom() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
    }

    /// Whether eval mode can take the one-pass kernel: on the CPU, and with no input that
    /// records a graph (the kernel has no backward).
    fn eval_fused(&self, inputs: &[&Tensor]) -> bool {
        self.fused(inputs[0])
            && !inputs.iter().any(|t| t.track_op())
            && !self.weight.track_op()
            && !self.bias.track_op()
    }

    /// `[running mean; running var; γ; β]` (`4 × C`), detached.
    fn eval_params(&self) -> Result<Tensor> {
        Tensor::stack(
            &[
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                &self.weight,
                &self.bias,
            ],
            0,
        )?
        .detach()
        .contiguous()
    }

    fn forward(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if !train && self.eval_fused(&[x]) {
            let op = EvalApply { eps: self.eps, act };
            return x.contiguous()?.apply_op2(&self.eval_params()?, op);
        }
        if !train {
            // y = x·scale + shift with the running statistics. These are variables (training
            // updates them in place), so they are detached here: otherwise every eval forward
            // would record a graph through them and keep all its activations alive.
            let (mean, var) = (
                self.running_mean.as_tensor().detach(),
                self.running_var.as_tensor().detach(),
            );
            let scale = (&self.weight / (var + self.eps)?.sqrt()?)?;
            let shift = (&self.bias - (mean * &scale)?)?;
            let shape = (1, (), 1, 1);
            let y = x
                .broadcast_mul(&scale.reshape(shape)?)?
                .broadcast_add(&shift.reshape(shape)?)?;
            return stock_act(y, act);
        }
        if !self.fused(x) {
            return stock_act(self.forward_train_stock(x)?, act);
        }
        let x = x.contiguous()?;
        let stats = self.batch_stats(&x)?;
        let gb = Tensor::stack(&[&self.weight, &self.bias], 0)?;
        x.apply_op3(&stats, &gb, Apply { eps: self.eps, act })
    }

    /// The batch mean and biased variance of a contiguous `x` as `(2, C)`, without gradient,
    /// the running statistics updated from them.
    fn batch_stats(&self, x: &Tensor) -> Result<Tensor> {
        let stats = x.apply_op1_no_bwd(&Stats)?;
        self.update_running(&stats, x.elem_count() / x.dim(1)?)?;
        Ok(stats)
    }

    /// Running statistics: r ← (1 − m)·r + m·batch, the variance made unbiased.
    pub(crate) fn update_running(&self, stats: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let mean = stats.get(0)?;
        let var = (stats.get(1)? * (count as f64 / (count as f64 - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor().detach() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor().detach() * (1.0 - m))? + (var * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// Training mode from candle's element-wise ops, for devices without the fused kernel.
    fn forward_train_stock(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let xt = x.transpose(0, 1)?.contiguous()?;
        let flat = xt.flatten_from(1)?;
        let mean = flat.mean_keepdim(1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let stats = Tensor::cat(&[mean.reshape((1, c))?, var.reshape((1, c))?], 0)?.detach();
        self.update_running(&stats, flat.dim(1)?)?;
        let y = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = y
            .broadcast_mul(&self.weight.reshape((c, 1))?)?
            .broadcast_add(&self.bias.reshape((c, 1))?)?;
        y.reshape(xt.shape())?.transpose(0, 1)?.contiguous()
    }
}

/// The activation by candle's ops, where the fused kernels do not serve.
fn stock_act(y: Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::None => Ok(y),
        Act::Relu => y.relu(),
        Act::Relu6 => y.relu()?.minimum(6.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{max_diff as diff, ramp};
    use candle_core::Device;
    use candle_nn::VarMap;

    /// A BatchNorm2d of `channels` whose four tensors hold distinct non-trivial values.
    fn seeded(channels: usize, dtype: DType) -> (VarMap, BatchNorm2d) {
        let varmap = VarMap::new();
        let bn = BatchNorm2d::new(
            channels,
            Kernels::default(),
            VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu),
        )
        .unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let seed = name.len() as u32;
            let v = (ramp(&[channels], seed) * 0.2).unwrap();
            let v = if name.ends_with("running_var") || name.ends_with("weight") {
                (v + 1.0).unwrap()
            } else {
                v
            };
            var.set(&v.to_dtype(dtype).unwrap()).unwrap();
        }
        (varmap, bn)
    }

    /// The training-mode kernels' gradients (of x, γ and β, and of the residual where there
    /// is one) against central finite differences in f64: BatchNorm alone, with ReLU, with
    /// ReLU6 (γ about 5, so that some outputs pass the cap) and with residual + ReLU.
    #[test]
    fn gradients_match_finite_differences() {
        use crate::testutil::assert_gradients_match_finite_differences;
        let shape = [3usize, 4, 5, 3];
        let c = shape[1];
        let r = ramp(&shape, 2);
        for (what, gamma) in [
            ("bn", 1.0),
            ("bn+relu", 1.0),
            ("bn+relu6", 5.0),
            ("bn+add+relu", 1.0),
        ] {
            let inputs = [
                (ramp(&shape, 1) * 2.0).unwrap(),
                ((ramp(&[c], 7) * 0.2).unwrap() + 1.0)
                    .unwrap()
                    .affine(gamma, 0.0)
                    .unwrap(),
                (ramp(&[c], 8) * 0.2).unwrap(),
                ramp(&shape, 9),
            ];
            let used = if what == "bn+add+relu" { 4 } else { 3 };
            let forward = |t: &[Tensor]| -> Result<Tensor> {
                let tensors = crate::testutil::batchnorm_tensors("", &t[1], &t[2]);
                let vb = VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
                let bn = BatchNorm2d::new(c, Kernels::default(), vb)?;
                assert!(bn.fused(&t[0]));
                let y = match what {
                    "bn" => bn.forward_t(&t[0], true)?,
                    "bn+relu" => bn.forward_relu_t(&t[0], true)?,
                    "bn+relu6" => bn.forward_relu6_t(&t[0], true)?,
                    _ => bn.forward_add_relu_t(&t[0], &t[3], true)?,
                };
                Ok(y)
            };
            // Outputs on both sides of the kinks, or the test would not reach them.
            let y = forward(&inputs)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let at = |v: f64| y.iter().filter(|&&y| y == v).count();
            if what != "bn" {
                assert!(at(0.0) > 0 && at(0.0) < y.len(), "{what}: no ReLU cut");
            }
            if what == "bn+relu6" {
                assert!(at(6.0) > 0, "{what}: nothing reached the cap");
            }
            assert_gradients_match_finite_differences(what, &inputs[..used], 3, |t| {
                (forward(t)? * &r)?.sum_all()
            });
        }
    }

    /// The fused kernel against candle's element-wise composition: output, gradients of x, γ
    /// and β, and the running statistics, in f64.
    #[test]
    fn fused_matches_elementwise() -> Result<()> {
        let cases = [[4usize, 3, 5, 7], [2, 6, 1, 1], [3, 2, 4, 4]];
        let acts = [Act::None, Act::Relu, Act::Relu6];
        for (shape, relu) in cases.into_iter().flat_map(|s| acts.map(|a| (s, a))) {
            let build = || {
                let (varmap, bn) = seeded(shape[1], DType::F64);
                if relu == Act::Relu6 {
                    // γ about 5, so that outputs reach past 6 and the cap is exercised.
                    let w = &varmap.data().lock().unwrap()["weight"];
                    w.set(&(w.as_tensor() * 5.0).unwrap()).unwrap();
                }
                (varmap, bn)
            };
            let x = Var::from_tensor(&(ramp(&shape, 1) * 2.0)?)?;
            let r = ramp(&shape, 2);
            let (va, a) = build();
            let (vb, b) = build();
            let ya = a.forward(x.as_tensor(), true, relu)?;
            let yb = stock_act(b.forward_train_stock(x.as_tensor())?, relu)?;
            let count = |t: &Tensor| -> Result<f64> {
                t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()
            };
            if relu != Act::None {
                // The ramp must leave units on both sides of the ReLU for the test to mean much.
                let zeros = count(&ya.eq(0.0)?)?;
                assert!(zeros > 0.0 && zeros < ya.elem_count() as f64, "{shape:?}");
            }
            if relu == Act::Relu6 && shape[2] * shape[3] > 1 {
                let capped = count(&ya.eq(6.0)?)?;
                assert!(capped > 0.0, "{shape:?}: nothing reached the cap");
            }
            assert!(diff(&ya, &yb) < 1e-12, "{shape:?} {relu:?}: forward");
            let ga = (&ya * &r)?.sum_all()?.backward()?;
            let gb = (&yb * &r)?.sum_all()?.backward()?;
            assert!(
                diff(
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap()
                ) < 1e-10,
                "{shape:?} {relu:?}: dx"
            );
            for (p, q) in [(&a.weight, &b.weight), (&a.bias, &b.bias)] {
                assert!(
                    diff(ga.get(p).unwrap(), gb.get(q).unwrap()) < 1e-10,
                    "{shape:?} {relu:?}: dγ/dβ"
                );
            }
            let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
            for name in ["running_mean", "running_var"] {
                assert!(
                    diff(da[name].as_tensor(), db[name].as_tensor()) < 1e-12,
                    "{shape:?} {name}"
                );
            }
        }
        Ok(())
    }

    /// The fused BatchNorm + residual + ReLU against the composition it replaces (the
    /// BatchNorm, candle's addition, then PyTorch's ReLU: the sum times its mask `sum > 0`, so
    /// no gradient at zero): output, gradients of x, the residual, γ and β, and the running
    /// statistics, in f64 and f32. A quarter of the residual cancels the normalised value
    /// exactly, to put pre-activations at zero, where the ReLU's gradient is decided.
    #[test]
    fn fused_add_relu_matches_composition() -> Result<()> {
        let shapes = [[3usize, 5, 7, 6], [2, 4, 1, 1], [4, 3, 5, 7]];
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            for shape in shapes {
                let case = format!("{dtype:?} {shape:?}");
                let x = Var::from_tensor(&(ramp(&shape, 1) * 2.0)?.to_dtype(dtype)?)?;
                // The normalised values, from a third BatchNorm with the same parameters.
                let (_, probe) = seeded(shape[1], dtype);
                let normalised = probe.forward_t(x.as_tensor(), true)?.flatten_all()?;
                let normalised = normalised.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let base = ramp(&shape, 2).flatten_all()?.to_vec1::<f64>()?;
                let residual: Vec<f64> = base
                    .iter()
                    .zip(&normalised)
                    .enumerate()
                    .map(|(i, (r, n))| if i % 4 == 0 { -n } else { *r })
                    .collect();
                let r = Var::from_tensor(
                    &Tensor::from_vec(residual, &shape[..], &Device::Cpu)?.to_dtype(dtype)?,
                )?;
                let weights = ramp(&shape, 3).to_dtype(dtype)?;

                let (va, a) = seeded(shape[1], dtype);
                let (vb, b) = seeded(shape[1], dtype);
                let ya = a.forward_add_relu_t(x.as_tensor(), r.as_tensor(), true)?;
                let sum = (b.forward_t(x.as_tensor(), true)? + r.as_tensor())?;
                let yb = (&sum * sum.gt(0.0)?.to_dtype(dtype)?)?;

                let count = |t: Tensor| -> Result<f64> {
                    t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()
                };
                let zeros = count(sum.eq(0.0)?)?;
                let positive = count(sum.gt(0.0)?)?;
                assert!(zeros > 0.0, "{case}: no pre-activation is zero");
                assert!(positive > zeros, "{case}: too few positive pre-activations");
                assert!(
                    positive + zeros < sum.elem_count() as f64,
                    "{case}: no negative pre-activation"
                );
                assert!(diff(&ya, &yb) <= tol, "{case}: forward");
                assert_eq!(diff(&ya, &sum.relu()?), 0.0, "{case}: forward against relu");

                let ga = (&ya * &weights)?.sum_all()?.backward()?;
                let gb = (&yb * &weights)?.sum_all()?.backward()?;
                let pairs = [
                    ("dx", x.as_tensor(), x.as_tensor()),
                    ("dresidual", r.as_tensor(), r.as_tensor()),
                    ("dγ", &a.weight, &b.weight),
                    ("dβ", &a.bias, &b.bias),
                ];
                for (what, p, q) in pairs {
                    let (p, q) = (ga.get(p).unwrap(), gb.get(q).unwrap());
                    assert!(diff(p, q) <= tol * 10.0, "{case}: {what}");
                }
                let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
                for name in ["running_mean", "running_var"] {
                    assert!(
                        diff(da[name].as_tensor(), db[name].as_tensor()) <= tol,
                        "{case}: {name}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Eval mode: the one-pass kernel (detached inputs) against candle's composition, with and
    /// without ReLU and residual, in f64 and f32; with a tracked input it falls back to the
    /// composition, which backpropagates, and no eval forward records a graph through the
    /// running statistics.
    #[test]
    fn eval_kernel_matches_composition() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for shape in [[3usize, 5, 7, 6], [2, 4, 1, 1]] {
                let (_vm, bn) = seeded(shape[1], dtype);
                let x = (ramp(&shape, 3) * 2.0)?.to_dtype(dtype)?;
                let r = ramp(&shape, 4).to_dtype(dtype)?;
                let mean = bn
                    .running_mean
                    .as_tensor()
                    .detach()
                    .reshape((1, (), 1, 1))?;
                let var = bn.running_var.as_tensor().detach().reshape((1, (), 1, 1))?;
                let (g, b) = (
                    bn.weight.detach().reshape((1, (), 1, 1))?,
                    bn.bias.detach().reshape((1, (), 1, 1))?,
                );
                let norm = x
                    .broadcast_sub(&mean)?
                    .broadcast_div(&(var + 1e-5)?.sqrt()?)?
                    .broadcast_mul(&g)?
                    .broadcast_add(&b)?;
                // The VarMap's γ and β are variables: use detached copies for the kernel.
                let plain = BatchNorm2d {
                    weight: bn.weight.detach(),
                    bias: bn.bias.detach(),
                    ..bn.clone()
                };
                assert!(plain.eval_fused(&[&x]));
                let cases = [
                    (plain.forward_t(&x, false)?, norm.clone()),
                    (plain.forward_relu_t(&x, false)?, norm.relu()?),
                    (
                        plain.forward_relu6_t(&x, false)?,
                        norm.relu()?.minimum(6.0)?,
                    ),
                    (
                        plain.forward_add_relu_t(&x, &r, false)?,
                        (&norm + &r)?.relu()?,
                    ),
                ];
                for (i, (got, want)) in cases.iter().enumerate() {
                    assert!(!got.track_op(), "case {i}: records a graph");
                    assert!(diff(got, want) < tol, "{dtype:?} {shape:?} case {i}");
                }
                // γ tracked: the composition, which has a gradient.
                assert!(!bn.eval_fused(&[&x]));
                let y = bn.forward_add_relu_t(&x, &r, false)?;
                assert!(diff(&y, &cases[3].1) < tol);
                assert!(y.sum_all()?.backward()?.get(&bn.weight).is_some());
            }
        }
        Ok(())
    }
}
