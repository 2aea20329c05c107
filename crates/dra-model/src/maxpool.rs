//! Max pooling with padding and a backward pass, which candle's stock `max_pool2d` lacks (it
//! has no padding and no gradient when kernel ≠ stride, as in ResNet's 3×3 / stride-2 stem).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;

use crate::cpu::{dispatch, slice};

/// The element types of the CPU kernel (f64 serves the double-precision parity tests).
trait Element: WithDType + PartialOrd + std::ops::AddAssign + Send + Sync {}
impl Element for f32 {}
impl Element for f64 {}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// For each output cell of one plane, the flat input index of its maximum. Padding counts
    /// as −∞ and a tie goes to the first maximum in scan order, as in PyTorch.
    fn argmax_plane<T: Element>(&self, plane: &[T], h: usize, w: usize, out: &mut [usize]) {
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let (k, s, p) = (
            self.kernel as isize,
            self.stride as isize,
            self.padding as isize,
        );
        for oy in 0..oh {
            let y0 = oy as isize * s - p;
            // The window's rows inside the image, found once per output row.
            let (ky0, ky1) = ((-y0).max(0), k.min(h as isize - y0));
            for ox in 0..ow {
                let x0 = ox as isize * s - p;
                let (kx0, kx1) = ((-x0).max(0), k.min(w as isize - x0));
                let first = ((y0 + ky0) * w as isize + x0 + kx0) as usize;
                let (mut best, mut best_idx) = (plane[first], first);
                for ky in ky0..ky1 {
                    let row = (y0 + ky) * w as isize + x0;
                    for kx in kx0..kx1 {
                        let idx = (row + kx) as usize;
                        let v = plane[idx];
                        // PyTorch's rule: strictly greater (the first maximum wins) or NaN.
                        #[allow(clippy::eq_op)]
                        if v > best || v != v {
                            best = v;
                            best_idx = idx;
                        }
                    }
                }
                out[oy * ow + ox] = best_idx;
            }
        }
    }
}

impl CustomOp1 for Geometry {
    fn name(&self) -> &'static str {
        "max-pool2d-padded"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(storage, self.name(), T => self.forward::<T>(storage, layout))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &Backward(*self))?;
        Ok(Some(grad))
    }
}

impl Geometry {
    fn forward<T: Element>(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(storage, layout, "max-pool2d-padded")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let mut out = vec![T::zero(); b * c * oh * ow];
        out.par_chunks_exact_mut(oh * ow)
            .zip(x.par_chunks_exact(h * w))
            .for_each_init(
                || vec![0usize; oh * ow],
                |idx, (dst, plane)| {
                    self.argmax_plane(plane, h, w, idx);
                    for (d, &i) in dst.iter_mut().zip(idx.iter()) {
                        *d = plane[i];
                    }
                },
            );
        Ok((T::to_cpu_storage_owned(out), Shape::from((b, c, oh, ow))))
    }
}

/// The gradient of the pooling: each output gradient goes to the input cell that was the max.
struct Backward(Geometry);

impl CustomOp2 for Backward {
    fn name(&self) -> &'static str {
        "max-pool2d-padded-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(s1, self.name(), T => self.run::<T>(s1, l1, s2, l2))
    }
}

impl Backward {
    fn run<T: Element>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(s1, l1, "max-pool2d-padded-bwd")?;
        let g = slice::<T>(s2, l2, "max-pool2d-padded-bwd")?;
        let (b, c, h, w) = l1.shape().dims4()?;
        let (oh, ow) = (self.0.out_size(h), self.0.out_size(w));
        let mut dx = vec![T::zero(); b * c * h * w];
        dx.par_chunks_exact_mut(h * w)
            .zip(x.par_chunks_exact(h * w).zip(g.par_chunks_exact(oh * ow)))
            .for_each_init(
                || vec![0usize; oh * ow],
                |idx, (dp, (plane, gp))| {
                    self.0.argmax_plane(plane, h, w, idx);
                    for (&i, &gv) in idx.iter().zip(gp) {
                        dp[i] += gv;
                    }
                },
            );
        Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
    }
}

/// `F.max_pool2d(x, kernel, stride, padding)` for NCHW input, differentiable.
///
/// On the CPU (f32 and f64) a dedicated kernel routes each gradient to the first maximum, as PyTorch does.
/// On other devices it is composed of stock ops (padding with −∞ and an element-wise maximum
/// over the kernel's shifted views), whose gradient splits a tie between the tied inputs.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let geometry = Geometry {
        kernel,
        stride,
        padding,
    };
    if crate::custom_kernels()
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
    {
        return x.contiguous()?.apply_op1(geometry);
    }
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = (geometry.out_size(h), geometry.out_size(w));
    let x = if padding > 0 {
        let fill = f32::NEG_INFINITY;
        let pad = |t: &Tensor, dim: usize, n: usize| -> Result<Tensor> {
            let mut shape = t.dims().to_vec();
            shape[dim] = n;
            let edge = Tensor::full(fill, shape, t.device())?.to_dtype(t.dtype())?;
            Tensor::cat(&[&edge, t, &edge], dim)
        };
        pad(&pad(x, 2, padding)?, 3, padding)?
    } else {
        x.clone()
    };
    let mut out: Option<Tensor> = None;
    for ky in 0..kernel {
        for kx in 0..kernel {
            let rows = x.narrow(2, ky, (oh - 1) * stride + 1)?;
            let view = rows.narrow(3, kx, (ow - 1) * stride + 1)?;
            let view = strided(&view, stride)?;
            out = Some(match out {
                None => view,
                Some(acc) => acc.maximum(&view)?,
            });
        }
    }
    Ok(out.expect("kernel is at least 1"))
}

/// Keeps every `stride`-th row and column (index 0, stride, 2·stride, …).
pub(crate) fn strided(x: &Tensor, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    let rows: Vec<u32> = (0..h).step_by(stride).map(|i| i as u32).collect();
    let cols: Vec<u32> = (0..w).step_by(stride).map(|i| i as u32).collect();
    let rows = Tensor::new(rows.as_slice(), x.device())?;
    let cols = Tensor::new(cols.as_slice(), x.device())?;
    x.contiguous()?
        .index_select(&rows, 2)?
        .contiguous()?
        .index_select(&cols, 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The stock-ops path, forced on the CPU, as the reference for the kernel.
    fn reference(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
        let g = Geometry {
            kernel: k,
            stride: s,
            padding: p,
        };
        let (_, _, h, w) = x.dims4()?;
        let mut out = vec![];
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let (oh, ow) = (g.out_size(h), g.out_size(w));
        let mut idx = vec![0; oh * ow];
        for plane in xs.chunks(h * w) {
            g.argmax_plane(plane, h, w, &mut idx);
            out.extend(idx.iter().map(|&i| plane[i]));
        }
        let (b, c, _, _) = x.dims4()?;
        Tensor::from_vec(out, (b, c, oh, ow), x.device())
    }

    #[test]
    fn forward_matches_brute_force_on_odd_shapes() -> Result<()> {
        let dev = Device::Cpu;
        for (h, w) in [(7, 5), (8, 8), (11, 4), (3, 3)] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &dev)?;
            let fast = max_pool2d(&x, 3, 2, 1)?;
            let slow = reference(&x, 3, 2, 1)?;
            assert_eq!(fast.dims(), slow.dims());
            assert_eq!(
                fast.flatten_all()?.to_vec1::<f32>()?,
                slow.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn stock_op_path_agrees_with_kernel() -> Result<()> {
        // Exercise the generic composition on the CPU through f16, which the kernel lacks.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 2, 9, 7), &dev)?
            .to_dtype(DType::F16)?
            .to_dtype(DType::F32)?;
        let fast = max_pool2d(&x, 3, 2, 1)?;
        let generic = max_pool2d(&x.to_dtype(DType::F16)?, 3, 2, 1)?.to_dtype(DType::F32)?;
        let diff = (fast - generic)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn gradient_goes_to_the_first_maximum() -> Result<()> {
        let dev = Device::Cpu;
        // A 4×4 plane of ones: every window ties; the first cell in scan order takes it all.
        let x = Var::from_tensor(&Tensor::ones((1, 1, 4, 4), DType::F32, &dev)?)?;
        let y = max_pool2d(x.as_tensor(), 3, 2, 1)?;
        assert_eq!(y.dims(), [1, 1, 2, 2]);
        let grads = y.sum_all()?.backward()?;
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): first valid cells (0,0), (0,1), (1,0), (1,1).
        let mut expected = vec![0f32; 16];
        for i in [0, 1, 4, 5] {
            expected[i] = 1.0;
        }
        assert_eq!(g, expected);
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let dev = Device::Cpu;
        // Distinct values 0.1 apart, so that no ±ε probe changes which cell is the maximum.
        let values: Vec<f32> = (0..60).map(|i| ((i * 37) % 60) as f32 * 0.1).collect();
        let x0 = Tensor::from_vec(values, (1, 2, 6, 5), &dev)?;
        let wts = Tensor::arange(1f32, 19., &dev)?.reshape((1, 2, 3, 3))?;
        let x = Var::from_tensor(&x0)?;
        let loss = (max_pool2d(x.as_tensor(), 3, 2, 1)? * &wts)?.sum_all()?;
        let g = loss
            .backward()?
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let base = x0.flatten_all()?.to_vec1::<f32>()?;
        let f = |v: &[f32]| -> Result<f32> {
            let t = Tensor::from_slice(v, (1, 2, 6, 5), &dev)?;
            (max_pool2d(&t, 3, 2, 1)? * &wts)?
                .sum_all()?
                .to_scalar::<f32>()
        };
        for i in 0..base.len() {
            let mut p = base.clone();
            p[i] += 1e-2;
            let mut m = base.clone();
            m[i] -= 1e-2;
            let numeric = (f(&p)? - f(&m)?) / 2e-2;
            assert!(
                (numeric - g[i]).abs() < 1e-2 * g[i].abs().max(1.0),
                "cell {i}: {numeric} vs {}",
                g[i]
            );
        }
        Ok(())
    }
}
