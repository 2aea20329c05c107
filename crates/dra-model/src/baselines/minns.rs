//! MINNS, the multiple-instance neural network of Wang, Yan, Tang, Bai & Liu ("Revisiting
//! multiple instance neural networks", Pattern Recognition 2018), as the DevNet and DRA papers
//! apply it to images: every cell of the feature map is an instance, the image is the bag.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::backbones::Backbone;
use crate::dra::{export_top_k_mean, feature_cells, top_k_mean, LossKind, Prior};
use crate::model_config::ModelConfig;
use crate::onnx::{Attr, Graph};
use crate::ops::Conv2d;

/// Backbone → 1×1 convolution giving each cell an anomaly logit → the bag's logit is the mean
/// of its K largest cell logits → binary cross-entropy against "is an anomaly". Unlike DevNet
/// there is no |·| (a logit's sign matters) and the loss is a classifier's. Single scale.
/// Tensors: `feature_extractor.net.*`, `scoring.*`.
#[derive(Debug, Clone)]
pub struct Minns {
    feature_extractor: Backbone,
    scoring: Conv2d,
    topk_rate: f64,
}

impl Minns {
    /// Builds the model from `vb`, whose prefix is the model's root; `config` gives the backbone
    /// and the top-K rate (its pyramid setting is ignored).
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.backbone.out_channels();
        Ok(Self {
            feature_extractor: Backbone::of_model(config.backbone, config.kernels, &vb)?,
            scoring: Conv2d::new(
                c,
                1,
                1,
                Conv2dConfig::default(),
                true,
                config.kernels,
                vb.pp("scoring"),
            )?,
            topk_rate: config.topk_rate,
        })
    }

    /// Per-cell logits `(B, h·w)`.
    pub fn cell_logits(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let features = self.feature_extractor.forward_t(images, train)?;
        self.scoring.forward(&features)?.flatten_from(1)
    }

    /// The model in eval mode as ONNX nodes on the value `x` of `size` = (h, w) pixels: the
    /// top-K mean of the cell logits, `(B,)`.
    pub fn export(&self, g: &mut Graph, x: &str, size: (usize, usize)) -> Result<String> {
        let features = self.feature_extractor.export(g, x)?;
        let logits = self.scoring.export(g, "scoring", &features)?;
        let cells = g.node(
            "Flatten",
            "scoring.flatten",
            &[&logits],
            &[Attr::Int("axis", 1)],
        );
        let n = feature_cells(&self.feature_extractor, size, 0)?;
        Ok(export_top_k_mean(g, "score", &cells, n, self.topk_rate))
    }

    /// The bags' logits `(B,)`, which are also the anomaly scores.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        Self::pool(&self.cell_logits(images, train)?, self.topk_rate)
    }

    /// Top-K multiple-instance pooling: the mean of each row's K largest logits,
    /// K = max(⌊rate·n⌋, 1) as DRA's heads.
    pub fn pool(cell_logits: &Tensor, topk_rate: f64) -> Result<Tensor> {
        top_k_mean(cell_logits, topk_rate)
    }

    /// Mean binary cross-entropy (with logits) of the bags against "is an anomaly".
    pub fn loss(&self, images: &Tensor, labels: &[u8]) -> Result<Tensor> {
        let logits = self.forward_t(images, true)?;
        super::check_labels(&logits, labels)?;
        LossKind::Bce.loss(
            &logits,
            &super::anomaly_targets(labels, &logits)?,
            Prior::STANDARD,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pooling_keeps_the_sign_and_the_top_k() -> Result<()> {
        // 10 cells, rate 0.2 → K = 2: the largest logits, not the largest magnitudes.
        let x = Tensor::new(
            &[
                [-9f32, 1., 3., -8., 2., 0., 0., 0., 0., 0.],
                [-1f32, -2., -3., -4., -5., -6., -7., -8., -9., -0.5],
            ],
            &Device::Cpu,
        )?;
        let pooled = Minns::pool(&x, 0.2)?.to_vec1::<f32>()?;
        assert_eq!(pooled, [2.5, -0.75]);
        Ok(())
    }
}
