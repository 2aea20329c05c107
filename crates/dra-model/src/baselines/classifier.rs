//! FLOS and SAOE: binary classifiers on globally pooled backbone features, which differ in their
//! loss and in what they count as the anomaly class.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use crate::backbones::Backbone;
use crate::dra::{export_global_pool, global_pool, LossKind, Prior};
use crate::model_config::ModelConfig;
use crate::onnx::Graph;
use crate::ops::Linear;

/// Backbone → global average pooling → `fc`: one logit per image (the anomaly score).
#[derive(Debug, Clone)]
struct PooledLogit {
    feature_extractor: Backbone,
    fc: Linear,
}

impl PooledLogit {
    fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            feature_extractor: Backbone::of_model(config.backbone, config.kernels, &vb)?,
            fc: Linear::new(
                config.backbone.out_channels(),
                1,
                true,
                config.kernels,
                vb.pp("fc"),
            )?,
        })
    }

    fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let features = self.feature_extractor.forward_t(images, train)?;
        self.fc.forward(&global_pool(&features)?)?.squeeze(1)
    }

    /// `kind` on the logits against "is an anomaly" (labels 1 and 2).
    fn export(&self, g: &mut Graph, x: &str) -> Result<String> {
        let features = self.feature_extractor.export(g, x)?;
        let pooled = export_global_pool(g, "pool", &features);
        let logit = self.fc.export(g, "fc", &pooled)?;
        let flat = g.constant_i64("score.shape", &[-1]);
        Ok(g.node("Reshape", "score", &[&logit, &flat], &[]))
    }

    fn loss(&self, images: &Tensor, labels: &[u8], kind: LossKind) -> Result<Tensor> {
        let logits = self.forward_t(images, true)?;
        super::check_labels(&logits, labels)?;
        kind.loss(
            &logits,
            &super::anomaly_targets(labels, &logits)?,
            Prior::STANDARD,
        )
    }
}

/// FLOS: the focal loss of Lin, Goyal, Girshick, He & Dollár (ICCV 2017) used as an anomaly
/// detector: normals against labelled anomalies, focal loss with α = 1, γ = 2 on the logit (the
/// constants of the DRA code's `BinaryFocalLoss`). Tensors: `feature_extractor.net.*`, `fc.*`.
#[derive(Debug, Clone)]
pub struct Flos(PooledLogit);

impl Flos {
    /// Builds the model from `vb`, whose prefix is the model's root; `config` gives the backbone.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self(PooledLogit::new(config, vb)?))
    }

    /// Per-image logits `(B,)`, the anomaly scores.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward_t(images, train)
    }

    /// The model in eval mode as ONNX nodes on the value `x`: the logit per image, `(B,)`.
    pub fn export(&self, g: &mut Graph, x: &str) -> Result<String> {
        self.0.export(g, x)
    }

    /// The training loss of a batch (no references): mean focal loss of the logits against
    /// "is an anomaly" (labels 1 and 2).
    pub fn loss(&self, images: &Tensor, labels: &[u8]) -> Result<Tensor> {
        self.0.loss(images, labels, LossKind::Focal)
    }
}

/// SAOE: supervised anomaly detection with synthetic anomalies and outlier exposure, a binary
/// classifier whose anomaly class holds the labelled anomalies and the batch's pseudo anomalies
/// (CutMix, or outlier images with `--outlier-root`), trained with binary cross-entropy.
/// Tensors: `feature_extractor.net.*`, `fc.*`.
#[derive(Debug, Clone)]
pub struct Saoe(PooledLogit);

impl Saoe {
    /// Builds the model from `vb`, whose prefix is the model's root; `config` gives the backbone.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self(PooledLogit::new(config, vb)?))
    }

    /// Per-image logits `(B,)`, the anomaly scores.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward_t(images, train)
    }

    /// The model in eval mode as ONNX nodes on the value `x`: the logit per image, `(B,)`.
    pub fn export(&self, g: &mut Graph, x: &str) -> Result<String> {
        self.0.export(g, x)
    }

    /// The training loss of a batch (no references): mean binary cross-entropy of the logits
    /// against "is an anomaly", labelled (1) and pseudo (2) anomalies alike.
    pub fn loss(&self, images: &Tensor, labels: &[u8]) -> Result<Tensor> {
        self.0.loss(images, labels, LossKind::Bce)
    }
}
