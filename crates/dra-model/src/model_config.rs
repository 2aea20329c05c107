//! What a model is built from, whatever its method.

use serde::{Deserialize, Serialize};

use crate::backbones::BackboneKind;
use crate::head_set::HeadSet;
use crate::ops::Kernels;

/// The model of every method: its backbone and the kernels its layers run, and DRA's own
/// constants (top-K rate, references, pyramid, heads), which the baselines that share DRA's
/// layers read too. Official defaults in `Default`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Fraction of feature-map cells averaged by the top-K heads (`--topk`, 0.1).
    pub topk_rate: f64,
    /// Reference images that lead each forward batch (`--nRef`, 5).
    pub n_ref: usize,
    /// Levels of the image pyramid (`--n_scales`, 2): full size, then halved each level.
    pub n_scales: usize,
    /// The feature extractor (`--backbone`, ResNet-18); a `config.json` without the field
    /// reads as ResNet-18.
    #[serde(default)]
    pub backbone: BackboneKind,
    /// The implementation every layer runs (this crate's CPU kernels by default). A choice of
    /// the process, not a property of the model: never serialised, read back as the default.
    #[serde(skip)]
    pub kernels: Kernels,
    /// The heads that train and score (`--heads`; all four unless an ablation says otherwise).
    #[serde(default, skip_serializing_if = "HeadSet::is_all")]
    pub heads: HeadSet,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            topk_rate: 0.1,
            n_ref: 5,
            n_scales: 2,
            backbone: BackboneKind::Resnet18,
            kernels: Kernels::default(),
            heads: HeadSet::ALL,
        }
    }
}
