//! The one typed configuration of a training run: every constant of the official protocol, and
//! the defaults of each [`Profile`] (`paper`, `quick`, `own-data`). It is written to the run's
//! `config.json`.

use dra_data::pseudo::PseudoKind;
use dra_data::{BatchConfig, Setting, SplitConfig};
use dra_model::ops::Arithmetic;
use dra_model::{BackboneKind, HeadSet, Kernels, LossKind, Method, ModelConfig};
use serde::{Deserialize, Serialize};

use super::ahl_config::AhlConfig;
use super::profile::Profile;
use crate::error::TrainError;

/// Every setting of a run. Field docs give the official value (the `paper` profile).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The profile whose defaults the run started from, before any override (`paper`).
    pub profile: Profile,
    /// The detector: DRA or a competing method (docs/methods.md). Absent from the records of
    /// runs made before the baselines existed, which were all DRA.
    #[serde(default)]
    pub method: Method,
    /// Square input side in pixels (448).
    pub image_size: u32,
    /// Samples per step, references not counted (48).
    pub batch_size: usize,
    /// Reference normals per step and per test batch (5).
    pub n_ref: usize,
    /// Training epochs (30).
    pub epochs: usize,
    /// Steps per epoch (20).
    pub steps_per_epoch: usize,
    /// Labelled anomalies for training (10 or 1).
    pub n_anomaly: usize,
    /// General setting, or hard setting with a known class.
    pub setting: Setting,
    /// Seed of the NumPy-compatible shuffle that picks the labelled anomalies (42).
    pub split_seed: u32,
    /// General setting: first test anomaly in the shuffled list (default: `n_anomaly`).
    pub test_threshold: Option<usize>,
    /// General setting: fraction of unlabelled anomalies in the training normals (0).
    #[serde(default)]
    pub contamination: f64,
    /// Top-K rate of the MIL heads (0.1).
    pub topk_rate: f64,
    /// Pyramid levels (2).
    pub n_scales: usize,
    /// Feature extractor (ResNet-18).
    #[serde(default)]
    pub backbone: BackboneKind,
    /// Chance that a normal slot becomes a CutMix pseudo anomaly (0.5).
    pub pseudo_prob: f64,
    /// `RandomRotation` range in degrees (180).
    pub rotation_degrees: f64,
    /// Training loss on the method's score (the deviation loss).
    pub loss: LossKind,
    /// Adam learning rate (2e-4; the paper's text says 1e-3).
    pub lr: f64,
    /// Adam's coupled L2 weight decay (1e-5; the paper's text says 1e-2).
    pub weight_decay: f64,
    /// StepLR: the rate is multiplied by `lr_gamma` every `lr_step_size` epochs (10, 0.1).
    pub lr_step_size: usize,
    /// StepLR's factor (0.1).
    pub lr_gamma: f64,
    /// Global gradient-norm clip (1.0).
    pub clip_norm: f64,
    /// Seed of everything random in training: initial weights, sampling, augmentation.
    pub seed: u64,
    /// Test images per forward pass, each batch with fresh references (48).
    pub eval_batch_size: usize,
    /// Backbone initialisation: torchvision ResNet-18 weights (`.pth` or safetensors, torchvision
    /// or DRA names). `None` trains from scratch (the official code starts from ImageNet).
    #[serde(default)]
    pub weights: Option<std::path::PathBuf>,
    /// Outlier exposure: pseudo anomalies are drawn from `<root>/<other category>/train/good`
    /// instead of made by CutMix (official `--outlier_root`; the paper's medical data sets).
    #[serde(default)]
    pub outlier_root: Option<std::path::PathBuf>,
    /// Start from a trained model: every tensor (backbone, heads, BatchNorm statistics) of this
    /// `model.safetensors`, as the cross-domain fine-tuning of seed Table 9 does; applied after
    /// `weights`.
    #[serde(default)]
    pub init_model: Option<std::path::PathBuf>,
    /// Fraction of the training normals held out of training, seeded by `seed`, to calibrate
    /// the decision threshold on images training never saw (0: the official protocol, every
    /// normal is trained on; the run then has no threshold until `dra calibrate`). Left out of
    /// `config.json` when 0, so that the records and sweep hashes of earlier runs still match.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calibration_fraction: f64,
    /// False-positive rate on normal images at which the decision threshold is set (0.05).
    #[serde(
        default = "default_target_fpr",
        skip_serializing_if = "is_default_target_fpr"
    )]
    pub target_fpr: f64,
    /// DRA's heads that train and score (all four; a subset for the paper's Table 3 ablation).
    /// Left out of `config.json` when all four, as in the records of earlier runs.
    #[serde(default, skip_serializing_if = "HeadSet::is_all")]
    pub heads: HeadSet,
    /// How pseudo anomalies are made: the official CutMix, or CutPaste's scar or its mix (the
    /// paper's Table 4). Left out of `config.json` at the default.
    #[serde(default, skip_serializing_if = "PseudoKind::is_default")]
    pub pseudo: PseudoKind,
    /// AHL's settings (`--method ahl`, `--ahl-*`); `None` means AHL's defaults. A run's
    /// `config.json` records them in full for AHL and leaves them out for the other methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahl: Option<AhlConfig>,
    /// The portable arithmetic (`--reproducible`): the same bytes on any x86-64 CPU with AVX2
    /// and FMA, for some speed (docs/fidelity.md, "What a result depends on"). A run's
    /// evaluations and predictions compute as it was trained. Left out of `config.json` when
    /// off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reproducible: bool,
}

/// The default `--target-fpr`: one normal image in twenty rejected.
pub const DEFAULT_TARGET_FPR: f64 = 0.05;

fn default_target_fpr() -> f64 {
    DEFAULT_TARGET_FPR
}

fn is_default_target_fpr(v: &f64) -> bool {
    *v == DEFAULT_TARGET_FPR
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl TrainConfig {
    /// The official protocol (§4).
    pub fn paper() -> Self {
        Self {
            profile: Profile::Paper,
            method: Method::Dra,
            image_size: 448,
            batch_size: 48,
            n_ref: 5,
            epochs: 30,
            steps_per_epoch: 20,
            n_anomaly: 10,
            setting: Setting::General,
            split_seed: 42,
            test_threshold: None,
            contamination: 0.0,
            topk_rate: 0.1,
            n_scales: 2,
            backbone: BackboneKind::Resnet18,
            pseudo_prob: 0.5,
            rotation_degrees: 180.0,
            loss: LossKind::Deviation,
            lr: 2e-4,
            weight_decay: 1e-5,
            lr_step_size: 10,
            lr_gamma: 0.1,
            clip_norm: 1.0,
            seed: 0,
            eval_batch_size: 48,
            weights: None,
            outlier_root: None,
            init_model: None,
            calibration_fraction: 0.0,
            target_fpr: DEFAULT_TARGET_FPR,
            heads: HeadSet::ALL,
            pseudo: PseudoKind::Cutmix,
            ahl: None,
            reproducible: false,
        }
    }

    /// Small enough for two CPU cores in minutes, on the same model and loss. Trained from
    /// scratch (no ImageNet weights exist on such machines), so the step is larger.
    pub fn quick() -> Self {
        Self {
            profile: Profile::Quick,
            image_size: 64,
            batch_size: 24,
            epochs: 8,
            steps_per_epoch: 10,
            lr: 1e-3,
            lr_step_size: 6,
            ..Self::paper()
        }
    }

    /// What works on real images on a CPU from random weights: 128 px, where DRA (and the
    /// official code) rank a held-out texture's anomalies above its normals, while 64 px ranks
    /// them below; 5 × 20 steps of 48 at the official learning rate; 10 % of the training
    /// normals held out for the decision threshold. ImageNet weights (`--weights`) do better.
    pub fn own_data() -> Self {
        Self {
            profile: Profile::OwnData,
            image_size: 128,
            epochs: 5,
            steps_per_epoch: 20,
            calibration_fraction: 0.1,
            ..Self::paper()
        }
    }

    /// The defaults of `profile`: [`paper`](Self::paper), [`quick`](Self::quick) or
    /// [`own_data`](Self::own_data).
    pub fn for_profile(profile: Profile) -> Self {
        match profile {
            Profile::Paper => Self::paper(),
            Profile::Quick => Self::quick(),
            Profile::OwnData => Self::own_data(),
        }
    }

    /// Optimiser steps of the whole run: epochs × steps per epoch (600).
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// StepLR stepped at the start of each epoch before training, as the official loop does:
    /// epoch e trains at lr · γ^⌊(e + 1) / step⌋.
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        self.lr * self.lr_gamma.powi(((epoch + 1) / self.lr_step_size) as i32)
    }

    /// The batches of this run's method: the baselines get no references, and only DRA and
    /// SAOE get pseudo anomalies (the others' normal slots all stay normal).
    pub fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            image_size: self.image_size,
            batch_size: self.batch_size,
            n_ref: if self.method.uses_references() {
                self.n_ref
            } else {
                0
            },
            pseudo_prob: if self.method.uses_pseudo_anomalies() {
                self.pseudo_prob
            } else {
                0.0
            },
            rotation_degrees: self.rotation_degrees,
            pseudo: self.pseudo,
        }
    }

    /// How the model's GEMMs compute: portably with [`reproducible`](Self::reproducible).
    pub fn arithmetic(&self) -> Arithmetic {
        if self.reproducible {
            Arithmetic::Portable
        } else {
            Arithmetic::Native
        }
    }

    /// The model's settings: top-K rate, references, pyramid levels and backbone.
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            topk_rate: self.topk_rate,
            n_ref: self.n_ref,
            n_scales: self.n_scales,
            backbone: self.backbone,
            kernels: Kernels::default().with_arithmetic(self.arithmetic()),
            heads: self.heads,
        }
    }

    /// The split's settings: labelled anomalies, setting, split seed, test threshold and
    /// contamination.
    pub fn split_config(&self) -> SplitConfig {
        SplitConfig {
            n_anomaly: self.n_anomaly,
            setting: self.setting.clone(),
            split_seed: self.split_seed,
            test_threshold: self.test_threshold,
            contamination: self.contamination,
        }
    }

    /// AHL's effective settings: those given, or the profile's (the code's for `paper`, a
    /// shorter schedule for the CPU profiles).
    pub fn ahl_config(&self) -> AhlConfig {
        self.ahl
            .clone()
            .unwrap_or_else(|| AhlConfig::for_profile(self.profile))
    }

    /// Whether the backbone starts from random weights (no `--weights`, no `--init-model`).
    pub fn from_random_weights(&self) -> bool {
        self.weights.is_none() && self.init_model.is_none()
    }

    /// Rejects impossible settings, naming the flag.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad =
            |flag: &'static str, message: String| Err(TrainError::InvalidOption { flag, message });
        // Only DRA and DevNet run the pyramid; the other methods see the full size alone.
        let levels = if self.method.uses_pyramid() {
            self.n_scales
        } else {
            1
        };
        let min_size = 32u32 << levels.saturating_sub(1).min(8);
        if self.n_scales == 0 {
            return bad("--n-scales", "must be at least 1".into());
        }
        if self.image_size < min_size {
            return bad(
                "--image-size",
                format!(
                    "{} px is too small: with {} pyramid level(s) the smallest input must give a feature map, so at least {min_size} px",
                    self.image_size, self.n_scales
                ),
            );
        }
        if self.batch_size == 0 || (self.n_anomaly > 0 && self.batch_size < 3) {
            return bad(
                "--batch-size",
                "must be at least 3 (normal and anomaly slots)".into(),
            );
        }
        if self.n_ref == 0 {
            return bad("--n-ref", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("--epochs", "must be at least 1".into());
        }
        if self.steps_per_epoch == 0 {
            return bad("--steps-per-epoch", "must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(
                "--lr",
                format!("must be a positive number, got {}", self.lr),
            );
        }
        if !(self.topk_rate > 0.0 && self.topk_rate <= 1.0) {
            return bad(
                "--topk",
                format!("must lie in (0, 1], got {}", self.topk_rate),
            );
        }
        if self.lr_step_size == 0 {
            return bad("--lr-step-size", "must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return bad("--eval-batch-size", "must be at least 1".into());
        }
        if self.clip_norm.is_nan() || self.clip_norm <= 0.0 {
            return bad(
                "--clip-norm",
                format!("must be positive, got {}", self.clip_norm),
            );
        }
        if !(self.lr_gamma > 0.0 && self.lr_gamma <= 1.0) {
            return bad(
                "--lr-gamma",
                format!("must lie in (0, 1], got {}", self.lr_gamma),
            );
        }
        if !(0.0..=360.0).contains(&self.rotation_degrees) {
            return bad(
                "--rotation",
                format!("must lie in [0, 360], got {}", self.rotation_degrees),
            );
        }
        if !(0.0..=1.0).contains(&self.pseudo_prob) {
            return bad("--pseudo-prob", "must lie in [0, 1]".into());
        }
        if self.method.is_ahl() {
            self.ahl_config()
                .validate()
                .map_err(|(flag, message)| TrainError::InvalidOption { flag, message })?;
        } else if self.ahl.is_some() {
            return bad(
                "--ahl-epochs",
                format!("AHL's settings apply to --method ahl, not {}", self.method),
            );
        }
        if !self.heads.is_all() && self.method != Method::Dra && self.method != Method::Ahl {
            return bad(
                "--heads",
                format!(
                    "selects DRA's heads; {} has its own (give --method dra)",
                    self.method
                ),
            );
        }
        if !(0.0..=0.5).contains(&self.calibration_fraction) {
            return bad(
                "--calibration-fraction",
                format!(
                    "must lie in [0, 0.5] (a share of the training normals), got {}",
                    self.calibration_fraction
                ),
            );
        }
        if !(0.0..1.0).contains(&self.target_fpr) {
            return bad(
                "--target-fpr",
                format!("must lie in [0, 1), got {}", self.target_fpr),
            );
        }
        if !self.pseudo.is_default() {
            if !self.method.uses_pseudo_anomalies() {
                return bad(
                    "--pseudo",
                    format!(
                        "{} trains on no pseudo anomalies; use dra or saoe",
                        self.method
                    ),
                );
            }
            if self.outlier_root.is_some() {
                return bad(
                    "--pseudo",
                    "--outlier-root replaces generated pseudo anomalies by outlier images; give one of the two".into(),
                );
            }
        }
        if self.outlier_root.is_some() && !self.method.uses_pseudo_anomalies() {
            return bad(
                "--outlier-root",
                format!(
                    "{} trains on no pseudo anomalies, so outlier images would be ignored; use dra or saoe",
                    self.method
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lr_matches_the_official_schedule() {
        let c = TrainConfig::paper();
        let lrs: Vec<f64> = (0..30).map(|e| c.lr_at_epoch(e)).collect();
        assert!(lrs[..9].iter().all(|&l| (l - 2e-4).abs() < 1e-12));
        assert!(lrs[9..19].iter().all(|&l| (l - 2e-5).abs() < 1e-12));
        assert!(lrs[19..29].iter().all(|&l| (l - 2e-6).abs() < 1e-13));
        assert!((lrs[29] - 2e-7).abs() < 1e-14);
    }

    #[test]
    fn paper_profile_is_the_protocol() {
        let c = TrainConfig::paper();
        assert_eq!(
            (
                c.image_size,
                c.batch_size,
                c.n_ref,
                c.epochs,
                c.steps_per_epoch
            ),
            (448, 48, 5, 30, 20)
        );
        assert_eq!(c.total_steps(), 600);
        c.validate().unwrap();
        TrainConfig::quick().validate().unwrap();
        TrainConfig::own_data().validate().unwrap();
        assert_eq!(TrainConfig::own_data().total_steps(), 100);
    }

    #[test]
    fn decision_settings_stay_out_of_records_at_their_defaults() {
        // Earlier runs' config.json (and the sweeps' hashes of it) have no such keys.
        let json = serde_json::to_value(TrainConfig::paper()).unwrap();
        for key in ["calibration_fraction", "target_fpr", "heads", "pseudo"] {
            assert!(json.get(key).is_none(), "{key}");
        }
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, TrainConfig::paper());
        let own = TrainConfig::own_data();
        let json = serde_json::to_value(&own).unwrap();
        assert_eq!(json["calibration_fraction"], 0.1);
        assert_eq!(json["profile"], "own-data");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), own);
        let mut c = TrainConfig::quick();
        c.calibration_fraction = 0.7;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--calibration-fraction"));
        c.calibration_fraction = 0.0;
        c.target_fpr = 1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--target-fpr"));
    }

    #[test]
    fn baselines_get_no_references_and_only_saoe_pseudo_anomalies() {
        let mut c = TrainConfig::quick();
        assert_eq!(
            (c.batch_config().n_ref, c.batch_config().pseudo_prob),
            (5, 0.5)
        );
        for (method, pseudo) in [
            (Method::DevNet, 0.0),
            (Method::DeepSad, 0.0),
            (Method::Minns, 0.0),
            (Method::Flos, 0.0),
            (Method::Saoe, 0.5),
        ] {
            c.method = method;
            assert_eq!(c.batch_config().n_ref, 0, "{method}");
            assert_eq!(c.batch_config().pseudo_prob, pseudo, "{method}");
        }
        c.method = Method::Flos;
        c.outlier_root = Some("lag".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--outlier-root"));
        c.method = Method::Saoe;
        c.validate().unwrap();
    }

    #[test]
    fn method_is_recorded_lowercase_and_defaults_to_dra() {
        let mut c = TrainConfig::quick();
        c.method = Method::DeepSad;
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["method"], "deepsad");
        let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, c);
        // A config.json written before the baselines existed.
        let mut old = json;
        old.as_object_mut().unwrap().remove("method");
        let back: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.method, Method::Dra);
    }

    #[test]
    fn ablation_settings_are_recorded_and_checked() {
        let mut c = TrainConfig::quick();
        c.heads = "DRA2A".parse().unwrap();
        c.pseudo = PseudoKind::CpScar;
        c.validate().unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (&json["heads"], &json["pseudo"]),
            (&"seen,pseudo".into(), &"cp-scar".into())
        );
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), c);
        assert_eq!(c.batch_config().pseudo, PseudoKind::CpScar);
        assert_eq!(c.model_config().heads, c.heads);
        let mut flos = c.clone();
        flos.method = Method::Flos;
        assert!(flos
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--heads"));
        flos.heads = HeadSet::ALL;
        assert!(flos
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--pseudo"));
        c.outlier_root = Some("lag".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--pseudo"));
    }

    #[test]
    fn impossible_options_name_the_flag() {
        let mut c = TrainConfig::quick();
        c.image_size = 40;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--image-size"));
        let mut c = TrainConfig::quick();
        c.epochs = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--epochs"));
    }
}
