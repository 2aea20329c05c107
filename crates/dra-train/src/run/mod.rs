//! The top tier: what a user runs. Training a run end to end ([`train`]), and using a saved
//! one: re-scoring a test set ([`evaluate`]), scoring new images ([`predict`]), setting its
//! threshold ([`calibrate`]) and exporting it to ONNX ([`export`]), all through a [`LoadedModel`]. Each writes the records of the
//! tier below through the machinery of the middle tier.

mod advice;
mod calibrate;
mod eval;
mod export;
mod predict;
mod report;
mod saved;
mod train;

pub use calibrate::calibrate;
pub use eval::{evaluate, ReferenceChoice};
pub use export::{export, Exported};
pub use predict::{predict, PredictOutputs};
pub use saved::LoadedModel;
pub use train::{
    train, train_with_progress, Progress, RunControl, RunRequest, StopSignal, DEFAULT_CACHE_IMAGES,
};
