//! Evaluation for DRA: AUC-ROC and AUC-PR as sklearn computes them, mean ± std over runs, and
//! (with the `table` feature) paper-style tables rendered through polars.
//!
//! ```
//! use dra_eval::{auc_pr, auc_roc, MeanStd};
//!
//! // Scores of four test images; `true` marks the anomalies.
//! let scores = [0.1, 0.4, 0.35, 0.8];
//! let labels = [false, false, true, true];
//! assert_eq!(auc_roc(&scores, &labels)?, 0.75);
//! assert!((auc_pr(&scores, &labels)? - 0.833_333).abs() < 1e-6);
//!
//! // Three runs of one table cell, as the paper prints them.
//! let cell = MeanStd::of(&[0.94, 0.95, 0.96]).unwrap();
//! assert_eq!(cell.to_string(), "0.950±0.008");
//! # Ok::<(), dra_eval::MetricError>(())
//! ```

mod metrics;
mod summary;
#[cfg(feature = "table")]
pub mod table;

pub use metrics::{auc_pr, auc_roc, MetricError};
pub use summary::{format_mean_std, MeanStd};
