//! Convolution on the CPU, written for DRA's shapes: [`Conv2d`] (the layer) runs the stride-1
//! 3×3 kernels by Winograd ([`winograd`]) and every other one by im2col + GEMM ([`im2col`]),
//! forward and backward, skipping d(input) where no gradient is needed (the image). f32 and
//! f64 on the CPU; depthwise convolutions (MobileNetV2's) by a kernel of their own
//! ([`depthwise`]); other devices and dtypes, and other grouped convolutions, use candle's op.
//!
//! This module holds the custom ops that choose between the algorithms; what both share, the
//! [`Geometry`] of a convolution, is in `geometry`.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use candle_nn::Conv2dConfig;

use crate::ops::cpu::{dispatch, slice};
use crate::ops::{Arithmetic, Element, Kernels, Winograd};

mod depthwise;
mod geometry;
mod im2col;
mod layer;
mod winograd;

pub use layer::Conv2d;

use geometry::Geometry;

/// The forward op: `(x: N×C×H×W, w: O×C×kh×kw) → N×O×OH×OW`.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    stride: usize,
    padding: usize,
    grad_input: bool,
    /// Whether and with which tiles the stride-1 3×3 kernels run by Winograd.
    winograd: Winograd,
    /// How its GEMMs compute.
    arithmetic: Arithmetic,
    /// Where a Winograd forward leaves its transformed kernels for the input gradient, when a
    /// backward pass can follow. They are the forward's own (the input gradient belongs to the
    /// weights the forward used), and for ResNet-18's 512-channel layers they cost 4 ms each
    /// to recompute; held, they take 16/9 of the weights' memory until the backward pass uses
    /// them (about 80 MB for the whole network).
    transformed: Option<KernelCache>,
}

/// The transformed kernels of one forward call, taken by its backward.
type KernelCache = std::sync::Arc<std::sync::Mutex<Option<CpuStorage>>>;

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "dra-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.forward::<T>(xs, xl, ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dw = self.weight_grad(x, &dy, kh, kw)?;
        let dx = if self.grad_input {
            let (_, _, h, wd) = x.dims4()?;
            Some(dy.apply_op2_no_bwd(
                w,
                &InputGrad {
                    conv: self.clone(),
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        Ok((dx, Some(dw)))
    }
}

impl Conv {
    /// The forward of a convolution that never needs the input's gradient and keeps no
    /// transformed kernels: for ops that run a convolution inside their own kernel.
    pub(crate) fn without_backward(config: &Conv2dConfig, kernels: Kernels) -> Self {
        Self {
            stride: config.stride,
            padding: config.padding,
            grad_input: false,
            winograd: kernels.winograd(),
            arithmetic: kernels.arithmetic(),
            transformed: None,
        }
    }

    fn forward<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (
            slice::<T>(xs, xl, "dra-conv2d")?,
            slice::<T>(ws, wl, "dra-conv2d")?,
        );
        let (out, shape) = self.output(x, xl.shape(), w, wl.shape())?;
        Ok((T::to_cpu_storage_owned(out), shape))
    }

    /// The output of `x` (N×C×H×W) convolved with `w` (O×C×kh×kw), and its shape.
    pub(crate) fn output<T: Element>(
        &self,
        x: &[T],
        x_shape: &Shape,
        w: &[T],
        w_shape: &Shape,
    ) -> Result<(Vec<T>, Shape)> {
        let g = Geometry::new(
            x_shape.dims4()?,
            w_shape.dims4()?,
            self.stride,
            self.padding,
        )?
        .with_arithmetic(self.arithmetic);
        let shape = Shape::from((g.n, g.o, g.oh, g.ow));
        if winograd::applies(&g, self.winograd) {
            let (out, kernels) = winograd::forward(x, w, &g, self.winograd);
            if let (Some(cache), Some(kernels)) = (&self.transformed, kernels) {
                *cache.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(T::to_cpu_storage_owned(kernels));
            }
            return Ok((out, shape));
        }
        Ok((im2col::forward(x, w, &g), shape))
    }

    /// d(weight) of this convolution from its input `x` and the output's gradient `dy`, for
    /// a kernel of `kh × kw` (no graph).
    pub(crate) fn weight_grad(
        &self,
        x: &Tensor,
        dy: &Tensor,
        kh: usize,
        kw: usize,
    ) -> Result<Tensor> {
        x.apply_op2_no_bwd(
            dy,
            &WeightGrad {
                conv: self.clone(),
                kh,
                kw,
            },
        )
    }
}

/// d(weight) of a convolution from its input and its output's gradient, by Winograd or
/// im2col as the forward ran.
struct WeightGrad {
    conv: Conv,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "dra-conv2d-dw"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.run::<T>(xs, xl, ds, dl))
    }
}

impl WeightGrad {
    fn run<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (
            slice::<T>(xs, xl, "dra-conv2d-dw")?,
            slice::<T>(ds, dl, "dra-conv2d-dw")?,
        );
        let (n, c, h, w) = xl.shape().dims4()?;
        let (_, o, oh, ow) = dl.shape().dims4()?;
        let (kh, kw) = (self.kh, self.kw);
        let g = Geometry::new(
            (n, c, h, w),
            (o, c, kh, kw),
            self.conv.stride,
            self.conv.padding,
        )?
        .with_arithmetic(self.conv.arithmetic);
        if (g.oh, g.ow) != (oh, ow) {
            candle_core::bail!(
                "dra-conv2d-dw: output gradient is {oh}×{ow}, expected {}×{}",
                g.oh,
                g.ow
            );
        }
        let dw = if winograd::applies(&g, self.conv.winograd) {
            winograd::weight_grad(x, dy, &g, self.conv.winograd)
        } else {
            im2col::weight_grad(x, dy, &g)
        };
        Ok((T::to_cpu_storage_owned(dw), Shape::from((o, c, kh, kw))))
    }
}

/// d(input) of a convolution from its output's gradient and its kernel, by Winograd or
/// im2col as the forward ran.
struct InputGrad {
    conv: Conv,
    h: usize,
    w: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "dra-conv2d-dx"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(ds, self.name(), T => self.run::<T>(ds, dl, ws, wl))
    }
}

impl InputGrad {
    fn run<T: Element>(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, w) = (
            slice::<T>(ds, dl, "dra-conv2d-dx")?,
            slice::<T>(ws, wl, "dra-conv2d-dx")?,
        );
        let (n, _, _, _) = dl.shape().dims4()?;
        let kdims = wl.shape().dims4()?;
        let g = Geometry::new(
            (n, kdims.1, self.h, self.w),
            kdims,
            self.conv.stride,
            self.conv.padding,
        )?
        .with_arithmetic(self.conv.arithmetic);
        let dx = if winograd::applies(&g, self.conv.winograd) {
            // The forward's transformed kernels, taken (so freed once used) when it left them.
            let cached = self
                .conv
                .transformed
                .as_ref()
                .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take());
            let kernels = cached
                .as_ref()
                .and_then(|s| T::cpu_storage_as_slice(s).ok())
                .filter(|u| u.len() == winograd::kernels_len(&g));
            winograd::input_grad(dy, w, kernels, &g, self.conv.winograd)
        } else {
            im2col::input_grad(dy, w, &g)
        };
        Ok((T::to_cpu_storage_owned(dx), Shape::from((n, g.c, g.h, g.w))))
    }
}
