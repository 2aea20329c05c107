//! `metrics.json`: what a run or an evaluation measured on its test set. Written last, so that
//! its presence marks a finished run.

use dra_data::{Split, Unreadable};
use dra_eval::Confusion;
use serde::{Deserialize, Serialize};

use super::scores::ScoreRow;
use super::threshold::Threshold;
use crate::error::TrainError;

/// `metrics.json`: the run's result. Written last, so its presence marks a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Area under the ROC curve of the test scores, as sklearn's `roc_auc_score`.
    pub auc_roc: f64,
    /// Average precision of the test scores, as sklearn's `average_precision_score`.
    pub auc_pr: f64,
    /// Normal training images, contaminants included.
    pub n_train_normal: usize,
    /// Labelled anomalies trained on.
    pub n_train_anomaly: usize,
    /// Normal test images scored.
    pub n_test_normal: usize,
    /// Anomalous test images scored.
    pub n_test_anomaly: usize,
    /// Mean total loss over the last epoch (`null` for `dra eval`).
    pub final_loss: Option<f64>,
    /// Wall-clock seconds from the start of the run to the end of training, loading the data
    /// and building the model included (0 for `dra eval`).
    pub train_seconds: f64,
    /// Wall-clock seconds spent scoring the test set.
    pub eval_seconds: f64,
    /// Wall-clock seconds of the whole run, up to the metrics (writing the files not counted).
    pub total_seconds: f64,
    /// Time the training loop spent waiting for batches (the data pipeline's cost to the model).
    pub data_wait_seconds: f64,
    /// Files (or tiles) of the data folder the loader left out; `config.json` says why.
    #[serde(default)]
    pub ignored: usize,
    /// Image files that did not decode and were left out (`--skip-unreadable`), with the
    /// decoder's reason.
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// Pixel-level AUROC of the anomaly maps against the ground-truth masks (`null` without
    /// masks or maps).
    #[serde(default)]
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to a false-positive rate of 0.3, as the MVTec AD benchmark (`null` without
    /// masks or maps).
    #[serde(default)]
    pub aupro: Option<f64>,
    /// The run's decision threshold applied to the test set (`null` without a threshold).
    #[serde(default)]
    pub threshold: Option<AtThreshold>,
    /// What the user should know about this result (below chance, a setting that cannot
    /// work on real images, metrics that could not be computed), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Metrics {
    /// AUC-ROC, AUC-PR and counts of scored test rows; timings zero, no loss.
    pub fn of(rows: &[ScoreRow], split: &Split) -> Result<Self, TrainError> {
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
        let n_test_anomaly = labels.iter().filter(|l| **l).count();
        Ok(Self {
            auc_roc: dra_eval::auc_roc(&scores, &labels)?,
            auc_pr: dra_eval::auc_pr(&scores, &labels)?,
            n_train_normal: split.train_normal.len(),
            n_train_anomaly: split.train_anomaly.len(),
            n_test_normal: rows.len() - n_test_anomaly,
            n_test_anomaly,
            final_loss: None,
            train_seconds: 0.0,
            eval_seconds: 0.0,
            total_seconds: 0.0,
            data_wait_seconds: 0.0,
            ignored: 0,
            unreadable: Vec::new(),
            pixel_auroc: None,
            aupro: None,
            threshold: None,
            notes: Vec::new(),
        })
    }
}

/// What a threshold does on a labelled test set: `metrics.json`'s `threshold` entry. `dra
/// train` counts it on the test set scored with the run's stored references (the scoring the
/// threshold was calibrated with, and `dra predict`'s); `dra eval` on its own scores (random
/// references unless `--fixed-references`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtThreshold {
    /// The threshold applied.
    pub threshold: f64,
    /// The false-positive rate it was calibrated for (`null` for a threshold given by hand).
    pub target_fpr: Option<f64>,
    /// The confusion counts, written out in words in the file (`true_positives`, …): the
    /// records read the same as before the counts had a type of their own.
    #[serde(flatten, with = "long_names")]
    pub counts: Confusion,
    /// Share of the flagged images that are anomalies (`null` when none is flagged).
    pub precision: Option<f64>,
    /// Share of the anomalies flagged (`null` without anomalies).
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall.
    pub f1: Option<f64>,
    /// Share of the normal test images flagged: compare with `target_fpr`.
    pub fpr: Option<f64>,
}

impl AtThreshold {
    /// Applies `threshold` to scored test rows.
    pub fn of(rows: &[ScoreRow], threshold: &Threshold) -> Result<Self, TrainError> {
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
        let c = Confusion::at(&scores, &labels, threshold.value)?;
        Ok(Self {
            threshold: threshold.value,
            target_fpr: threshold.target_fpr,
            counts: c,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            fpr: c.fpr(),
        })
    }
}

/// The confusion counts as `metrics.json` names them.
mod long_names {
    use dra_eval::Confusion;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Counts {
        true_positives: usize,
        false_positives: usize,
        true_negatives: usize,
        false_negatives: usize,
    }

    pub fn serialize<S: Serializer>(c: &Confusion, s: S) -> Result<S::Ok, S::Error> {
        Counts {
            true_positives: c.tp,
            false_positives: c.fp,
            true_negatives: c.tn,
            false_negatives: c.fn_,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Confusion, D::Error> {
        let c = Counts::deserialize(d)?;
        Ok(Confusion {
            tp: c.true_positives,
            fp: c.false_positives,
            tn: c.true_negatives,
            fn_: c.false_negatives,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_at_the_threshold() {
        let row = |label: u8, score: f64| ScoreRow {
            path: "x".into(),
            label,
            class: String::new(),
            score,
            heads: [f64::NAN; 4],
        };
        let rows = [
            row(0, 0.1),
            row(0, 0.6),
            row(1, 0.7),
            row(1, 0.4),
            row(1, 0.9),
        ];
        let t = Threshold::given(0.5);
        let at = AtThreshold::of(&rows, &t).unwrap();
        assert_eq!(
            at.counts,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert_eq!(at.precision, Some(2.0 / 3.0));
        assert_eq!(at.recall, Some(2.0 / 3.0));
        assert_eq!(at.fpr, Some(0.5));
    }

    #[test]
    fn counts_are_written_in_words_in_their_old_place() {
        let at = AtThreshold {
            threshold: 0.5,
            target_fpr: None,
            counts: Confusion {
                tp: 1,
                fp: 2,
                tn: 3,
                fn_: 4,
            },
            precision: None,
            recall: Some(0.2),
            f1: None,
            fpr: None,
        };
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(
            json,
            "{\"threshold\":0.5,\"target_fpr\":null,\"true_positives\":1,\"false_positives\":2,\
             \"true_negatives\":3,\"false_negatives\":4,\"precision\":null,\"recall\":0.2,\
             \"f1\":null,\"fpr\":null}"
        );
        assert_eq!(serde_json::from_str::<AtThreshold>(&json).unwrap(), at);
    }
}
