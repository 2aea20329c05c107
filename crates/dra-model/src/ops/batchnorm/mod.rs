//! BatchNorm2d with PyTorch's semantics and fused CPU kernels. In training mode, one pass for
//! the batch statistics ([`stats`]), one for the normalisation, and a two-pass backward with
//! the closed-form gradient ([`train`]), instead of a dozen element-wise ops (each with its own
//! autograd node and buffer); in eval mode, forwards that record no graph take one pass as well
//! ([`eval`]). [`BatchNorm2d`] (the layer, in `layer`) chooses between them and candle's ops.
//!
//! This module holds the arithmetic the kernels share: the per-channel affine map of the
//! normalisation, rounded to `T` once, and the ReLU mask recomputed from it.

mod eval;
mod layer;
mod stats;
mod train;

pub use layer::BatchNorm2d;

/// The activation fused after the normalisation: none, ReLU (ResNet), or ReLU6 (MobileNetV2:
/// `min(max(v, 0), 6)`, whose gradient passes where 0 < v < 6, as PyTorch's `hardtanh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// The normalisation alone.
    None,
    /// ReLU.
    Relu,
    /// ReLU6.
    Relu6,
}

impl Act {
    /// Whether the backward masks the gradient (ReLU or ReLU6).
    fn masks(self) -> bool {
        self != Act::None
    }

    /// The activation of a pre-activation `n`, PyTorch's: NaN propagates.
    #[inline(always)]
    fn apply<T: Element>(self, n: T) -> T {
        match self {
            Act::None => n,
            Act::Relu => {
                if n <= T::zero() {
                    T::zero()
                } else {
                    n
                }
            }
            Act::Relu6 => {
                let six = T::from_f64(6.0);
                if n <= T::zero() {
                    T::zero()
                } else if n > six {
                    six
                } else {
                    n
                }
            }
        }
    }
}
pub(crate) use stats::batch_stats;
pub(crate) use train::{apply_plane, gradient_in_place};

use candle_core::{Layout, Result};

use crate::ops::Element;

/// Per-channel values of an NCHW tensor: `(n, c, plane)`.
fn nchw(l: &Layout) -> Result<(usize, usize, usize)> {
    let dims = l.shape().dims();
    if dims.len() < 2 {
        candle_core::bail!("batch-norm input needs at least two dimensions, got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// The per-channel affine map of the normalisation: y = x·scale + shift. Training's forward
/// and backward both round it to `T` and apply it with [`normalise`].
fn affine(mean: f64, var: f64, gamma: f64, beta: f64, eps: f64) -> (f64, f64) {
    let scale = gamma / (var + eps).sqrt();
    (scale, beta - mean * scale)
}

/// `v·scale + shift` in `T`, with the affine map rounded to `T`: the one expression of the
/// training forward ([`Apply`], [`AddRelu`]) and of the backward's ReLU mask
/// ([`relu_gated`]), so the mask is exactly the forward's. In `T`, not f64: eight f32 lanes
/// and no conversions (the f64 version took 4 % of a DRA step at 128 px).
#[inline(always)]
fn normalise<T: Element>(v: T, (scale, shift): (T, T)) -> T {
    v * scale + shift
}

/// [`affine`] rounded to `T`, for [`normalise`].
pub(crate) fn affine_t<T: Element>(mean: f64, var: f64, gamma: f64, beta: f64, eps: f64) -> (T, T) {
    let (scale, shift) = affine(mean, var, gamma, beta, eps);
    (T::from_f64(scale), T::from_f64(shift))
}

/// The incoming gradient as a function of `(d, v)` (gradient, input) behind a ReLU: zero
/// where the forward's pre-activation, recomputed by [`normalise`] from the affine map, was
/// not positive. The kernels below instantiate their loops once with this and once with the
/// plain gradient instead of testing the mask per element, so that both loops vectorise.
#[inline(always)]
fn relu_gated<T: Element>(map: (T, T)) -> impl Fn(T, T) -> T {
    move |d: T, v: T| {
        if normalise(v, map) <= T::zero() {
            T::zero()
        } else {
            d
        }
    }
}

/// [`relu_gated`] for ReLU6: zero also where the pre-activation reached 6 (PyTorch's
/// `hardtanh_backward` passes the gradient strictly between the bounds).
#[inline(always)]
fn relu6_gated<T: Element>(map: (T, T)) -> impl Fn(T, T) -> T {
    let six = T::from_f64(6.0);
    move |d: T, v: T| {
        let n = normalise(v, map);
        if n <= T::zero() || n >= six {
            T::zero()
        } else {
            d
        }
    }
}
