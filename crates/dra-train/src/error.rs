use std::path::PathBuf;

/// Errors of training and evaluation runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the data, splitting it or making batches failed.
    #[error(transparent)]
    Data(#[from] dra_data::DataError),
    /// A tensor operation of the model, the loss or the optimiser failed (candle).
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    /// A weights file could not be read or does not fit the model.
    #[error(transparent)]
    Weights(#[from] dra_model::WeightsError),
    /// AUC-ROC or AUC-PR is undefined for the scores (e.g. a test set of one class, a NaN).
    #[error("metrics: {0}")]
    Metric(#[from] dra_eval::MetricError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An option, or a file the user gave, has a value that cannot work.
    #[error("{flag}: {message}")]
    InvalidOption {
        /// The flag at fault (e.g. `--epochs`), or the file's name when a file is (`scores.csv`).
        flag: &'static str,
        /// What is wrong and, where it helps, the valid values.
        message: String,
    },
    /// The output folder holds results of an earlier run (or the checkpoint of a stopped one),
    /// and `--overwrite` was not given.
    #[error(
        "{flag} {}: holds {} ({}); {}",
        dir.display(),
        if *stopped_run { "a stopped run" } else { "earlier results" },
        listed(files),
        if *stopped_run {
            format!("continue it with `dra train --resume {}`, or give another folder, or --overwrite to replace it", dir.display())
        } else {
            "give another folder, or --overwrite to replace them".to_string()
        }
    )]
    OutputExists {
        /// The flag that named the folder.
        flag: &'static str,
        /// The folder.
        dir: PathBuf,
        /// The files found there.
        files: Vec<String>,
        /// Whether they are a stopped run's, with a checkpoint to resume from.
        stopped_run: bool,
    },
    /// Another process is writing the output folder (it holds the folder's lock).
    #[error(
        "{}: another dra process is writing to this folder; wait for it to end, or choose \
         another folder",
        dir.display()
    )]
    Busy {
        /// The folder.
        dir: PathBuf,
    },
    /// Training was asked to stop (SIGINT, SIGTERM: [`StopSignal`](crate::StopSignal)); it
    /// stopped at a step boundary and wrote a checkpoint there, which `--resume` goes on from.
    #[error(
        "stopped after step {step} of {steps}; the checkpoint in {} holds the run",
        dir.display()
    )]
    Stopped {
        /// The run folder, which holds the checkpoint.
        dir: PathBuf,
        /// Optimiser steps done (all of them when the stop came after training).
        step: usize,
        /// Optimiser steps of the base training in all.
        steps: usize,
    },
    /// The training loss became NaN or infinite; the run stops there.
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}")]
    Diverged {
        /// Epoch of the failing step, counted from 0.
        epoch: usize,
        /// Step within that epoch, counted from 0.
        step: usize,
        /// The non-finite loss.
        loss: f32,
    },
}

/// The files an output folder holds, for [`TrainError::OutputExists`]: the first few of a long
/// list.
fn listed(files: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut names = files
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        names += &format!(" and {} more", files.len() - SHOWN);
    }
    names
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
