//! AHL's settings, recorded in a run's `config.json` as `ahl`: its constants (`mala-lab/AHL`'s
//! `main.py` defaults, where the paper and the code agree) and the choices between the paper
//! and the code (which normals make a cluster, how episodes draw, where the heads start).

use serde::{Deserialize, Serialize};

/// How a cluster's normal images are chosen (`--ahl-clusters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Members {
    /// The paper: the normals k-means put in the cluster.
    #[default]
    #[cfg_attr(feature = "cli", value(name = "kmeans"))]
    KMeans,
    /// The official code: the first |cluster| normals of the listing, so that only the
    /// clusters' sizes come from k-means (`mvtecad.py:60-68` of `mala-lab/AHL`).
    Prefix,
}

/// How an episode's labelled anomalies and generators are drawn (`--ahl-draws`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Draws {
    /// The paper: the query's seen anomalies are the support's, and support and query have
    /// different pseudo-anomaly generators.
    #[default]
    Paper,
    /// The official code: support and query draw their anomalies independently and share one
    /// generator.
    Official,
}

/// Where AHL's unified heads θ start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum HeadInit {
    /// The trained base model's heads: AHL adapts the base's heads, as the paper describes it.
    #[default]
    Base,
    /// Fresh heads (PyTorch's default initialisation), as the released code trains them (its
    /// `--pretrain_dir` loading never reaches the heads).
    Fresh,
}

/// Every setting of AHL's phase: the episodes, the inner (per-episode) adaptation, the outer
/// update of the unified heads and the sequence model ψ that weighs the episodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AhlConfig {
    /// Outer updates of the unified heads, one per AHL epoch (30; the code applies 29, §1 of
    /// docs/ahl-notes.md).
    pub epochs: usize,
    /// k-means clusters of the training normals (3); clusters of at most two normals are
    /// dropped, and every ordered pair of the rest is an episode (6 for 3).
    pub clusters: usize,
    /// Which normals make a cluster: k-means' members (the paper) or listing prefixes of the
    /// clusters' sizes (the code).
    pub members: Members,
    /// How episodes draw their labelled anomalies and generators: the paper's or the code's.
    pub draws: Draws,
    /// Plain-SGD steps on support batches per episode (41 = the code's 1 + 2 × 20).
    pub inner_steps: usize,
    /// The inner SGD learning rate (2e-4).
    pub inner_lr: f64,
    /// Query batches per episode whose loss, at the adapted heads, makes the outer gradient
    /// (20).
    pub query_batches: usize,
    /// Adam's learning rate for the unified heads (0.002).
    pub lr: f64,
    /// Adam's coupled L2 weight decay for the unified heads (1e-4).
    pub weight_decay: f64,
    /// StepLR period of the outer rate in AHL epochs (10) and its factor (0.1).
    pub lr_step_size: usize,
    /// StepLR's factor (0.1).
    pub lr_gamma: f64,
    /// Global gradient-norm clip of the outer update (1.0).
    pub clip_norm: f64,
    /// Epochs of per-sample scores ψ reads to predict the next epoch's (K = 5). ψ trains from
    /// the epoch after the window first fills and weighs the episodes from the one after that.
    pub window: usize,
    /// Adam's learning rate for ψ (0.002).
    pub psi_lr: f64,
    /// Adam's coupled L2 weight decay for ψ (1e-3).
    pub psi_weight_decay: f64,
    /// Where θ starts: the base model's trained heads, or fresh ones (the code).
    #[serde(default)]
    pub init: HeadInit,
}

impl Default for AhlConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            clusters: 3,
            members: Members::KMeans,
            draws: Draws::Paper,
            inner_steps: 41,
            inner_lr: 2e-4,
            query_batches: 20,
            lr: 0.002,
            weight_decay: 1e-4,
            lr_step_size: 10,
            lr_gamma: 0.1,
            clip_norm: 1.0,
            window: 5,
            psi_lr: 0.002,
            psi_weight_decay: 1e-3,
            init: HeadInit::Base,
        }
    }
}

impl AhlConfig {
    /// The defaults of a profile: the code's for `paper`; for the CPU profiles a schedule of
    /// about the base training's cost (fewer epochs, inner steps and query batches, a shorter
    /// window for ψ).
    pub fn for_profile(profile: super::profile::Profile) -> Self {
        match profile {
            super::profile::Profile::Paper => Self::default(),
            super::profile::Profile::Quick => Self {
                epochs: 8,
                inner_steps: 10,
                query_batches: 5,
                lr_step_size: 6,
                window: 3,
                ..Self::default()
            },
            super::profile::Profile::OwnData => Self {
                epochs: 10,
                inner_steps: 20,
                query_batches: 10,
                lr_step_size: 8,
                window: 3,
                ..Self::default()
            },
        }
    }

    /// The outer learning rate of AHL epoch `epoch` (0-based): StepLR applied after each
    /// epoch's update.
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        self.lr
            * self
                .lr_gamma
                .powi((epoch / self.lr_step_size.max(1)) as i32)
    }

    /// The first epoch whose episodes ψ weighs: ψ needs a full window to train on and one
    /// training step before its predictions mean anything.
    pub fn first_weighted_epoch(&self) -> usize {
        self.window + 1
    }

    /// Rejects impossible settings, naming the flag.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("--ahl-epochs", self.epochs),
            ("--ahl-inner-steps", self.inner_steps),
            ("--ahl-query-batches", self.query_batches),
            ("--ahl-window", self.window),
        ];
        for (flag, v) in positive {
            if v == 0 {
                return Err((flag, "must be at least 1".into()));
            }
        }
        if self.clusters < 2 {
            return Err((
                "--ahl-clusters-k",
                "AHL pairs clusters into episodes: give at least 2".into(),
            ));
        }
        for (flag, v) in [("--ahl-lr", self.lr), ("--ahl-inner-lr", self.inner_lr)] {
            if !(v.is_finite() && v > 0.0) {
                return Err((flag, format!("must be a positive number, not {v}")));
            }
        }
        Ok(())
    }
}
