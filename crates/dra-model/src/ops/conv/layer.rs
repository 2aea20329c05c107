//! The convolution layer, with PyTorch's parameter names.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Init, VarBuilder};

use super::depthwise::Depthwise;
use super::{Conv, KernelCache};
use crate::onnx::{Attr, Graph};
use crate::ops::Kernels;

/// A 2-D convolution layer with PyTorch's parameter names (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    grad_input: bool,
    kernels: Kernels,
}

impl Conv2d {
    /// A `k × k` convolution from `cin` to `cout` channels, with a bias when `bias`, run by
    /// `kernels`; its tensors are read from `vb` or created as zeros. PyTorch's default
    /// initialisation is applied later by name ([`crate::reset_parameters`]).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        config: Conv2dConfig,
        bias: bool,
        kernels: Kernels,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight =
            vb.get_with_hints((cout, cin / config.groups, k, k), "weight", Init::Const(0.))?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            config,
            grad_input: true,
            kernels,
        })
    }

    /// Declares that the input never needs a gradient (the image), so the backward skips it.
    pub fn without_input_grad(mut self) -> Self {
        self.grad_input = false;
        self
    }

    /// The weight (`O × C × kh × kw`) and the configuration of a convolution without bias,
    /// for ops that fuse it with what follows.
    pub(crate) fn unbiased_parts(&self) -> Option<(&Tensor, &Conv2dConfig)> {
        self.bias.is_none().then_some((&self.weight, &self.config))
    }

    /// The kernels this layer runs.
    pub(crate) fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Whether this crate's CPU kernel serves `x` (candle's `conv2d` otherwise). A bias
    /// is added by `forward`, outside the kernel.
    pub(crate) fn fast_path(&self, x: &Tensor) -> bool {
        self.cpu_kernels(x) && self.config.groups == 1
    }

    /// Whether this crate's depthwise kernel serves `x`: one filter per channel (`groups`
    /// equal to the channels in and out).
    fn depthwise_path(&self, x: &Tensor) -> bool {
        let groups = self.config.groups;
        self.cpu_kernels(x)
            && groups > 1
            && self.weight.dims()
                == [
                    groups,
                    1,
                    self.weight.dim(2).unwrap_or(0),
                    self.weight.dim(3).unwrap_or(0),
                ]
            && x.dim(1).is_ok_and(|c| c == groups)
            && self.weight.dim(2).ok() == self.weight.dim(3).ok()
    }

    /// The custom kernels are asked for and can run: CPU, f32 or f64, no dilation.
    fn cpu_kernels(&self, x: &Tensor) -> bool {
        self.kernels.custom()
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.config.dilation == 1
    }
}

impl Conv2d {
    /// The layer as an ONNX `Conv` on the value `x`, its tensors as constants named from
    /// `name`; returns the output's name.
    pub fn export(&self, g: &mut Graph, name: &str, x: &str) -> Result<String> {
        let c = &self.config;
        let (kh, kw) = (self.weight.dim(2)? as i64, self.weight.dim(3)? as i64);
        let (p, s, d) = (c.padding as i64, c.stride as i64, c.dilation as i64);
        let parameters = g.parameters(name, &self.weight, self.bias.as_ref())?;
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(parameters.iter().map(String::as_str))
            .collect();
        Ok(g.node(
            "Conv",
            name,
            &inputs,
            &[
                Attr::Ints("kernel_shape", &[kh, kw]),
                Attr::Ints("pads", &[p, p, p, p]),
                Attr::Ints("strides", &[s, s]),
                Attr::Ints("dilations", &[d, d]),
                Attr::Int("group", c.groups as i64),
            ],
        ))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = if self.fast_path(x) {
            // Only a graph that a backward pass can walk needs the kernels kept.
            let backward = x.track_op() || self.weight.track_op();
            let op = Conv {
                stride: c.stride,
                padding: c.padding,
                grad_input: self.grad_input,
                winograd: self.kernels.winograd(),
                arithmetic: self.kernels.arithmetic(),
                transformed: (self.grad_input && backward).then(KernelCache::default),
            };
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, op)?
        } else if self.depthwise_path(x) {
            let op = Depthwise {
                stride: c.stride,
                padding: c.padding,
                grad_input: self.grad_input,
            };
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, op)?
        } else {
            x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::max_diff;
    use candle_core::Var;

    fn ramp(shape: (usize, usize, usize, usize), seed: u32) -> Tensor {
        crate::testutil::ramp(&[shape.0, shape.1, shape.2, shape.3], seed)
            .to_dtype(DType::F32)
            .unwrap()
    }

    /// Values and both gradients against candle's stock convolution, on odd shapes. Where
    /// (h + 2p − k) is not a multiple of the stride, candle's own d(input) comes out one pixel
    /// short (its transposed convolution has no output padding), so there the gradients are
    /// checked by the adjoint identities instead: the convolution is linear in x and in w, so
    /// ⟨conv(x, w), r⟩ = ⟨x, ∂x⟩ = ⟨w, ∂w⟩ for the gradients ∂ of ⟨conv(x, w), r⟩.
    #[test]
    fn matches_candle_on_odd_shapes() -> Result<()> {
        for (n, c, h, w, o, k, s, p) in [
            (2, 3, 9, 7, 4, 3, 1, 1),
            (3, 5, 11, 8, 6, 3, 2, 1),
            (2, 4, 6, 5, 3, 1, 1, 0),
            (2, 4, 7, 9, 5, 1, 2, 0),
            (1, 3, 13, 10, 8, 7, 2, 3),
            (5, 2, 3, 3, 2, 3, 1, 0),
            // An im2col matrix of several chunks of output rows (14, 14 and 8 of 36).
            (1, 3, 71, 61, 4, 7, 2, 3),
            // A stride wider than the image: kernel columns that reach no input column.
            (1, 2, 5, 2, 3, 3, 4, 1),
            // Small outputs of many images: GEMMs over blocks of images, the last one shorter.
            (9, 3, 5, 6, 4, 3, 2, 1),
            (7, 4, 3, 3, 5, 1, 1, 0),
            (11, 6, 4, 4, 7, 1, 2, 0),
        ] {
            let x = Var::from_tensor(&ramp((n, c, h, w), 1))?;
            let wt = Var::from_tensor(&ramp((o, c, k, k), 2))?;
            let config = Conv2dConfig {
                padding: p,
                stride: s,
                ..Default::default()
            };
            let conv = Conv2d {
                weight: wt.as_tensor().clone(),
                bias: None,
                config,
                grad_input: true,
                kernels: Kernels::default(),
            };
            let ours = conv.forward(x.as_tensor())?;
            let stock = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
            assert_eq!(ours.dims(), stock.dims());
            assert!(
                max_diff(&ours, &stock) < 1e-4,
                "forward {:?}",
                (n, c, h, w, o, k, s, p)
            );
            let r = ramp(ours.dims4()?, 3);
            let inner = (&ours * &r)?.sum_all()?;
            let g1 = inner.backward()?;
            let inner = inner.to_scalar::<f32>()?;
            for v in [&x, &wt] {
                let g = g1.get(v.as_tensor()).unwrap();
                assert_eq!(g.dims(), v.dims());
                let adjoint = (v.as_tensor() * g)?.sum_all()?.to_scalar::<f32>()?;
                assert!(
                    (adjoint - inner).abs() <= 1e-4 * inner.abs().max(1.0),
                    "adjoint {:?}",
                    (n, c, h, w, o, k, s, p)
                );
            }
            if (h + 2 * p - k) % s == 0 && (w + 2 * p - k) % s == 0 {
                let g2 = (&stock * &r)?.sum_all()?.backward()?;
                for v in [&x, &wt] {
                    let (a, b) = (
                        g1.get(v.as_tensor()).unwrap(),
                        g2.get(v.as_tensor()).unwrap(),
                    );
                    assert!(
                        max_diff(a, b) < 1e-3,
                        "gradient {:?}: {}",
                        (n, c, h, w, o, k, s, p),
                        max_diff(a, b)
                    );
                }
            }
        }
        Ok(())
    }

    /// Both gradients of every path (Winograd F(4×4) and F(2×2), im2col + GEMM with one image
    /// or blocks of images per GEMM, 1×1 and 7×7 kernels, strides 1 and 2) against central
    /// finite differences, in f64 on odd shapes.
    #[test]
    fn gradients_match_finite_differences() {
        use crate::ops::Winograd;
        use crate::testutil::assert_gradients_match_finite_differences;
        for (n, c, h, w, o, k, s, p, winograd) in [
            // F(4×4, 3×3) on a 9×10 map (tiles cut at both edges), and F(2×2, 3×3) below 8×8.
            (2, 3, 9, 10, 4, 3, 1, 1, Winograd::F4),
            (2, 3, 7, 5, 4, 3, 1, 1, Winograd::F4),
            (2, 3, 9, 10, 4, 3, 1, 1, Winograd::F2),
            // Padding 0 and 2 on Winograd's path (an 8×8 output: F(4×4) forward).
            (1, 2, 10, 10, 3, 3, 1, 0, Winograd::F4),
            (1, 2, 6, 7, 3, 3, 1, 2, Winograd::F4),
            // im2col: a 3×3 convolution on 4×4 maps (blocks of two images per GEMM), one
            // strided (blocks of three, the last of two), and the 9×10 map (one image).
            (16, 2, 4, 4, 3, 3, 1, 1, Winograd::Off),
            (17, 2, 7, 6, 3, 3, 2, 1, Winograd::F4),
            (2, 3, 9, 10, 4, 3, 1, 1, Winograd::Off),
            // 1×1 shortcuts at strides 1 and 2, and a strided 7×7 like ResNet's stem.
            (3, 4, 5, 6, 3, 1, 1, 0, Winograd::F4),
            (3, 4, 7, 6, 3, 1, 2, 0, Winograd::F4),
            (1, 2, 11, 9, 3, 7, 2, 3, Winograd::F4),
        ] {
            let case = format!("{:?}", (n, c, h, w, o, k, s, p, winograd));
            let config = Conv2dConfig {
                padding: p,
                stride: s,
                ..Default::default()
            };
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let r = crate::testutil::ramp(&[n, o, oh, ow], 3);
            let x = crate::testutil::ramp(&[n, c, h, w], 1);
            let wt = crate::testutil::ramp(&[o, c, k, k], 2);
            let every = (x.elem_count() / 40).max(1);
            // Two threads, whatever the machine (the pieces of the sums are the same on any).
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            pool.install(|| {
                assert_gradients_match_finite_differences(&case, &[x, wt], every, |t| {
                    let conv = Conv2d {
                        weight: t[1].clone(),
                        bias: None,
                        config,
                        grad_input: true,
                        kernels: Kernels::Custom {
                            winograd,
                            arithmetic: crate::ops::Arithmetic::Native,
                        },
                    };
                    assert!(conv.fast_path(&t[0]), "{case}");
                    (conv.forward(&t[0])? * &r)?.sum_all()
                })
            });
        }
    }

    /// The output and both gradients of every path are the same bit for bit on 1, 2 and 3
    /// threads: Winograd's whole-map and blocked passes (64×64 maps of 64 channels exceed
    /// `WHOLE`), im2col with one image and with blocks of images per GEMM, a 1×1 kernel and a
    /// stem-like 7×7 (issue #29: the weight gradients once summed one partial per thread).
    #[test]
    fn results_do_not_depend_on_the_threads() -> Result<()> {
        use crate::ops::Winograd;
        for (n, c, h, w, o, k, s, p, winograd) in [
            (4, 64, 64, 64, 64, 3, 1, 1, Winograd::F4),
            (4, 64, 64, 64, 64, 3, 1, 1, Winograd::F2),
            (12, 8, 9, 10, 8, 3, 1, 1, Winograd::F4),
            (12, 8, 9, 10, 8, 3, 1, 1, Winograd::Off),
            (13, 16, 8, 8, 32, 3, 2, 1, Winograd::F4),
            (11, 16, 6, 6, 24, 1, 1, 0, Winograd::F4),
            (5, 3, 40, 36, 16, 7, 2, 3, Winograd::F4),
        ] {
            let run = |threads: usize| -> Result<Vec<Vec<f32>>> {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let x = Var::from_tensor(&ramp((n, c, h, w), 1))?;
                    let wt = Var::from_tensor(&ramp((o, c, k, k), 2))?;
                    let conv = Conv2d {
                        weight: wt.as_tensor().clone(),
                        bias: None,
                        config: Conv2dConfig {
                            padding: p,
                            stride: s,
                            ..Default::default()
                        },
                        grad_input: true,
                        kernels: Kernels::Custom {
                            winograd,
                            arithmetic: crate::ops::Arithmetic::Native,
                        },
                    };
                    let y = conv.forward(x.as_tensor())?;
                    let r = ramp(y.dims4()?, 3);
                    let g = (&y * &r)?.sum_all()?.backward()?;
                    [
                        &y,
                        g.get(x.as_tensor()).unwrap(),
                        g.get(wt.as_tensor()).unwrap(),
                    ]
                    .iter()
                    .map(|t| t.flatten_all()?.to_vec1::<f32>())
                    .collect()
                })
            };
            let one = run(1)?;
            for threads in [2, 3] {
                let got = run(threads)?;
                for (i, what) in ["output", "d(input)", "d(weight)"].iter().enumerate() {
                    let same = one[i]
                        .iter()
                        .zip(&got[i])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{what} of {:?} differs on {threads} threads",
                        (n, c, h, w, o, k, s, p, winograd)
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn input_gradient_can_be_skipped() -> Result<()> {
        let x = Var::from_tensor(&ramp((2, 3, 8, 8), 1))?;
        let wt = Var::from_tensor(&ramp((4, 3, 3, 3), 2))?;
        let config = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = Conv2d {
            weight: wt.as_tensor().clone(),
            bias: None,
            config,
            grad_input: true,
            kernels: Kernels::default(),
        }
        .without_input_grad();
        let g = conv.forward(x.as_tensor())?.sum_all()?.backward()?;
        assert!(g.get(x.as_tensor()).is_none());
        assert!(g.get(wt.as_tensor()).is_some());
        Ok(())
    }
}
