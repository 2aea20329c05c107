//! Data for DRA: datasets in the MVTec-AD layout, the general and hard-setting splits, the
//! official image pipeline (PIL-exact resize, rotation, CutMix pseudo anomalies), balanced
//! training batches prepared in parallel ahead of the model, and the synthetic generator behind
//! the embedded default data set.
//!
//! Data flows `Category` (files on disk) → [`Split`] (which files train and test) →
//! [`BatchSource`] (augmented, normalised tensors in CHW order) → the model.
//!
//! The modules import one way: each imports only modules named before it here. `sample` (the
//! shared types: [`Label`], [`ImageRef`], [`Sample`], …), `error`, `mt19937`, `npy`,
//! [`datasets`] (decoding, the one listing of a folder, [`Category`], one loader per layout),
//! `split`, [`transform`] (PIL-exact geometry, colour jitter, normalisation), [`pseudo`]
//! (CutMix, CutPaste's scar), `batch`, [`inventory`]; [`synthetic`] imports only `error`.
//!
//! ```
//! use dra_data::{Category, OnUnreadable, Split, SplitConfig};
//!
//! // A category in the MVTec AD layout: train/good, test/good, test/<defect class>.
//! let root = tempfile::tempdir()?;
//! for (folder, n) in [("train/good", 6), ("test/good", 2), ("test/crack", 3)] {
//!     std::fs::create_dir_all(root.path().join(folder))?;
//!     for i in 0..n {
//!         image::RgbImage::new(8, 8).save(root.path().join(format!("{folder}/{i}.png")))?;
//!     }
//! }
//! let category = Category::open(root.path(), OnUnreadable::Error)?;
//! assert_eq!(category.defect_classes(), ["crack"]);
//!
//! // One labelled anomaly for training; the rest of the anomalies are tested.
//! let split = Split::new(&category, &SplitConfig { n_anomaly: 1, ..Default::default() })?;
//! assert_eq!((split.train_normal.len(), split.train_anomaly.len()), (6, 1));
//! assert_eq!(split.test.len(), 2 + 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
pub mod datasets;
mod error;
mod image_cache;
pub mod inventory;
mod mt19937;
mod npy;
pub mod pseudo;
mod sample;
mod split;
pub mod synthetic;
pub mod transform;

pub use batch::{Batch, BatchConfig, BatchSource, Prefetcher};
pub use datasets::category::Category;
pub use datasets::decode::{load_mask, load_rgb, MAX_DECODED_BYTES, MAX_IMAGE_SIDE};
pub use datasets::listing::Listing;
pub use error::{DataError, Result};
pub use image_cache::{image_bytes, load_images, ImageCache};
pub use mt19937::NumpyRandomState;
pub use npy::{f32_bytes as npy_f32_bytes, write_f32 as write_npy_f32};
pub use sample::{Crop, Ignored, ImageRef, Label, OnUnreadable, Sample, Unreadable};
pub use split::{Setting, Split, SplitConfig};
