//! Evaluation for DRA: AUC-ROC and AUC-PR as sklearn computes them, mean ± std over runs, and
//! (with the `table` feature) paper-style tables rendered through polars.

mod metrics;
mod summary;
#[cfg(feature = "table")]
pub mod table;

pub use metrics::{auc_pr, auc_roc, MetricError};
pub use summary::{format_mean_std, MeanStd};
