//! Training and evaluation of DRA: the official optimisation (Adam with coupled L2, StepLR,
//! gradient clipping), run directories, and the `dra` program.

mod config;
pub mod csv;
mod dataset;
mod error;
mod eval;
mod methods;
mod optim;
mod overrides;
mod run;
mod scoring;

pub use config::{Profile, TrainConfig};
pub use dataset::{
    default_data_root, load_category, names_help, DatasetName, MVTEC_FOLDER, SYNTHETIC_FOLDER,
};
pub use dra_model::Method;
pub use error::TrainError;
pub use eval::{evaluate, predict, predictions_csv, LoadedModel, ReferenceChoice};
pub use optim::{Adam, AdamConfig};
pub use overrides::Overrides;
pub use run::{
    detached_model, read_scores, train, trainable, write_atomic, write_scores, Metrics, RunRecord,
    RunRequest,
};
pub use scoring::{load_normalized, score_samples, References, ScoreRow, REFERENCES_FILE};
