//! Data for DRA: datasets in the MVTec-AD layout, the general and hard-setting splits, the
//! official image pipeline (PIL-exact resize, rotation, CutMix pseudo anomalies), balanced
//! training batches prepared in parallel ahead of the model, and the synthetic generator behind
//! the embedded default data set.
//!
//! Data flows `Category` (files on disk) → [`Split`] (which files train and test) →
//! [`BatchSource`] (augmented, normalised tensors in CHW order) → the model.

mod batch;
mod dataset;
pub mod datasets;
mod error;
pub mod inventory;
mod listing;
mod mt19937;
mod npy;
mod split;
pub mod synthetic;
pub mod transform;

pub use batch::{load_images, Batch, BatchConfig, BatchSource, ImageCache, Prefetcher};
pub use dataset::{
    load_rgb, Category, Crop, Ignored, ImageRef, Label, Sample, MAX_DECODED_BYTES, MAX_IMAGE_SIDE,
};
pub use error::{DataError, Result};
pub use listing::{Listing, OnUnreadable, Unreadable};
pub use mt19937::NumpyRandomState;
pub use split::{Setting, Split, SplitConfig};
