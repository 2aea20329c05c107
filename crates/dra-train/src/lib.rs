//! Training and evaluation of DRA and the paper's competing methods: the official optimisation
//! (Adam with coupled L2, StepLR, gradient clipping), run folders, and the `dra` program.
//!
//! The crate is three tiers that import downward only (ARCHITECTURE.md):
//! - [`record`]: what a run folder holds, one type and one file-name constant per file, and
//!   the one typed configuration ([`TrainConfig`]);
//! - [`engine`]: scoring with reference sets, anomaly maps, the optimiser ([`engine::Adam`]),
//!   and the methods whose training is not DRA's loop (Deep SAD, AHL);
//! - the runs, re-exported here: [`train`] a run from a [`RunRequest`], and with a saved run
//!   loaded as a [`LoadedModel`], [`evaluate`], [`predict`] and [`calibrate`].
//!
//! The `dra` program (feature `cli`, on by default) owns the command line and the terminal.
//!
//! ```
//! use dra_data::{datasets::Family, synthetic, OnUnreadable};
//! use dra_train::{LoadedModel, Profile, RunRequest, TrainConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A small generated category in the MVTec AD layout.
//! let dir = tempfile::tempdir()?;
//! let spec = synthetic::SyntheticSpec { image_size: 64, n_train: 8, n_test_good: 3,
//!                                       n_per_defect: 2, seed: 1 };
//! synthetic::ensure(dir.path(), &spec)?;
//!
//! // One epoch of two steps from the quick profile; every setting is checked before any work.
//! let mut config = TrainConfig::for_profile(Profile::Quick);
//! (config.epochs, config.steps_per_epoch, config.batch_size) = (1, 2, 6);
//! (config.n_ref, config.n_anomaly) = (2, 2);
//! let run = dir.path().join("run");
//! let metrics = dra_train::train(&RunRequest {
//!     config,
//!     dataset: "synthetic/weave".into(),
//!     category_dir: dir.path().join("weave"),
//!     family: Family::Mvtec,
//!     out_dir: run.clone(),
//!     device: candle_core::Device::Cpu,
//!     on_unreadable: OnUnreadable::Error,
//!     save_maps: None,
//!     control: Default::default(),
//! })?;
//! assert!((0.0..=1.0).contains(&metrics.auc_roc));
//!
//! // The saved run scores new images with its stored references: the same score every time.
//! let model = LoadedModel::load(&run, &TrainConfig::paper(), &candle_core::Device::Cpu)?;
//! let image = dir.path().join("weave/test/good").read_dir()?.next().unwrap()?.path();
//! let score = |model: &LoadedModel| -> Result<f64, dra_train::TrainError> {
//!     let mut references = model.stored_references()?;
//!     let rows = dra_train::predict(model, &[image.clone()], &mut references,
//!                                   Default::default(), &candle_core::Device::Cpu)?;
//!     Ok(rows[0].score)
//! };
//! assert_eq!(score(&model)?, score(&model)?);
//! # Ok(())
//! # }
//! ```

pub mod engine;
mod error;
pub mod record;
mod run;

pub use error::TrainError;
pub use record::{Metrics, Profile, TrainConfig};
pub use run::{
    calibrate, evaluate, export, predict, train, train_with_progress, Exported, LoadedModel,
    PredictOutputs, Progress, ReferenceChoice, RunControl, RunRequest, StopSignal,
    DEFAULT_CACHE_IMAGES,
};
