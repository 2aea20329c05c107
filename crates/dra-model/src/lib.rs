//! The DRA network (Ding, Pang & Shen, CVPR 2022) in candle.
//!
//! [`Dra`] is a ResNet-18 feature extractor with train-mode BatchNorm and four heads: seen
//! abnormality, pseudo abnormality, latent residual abnormality and normality, each run on a
//! two-level image pyramid. Parameter names follow the official model's `state_dict`, so
//! weights move between the two implementations by name.
//!
//! The competing methods of the paper's tables (DevNet, Deep SAD, MINNS, FLOS, SAOE) live in
//! [`baselines`] on the same backbone; [`Detector`] puts every [`Method`] behind one interface.

pub mod backbones;
pub mod baselines;
mod detector;
pub mod dra;
mod init;
mod method;
pub mod ops;
mod runtime;
#[cfg(test)]
mod testutil;
mod weights;

pub use backbones::{BackboneKind, MobileNetV2, ResNet18};
pub use detector::{Detector, DetectorScores};
pub use dra::{
    top_k_mean, CompositeHead, Dra, DraConfig, DraLoss, HeadScores, HolisticHead, LossKind,
    LossParts, PlainHead, Prior,
};
pub use init::reset_parameters;
pub use method::Method;
pub use ops::{BatchNorm2d, Conv2d, Kernels, MaxPool2d, Winograd};
pub use runtime::{configure_cpu_runtime, RuntimeError};
pub use weights::{load_into, read_tensors, Scope, WeightsError, BACKBONE_PREFIX};

/// Names of the tensors that are state, not parameters: they are saved with the model but
/// never given to the optimiser (BatchNorm statistics, Deep SAD's centre).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
        || name == baselines::DeepSad::CENTER
}
