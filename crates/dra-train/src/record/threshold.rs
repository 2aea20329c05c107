//! `threshold.json`: the decision threshold a run carries, calibrated on normal images that
//! training never saw at a chosen false-positive rate, or given by hand.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::write_json;
use super::THRESHOLD_FILE;
use crate::error::TrainError;

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
}
