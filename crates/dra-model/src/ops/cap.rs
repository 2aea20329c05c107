//! `min(x, 6)` with PyTorch's ReLU6 gradient (passed where x < 6): MobileNetV2's cap after
//! BatchNorm's fused ReLU. One pass each way; candle's `minimum` builds comparison masks and
//! selections in its backward, each a fresh tensor (their page faults were a large share of
//! MobileNetV2's training time).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

use crate::ops::cpu::{dispatch, par_written, slice};

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// The ReLU6 cap.
const CAP: f64 = 6.0;

/// `min(x, 6)` of a CPU f32/f64 tensor, its gradient passed where `x < 6` (NaN propagates).
pub(crate) fn cap6(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Cap)
}

struct Cap;

impl CustomOp1 for Cap {
    fn name(&self) -> &'static str {
        "dra-cap6"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, self.name(), T => {
            let x = slice::<T>(s, l, self.name())?;
            let cap = T::from_f64(CAP);
            let fill = |i: usize, out: &mut [MaybeUninit<T>]| {
                let x = &x[i * CHUNK..i * CHUNK + out.len()];
                for (o, &v) in out.iter_mut().zip(x) {
                    o.write(if v > cap { cap } else { v });
                }
            };
            // SAFETY: every chunk is written whole (`x` is cut to its length).
            let y = unsafe { par_written(x.len(), CHUNK, fill) };
            Ok((T::to_cpu_storage_owned(y), l.shape().clone()))
        })
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &CapGrad)?))
    }
}

/// `(x, dy) → dy` where `x < 6`, 0 elsewhere.
struct CapGrad;

impl CustomOp2 for CapGrad {
    fn name(&self) -> &'static str {
        "dra-cap6-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => {
            let (x, dy) = (slice::<T>(xs, xl, self.name())?, slice::<T>(ds, dl, self.name())?);
            if x.len() != dy.len() {
                candle_core::bail!("{}: gradient {:?} for input {:?}", self.name(), dl.shape(), xl.shape());
            }
            let cap = T::from_f64(CAP);
            let fill = |i: usize, out: &mut [MaybeUninit<T>]| {
                let r = i * CHUNK..i * CHUNK + out.len();
                for ((o, &v), &d) in out.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
                    o.write(if v < cap { d } else { T::from_f64(0.0) });
                }
            };
            // SAFETY: every chunk is written whole.
            let dx = unsafe { par_written(x.len(), CHUNK, fill) };
            Ok((T::to_cpu_storage_owned(dx), xl.shape().clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn caps_at_six_with_relu6s_gradient() -> Result<()> {
        // Across chunk boundaries, with values below, at and above the cap.
        let n = 3 * CHUNK + 17;
        let values: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.125).collect();
        let x = Var::from_vec(values.clone(), n, &Device::Cpu)?;
        let y = cap6(x.as_tensor())?;
        let want: Vec<f32> = values.iter().map(|v| v.min(6.0)).collect();
        assert_eq!(y.to_vec1::<f32>()?, want);
        let r: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32).collect();
        let r = Tensor::from_vec(r, n, &Device::Cpu)?;
        let g = (&y * &r)?.sum_all()?.backward()?;
        let dx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>()?;
        let r = r.to_vec1::<f32>()?;
        for i in 0..n {
            // PyTorch's ReLU6 (hardtanh) passes the gradient strictly below the cap.
            let want = if values[i] < 6.0 { r[i] } else { 0.0 };
            assert_eq!(dx[i], want, "{i}: x = {}", values[i]);
        }
        // NaN propagates; f64 too.
        let y = cap6(&Tensor::new(&[f64::NAN, 7.0, -1.0], &Device::Cpu)?)?.to_vec1::<f64>()?;
        assert!(y[0].is_nan() && y[1] == 6.0 && y[2] == -1.0);
        Ok(())
    }
}
