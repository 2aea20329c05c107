//! Deep SAD (Ruff, Vandermeulen, Görnitz, Binder, Müller, Müller & Kloft, "Deep semi-supervised
//! anomaly detection", ICLR 2020): normals are pulled into a hypersphere around a fixed centre,
//! labelled anomalies pushed out by an inverse-distance term.

use candle_core::{ModuleT, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};

use crate::backbones::Backbone;
use crate::dra::{export_global_pool, global_pool};
use crate::model_config::ModelConfig;
use crate::onnx::{Attr, Graph};
use crate::ops::Linear;

/// Backbone → global average pooling → bias-free linear map to a `REP_DIM`-dimensional
/// embedding φ(x). Score ‖φ(x) − c‖². Tensors: `feature_extractor.net.*`, `projection.weight`
/// and the centre `deepsad.center`, which is state, not a parameter: it is set once before
/// training ([`DeepSad::center_from_mean`]) and saved with the model.
#[derive(Debug, Clone)]
pub struct DeepSad {
    feature_extractor: Backbone,
    projection: Linear,
    center: Tensor,
}

impl DeepSad {
    /// Embedding size (the original's CIFAR-10 network: `rep_dim` 128).
    pub const REP_DIM: usize = 128;
    /// Weight η of the labelled anomalies' term (original default 1).
    pub const ETA: f64 = 1.0;
    /// Added to the distance before inverting it (original `eps` 1e-6).
    pub const EPS: f64 = 1e-6;
    /// Centre coordinates closer to 0 than this are moved to ±`CENTER_EPS` (original 0.1): a
    /// zero coordinate could be matched trivially by zero weights.
    pub const CENTER_EPS: f32 = 0.1;
    /// Name of the centre in the model's tensors.
    pub const CENTER: &'static str = "deepsad.center";

    /// Builds the model from `vb`, whose prefix is the model's root; `config` gives the backbone.
    /// The centre starts at zero (or as `vb` holds it) until the trainer sets it.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let c = config.backbone.out_channels();
        Ok(Self {
            feature_extractor: Backbone::of_model(config.backbone, config.kernels, &vb)?,
            projection: Linear::new(c, Self::REP_DIM, false, config.kernels, vb.pp("projection"))?,
            center: vb
                .pp("deepsad")
                .get_with_hints(Self::REP_DIM, "center", Init::Const(0.0))?,
        })
    }

    /// φ(x), `(B, REP_DIM)`.
    pub fn embed(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let features = self.feature_extractor.forward_t(images, train)?;
        self.projection.forward(&global_pool(&features)?)
    }

    /// The model in eval mode as ONNX nodes on the value `x`: the squared distance of the
    /// pooled, projected features to the centre, `(B,)`.
    pub fn export(&self, g: &mut Graph, x: &str) -> Result<String> {
        let features = self.feature_extractor.export(g, x)?;
        let pooled = export_global_pool(g, "pool", &features);
        let embedded = self.projection.export(g, "projection", &pooled)?;
        let center = g.constant(Self::CENTER, &self.center)?;
        let diff = g.node("Sub", "deepsad.diff", &[&embedded, &center], &[]);
        let squared = g.node("Mul", "deepsad.squared", &[&diff, &diff], &[]);
        let axes = g.constant_i64("deepsad.axes", &[1]);
        Ok(g.node(
            "ReduceSum",
            "score",
            &[&squared, &axes],
            &[Attr::Int("keepdims", 0)],
        ))
    }

    /// ‖φ(x) − c‖², `(B,)`: the anomaly score.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let diff = self
            .embed(images, train)?
            .broadcast_sub(&self.center.detach())?;
        diff.sqr()?.sum(D::Minus1)
    }

    /// The centre from the mean embedding of the training normals, with the original's
    /// adjustment: a coordinate in (−ε, 0) becomes −ε, one in (0, ε) becomes ε (exact zeros
    /// stay, as in the original).
    pub fn center_from_mean(mean: &[f32]) -> Vec<f32> {
        let eps = Self::CENTER_EPS;
        mean.iter()
            .map(|&v| match v {
                v if v.abs() < eps && v < 0.0 => -eps,
                v if v.abs() < eps && v > 0.0 => eps,
                v => v,
            })
            .collect()
    }

    /// The Deep SAD loss of squared distances `(B,)`: a normal (label 0) contributes its
    /// distance d, an anomaly (labels 1 and 2) η·(d + ε)⁻¹; the mean over the batch.
    pub fn loss_from_distances(distances: &Tensor, labels: &[u8]) -> Result<Tensor> {
        super::check_labels(distances, labels)?;
        let anomaly = super::anomaly_targets(labels, distances)?;
        let normal = anomaly.affine(-1.0, 1.0)?;
        let inverse = distances
            .affine(1.0, Self::EPS)?
            .recip()?
            .affine(Self::ETA, 0.0)?;
        ((normal * distances)? + (anomaly * inverse)?)?.mean_all()
    }

    /// The training loss of a batch (no references).
    pub fn loss(&self, images: &Tensor, labels: &[u8]) -> Result<Tensor> {
        Self::loss_from_distances(&self.forward_t(images, true)?, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_by_hand() -> Result<()> {
        let d = Tensor::new(&[0.5f32, 2.0, 4.0, 0.0], &Device::Cpu)?;
        let got = DeepSad::loss_from_distances(&d, &[0, 1, 0, 2])?.to_scalar::<f32>()?;
        let want = (0.5 + 1.0 / (2.0 + 1e-6) + 4.0 + 1.0 / 1e-6) / 4.0;
        assert!((got as f64 - want).abs() / want < 1e-6, "{got} vs {want}");
        assert!(DeepSad::loss_from_distances(&d, &[0, 1]).is_err());
        Ok(())
    }

    #[test]
    fn center_moves_small_coordinates_to_eps() {
        let c = DeepSad::center_from_mean(&[0.05, -0.02, 0.0, 0.3, -0.1, -0.5]);
        assert_eq!(c, [0.1, -0.1, 0.0, 0.3, -0.1, -0.5]);
    }
}
