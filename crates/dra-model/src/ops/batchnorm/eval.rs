//! Eval-mode BatchNorm in one pass, from the running statistics.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};

use super::{affine, nchw, Act};
use crate::ops::cpu::{dispatch, multiversion, par_written, slice};
use crate::ops::Element;

/// Eval-mode BatchNorm in one pass: y = x·scale + shift per channel from the running
/// statistics, then `+ residual` (as [`CustomOp3`]) and the activation. It has no backward:
/// it serves only forwards that record no graph (scoring), where candle's ops would take up
/// to five passes and as many buffers of the activation's size.
pub(super) struct EvalApply {
    pub(super) eps: f64,
    pub(super) act: Act,
}

impl EvalApply {
    /// `x` and the optional residual, with `params = [mean; var; γ; β]` (`4 × C`).
    fn run<T: Element>(
        &self,
        x: &[T],
        xl: &Layout,
        params: &[T],
        residual: Option<&[T]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, plane) = nchw(xl)?;
        if params.len() != 4 * c {
            candle_core::bail!("dra-bn-eval: {} parameters for {c} channels", params.len());
        }
        let coefficients: Vec<(T, T)> = (0..c)
            .map(|ch| {
                let p = |i: usize| params[i * c + ch].to_f64();
                let (scale, shift) = affine(p(0), p(1), p(2), p(3), self.eps);
                (T::from_f64(scale), T::from_f64(shift))
            })
            .collect();
        let act = self.act;
        let fill = |i: usize, yp: &mut [MaybeUninit<T>]| {
            let (scale, shift) = coefficients[i % c];
            let r = i * plane..(i + 1) * plane;
            let res = residual.map(|v| &v[r.clone()]);
            eval_plane(yp, &x[r], res, scale, shift, act);
        };
        // SAFETY: `eval_plane` writes each whole plane.
        let y = unsafe { par_written(x.len(), plane, fill) };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }
}

multiversion! {
/// One plane of [`EvalApply`]. The activations are PyTorch's (NaN kept).
fn eval_plane<T: Element>(
    y: &mut [MaybeUninit<T>],
    x: &[T],
    residual: Option<&[T]>,
    scale: T,
    shift: T,
    act: Act,
) {
    assert_eq!(y.len(), x.len());
    let relu_of = |v: T| act.apply(v);
    match residual {
        Some(r) => {
            assert_eq!(r.len(), x.len());
            for ((y, &x), &r) in y.iter_mut().zip(x).zip(r) {
                y.write(relu_of(x * scale + shift + r));
            }
        }
        None => {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(relu_of(x * scale + shift));
            }
        }
    }
}
}

impl CustomOp2 for EvalApply {
    fn name(&self) -> &'static str {
        "dra-bn-eval"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, "dra-bn-eval", T => {
            let x = slice::<T>(xs, xl, "dra-bn-eval")?;
            self.run(x, xl, slice::<T>(ps, pl, "dra-bn-eval")?, None)
        })
    }
}

impl CustomOp3 for EvalApply {
    fn name(&self) -> &'static str {
        "dra-bn-eval-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if xl.shape() != rl.shape() {
            candle_core::bail!(
                "dra-bn-eval-add: residual {:?} does not match the input {:?}",
                rl.shape(),
                xl.shape()
            );
        }
        dispatch!(xs, "dra-bn-eval-add", T => {
            let x = slice::<T>(xs, xl, "dra-bn-eval-add")?;
            let r = slice::<T>(rs, rl, "dra-bn-eval-add")?;
            self.run(x, xl, slice::<T>(ps, pl, "dra-bn-eval-add")?, Some(r))
        })
    }
}
