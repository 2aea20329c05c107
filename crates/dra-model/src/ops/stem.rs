//! ResNet's stem in training mode as one op: the convolution of the image, BatchNorm with
//! batch statistics, ReLU and the max-pool.
//!
//! The stem's maps are the network's largest (64 channels at half the image's side: 681 MB for
//! the 53 images of a 448-px DRA step). As four candle ops, the graph kept two of them (the
//! convolution's and the ReLU's outputs) and the backward pass held up to four more at once:
//! the pooling's gradient and the normalisation's, each stored by candle's backward as a zeroed
//! tensor plus a sum. As one op, the graph keeps the convolution's output only (the ReLU's is
//! recomputed plane by plane where the pooling needs it), and the backward pass builds a single
//! map-sized buffer: the pooling's gradient, turned in place into the normalisation's, from
//! which the kernel's gradient follows. The image gets no gradient.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::batchnorm::{self, BatchNorm2d};
use crate::ops::conv::{Conv, Conv2d};
use crate::ops::cpu::{as_uninit, dispatch, slice, zeroed};
use crate::ops::maxpool::{self, MaxPool2d};
use crate::ops::Element;

/// `pool(relu(bn(conv(x))))` in training mode, or `None` where the fused op does not serve
/// (stock kernels, another device or dtype, a bias, an input that wants a gradient): the
/// caller then composes the layers. The running statistics are updated as the BatchNorm's own
/// forward would.
pub(crate) fn forward_train(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    pool: &MaxPool2d,
    x: &Tensor,
) -> Result<Option<Tensor>> {
    let Some((weight, config)) = conv.unbiased_parts() else {
        return Ok(None);
    };
    if !conv.fast_path(x) || !bn.fused(x) || !pool.custom(x) || x.track_op() {
        return Ok(None);
    }
    let (gb, eps) = bn.affine_params()?;
    let saved = Arc::new(Mutex::new(None));
    let op = Stem {
        conv: Conv::without_backward(config, conv.kernels()),
        pool: *pool,
        eps,
        saved: Arc::clone(&saved),
    };
    let out = x.contiguous()?.apply_op3(&weight.contiguous()?, &gb, op)?;
    let saved = lock(&saved)
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("dra-stem: the forward saved nothing".into()))?;
    let (n, _, h, w) = saved.y.dims4()?;
    bn.update_running(&saved.params.narrow(0, 0, 2)?, n * h * w)?;
    Ok(Some(out))
}

/// What the forward keeps for the backward: the convolution's output `y` and
/// `params = [mean; var; γ; β]` (`4 × C`), the batch statistics and the affine parameters it
/// normalised with.
#[derive(Clone)]
struct Saved {
    y: Tensor,
    params: Tensor,
}

fn lock(saved: &Mutex<Option<Saved>>) -> std::sync::MutexGuard<'_, Option<Saved>> {
    saved.lock().unwrap_or_else(|e| e.into_inner())
}

/// The op: `(image, kernel, [γ; β]) → pooled`.
struct Stem {
    conv: Conv,
    pool: MaxPool2d,
    eps: f64,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl Stem {
    fn geometry(&self, (h, w): (usize, usize)) -> Result<maxpool::Geometry> {
        self.pool.geometry((h, w))
    }

    fn forward<T: Element>(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        (gs, gl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = "dra-stem";
        let (x, w, gb) = (
            slice::<T>(xs, xl, name)?,
            slice::<T>(ws, wl, name)?,
            slice::<T>(gs, gl, name)?,
        );
        let (y, shape) = self.conv.output(x, xl.shape(), w, wl.shape())?;
        let (n, c, h, wd) = shape.dims4()?;
        if gb.len() != 2 * c {
            candle_core::bail!("{name}: {} affine parameters for {c} channels", gb.len());
        }
        let pool = self.geometry((h, wd))?;
        let (oh, ow) = (pool.out_size(h), pool.out_size(wd));
        let mut params = batchnorm::batch_stats(&y, (n, c, h * wd));
        params.extend_from_slice(gb);
        let maps = maps(&params, c, self.eps);
        let mut out = zeroed::<T>(n * c * oh * ow);
        out.par_chunks_exact_mut(oh * ow)
            .zip(y.par_chunks_exact(h * wd))
            .enumerate()
            .for_each_init(
                || (vec![T::zero(); h * wd], vec![T::zero(); h * ow]),
                |(act, rows), (i, (dst, plane))| {
                    // SAFETY: `apply_plane` writes initialised values only.
                    batchnorm::apply_plane(
                        unsafe { as_uninit(act) },
                        plane,
                        maps[i % c],
                        batchnorm::Act::Relu,
                    );
                    pool.pool_plane(act, (h, wd), rows, dst);
                },
            );
        *lock(&self.saved) = Some(Saved {
            y: Tensor::from_vec(y, shape, &Device::Cpu)?,
            params: Tensor::from_vec(params, (4, c), &Device::Cpu)?,
        });
        Ok((T::to_cpu_storage_owned(out), Shape::from((n, c, oh, ow))))
    }
}

/// Each channel's affine map of the normalisation, rounded to `T` as BatchNorm's own kernels
/// round it, from `[mean; var; γ; β]`: the ReLU outputs recomputed from them are the
/// forward's bit for bit.
fn maps<T: Element>(params: &[T], c: usize, eps: f64) -> Vec<(T, T)> {
    (0..c)
        .map(|ch| {
            let p = |i: usize| params[i * c + ch].to_f64();
            batchnorm::affine_t(p(0), p(1), p(2), p(3), eps)
        })
        .collect()
}

impl CustomOp3 for Stem {
    fn name(&self) -> &'static str {
        "dra-stem"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.forward::<T>((xs, xl), (ws, wl), (gs, gl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        res: &Tensor,
        dres: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = lock(&self.saved)
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("dra-stem: backward before forward".into()))?;
        let (_, c, _, _) = saved.y.dims4()?;
        // Exact: the parameters are f32 or f64 values.
        let params = saved
            .params
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let packed = saved.y.apply_op3_no_bwd(
            &res.contiguous()?,
            &dres.contiguous()?,
            &Gradient {
                pool: self.geometry((saved.y.dim(2)?, saved.y.dim(3)?))?,
                eps: self.eps,
                params,
            },
        )?;
        let numel = saved.y.elem_count();
        let dy = packed.narrow(0, 0, numel)?.reshape(saved.y.shape())?;
        let (_, _, kh, kw) = w.dims4()?;
        // A frozen kernel (a tensor, not a variable) needs no gradient.
        let dw = if w.track_op() {
            Some(self.conv.weight_grad(x, &dy, kh, kw)?)
        } else {
            None
        };
        let dgb = packed.narrow(0, numel, 2 * c)?.reshape((2, c))?;
        Ok((None, dw, gb.track_op().then_some(dgb)))
    }
}

/// The stem's backward up to the convolution's output: `[dy (flattened); dγ; dβ]` from the
/// convolution's output `y`, the pooled output and its gradient. Plane by plane it recomputes
/// the ReLU's output (bit for bit the forward's) and routes each pooled gradient to the cell
/// its window selected, the first equal to the pooled value; the normalisation's gradient (with
/// the ReLU's mask) then overwrites that buffer in place.
struct Gradient {
    pool: maxpool::Geometry,
    eps: f64,
    /// `[mean; var; γ; β]` of the forward (a custom op has three operands, taken by the map,
    /// the pooled output and its gradient).
    params: Vec<f64>,
}

impl CustomOp3 for Gradient {
    fn name(&self) -> &'static str {
        "dra-stem-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(ys, self.name(), T => self.run::<T>((ys, yl), (ps, pl), (gs, gl)))
    }
}

impl Gradient {
    fn run<T: Element>(
        &self,
        (ys, yl): (&CpuStorage, &Layout),
        (ps, pl): (&CpuStorage, &Layout),
        (gs, gl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (y, pooled, g) = (
            slice::<T>(ys, yl, name)?,
            slice::<T>(ps, pl, name)?,
            slice::<T>(gs, gl, name)?,
        );
        let (n, c, h, w) = yl.shape().dims4()?;
        let (oh, ow) = (self.pool.out_size(h), self.pool.out_size(w));
        if gl.shape().dims() != [n, c, oh, ow] || pl.shape() != gl.shape() {
            candle_core::bail!(
                "{name}: pooled output {:?} and gradient {:?} do not fit the map {:?}",
                pl.shape(),
                gl.shape(),
                yl.shape()
            );
        }
        if self.params.len() != 4 * c {
            candle_core::bail!("{name}: {} parameters for {c} channels", self.params.len());
        }
        let params: Vec<T> = self.params.iter().map(|&v| T::from_f64(v)).collect();
        let maps = maps(&params, c, self.eps);
        let mut out = zeroed::<T>(y.len() + 2 * c);
        out[..y.len()]
            .par_chunks_exact_mut(h * w)
            .zip(y.par_chunks_exact(h * w))
            .zip(
                pooled
                    .par_chunks_exact(oh * ow)
                    .zip(g.par_chunks_exact(oh * ow)),
            )
            .enumerate()
            .for_each_init(
                || vec![T::zero(); h * w],
                |act, (i, ((dp, plane), (pp, gp)))| {
                    // SAFETY: `apply_plane` writes initialised values only.
                    batchnorm::apply_plane(
                        unsafe { as_uninit(act) },
                        plane,
                        maps[i % c],
                        batchnorm::Act::Relu,
                    );
                    self.pool.unpool_plane(act, (h, w), pp, gp, dp);
                },
            );
        batchnorm::gradient_in_place(
            y,
            &params,
            (n, c, h * w),
            (self.eps, batchnorm::Act::Relu),
            &mut out,
        );
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Kernels;
    use crate::testutil::{max_diff, ramp};
    use candle_core::{DType, Module, Var};
    use candle_nn::{Conv2dConfig, VarBuilder, VarMap};

    /// The max-pool `(kernel, stride, padding)` with this crate's kernels.
    fn pooling((kernel, stride, padding): (usize, usize, usize)) -> MaxPool2d {
        MaxPool2d::new(kernel, stride, padding, Kernels::default())
    }

    /// ResNet's stem convolution: 7×7, stride 2, padding 3.
    fn resnet_stem() -> Conv2dConfig {
        Conv2dConfig {
            stride: 2,
            padding: 3,
            ..Default::default()
        }
    }

    /// A stem (convolution without bias + BatchNorm) with distinct non-trivial values.
    fn seeded(
        c: usize,
        o: usize,
        k: usize,
        config: Conv2dConfig,
        dtype: DType,
    ) -> (VarMap, Conv2d, BatchNorm2d) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let conv = Conv2d::new(c, o, k, config, false, Kernels::default(), vb.pp("conv"))
            .unwrap()
            .without_input_grad();
        let bn = BatchNorm2d::new(o, Kernels::default(), vb.pp("bn")).unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let shape = var.shape().dims().to_vec();
            let v = (ramp(&shape, name.len() as u32) * 0.3).unwrap();
            let v = if name.ends_with("running_var")
                || name.ends_with("weight") && name.starts_with("bn")
            {
                (v + 1.0).unwrap()
            } else {
                v
            };
            var.set(&v.to_dtype(dtype).unwrap()).unwrap();
        }
        (varmap, conv, bn)
    }

    /// The gradients of the kernel, γ and β (the image gets none) against central finite
    /// differences in f64, at strides 1 and 2, with γ < 0 on one channel.
    #[test]
    fn gradients_match_finite_differences() {
        use crate::testutil::assert_gradients_match_finite_differences;
        for (n, c, h, w, o, k, stride, padding, pool) in [
            (2, 3, 13, 11, 4, 7, 2, 3, (3, 2, 1)),
            (2, 2, 9, 10, 3, 3, 1, 1, (3, 2, 1)),
        ] {
            let case = format!("{n}×{c}×{h}×{w} → {o}, k {k}, stride {stride}");
            let config = Conv2dConfig {
                stride,
                padding,
                ..Default::default()
            };
            let x = (ramp(&[n, c, h, w], 7) * 2.0).unwrap();
            let gamma = ((ramp(&[o], 3) * 0.3).unwrap() + 1.0).unwrap();
            let gamma =
                (gamma * Tensor::new(&[-1.0, 1.0, 1.0, 1.0][..o], &Device::Cpu).unwrap()).unwrap();
            let inputs = [
                ramp(&[o, c, k, k], 2),
                gamma,
                (ramp(&[o], 4) * 0.3).unwrap(),
            ];
            let r = {
                let (oh, ow) = (
                    (h + 2 * padding - k) / stride + 1,
                    (w + 2 * padding - k) / stride + 1,
                );
                let g = pooling(pool).geometry((oh, ow)).unwrap();
                ramp(&[n, o, g.out_size(oh), g.out_size(ow)], 5)
            };
            assert_gradients_match_finite_differences(&case, &inputs, 2, |t| {
                let mut tensors = crate::testutil::batchnorm_tensors("bn.", &t[1], &t[2]);
                tensors.insert("conv.weight".into(), t[0].clone());
                let vb = VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
                let conv = Conv2d::new(c, o, k, config, false, Kernels::default(), vb.pp("conv"))?
                    .without_input_grad();
                let bn = BatchNorm2d::new(o, Kernels::default(), vb.pp("bn"))?;
                let y = forward_train(&conv, &bn, &pooling(pool), &x)?.expect("fused path");
                (y * &r)?.sum_all()
            });
        }
    }

    /// The fused stem against the three layers it replaces (this crate's convolution,
    /// BatchNorm + ReLU and max-pool, each tested against candle's stock ops): the output, the
    /// gradients of the kernel, γ and β, and the running statistics, on odd shapes and in f64
    /// and f32. Some channels have γ < 0, so their ReLU keeps the lower half, and ties inside
    /// a window (the ReLU's zeros) decide where a pooled gradient goes.
    #[test]
    fn matches_composition() -> Result<()> {
        // (n, c, h, w, o, k, stride, padding, pool)
        let cases = [
            (2, 3, 13, 11, 5, 7, 2, 3, (3, 2, 1)),
            (3, 2, 9, 10, 4, 3, 1, 1, (3, 2, 1)),
            (1, 4, 8, 8, 3, 5, 2, 2, (2, 2, 0)),
        ];
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 2e-4)] {
            for (n, c, h, w, o, k, stride, padding, pool) in cases {
                let case = format!("{dtype:?} {n}×{c}×{h}×{w} → {o}, k {k}");
                let config = Conv2dConfig {
                    stride,
                    padding,
                    ..Default::default()
                };
                let x = (ramp(&[n, c, h, w], 7) * 2.0)?.to_dtype(dtype)?;
                let (va, conv_a, bn_a) = seeded(c, o, k, config, dtype);
                let (vb, conv_b, bn_b) = seeded(c, o, k, config, dtype);
                // Flip γ's sign on the first channel.
                for vm in [&va, &vb] {
                    let data = vm.data().lock().unwrap();
                    let g = &data["bn.weight"];
                    let mut v = g.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
                    v[0] = -v[0];
                    g.set(&Tensor::new(v, &Device::Cpu)?.to_dtype(dtype)?)?;
                }
                let fused = forward_train(&conv_a, &bn_a, &pooling(pool), &x)?.expect("fused path");
                let activations = bn_b.forward_relu_t(&conv_b.forward(&x)?, true)?;
                let composed = pooling(pool).forward(&activations)?;
                let zeros = activations
                    .eq(0.0)?
                    .to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?;
                let share = zeros / activations.elem_count() as f64;
                assert!(share > 0.2 && share < 0.8, "{case}: ReLU zeros {share}");
                assert!(max_diff(&fused, &composed) <= tol, "{case}: forward");

                let r = ramp(fused.dims(), 5).to_dtype(dtype)?;
                let ga = (&fused * &r)?.sum_all()?.backward()?;
                let gb = (&composed * &r)?.sum_all()?.backward()?;
                let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
                for name in ["conv.weight", "bn.weight", "bn.bias"] {
                    let (p, q): (&Var, &Var) = (&da[name], &db[name]);
                    let (p, q) = (
                        ga.get(p.as_tensor()).unwrap(),
                        gb.get(q.as_tensor()).unwrap(),
                    );
                    let scale = q
                        .abs()?
                        .max_all()?
                        .to_dtype(DType::F64)?
                        .to_scalar::<f64>()?;
                    assert!(max_diff(p, q) <= tol * scale.max(1.0), "{case}: d{name}");
                }
                for name in ["bn.running_mean", "bn.running_var"] {
                    assert!(
                        max_diff(da[name].as_tensor(), db[name].as_tensor()) <= tol,
                        "{case}: {name}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The forward keeps its activations for every backward pass through the graph: a second
    /// one gives the same gradients.
    #[test]
    fn backward_twice() -> Result<()> {
        let (vm, conv, bn) = seeded(3, 4, 7, resnet_stem(), DType::F64);
        let x = ramp(&[2, 3, 11, 9], 3).to_dtype(DType::F64)?;
        let y = forward_train(&conv, &bn, &pooling((3, 2, 1)), &x)?.expect("fused path");
        let loss = (&y * &ramp(y.dims(), 4).to_dtype(DType::F64)?)?.sum_all()?;
        let (first, second) = (loss.backward()?, loss.backward()?);
        for (name, var) in vm.data().lock().unwrap().iter() {
            if let (Some(a), Some(b)) = (first.get(var.as_tensor()), second.get(var.as_tensor())) {
                assert_eq!(max_diff(a, b), 0.0, "{name}");
            }
        }
        assert!(first
            .get(vm.data().lock().unwrap()["conv.weight"].as_tensor())
            .is_some());
        Ok(())
    }

    /// The fused op serves only inputs without a gradient of their own (the image).
    #[test]
    fn declines_tracked_inputs() -> Result<()> {
        let (_vm, conv, bn) = seeded(3, 4, 7, resnet_stem(), DType::F32);
        let x = Var::from_tensor(&ramp(&[1, 3, 9, 9], 1).to_dtype(DType::F32)?)?;
        assert!(forward_train(&conv, &bn, &pooling((3, 2, 1)), x.as_tensor())?.is_none());
        assert!(forward_train(&conv, &bn, &pooling((3, 2, 1)), &x.as_tensor().detach())?.is_some());
        Ok(())
    }
}
