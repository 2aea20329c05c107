//! `config.json`: every effective setting of a run and the files its split chose, written
//! before training so that a run that fails still says what it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dra_data::{ImageRef, Sample, Unreadable};
use serde::{Deserialize, Serialize};

use dra_model::ops::KernelTier;

use super::train_config::TrainConfig;
use super::CONFIG_FILE;
use crate::error::TrainError;

/// `config.json`: every effective setting and the files the split chose.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The data set's name as the user gave it (e.g. `mvtec/carpet`).
    pub dataset: String,
    /// The data's folder (for MVTec-layout data: the category folder).
    pub dataset_dir: PathBuf,
    /// Every setting of the run, profile and overrides applied.
    pub config: TrainConfig,
    /// The labelled anomalies the split chose for training.
    pub train_anomalies: Vec<Sample>,
    /// Unlabelled anomalies mixed into the training normals (`--contamination`).
    #[serde(default)]
    pub contaminants: Vec<Sample>,
    /// What the loader left out of the data folder: reason → count (`dra data inspect` lists
    /// the files).
    #[serde(default)]
    pub ignored: BTreeMap<String, usize>,
    /// Image files that did not decode and were left out (`--skip-unreadable`).
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// Normal training images, contaminants included.
    pub n_train_normal: usize,
    /// The training normals held out of training to calibrate the decision threshold
    /// (`--calibration-fraction`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration_normals: Vec<ImageRef>,
    /// Version of the `dra-train` crate that made the run.
    pub dra_rs_version: String,
    /// What the run's numbers depend on besides its settings, data and version: the CPU
    /// arithmetic. Absent from runs made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arithmetic: Option<ArithmeticRecord>,
}

impl RunRecord {
    /// Reads `dir/config.json`. A missing or unreadable file is an error naming it; one that
    /// is not a run record names it and `flag`, the option that gave the folder.
    pub fn read(dir: &Path, flag: &'static str) -> Result<Self, TrainError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| TrainError::InvalidOption {
            flag,
            message: format!("{}: not a dra run record: {e}", path.display()),
        })
    }
}

/// The arithmetic a run computed with (docs/fidelity.md, "What a result depends on"). Not the
/// number of threads: every kernel cuts its sums into pieces fixed by the problem, so any count
/// gives the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArithmeticRecord {
    /// The device the model ran on (`cpu`, `cuda`).
    pub device: String,
    /// On the CPU, the vector instructions its GEMMs ran with (`avx512`, `avx2+fma`,
    /// `baseline`): where it differs, results differ in their last bits, and after training in
    /// more, unless both runs were `reproducible`.
    pub kernel_tier: Option<KernelTier>,
    /// Whether the portable arithmetic ran (`--reproducible`): then the same bytes on every
    /// CPU of the tier `avx2+fma` or above.
    pub reproducible: bool,
}

impl ArithmeticRecord {
    /// The arithmetic of a model configured by `config`, run on `device`.
    pub fn of(config: &TrainConfig, device: &candle_core::Device) -> Self {
        let cpu = device.is_cpu();
        Self {
            device: if cpu { "cpu" } else { "cuda" }.into(),
            kernel_tier: cpu.then(|| config.arithmetic().tier()),
            reproducible: config.reproducible,
        }
    }
}
