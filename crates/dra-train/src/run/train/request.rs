//! What a caller asks of a run, and what the run reports back as it goes.

use std::path::PathBuf;

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::OnUnreadable;

use crate::record::TrainConfig;

/// What to train and where to put the results.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Every setting of the run, profile and overrides applied; validated before any work.
    pub config: TrainConfig,
    /// The data set's name as the user gave it (e.g. `mvtec/carpet`), for the records.
    pub dataset: String,
    /// The data's folder (for MVTec-layout data: the category folder).
    pub category_dir: PathBuf,
    /// The loader that reads `category_dir`.
    pub family: Family,
    /// Run directory: `config.json`, `model.safetensors`, `scores.csv`, `metrics.json`.
    pub out_dir: PathBuf,
    /// Where the model trains and scores (CPU or a CUDA GPU).
    pub device: Device,
    /// Image files that do not decode: an error (the default), or left out and recorded in
    /// `config.json` and `metrics.json` (`--skip-unreadable`).
    pub on_unreadable: OnUnreadable,
    /// Write each test image's anomaly map here as `test/<class>/<name>.npy` (DRA only).
    pub save_maps: Option<PathBuf>,
    /// Replace a run that `out_dir` holds already (its files are removed first); without it
    /// such a folder is refused, so that nothing trained is lost (`--overwrite`).
    pub overwrite: bool,
}

/// What [`train_with_progress`](super::train_with_progress) reports as the run goes: the `dra`
/// program draws a progress bar from it, a library user may log it or ignore it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// Training starts: this many optimiser steps, AHL's epochs included, lie ahead.
    Started {
        /// Optimiser steps of the base training plus AHL's epochs.
        steps: usize,
    },
    /// An optimiser step of the base training is done.
    Step {
        /// The epoch, counted from 1.
        epoch: usize,
        /// Epochs in all.
        epochs: usize,
        /// The mean loss of the epoch's steps so far.
        mean_loss: f64,
    },
    /// An epoch of AHL's phase is done.
    AhlEpoch {
        /// The epoch, counted from 1.
        epoch: usize,
        /// AHL's epochs in all.
        epochs: usize,
        /// The loss of the epoch's query batches.
        query_loss: f64,
    },
    /// Training is over; the test set is being scored.
    Trained,
}
