//! A saved run, loaded to score with: its model, settings, threshold and stored references.
//! `dra eval`, `dra predict` and `dra calibrate` all start here.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use dra_model::{load_into, Detector, Scope};

use crate::engine::scoring::{detached_model, References};
use crate::error::TrainError;
use crate::record::{RunRecord, Threshold, TrainConfig, CONFIG_FILE, MODEL_FILE, REFERENCES_FILE};

/// A trained model and the settings it was trained with.
pub struct LoadedModel {
    /// The detector, over detached tensors: scoring records no autograd graph.
    pub model: Detector,
    /// The run's `config.json` settings, or for a bare weights file the caller's fallback.
    pub config: TrainConfig,
    /// The run directory, when the model came from one.
    pub run_dir: Option<PathBuf>,
    /// The data set the run was trained on, as its `config.json` names it (`None` for a bare
    /// weights file).
    pub dataset: Option<String>,
    /// The decision threshold: the run's `threshold.json`, or one the caller sets
    /// (`--threshold`); `None` when the run has none.
    pub threshold: Option<Threshold>,
}

impl LoadedModel {
    /// Loads a run directory (its `config.json` and `model.safetensors`) or a weights file with
    /// DRA's names (safetensors, or a PyTorch state dict such as the official `model.pkl`).
    /// For a bare file, `fallback` supplies what the file cannot carry (image size, …).
    pub fn load(path: &Path, fallback: &TrainConfig, device: &Device) -> Result<Self, TrainError> {
        let (config, weights, run_dir, dataset) = if path.is_dir() {
            let record = RunRecord::read(path, "--model")?;
            (
                record.config,
                path.join(MODEL_FILE),
                Some(path.to_path_buf()),
                Some(record.dataset),
            )
        } else if path.is_file() {
            (fallback.clone(), path.to_path_buf(), None, None)
        } else {
            return Err(TrainError::InvalidOption {
                flag: "--model",
                message: format!("{}: no such run directory or weights file", path.display()),
            });
        };
        config.validate().map_err(|e| match (e, &run_dir) {
            // A bad value read from a run's config.json is the file's fault, not a flag's.
            (TrainError::InvalidOption { flag, message }, Some(dir)) => TrainError::InvalidOption {
                flag: "--model",
                message: format!("{}: {flag}: {message}", dir.join(CONFIG_FILE).display()),
            },
            (e, _) => e,
        })?;
        let varmap = VarMap::new();
        Detector::new(
            config.method,
            &config.model_config(),
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        load_into(&varmap, &weights, Scope::Full)?;
        let model = detached_model(&varmap, &config, device)?;
        let threshold = match &run_dir {
            Some(dir) => Threshold::load(dir)?,
            None => None,
        };
        Ok(Self {
            model,
            config,
            run_dir,
            dataset,
            threshold,
        })
    }

    /// The fixed reference set saved with a run (none for a method without references).
    pub fn stored_references(&self) -> Result<References, TrainError> {
        if !self.config.method.uses_references() {
            return Ok(References::none());
        }
        match &self.run_dir {
            Some(dir) => References::load(&dir.join(REFERENCES_FILE), self.config.image_size),
            None => Err(TrainError::InvalidOption {
                flag: "--reference-images",
                message: "a bare weights file has no stored references; give --reference-images"
                    .into(),
            }),
        }
    }
}
