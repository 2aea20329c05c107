//! Training and evaluation of DRA: the official optimisation (Adam with coupled L2, StepLR,
//! gradient clipping), run directories, and the `dra` program.
//!
//! [`train`] runs one training end to end from a [`RunRequest`]; [`LoadedModel`] with
//! [`evaluate`] or [`predict`] scores with a saved model. `examples/train_and_score.rs` is a
//! whole program on this API. Every setting lives in one typed [`TrainConfig`], checked before
//! any work:
//!
//! ```
//! use dra_train::{Profile, TrainConfig};
//!
//! let mut config = TrainConfig::for_profile(Profile::Paper);
//! assert_eq!((config.image_size, config.epochs, config.n_anomaly), (448, 30, 10));
//! config.batch_size = 0;
//! let err = config.validate().unwrap_err();
//! assert!(err.to_string().starts_with("--batch-size"));
//! ```

pub mod advice;
pub mod ahl;
mod config;
pub mod csv;
mod dataset;
mod decision;
mod error;
mod eval;
mod files;
pub mod localization;
mod methods;
mod model;
mod optim;
mod overrides;
pub mod report;
mod run;
mod run_report;
mod scoring;
mod train_log;

pub use config::{Profile, TrainConfig, DEFAULT_TARGET_FPR};
pub use dataset::{
    default_data_root, load_category, names_help, DatasetName, MVTEC_FOLDER, SYNTHETIC_FOLDER,
};
pub use decision::{calibrate, AtThreshold, Threshold, THRESHOLD_FILE};
pub use dra_model::Method;
pub use error::TrainError;
pub use eval::{evaluate, predict, predictions_csv, LoadedModel, ReferenceChoice};
pub use files::write_atomic;
pub use model::{detached_model, trainable};
pub use optim::{Adam, AdamConfig};
pub use overrides::Overrides;
pub use run::{train, Metrics, RunRecord, RunRequest};
pub use run_report::REPORT_FILE;
pub use scoring::{
    read_scores, score_samples, score_with_maps, write_scores, CellMap, References, ScoreRow,
    Scored, REFERENCES_FILE,
};
pub use train_log::{LogRow, TRAIN_LOG_FILE};
