//! The middle tier: the machinery runs are made of. Scoring with reference sets and the
//! anomaly maps of a scoring pass, the optimiser, and the methods whose training differs from
//! DRA's plain loop (Deep SAD's centre, AHL's episodes) side by side. It imports the records
//! below it and never the runs above it.

pub(crate) mod ahl;
pub(crate) mod deepsad;
pub(crate) mod maps;
pub(crate) mod optim;
pub(crate) mod scoring;

pub use maps::upsample;
pub use optim::{trainable, Adam, AdamConfig};
pub use scoring::{CellMap, References};
