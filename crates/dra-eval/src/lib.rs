//! Evaluation for DRA: AUC-ROC and AUC-PR as sklearn computes them, thresholds and the
//! confusion matrix they give, ROC and precision–recall curves, pixel-level AUROC and AUPRO of
//! anomaly maps, mean ± std over runs; and what presents them: the one HTML page shell and
//! escaper ([`html`]), paper-style tables rendered through polars (feature `table`) and a run's
//! self-contained `report.html` (feature `report`).
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
//!
//! A threshold chosen on normal scores alone, and the decisions it gives:
//!
//! ```
//! use dra_eval::{threshold_at_fpr, Confusion};
//!
//! // Allow at most 1 in 4 normal validation images to be flagged.
//! let threshold = threshold_at_fpr(&[0.1, 0.2, 0.3, 0.4], 0.25)?;
//! assert_eq!(threshold, 0.3);
//! let c = Confusion::at(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true], threshold)?;
//! assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 0));
//! assert_eq!(c.recall(), Some(1.0));
//! # Ok::<(), dra_eval::MetricError>(())
//! ```
//!
//! Pixel-level localisation of anomaly maps against defect masks:
//!
//! ```
//! use dra_eval::PixelMetrics;
//!
//! // One 2 × 2 image whose defect (top left) has the highest anomaly score.
//! let map = [0.9f32, 0.2, 0.1, 0.3];
//! let mask = [true, false, false, false];
//! let m = PixelMetrics::compute(&[&map], &[&mask], 2, 2)?;
//! assert_eq!((m.auroc, m.aupro), (1.0, 1.0));
//! # Ok::<(), dra_eval::MetricError>(())
//! ```

mod decision;
pub mod html;
mod localization;
mod metrics;
#[cfg(feature = "report")]
pub mod report;
mod summary;
#[cfg(feature = "table")]
pub mod table;

pub use decision::{pr_curve, roc_curve, threshold_at_fpr, Confusion};
pub use localization::{connected_components_8, PixelMetrics, AUPRO_FPR_LIMIT};
pub use metrics::{auc_pr, auc_roc, MetricError};
pub use summary::{format_mean_std, MeanStd};
