//! Max pooling with padding and a backward pass, which candle's stock `max_pool2d` lacks (it
//! has no padding and no gradient when kernel ≠ stride, as in ResNet's 3×3 / stride-2 stem):
//! the layer, and its kernel in `kernel`.

mod kernel;

pub(crate) use kernel::Geometry;

use candle_core::{DType, Module, Result, Tensor};

use crate::onnx::{Attr, Graph};
use crate::ops::Kernels;

/// PyTorch's `MaxPool2d(kernel, stride, padding)` for NCHW input, differentiable.
///
/// With this crate's kernels, on the CPU (f32 and f64), a dedicated kernel routes each gradient
/// to the first maximum, as PyTorch does. Elsewhere it is composed of stock ops (padding with
/// −∞ and an element-wise maximum over the kernel's shifted views), whose gradient splits a tie
/// between the tied inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    kernel: usize,
    stride: usize,
    padding: usize,
    kernels: Kernels,
}

impl MaxPool2d {
    /// A `kernel × kernel` pooling with `stride` and `padding` (counted as −∞), run by
    /// `kernels`. The geometry is checked against each input, as PyTorch checks it.
    pub fn new(kernel: usize, stride: usize, padding: usize, kernels: Kernels) -> Self {
        Self {
            kernel,
            stride,
            padding,
            kernels,
        }
    }

    /// The kernel's geometry for an `h × w` input, or an error where PyTorch gives one.
    pub(crate) fn geometry(&self, (h, w): (usize, usize)) -> Result<Geometry> {
        Geometry::new(self.kernel, self.stride, self.padding, (h, w))
    }

    /// The pooling as an ONNX `MaxPool` on the value `x` (its padding, as PyTorch's, never
    /// chosen); returns the output's name.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str) -> String {
        let (k, s, p) = (self.kernel as i64, self.stride as i64, self.padding as i64);
        g.node(
            "MaxPool",
            name,
            &[x],
            &[
                Attr::Ints("kernel_shape", &[k, k]),
                Attr::Ints("strides", &[s, s]),
                Attr::Ints("pads", &[p, p, p, p]),
            ],
        )
    }

    /// Whether the CPU kernel serves `x`.
    pub(crate) fn custom(&self, x: &Tensor) -> bool {
        self.kernels.custom() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (kernel, stride, padding) = (self.kernel, self.stride, self.padding);
        let (_, _, h, w) = x.dims4()?;
        let geometry = self.geometry((h, w))?;
        if self.custom(x) {
            return x.contiguous()?.apply_op1(geometry);
        }
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

    /// The pooling with this crate's kernels.
    fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        MaxPool2d::new(kernel, stride, padding, Kernels::default()).forward(x)
    }

    #[test]
    fn rejects_geometries_pytorch_rejects() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        for (k, s, p) in [(0, 1, 0), (3, 0, 1), (3, 2, 2), (7, 1, 1)] {
            assert!(
                max_pool2d(&x, k, s, p).is_err(),
                "kernel {k} stride {s} padding {p}"
            );
        }
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
