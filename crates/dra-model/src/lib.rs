//! The DRA network (Ding, Pang & Shen, CVPR 2022) in candle.
//!
//! [`Dra`] is a ResNet-18 feature extractor with train-mode BatchNorm and four heads: seen
//! abnormality, pseudo abnormality, latent residual abnormality and normality, each run on a
//! two-level image pyramid. Parameter names follow the official model's `state_dict`, so
//! weights move between the two implementations by name.
//!
//! The competing methods of the paper's tables (DevNet, Deep SAD, MINNS, FLOS, SAOE) live in
//! [`baselines`] on the same backbone; [`Detector`] puts every [`Method`] behind one interface.

pub mod baselines;
mod detector;
mod dra;
mod heads;
mod init;
mod loss;
mod method;
mod mobilenet;
pub mod ops;
mod resnet;
mod runtime;
#[cfg(test)]
mod testutil;
mod weights;

pub use detector::{Detector, DetectorScores};
pub use dra::{BackboneKind, Dra, DraConfig, HeadScores};
pub use heads::{top_k_mean, CompositeHead, HolisticHead, PlainHead};
pub use init::reset_parameters;
pub use loss::{DraLoss, LossKind, LossParts, Prior};
pub use method::Method;
pub use mobilenet::MobileNetV2;
pub use ops::{max_pool2d, BatchNorm2d, Conv2d};
pub use resnet::ResNet18;
pub use runtime::configure_cpu_runtime;
pub use weights::{load_into, read_tensors, Scope, WeightsError, BACKBONE_PREFIX};

static STOCK_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Routes convolution, BatchNorm and max-pooling through candle's stock ops instead of this
/// crate's CPU kernels: a switch for benchmarks (`cargo xtask perf --stock`) and diagnosis.
pub fn use_stock_kernels(stock: bool) {
    STOCK_KERNELS.store(stock, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this crate's CPU kernels are in use (the default).
pub(crate) fn custom_kernels() -> bool {
    !STOCK_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
}

static IM2COL_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the stride-1 3×3 convolutions through im2col + GEMM instead of Winograd:
/// a switch for benchmarks (`cargo xtask perf --no-winograd`) and diagnosis.
pub fn use_winograd(winograd: bool) {
    IM2COL_ONLY.store(!winograd, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the Winograd path is in use (the default).
pub(crate) fn winograd_enabled() -> bool {
    !IM2COL_ONLY.load(std::sync::atomic::Ordering::Relaxed)
}

static F2_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs every Winograd convolution with F(2×2, 3×3) tiles instead of F(4×4, 3×3) where the
/// feature map has room for those: a switch for benchmarks (`cargo xtask perf
/// --winograd-f2`) and diagnosis.
pub fn use_winograd_f4(f4: bool) {
    F2_ONLY.store(!f4, std::sync::atomic::Ordering::Relaxed);
}

/// Whether F(4×4, 3×3) tiles are in use where they fit (the default).
pub(crate) fn winograd_f4_enabled() -> bool {
    !F2_ONLY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Names of the tensors that are state, not parameters: they are saved with the model but
/// never given to the optimiser (BatchNorm statistics, Deep SAD's centre).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
        || name == baselines::DeepSad::CENTER
}
