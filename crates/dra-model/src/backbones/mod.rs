//! The feature extractors, with torchvision's tensor names: ResNet-18 (the official backbone)
//! and MobileNetV2 (the lightweight option for small data sets). DRA and every baseline build
//! theirs through one [`BackboneKind`].

mod mobilenet;
mod resnet;

pub use mobilenet::MobileNetV2;
pub use resnet::ResNet18;

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::onnx::Graph;
use crate::ops::Kernels;

/// The feature extractor (`--backbone`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneKind {
    /// torchvision ResNet-18 to `layer4`: the official backbone.
    #[default]
    Resnet18,
    /// torchvision MobileNetV2 `features`: the lightweight option for small data sets.
    MobilenetV2,
}

impl BackboneKind {
    /// Channels of the feature map the backbone hands to the heads: 512 for ResNet-18, 1280
    /// for MobileNetV2.
    pub fn out_channels(self) -> usize {
        match self {
            Self::Resnet18 => ResNet18::OUT_CHANNELS,
            Self::MobilenetV2 => MobileNetV2::OUT_CHANNELS,
        }
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "resnet18" => Ok(Self::Resnet18),
            "mobilenet_v2" => Ok(Self::MobilenetV2),
            other => Err(format!(
                "unknown backbone `{other}`; valid: resnet18, mobilenet_v2"
            )),
        }
    }
}

impl std::fmt::Display for BackboneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Resnet18 => "resnet18",
            Self::MobilenetV2 => "mobilenet_v2",
        })
    }
}

/// The feature extractor of every method (DRA and the baselines share it), built under
/// `feature_extractor.net` so that `--weights` and the initialisation treat it alike.
#[derive(Debug, Clone)]
pub enum Backbone {
    /// torchvision ResNet-18 to `layer4`.
    Resnet18(ResNet18),
    /// torchvision MobileNetV2 `features`.
    MobilenetV2(MobileNetV2),
}

impl Backbone {
    /// The backbone `kind` on `kernels` for a model whose tensors `vb` holds, under the
    /// official model's prefix (`feature_extractor.net.`, [`crate::weights::BACKBONE_PREFIX`])
    /// shared by DRA and every baseline.
    pub(crate) fn of_model(kind: BackboneKind, kernels: Kernels, vb: &VarBuilder) -> Result<Self> {
        Self::new(kind, kernels, vb.pp("feature_extractor").pp("net"))
    }

    /// Builds `kind` on `kernels` under `vb`, whose prefix is the torchvision model's root.
    pub fn new(kind: BackboneKind, kernels: Kernels, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            BackboneKind::Resnet18 => Self::Resnet18(ResNet18::new(kernels, vb)?),
            BackboneKind::MobilenetV2 => Self::MobilenetV2(MobileNetV2::new(kernels, vb)?),
        })
    }

    /// The backbone in eval mode as ONNX nodes on the value `x`, its tensors named as in the
    /// model's state dict (`feature_extractor.net.…`); returns the feature map's name.
    pub fn export(&self, g: &mut Graph, x: &str) -> Result<String> {
        let name = "feature_extractor.net";
        match self {
            Self::Resnet18(net) => net.export(g, name, x),
            Self::MobilenetV2(net) => net.export(g, name, x),
        }
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::Resnet18(net) => net.forward_t(x, train),
            Self::MobilenetV2(net) => net.forward_t(x, train),
        }
    }
}
