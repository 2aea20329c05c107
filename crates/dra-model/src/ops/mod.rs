//! The CPU kernels: candle custom ops over f32 and f64 storage, written for DRA's shapes, and
//! the layers that run on them.
//!
//! - [`Conv2d`]: convolution by Winograd (the stride-1 3×3 kernels) or im2col + GEMM, forward
//!   and backward (`conv`, `conv/winograd`);
//! - [`BatchNorm2d`]: fused training-mode normalisation (statistics, normalisation with ReLU
//!   or with the residual and ReLU, closed-form backward) and one-pass eval mode (`batchnorm`);
//! - max-pooling with padding and PyTorch's gradient (`maxpool`);
//! - ResNet's stem (convolution, BatchNorm, ReLU, max-pool) in training as one op (`stem`).
//!
//! Every kernel is tested beside it against candle's stock op or a direct definition, values
//! and gradients. They share one element type (`element`) and the plumbing of `cpu`; on other
//! devices and dtypes the layers use candle's own ops.

pub(crate) mod batchnorm;
pub(crate) mod conv;
pub(crate) mod cpu;
mod element;
pub(crate) mod maxpool;
pub(crate) mod stem;

pub use batchnorm::BatchNorm2d;
pub use conv::Conv2d;
pub(crate) use element::Element;
pub use maxpool::max_pool2d;
