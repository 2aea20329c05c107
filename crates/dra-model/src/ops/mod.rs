//! The CPU kernels: candle custom ops over f32 and f64 storage, written for DRA's shapes, and
//! the layers that run on them.
//!
//! - [`Conv2d`]: convolution by Winograd (the stride-1 3×3 kernels) or im2col + GEMM, forward
//!   and backward (`conv`, `conv/winograd`);
//! - [`BatchNorm2d`]: fused training-mode normalisation (statistics, normalisation with ReLU
//!   or with the residual and ReLU, closed-form backward) and one-pass eval mode (`batchnorm`);
//! - max-pooling with padding and PyTorch's gradient (`maxpool`);
//! - ResNet's stem (convolution, BatchNorm, ReLU, max-pool) in training as one op (`stem`);
//! - MobileNetV2's depthwise convolutions (`conv/depthwise`), and its ReLU6 inside BatchNorm's
//!   kernels.
//!
//! Every kernel is tested beside it against candle's stock op or a direct definition, values
//! and gradients. They share one element type (`element`) and the plumbing of `cpu`; on other
//! devices and dtypes the layers use candle's own ops.

mod arithmetic;
pub(crate) mod batchnorm;
pub(crate) mod conv;
pub(crate) mod cpu;
mod element;
pub(crate) mod gemm;
mod linear;
pub(crate) mod maxpool;
pub(crate) mod stem;

pub use arithmetic::{Arithmetic, KernelTier, PORTABLE_DEPTH};

pub use batchnorm::BatchNorm2d;
pub use conv::Conv2d;
pub(crate) use element::Element;
pub use linear::Linear;
pub use maxpool::MaxPool2d;

/// Which implementation the layers run, given to each layer at construction (for a whole model,
/// through [`crate::ModelConfig::kernels`]). The default is this crate's kernels with Winograd
/// F(4×4, 3×3) where it fits. Whatever it says, other devices and dtypes (and grouped
/// convolutions) run candle's own ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// This crate's CPU kernels, with the stride-1 3×3 convolutions as `winograd` says and
    /// the products computed as `arithmetic` says.
    Custom {
        /// Whether and with which tiles the stride-1 3×3 convolutions run by Winograd.
        winograd: Winograd,
        /// How the GEMMs of convolutions and linear layers compute: natively (the fastest
        /// the CPU has) or portably (`--reproducible`).
        arithmetic: Arithmetic,
    },
    /// candle's stock convolution, BatchNorm and max-pool: for benchmarks
    /// (`cargo xtask perf --stock`) and diagnosis.
    Stock,
}

impl Default for Kernels {
    fn default() -> Self {
        Self::Custom {
            winograd: Winograd::default(),
            arithmetic: Arithmetic::default(),
        }
    }
}

impl Kernels {
    /// Whether this crate's kernels are in use (not candle's stock ops).
    pub(crate) fn custom(self) -> bool {
        matches!(self, Self::Custom { .. })
    }

    /// The Winograd setting of the custom convolutions ([`Winograd::Off`] with stock ops).
    pub(crate) fn winograd(self) -> Winograd {
        match self {
            Self::Custom { winograd, .. } => winograd,
            Self::Stock => Winograd::Off,
        }
    }

    /// The arithmetic of the custom GEMMs ([`Arithmetic::Native`] with stock ops, which are
    /// candle's).
    pub fn arithmetic(self) -> Arithmetic {
        match self {
            Self::Custom { arithmetic, .. } => arithmetic,
            Self::Stock => Arithmetic::Native,
        }
    }

    /// These kernels with their GEMMs computed by `arithmetic` (stock ops stay as they are).
    pub fn with_arithmetic(self, arithmetic: Arithmetic) -> Self {
        match self {
            Self::Custom { winograd, .. } => Self::Custom {
                winograd,
                arithmetic,
            },
            Self::Stock => Self::Stock,
        }
    }
}

/// How the custom kernels run the stride-1 3×3 convolutions (about 80 % of ResNet-18's
/// multiply-adds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Winograd {
    /// By im2col + GEMM like every other convolution: for benchmarks
    /// (`cargo xtask perf --no-winograd`) and diagnosis.
    Off,
    /// By Winograd with F(2×2, 3×3) tiles everywhere (`cargo xtask perf --winograd-f2`).
    F2,
    /// By Winograd with F(4×4, 3×3) tiles where the feature map is at least 8×8, F(2×2, 3×3)
    /// below (the default).
    #[default]
    F4,
}
