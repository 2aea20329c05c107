//! The fully connected layer, with PyTorch's parameter names, whose products run on the custom
//! kernels' GEMM: so that [`Arithmetic`] decides their rounding as it does the convolutions'
//! (candle's matmul would pick gemm's AVX-512 kernels wherever the CPU has them, `--reproducible`
//! or not).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::onnx::{Attr, Graph};
use crate::ops::cpu::{dispatch, slice};
use crate::ops::gemm::{matmul, Mat, Run};
use crate::ops::{Arithmetic, Element, Kernels};

/// `y = x·Wᵀ + b` on `(batch, in)` inputs, with the tensors `weight` (`out × in`) and `bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    kernels: Kernels,
}

impl Linear {
    /// `in_dim → out_dim`, with a bias when `bias`, its tensors read from `vb` or created as
    /// candle's `linear` creates them (PyTorch's initialisation), run by `kernels`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let inner = if bias {
            candle_nn::linear(in_dim, out_dim, vb)?
        } else {
            candle_nn::linear_no_bias(in_dim, out_dim, vb)?
        };
        Ok(Self {
            weight: inner.weight().clone(),
            bias: inner.bias().cloned(),
            kernels,
        })
    }

    /// The layer as an ONNX `Gemm` (`x · Wᵀ + b`) on the value `x`, its tensors as constants
    /// named from `name`; returns the output's name.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let parameters = g.parameters(name, &self.weight, self.bias.as_ref())?;
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(parameters.iter().map(String::as_str))
            .collect();
        Ok(g.node("Gemm", name, &inputs, &[Attr::Int("transB", 1)]))
    }

    /// The custom kernels are asked for and can run: CPU, f32 or f64, a matrix of inputs.
    fn custom(&self, x: &Tensor) -> bool {
        self.kernels.custom()
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && x.rank() == 2
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.custom(x) {
            let op = Product {
                transpose: (false, true),
                arithmetic: self.kernels.arithmetic(),
            };
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, op)?
        } else {
            candle_nn::Linear::new(self.weight.clone(), None).forward(x)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `op(a) · op(b)` of two contiguous matrices, where `op` transposes the operands that
/// `transpose` names (a transposed operand is read through its strides, not copied).
#[derive(Clone, Copy, Debug)]
struct Product {
    transpose: (bool, bool),
    arithmetic: Arithmetic,
}

impl Product {
    fn run<T: Element>(
        &self,
        (a, al): (&CpuStorage, &Layout),
        (b, bl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (a, b) = (slice::<T>(a, al, name)?, slice::<T>(b, bl, name)?);
        let (ar, ac) = al.shape().dims2()?;
        let (br, bc) = bl.shape().dims2()?;
        // op(a): m × k, op(b): k × n, with their strides in row-major storage.
        let ((m, k), a_strides) = match self.transpose.0 {
            false => ((ar, ac), (ac, 1)),
            true => ((ac, ar), (1, ac)),
        };
        let ((kb, n), b_strides) = match self.transpose.1 {
            false => ((br, bc), (bc, 1)),
            true => ((bc, br), (1, bc)),
        };
        if k != kb {
            candle_core::bail!("{name}: inner dimensions {k} and {kb} differ");
        }
        let mut out = vec![T::zero(); m * n];
        if m > 0 && n > 0 && k > 0 {
            matmul(
                &mut out,
                Mat {
                    data: a,
                    rs: a_strides.0,
                    cs: a_strides.1,
                },
                Mat {
                    data: b,
                    rs: b_strides.0,
                    cs: b_strides.1,
                },
                (m, n, k),
                false,
                Run::parallel(self.arithmetic),
            );
        }
        Ok((T::to_cpu_storage_owned(out), Shape::from((m, n))))
    }

    /// The same arithmetic with other transpositions.
    fn with(self, transpose: (bool, bool)) -> Self {
        Self { transpose, ..self }
    }
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "dra-matmul"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(a, self.name(), T => self.run::<T>((a, al), (b, bl)))
    }

    /// For `C = op(A)·op(B)`: `dA = dC·op(B)ᵀ` and `dB = op(A)ᵀ·dC`, each written as a product
    /// of the stored operands (transposed where `A` or `B` was).
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dc: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dc = dc.contiguous()?;
        let (ta, tb) = self.transpose;
        let da = match ta {
            false => dc.apply_op2_no_bwd(b, &self.with((false, !tb)))?,
            true => b.apply_op2_no_bwd(&dc, &self.with((tb, true)))?,
        };
        let db = match tb {
            false => a.apply_op2_no_bwd(&dc, &self.with((!ta, false)))?,
            true => dc.apply_op2_no_bwd(a, &self.with((true, ta)))?,
        };
        Ok((Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_gradients_match_finite_differences, max_diff, ramp};
    use candle_core::Var;

    /// Every transposition against candle's matmul, in f64.
    #[test]
    fn products_match_candle() -> Result<()> {
        let (m, k, n) = (5, 7, 3);
        for transpose in [(false, false), (false, true), (true, false), (true, true)] {
            let a = match transpose.0 {
                false => ramp(&[m, k], 1),
                true => ramp(&[k, m], 1),
            };
            let b = match transpose.1 {
                false => ramp(&[k, n], 2),
                true => ramp(&[n, k], 2),
            };
            let op = |t: &Tensor, on: bool| if on { t.t() } else { Ok(t.clone()) };
            let want = op(&a, transpose.0)?.matmul(&op(&b, transpose.1)?)?;
            for arithmetic in [Arithmetic::Native, Arithmetic::Portable] {
                let got = a.apply_op2(
                    &b,
                    Product {
                        transpose,
                        arithmetic,
                    },
                )?;
                assert!(
                    max_diff(&got, &want) < 1e-12,
                    "{transpose:?} {arithmetic:?}"
                );
            }
        }
        Ok(())
    }

    /// Both gradients of a layer, with bias, against central finite differences.
    #[test]
    fn gradients_match_finite_differences() {
        let x = ramp(&[4, 6], 1);
        let w = ramp(&[3, 6], 2);
        let r = ramp(&[4, 3], 3);
        assert_gradients_match_finite_differences("linear", &[x, w], 1, |t| {
            let layer = Linear {
                weight: t[1].clone(),
                bias: Some(Tensor::new(&[0.5f64, -0.25, 1.0], t[0].device())?),
                kernels: Kernels::default(),
            };
            (layer.forward(&t[0])? * &r)?.sum_all()
        });
    }

    /// A depth beyond [`crate::ops::PORTABLE_DEPTH`]: the portable product sums it in blocks
    /// and still agrees with the native one to rounding.
    #[test]
    fn portable_depth_blocks_sum_the_whole_depth() -> Result<()> {
        let (m, k, n) = (9, 1300, 17);
        let a = ramp(&[m, k], 4).to_dtype(DType::F32)?;
        let b = ramp(&[k, n], 5).to_dtype(DType::F32)?;
        let product = |arithmetic| {
            a.apply_op2(
                &b,
                Product {
                    transpose: (false, false),
                    arithmetic,
                },
            )
        };
        let (native, portable) = (product(Arithmetic::Native)?, product(Arithmetic::Portable)?);
        let want = a.matmul(&b)?;
        assert!(max_diff(&native, &want) < 1e-3);
        assert!(max_diff(&portable, &want) < 1e-3);
        // Only what the gradient of a sum needs: a Var goes through the op's backward.
        let v = Var::from_tensor(&a)?;
        let g = v
            .as_tensor()
            .apply_op2(
                &b,
                Product {
                    transpose: (false, false),
                    arithmetic: Arithmetic::Portable,
                },
            )?
            .sum_all()?
            .backward()?;
        let want = b.sum(1)?.unsqueeze(0)?.broadcast_as((m, k))?;
        assert!(max_diff(g.get(v.as_tensor()).unwrap(), &want) < 1e-3);
        Ok(())
    }
}
