//! Command-line overrides of the typed configuration, shared by `dra train` and the benchmark
//! sweeps (`cargo xtask bench-*`), so that every training flag means the same in both.

use std::path::PathBuf;

use dra_data::pseudo::PseudoKind;
use dra_model::{BackboneKind, HeadSet, LossKind};

use super::ahl_config::{Draws, HeadInit, Members};
use super::train_config::TrainConfig;

/// Every training setting a user may change on top of a profile. The run's own identity
/// (`--n-anomaly`, `--known-class`, `--seed`) is not here: a sweep sets those per run.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Overrides {
    /// Seed of the anomaly selection (NumPy RandomState; official 42).
    #[cfg_attr(feature = "cli", arg(long))]
    pub split_seed: Option<u32>,
    /// General setting: index of the first test anomaly in the shuffled list.
    #[cfg_attr(feature = "cli", arg(long))]
    pub test_threshold: Option<usize>,
    /// General setting: fraction r of the training set made of unlabelled anomalies (official
    /// --cont_rate); they stay in the test set unless --test-threshold moves past them.
    #[cfg_attr(feature = "cli", arg(long))]
    pub contamination: Option<f64>,
    /// Outlier exposure: pseudo anomalies from DIR/OTHER_CATEGORY/train/good/ instead of
    /// CutMix (the paper's medical data sets).
    #[cfg_attr(feature = "cli", arg(long))]
    pub outlier_root: Option<PathBuf>,
    /// Square input side in pixels (official 448; own-data profile 128; quick profile 64).
    #[cfg_attr(feature = "cli", arg(long))]
    pub image_size: Option<u32>,
    /// Training epochs (official 30; own-data profile 5; quick profile 8).
    #[cfg_attr(feature = "cli", arg(long))]
    pub epochs: Option<usize>,
    /// Optimiser steps per epoch (official and own-data profile 20; quick profile 10).
    #[cfg_attr(feature = "cli", arg(long))]
    pub steps_per_epoch: Option<usize>,
    /// Training images per step, references not counted (official and own-data profile 48;
    /// quick profile 24).
    #[cfg_attr(feature = "cli", arg(long))]
    pub batch_size: Option<usize>,
    /// Reference images per step and per test batch.
    #[cfg_attr(feature = "cli", arg(long))]
    pub n_ref: Option<usize>,
    /// Training loss: deviation (official), bce or focal.
    #[cfg_attr(feature = "cli", arg(long))]
    pub loss: Option<LossKind>,
    /// Adam learning rate (official code 2e-4, the paper's text 1e-3; quick profile 1e-3).
    #[cfg_attr(feature = "cli", arg(long))]
    pub lr: Option<f64>,
    /// Adam's coupled L2 weight decay (official code 1e-5, the paper's text 1e-2).
    #[cfg_attr(feature = "cli", arg(long))]
    pub weight_decay: Option<f64>,
    /// StepLR period in epochs: the rate is multiplied by --lr-gamma this often (official 10).
    #[cfg_attr(feature = "cli", arg(long))]
    pub lr_step_size: Option<usize>,
    /// Top-K rate of the heads, in (0, 1]: the share of feature-map cells, highest first, that
    /// each head averages (official 0.1).
    #[cfg_attr(feature = "cli", arg(long))]
    pub topk: Option<f64>,
    /// Levels of the image pyramid: full size, then halved per level (official 2; DRA and
    /// DevNet only).
    #[cfg_attr(feature = "cli", arg(long))]
    pub n_scales: Option<usize>,
    /// Test images per forward pass, each batch with fresh references (official 48).
    #[cfg_attr(feature = "cli", arg(long))]
    pub eval_batch_size: Option<usize>,
    /// StepLR factor applied every --lr-step-size epochs.
    #[cfg_attr(feature = "cli", arg(long))]
    pub lr_gamma: Option<f64>,
    /// Global gradient-norm clip.
    #[cfg_attr(feature = "cli", arg(long))]
    pub clip_norm: Option<f64>,
    /// Chance that a normal slot becomes a CutMix pseudo anomaly.
    #[cfg_attr(feature = "cli", arg(long))]
    pub pseudo_prob: Option<f64>,
    /// Range of the random rotation in degrees (0 disables it).
    #[cfg_attr(feature = "cli", arg(long))]
    pub rotation: Option<f64>,
    /// Feature extractor: resnet18 (official) or mobilenet_v2 (for small data sets).
    #[cfg_attr(feature = "cli", arg(long))]
    pub backbone: Option<BackboneKind>,
    /// Initialise the backbone from these weights (torchvision ResNet-18 or MobileNetV2 `.pth`
    /// or safetensors, torchvision or DRA tensor names). Default: from scratch.
    #[cfg_attr(feature = "cli", arg(long))]
    pub weights: Option<PathBuf>,
    /// Start from a trained model's every tensor (a run's model.safetensors): fine-tuning.
    #[cfg_attr(feature = "cli", arg(long))]
    pub init_model: Option<PathBuf>,
    /// Share of the training normals held out of training to calibrate the decision threshold
    /// on images the model never saw (paper and quick profiles 0: all are trained on, as the
    /// official protocol; own-data profile 0.1).
    #[cfg_attr(feature = "cli", arg(long))]
    pub calibration_fraction: Option<f64>,
    /// False-positive rate on normal images at which the decision threshold is set.
    #[cfg_attr(feature = "cli", arg(long))]
    pub target_fpr: Option<f64>,
    /// DRA's heads that train and score: comma-separated from normal, seen, pseudo, residual,
    /// or a variant of the paper's Table 3 (DRA1A, DRA2A, DRA3Ar, DRA3An, DRA) [default: all].
    #[cfg_attr(feature = "cli", arg(long))]
    pub heads: Option<HeadSet>,
    /// Pseudo anomalies: cutmix (official), cp-scar (CutPaste's scar) or cp-mix (a fair coin
    /// between the two per pseudo anomaly), as the paper's Table 4 compares them.
    #[cfg_attr(feature = "cli", arg(long))]
    pub pseudo: Option<PseudoKind>,
    /// AHL: outer updates of the unified heads, one per AHL epoch (30).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_epochs: Option<usize>,
    /// AHL: SGD steps on the support set per episode (41, the code's 1 + 2 × 20).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_inner_steps: Option<usize>,
    /// AHL: query batches per episode whose loss makes the outer gradient (20).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_query_batches: Option<usize>,
    /// AHL: which normals make a cluster: kmeans (the paper) or prefix (the code: listing
    /// prefixes of the clusters' sizes).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_clusters: Option<Members>,
    /// AHL: how episodes draw their anomalies and generators: paper or official.
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_draws: Option<Draws>,
    /// AHL: Adam's learning rate for the unified heads (0.002, the code's, for fresh heads).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_lr: Option<f64>,
    /// AHL: where the unified heads start: base (the trained base model's heads) or fresh (the
    /// released code).
    #[cfg_attr(feature = "cli", arg(long))]
    pub ahl_init: Option<HeadInit>,
    /// The same bytes on any x86-64 CPU with AVX2 and FMA: every GEMM runs gemm's AVX2 + FMA
    /// kernels in depth blocks of 512, whatever the CPU's vector units and caches
    /// (docs/fidelity.md; the cost in docs/performance.md). Evaluations of the run compute so
    /// too.
    #[cfg_attr(feature = "cli", arg(long))]
    pub reproducible: bool,
}

impl Overrides {
    /// Writes every given setting into `c`.
    pub fn apply(&self, c: &mut TrainConfig) {
        macro_rules! set {
            ($($field:ident <- $arg:expr),* $(,)?) => {
                $( if let Some(v) = $arg.clone() { c.$field = v; } )*
            };
        }
        set!(
            split_seed <- self.split_seed,
            image_size <- self.image_size,
            epochs <- self.epochs,
            steps_per_epoch <- self.steps_per_epoch,
            batch_size <- self.batch_size,
            n_ref <- self.n_ref,
            loss <- self.loss,
            lr <- self.lr,
            weight_decay <- self.weight_decay,
            lr_step_size <- self.lr_step_size,
            topk_rate <- self.topk,
            n_scales <- self.n_scales,
            eval_batch_size <- self.eval_batch_size,
            lr_gamma <- self.lr_gamma,
            clip_norm <- self.clip_norm,
            pseudo_prob <- self.pseudo_prob,
            rotation_degrees <- self.rotation,
            backbone <- self.backbone,
            contamination <- self.contamination,
            calibration_fraction <- self.calibration_fraction,
            target_fpr <- self.target_fpr,
            heads <- self.heads,
            pseudo <- self.pseudo,
        );
        if self.weights.is_some() {
            c.weights = self.weights.clone();
        }
        if self.init_model.is_some() {
            c.init_model = self.init_model.clone();
        }
        if self.outlier_root.is_some() {
            c.outlier_root = self.outlier_root.clone();
        }
        if self.test_threshold.is_some() {
            c.test_threshold = self.test_threshold;
        }
        if self.reproducible {
            c.reproducible = true;
        }
        let ahl_given = self.ahl_epochs.is_some()
            || self.ahl_inner_steps.is_some()
            || self.ahl_query_batches.is_some()
            || self.ahl_clusters.is_some()
            || self.ahl_draws.is_some()
            || self.ahl_init.is_some()
            || self.ahl_lr.is_some();
        if ahl_given {
            let mut a = c.ahl_config();
            macro_rules! set_ahl {
                ($($field:ident <- $arg:expr),* $(,)?) => {
                    $( if let Some(v) = $arg { a.$field = v; } )*
                };
            }
            set_ahl!(
                epochs <- self.ahl_epochs,
                inner_steps <- self.ahl_inner_steps,
                query_batches <- self.ahl_query_batches,
                members <- self.ahl_clusters,
                draws <- self.ahl_draws,
                init <- self.ahl_init,
                lr <- self.ahl_lr,
            );
            c.ahl = Some(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_settings_change() {
        let overrides = Overrides {
            epochs: Some(3),
            topk: Some(0.2),
            weights: Some("w.pth".into()),
            ..Default::default()
        };
        let mut c = TrainConfig::quick();
        overrides.apply(&mut c);
        let expected = TrainConfig {
            epochs: 3,
            topk_rate: 0.2,
            weights: Some("w.pth".into()),
            ..TrainConfig::quick()
        };
        assert_eq!(c, expected);
    }
}
