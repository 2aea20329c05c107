//! From a score to a decision: the threshold a run carries (`threshold.json`), calibrated on
//! normal images that training never saw at a chosen false-positive rate, and what that
//! threshold does on a labelled test set.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dra_data::{Label, Listing, OnUnreadable, Sample};
use dra_eval::Confusion;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::eval::LoadedModel;
use crate::files::write_json;
use crate::scoring::{score_samples, ScoreRow};

/// File of a run directory that holds its decision threshold.
pub const THRESHOLD_FILE: &str = "threshold.json";

/// `threshold.json`: an image is anomalous when its score is above `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The score above which an image counts as anomalous.
    pub value: f64,
    /// The share of the calibration normals allowed above `value` (`null` for a threshold
    /// given by hand).
    pub target_fpr: Option<f64>,
    /// How many normal images it was calibrated on.
    pub n_normals: usize,
    /// Where they came from, in words (e.g. `8 training normals held out of training`).
    pub source: String,
}

impl Threshold {
    /// The threshold at `target_fpr` on these normal images' scores. The scores must come from
    /// the scoring `dra predict` uses (the run's stored references), so that the rate holds
    /// for its decisions.
    pub fn calibrate(
        normal_scores: &[f64],
        target_fpr: f64,
        source: String,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            value: dra_eval::threshold_at_fpr(normal_scores, target_fpr)?,
            target_fpr: Some(target_fpr),
            n_normals: normal_scores.len(),
            source,
        })
    }

    /// Whether `score` is on the anomalous side.
    pub fn is_anomalous(&self, score: f64) -> bool {
        score > self.value
    }

    /// A caution when the calibration set is too small for the rate asked: with n normals the
    /// smallest rate above 0 that can be told apart is 1/n.
    pub fn caution(&self) -> Option<String> {
        let rate = self.target_fpr.filter(|r| *r > 0.0)?;
        let needed = (1.0 / rate).ceil();
        ((self.n_normals as f64) < needed).then(|| {
            format!(
                "the threshold rests on {} normal image(s); a false-positive rate of {rate} needs \
                 at least {needed} to mean anything (give more with `dra calibrate`)",
                self.n_normals
            )
        })
    }

    /// A threshold set by hand (`--threshold`).
    pub fn given(value: f64) -> Self {
        Self {
            value,
            target_fpr: None,
            n_normals: 0,
            source: "given with --threshold".into(),
        }
    }

    /// The run directory's threshold, if it has one.
    pub fn load(run_dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = run_dir.join(THRESHOLD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TrainError::InvalidOption {
                flag: "--model",
                message: format!("{}: not a threshold record: {e}", path.display()),
            })
    }

    /// Writes `threshold.json` into `run_dir` (atomically).
    pub fn save(&self, run_dir: &Path) -> Result<(), TrainError> {
        write_json(&run_dir.join(THRESHOLD_FILE), self)
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
    /// Anomalies above the threshold.
    pub true_positives: usize,
    /// Normal images above the threshold.
    pub false_positives: usize,
    /// Normal images at or below the threshold.
    pub true_negatives: usize,
    /// Anomalies at or below the threshold: defects let through.
    pub false_negatives: usize,
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
            true_positives: c.tp,
            false_positives: c.fp,
            true_negatives: c.tn,
            false_negatives: c.fn_,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            fpr: c.fpr(),
        })
    }
}

/// Normal images as samples to score.
pub(crate) fn normal_samples(images: &[dra_data::ImageRef]) -> Vec<Sample> {
    images
        .iter()
        .map(|image| Sample::new(image.clone(), Label::Normal, "good"))
        .collect()
}

/// `dra calibrate`: scores the normal images of `normals` (files or folders) with the run's
/// stored references, sets the threshold at `target_fpr` and writes it to the run directory.
pub fn calibrate(
    loaded: &LoadedModel,
    normals: &[PathBuf],
    target_fpr: f64,
    on_unreadable: OnUnreadable,
    device: &Device,
) -> Result<(Threshold, Listing), TrainError> {
    let Some(run_dir) = &loaded.run_dir else {
        return Err(TrainError::InvalidOption {
            flag: "--model",
            message: "give a run directory: the threshold is stored in it".into(),
        });
    };
    if !(0.0..1.0).contains(&target_fpr) {
        return Err(TrainError::InvalidOption {
            flag: "--target-fpr",
            message: format!("must lie in [0, 1), got {target_fpr}"),
        });
    }
    let listing = Listing::of_inputs(normals)?.require(on_unreadable)?;
    if listing.images.is_empty() {
        return Err(TrainError::InvalidOption {
            flag: "--normals",
            message: format!(
                "no images in {}",
                normals
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut references = loaded.stored_references()?;
    let cfg = &loaded.config;
    let rows = score_samples(
        &loaded.model,
        &normal_samples(&listing.images),
        &mut references,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let source = format!(
        "{} normal image(s) from {}",
        scores.len(),
        normals
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let threshold = Threshold::calibrate(&scores, target_fpr, source)?;
    threshold.save(run_dir)?;
    Ok((threshold, listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_round_trips_and_decides_strictly_above() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Threshold::load(dir.path()).unwrap(), None);
        let scores: Vec<f64> = (0..20).map(f64::from).collect();
        let t = Threshold::calibrate(&scores, 0.05, "test".into()).unwrap();
        // One normal of twenty may lie above: the threshold is the second largest score.
        assert_eq!(t.value, 18.0);
        assert!(t.is_anomalous(18.5) && !t.is_anomalous(18.0));
        assert_eq!(t.caution(), None);
        t.save(dir.path()).unwrap();
        assert_eq!(Threshold::load(dir.path()).unwrap(), Some(t));
        let few = Threshold::calibrate(&scores[..5], 0.05, "test".into()).unwrap();
        assert!(few.caution().unwrap().contains("at least 20"));
    }

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
            (
                at.true_positives,
                at.false_positives,
                at.true_negatives,
                at.false_negatives
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(at.precision, Some(2.0 / 3.0));
        assert_eq!(at.recall, Some(2.0 / 3.0));
        assert_eq!(at.fpr, Some(0.5));
    }
}
