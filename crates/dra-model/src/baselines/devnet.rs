//! DevNet (Pang, Shen & van den Hengel, KDD 2019; the image version of Pang, Ding, Shen & van
//! den Hengel, "Explainable deep few-shot anomaly detection with deviation networks", 2021), as
//! the DRA paper runs it: DRA's seen-abnormality head alone.

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;

use crate::backbones::Backbone;
use crate::dra::{
    downsample_nearest, export_downsample_nearest, export_pyramid_mean, feature_cells,
    pyramid_mean, LossKind, PlainHead, Prior,
};
use crate::model_config::ModelConfig;
use crate::onnx::Graph;

/// Backbone → 1×1 convolution scoring every cell → |·| → top-K mean (DRA's [`PlainHead`]),
/// averaged over the image pyramid as DRA averages its heads; trained with the deviation loss
/// (or `--loss`) on normals against labelled anomalies. Tensor names are those of the DevNet
/// code's `SemiADNet`: `feature_extractor.net.*` and `conv.*`.
#[derive(Debug, Clone)]
pub struct DevNet {
    feature_extractor: Backbone,
    /// DRA's plain head, its convolution named `conv`.
    head: PlainHead,
    n_scales: usize,
}

impl DevNet {
    /// Builds the model from `vb`, whose prefix is the model's root; `config` gives the
    /// backbone, the top-K rate and the pyramid's levels.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            feature_extractor: Backbone::of_model(config.backbone, config.kernels, &vb)?,
            head: Self::head(config, &vb)?,
            n_scales: config.n_scales,
        })
    }

    /// DevNet's head alone (`conv.*` under `vb`), for `config`'s backbone: what AHL retrains on
    /// stored feature maps. Its `forward` scores one level's features.
    pub fn head(config: &ModelConfig, vb: &VarBuilder) -> Result<PlainHead> {
        let c = config.backbone.out_channels();
        PlainHead::with_conv(c, config.topk_rate, config.kernels, vb.pp("conv"))
    }

    /// The backbone's feature maps of a batch at pyramid level `s` (level 0 is the batch
    /// itself), in eval or train mode: what the head scores at that level.
    pub fn features_t(&self, images: &Tensor, s: usize, train: bool) -> Result<Tensor> {
        self.feature_extractor
            .forward_t(&downsample_nearest(images, s)?, train)
    }

    /// The model in eval mode as ONNX nodes on the value `x` (`(B, 3, h, w)` images of
    /// `size` = (h, w) pixels): the head on each level of the pyramid, their mean `(B,)`.
    pub fn export(&self, g: &mut Graph, x: &str, size: (usize, usize)) -> Result<String> {
        let mut levels = Vec::new();
        for s in 0..self.n_scales.max(1) {
            let xs = export_downsample_nearest(g, x, size, s);
            let features = self.feature_extractor.export(g, &xs)?;
            let cells = feature_cells(&self.feature_extractor, size, s)?;
            let (_, score) = self.head.export(g, "conv", &features, cells)?;
            levels.push([score]);
        }
        let [score] = export_pyramid_mean(g, &levels, ["score"])?;
        Ok(score)
    }

    /// Per-image anomaly scores `(B,)`: each level's top-K mean of |cell score|, averaged over
    /// the pyramid's levels (DevNet's `torch.cat(…).mean(1)`).
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let per_scale = (0..self.n_scales.max(1))
            .map(|s| self.head.forward(&self.features_t(images, s, train)?))
            .collect::<Result<Vec<_>>>()?;
        pyramid_mean(&per_scale)
    }

    /// The training loss of a batch (no references): `kind` against "is an anomaly". The
    /// deviation loss draws its Gaussian prior from `rng`, as DRA's heads do.
    pub fn loss<R: Rng>(
        &self,
        images: &Tensor,
        labels: &[u8],
        kind: LossKind,
        rng: &mut R,
    ) -> Result<Tensor> {
        let scores = self.forward_t(images, true)?;
        super::check_labels(&scores, labels)?;
        let prior = match kind {
            LossKind::Deviation => Prior::draw(rng),
            _ => Prior::STANDARD,
        };
        kind.loss(&scores, &super::anomaly_targets(labels, &scores)?, prior)
    }
}
