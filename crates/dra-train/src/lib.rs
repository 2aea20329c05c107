//! Training and evaluation of DRA: the official optimisation (Adam with coupled L2, StepLR,
//! gradient clipping), run directories, and the `dra` program.

mod config;
pub mod csv;
mod dataset;
mod error;
mod eval;
mod files;
mod methods;
mod model;
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
pub use files::write_atomic;
pub use model::{detached_model, trainable};
pub use optim::{Adam, AdamConfig};
pub use overrides::Overrides;
pub use run::{train, Metrics, RunRecord, RunRequest};
pub use scoring::{
    load_normalized, read_scores, score_samples, write_scores, References, ScoreRow,
    REFERENCES_FILE,
};
