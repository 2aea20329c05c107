//! Training and evaluation of DRA: the official optimisation (Adam with coupled L2, StepLR,
//! gradient clipping), run directories, and the `dra` program.

mod config;
mod dataset;
mod error;
mod optim;
mod run;

pub use config::{Profile, TrainConfig};
pub use dataset::{default_data_root, DatasetName, MVTEC_FOLDER, SYNTHETIC_FOLDER};
pub use error::TrainError;
pub use optim::{Adam, AdamConfig};
pub use run::{
    detached_model, read_scores, score_samples, train, trainable, write_scores, Metrics, RunRecord,
    RunRequest, ScoreRow,
};
