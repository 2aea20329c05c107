//! What a caller asks of a run, and what the run reports back as it goes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::Device;
use dra_data::datasets::{DatasetName, Family};
use dra_data::OnUnreadable;

use crate::error::TrainError;
use crate::record::{Checkpoint, RunRecord, TrainConfig};

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
    /// What the run does with its folder and its checkpoints, and when it stops early.
    pub control: RunControl,
}

impl RunRequest {
    /// The request that goes on with the run in `dir` from its checkpoint: its settings and data
    /// from `config.json`, the rest of what it was asked from the checkpoint. The run itself
    /// checks, before any work, that the data folder still gives the split it started with.
    /// A folder without a checkpoint, or whose run has finished, is an error naming it.
    pub fn resume(dir: &Path, device: Device) -> Result<Self, TrainError> {
        let flag = "--resume";
        let state = Checkpoint::resumable(dir)?;
        let record = RunRecord::read(dir, flag)?;
        let family = DatasetName::parse(&record.dataset)
            .map_err(|e| TrainError::InvalidOption {
                flag,
                message: format!("{}: {e}", dir.join(crate::record::CONFIG_FILE).display()),
            })?
            .family();
        Ok(Self {
            config: record.config,
            dataset: record.dataset,
            category_dir: record.dataset_dir,
            family,
            out_dir: dir.to_path_buf(),
            device,
            on_unreadable: if state.skip_unreadable {
                OnUnreadable::Skip
            } else {
                OnUnreadable::Error
            },
            save_maps: state.save_maps,
            control: RunControl {
                resume: true,
                ..RunControl::default()
            },
        })
    }
}

/// How a run goes about its work, none of which changes its results: what it may replace in
/// its folder, whether it goes on from a checkpoint, how often it writes one, the signal that
/// stops it early, and the memory it keeps training images in.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    /// Replace a run that the folder holds already (its files are removed first); without it
    /// such a folder is refused, so that nothing trained is lost (`--overwrite`).
    pub overwrite: bool,
    /// Go on from the folder's checkpoint instead of starting afresh (`--resume`; see
    /// [`RunRequest::resume`]). The finished run is the same, byte for byte, as one that was
    /// never stopped, on the same machine.
    pub resume: bool,
    /// Write a checkpoint every this many optimiser steps (`--checkpoint-every`); `None`: at
    /// the end of each epoch. One is always written when training ends, and kept until the
    /// run's results are.
    pub checkpoint_every: Option<usize>,
    /// Checked after every step: once raised, the run writes a checkpoint and stops with
    /// [`TrainError::Stopped`](crate::TrainError::Stopped).
    pub stop: Option<StopSignal>,
    /// Memory for the decoded training images, in bytes (`--cache-mb` × 2²⁰); `None`: room for
    /// [`DEFAULT_CACHE_IMAGES`] images at the training size. The images past it are read again
    /// from disk as they are used, with the same batches.
    pub cache_bytes: Option<usize>,
}

/// The default memory for decoded training images, in images at the training size (3 bytes a
/// pixel), per image set (the training normals, and outlier images where they are used): 96 MiB
/// at 128 px, 1.2 GiB at the official 448 px. Every data set of the paper but Optical (10,500
/// training normals) and Mastcam (9,302) fits, so they train as fast as when every image was
/// held; a folder of any size trains within it, the images past it read again as they are used,
/// on the batch thread ahead of the model. In images, not bytes, so that its share of the
/// memory is about the same at every size, as training's own memory grows with the pixels too.
pub const DEFAULT_CACHE_IMAGES: usize = 2048;

impl RunControl {
    /// The budget for decoded training images of side `image_size`, in bytes.
    pub fn cache_budget(&self, image_size: u32) -> usize {
        self.cache_bytes.unwrap_or_else(|| {
            DEFAULT_CACHE_IMAGES.saturating_mul(dra_data::image_bytes(image_size))
        })
    }
}

/// A request to stop a run at its next step boundary, shared between the run and whoever may
/// raise it (the `dra` program raises it on SIGINT and SIGTERM).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop at its next step boundary.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// A signal that SIGINT (Ctrl-C) and SIGTERM (`kill`, a cluster's pre-emption) raise,
    /// for this process's runs: the run then stops at its next step boundary with a
    /// checkpoint. A second such signal ends the process at once (exit status 130), for a
    /// user who will not wait for the step.
    pub fn on_termination() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let stop = Self::new();
        for signal in [SIGINT, SIGTERM] {
            // In this order: the second signal finds the flag raised by the first.
            signal_hook::flag::register_conditional_shutdown(signal, 130, stop.flag())?;
            signal_hook::flag::register(signal, stop.flag())?;
        }
        Ok(stop)
    }

    fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

/// What [`train_with_progress`](super::train_with_progress) reports as the run goes: the `dra`
/// program draws a progress bar from it, a library user may log it or ignore it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Progress {
    /// Training starts: this many optimiser steps, AHL's epochs included, make the run.
    Started {
        /// Optimiser steps of the base training plus AHL's epochs.
        steps: usize,
        /// Steps done already: those of the checkpoint a resumed run goes on from, else 0.
        done: usize,
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
