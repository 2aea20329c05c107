//! Which detector a run trains: DRA or one of the competing methods of the paper's tables.

use serde::{Deserialize, Serialize};

/// A detection method (`--method`). Every method shares the backbone, the data pipeline, the
/// trainer and the evaluation; they differ in the layers on top of the backbone, the loss, and
/// which rows of the balanced batch they use (docs/methods.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// DRA (Ding, Pang & Shen, CVPR 2022): four heads, references, pseudo anomalies.
    #[default]
    Dra,
    /// DevNet (Pang et al.): DRA's seen-abnormality head alone, deviation loss.
    DevNet,
    /// Deep SAD (Ruff et al., ICLR 2020): a hypersphere around a fixed centre.
    DeepSad,
    /// MINNS: top-K multiple-instance pooling of per-cell logits, binary cross-entropy.
    Minns,
    /// FLOS: a binary classifier on pooled features trained with the focal loss.
    Flos,
    /// SAOE: a binary classifier with synthetic (CutMix) and outlier-exposure anomalies.
    Saoe,
    /// AHL (Zhu, Ding, Tian & Pang, CVPR 2024) on DRA: DRA's heads retrained over episodes of
    /// heterogeneous anomaly distributions on a trained DRA's features. The model it saves and
    /// scores with is a DRA.
    Ahl,
    /// AHL on DevNet (`--method ahl --ahl-base devnet`): DevNet's head retrained as AHL trains
    /// DRA's; the model is a DevNet.
    #[serde(rename = "ahl-devnet")]
    AhlDevNet,
}

impl Method {
    /// Every method, DRA first.
    pub const ALL: [Method; 8] = [
        Method::Dra,
        Method::DevNet,
        Method::DeepSad,
        Method::Minns,
        Method::Flos,
        Method::Saoe,
        Method::Ahl,
        Method::AhlDevNet,
    ];

    /// The method's name on the command line, in `config.json` and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dra => "dra",
            Self::DevNet => "devnet",
            Self::DeepSad => "deepsad",
            Self::Minns => "minns",
            Self::Flos => "flos",
            Self::Saoe => "saoe",
            Self::Ahl => "ahl",
            Self::AhlDevNet => "ahl-devnet",
        }
    }

    /// The model this method trains and saves: AHL's base (DRA or DevNet), itself otherwise.
    /// Everything about the model (layers, batches, references) is the base's.
    pub fn base(self) -> Method {
        match self {
            Self::Ahl => Self::Dra,
            Self::AhlDevNet => Self::DevNet,
            other => other,
        }
    }

    /// Whether the method is AHL, on either base.
    pub fn is_ahl(self) -> bool {
        matches!(self, Self::Ahl | Self::AhlDevNet)
    }

    /// Whether each batch (training and test) starts with reference images: DRA's residual head
    /// needs them; the baselines never see them.
    pub fn uses_references(self) -> bool {
        self.base() == Self::Dra
    }

    /// Whether normal slots of a training batch may become pseudo anomalies (CutMix, or outlier
    /// exposure with `--outlier-root`). The other methods train on normals and labelled
    /// anomalies only, so their batches keep every normal slot normal.
    pub fn uses_pseudo_anomalies(self) -> bool {
        matches!(self.base(), Self::Dra | Self::Saoe)
    }

    /// Whether `--loss` chooses the method's loss (DRA's heads and DevNet's head); the other
    /// methods are defined by their loss.
    pub fn takes_loss_option(self) -> bool {
        matches!(self.base(), Self::Dra | Self::DevNet)
    }

    /// Whether the two-level image pyramid (`--n-scales`) applies, as in the DRA and DevNet code.
    pub fn uses_pyramid(self) -> bool {
        matches!(self.base(), Self::Dra | Self::DevNet)
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method `{s}`; valid: {}", valid.join(", "))
            })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_alike() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
        }
        let err = "svdd".parse::<Method>().unwrap_err();
        assert!(
            err.contains("svdd")
                && err.contains("dra, devnet, deepsad, minns, flos, saoe, ahl, ahl-devnet")
        );
        assert_eq!(Method::AhlDevNet.base(), Method::DevNet);
        assert!(Method::Ahl.uses_references() && !Method::AhlDevNet.uses_references());
    }
}
