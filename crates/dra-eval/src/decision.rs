//! From scores to decisions: a threshold chosen on normal scores alone, the confusion matrix it
//! gives on a labelled test set, and the ROC and precision–recall curves over every threshold.
//!
//! Throughout, a sample is flagged anomalous when its score is strictly greater than the
//! threshold, so a threshold equal to the highest score flags nothing.

use serde::{Deserialize, Serialize};

use crate::metrics::{check, cumulative_counts, MetricError};

/// The threshold that flags at most `target_fpr` of `normal_scores` ("anomalous when score >
/// threshold"): with the scores sorted ascending and `k = ⌊target_fpr · n⌋` normals allowed
/// above, the threshold is the `(n − 1 − k)`-th score (`k` at most `n − 1`, so the lowest
/// score is the lowest threshold).
///
/// The threshold is one of the scores, so on held-out normals that resemble these the rate is
/// as close to the target as `n` allows without exceeding it. Scores tied with the threshold
/// stay below it, so with ties fewer than `k` normals may lie above. `⌊·⌋` forgives `1e-9`, so
/// that a rate such as `0.05 · 20`, which floating point makes `0.999…`, still allows one.
///
/// Errors: no scores, a NaN score, or `target_fpr` outside `[0, 1)`.
pub fn threshold_at_fpr(normal_scores: &[f64], target_fpr: f64) -> Result<f64, MetricError> {
    if !(0.0..1.0).contains(&target_fpr) {
        return Err(MetricError::BadRate(target_fpr));
    }
    if normal_scores.is_empty() {
        return Err(MetricError::Empty);
    }
    if normal_scores.iter().any(|s| s.is_nan()) {
        return Err(MetricError::NaN);
    }
    let n = normal_scores.len();
    let k = ((target_fpr * n as f64 + 1e-9).floor() as usize).min(n - 1);
    // A selection rather than a sort: only the one order statistic is needed.
    let mut sorted = normal_scores.to_vec();
    let (_, threshold, _) = sorted.select_nth_unstable_by(n - 1 - k, f64::total_cmp);
    Ok(*threshold)
}

/// Counts of a labelled test set at one threshold (anomaly = positive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Anomalies flagged anomalous.
    pub tp: usize,
    /// Normals flagged anomalous (false alarms).
    pub fp: usize,
    /// Normals left unflagged.
    pub tn: usize,
    /// Anomalies left unflagged (missed); `fn` is a Rust keyword, hence the underscore, but
    /// the serialised field is `fn`, matching the other three.
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Confusion {
    /// The counts when a sample is flagged anomalous for `score > threshold`.
    ///
    /// Errors: slices of different lengths, or a NaN score or threshold (a NaN compares false
    /// with everything, which would silently count as "normal"). A test set of one class is
    /// fine: the counts are defined, only some rates are not.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Result<Self, MetricError> {
        if scores.len() != labels.len() {
            return Err(MetricError::LengthMismatch {
                scores: scores.len(),
                labels: labels.len(),
            });
        }
        if threshold.is_nan() || scores.iter().any(|s| s.is_nan()) {
            return Err(MetricError::NaN);
        }
        let mut c = Self::default();
        for (&score, &anomaly) in scores.iter().zip(labels) {
            match (score > threshold, anomaly) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        Ok(c)
    }

    /// `tp / (tp + fp)`: how many flagged samples are anomalies; `None` if nothing is flagged.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`, the true-positive rate: how many anomalies are flagged; `None` without
    /// anomalies.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// The harmonic mean of precision and recall, as `2·tp / (2·tp + fp + fn)` so that it is
    /// defined (0) when one of them is 0; `None` only when there is neither an anomaly nor a
    /// flag.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// `fp / (fp + tn)`: how many normals are flagged; `None` without normals.
    pub fn fpr(&self) -> Option<f64> {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The ROC curve as (false-positive rate, true-positive rate) points, as sklearn's `roc_curve`
/// with `drop_intermediate=False`: `(0, 0)` (nothing flagged), then one point per distinct
/// score from the highest down (flagging every sample scored at least that), ending at
/// `(1, 1)`. The trapezoids under it sum to [`auc_roc`](crate::auc_roc).
///
/// Errors: as [`auc_roc`](crate::auc_roc) (lengths, NaN, a test set of one class).
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricError> {
    let positives = check(scores, labels)? as f64;
    let negatives = labels.len() as f64 - positives;
    let mut points = vec![(0.0, 0.0)];
    points.extend(
        cumulative_counts(scores, labels)
            .into_iter()
            .map(|(tp, fp)| (fp as f64 / negatives, tp as f64 / positives)),
    );
    Ok(points)
}

/// The precision–recall curve as (recall, precision) points, one per distinct score from the
/// highest down (flagging every sample scored at least that), so recall never decreases and
/// the last point has recall 1.
///
/// These are sklearn's `precision_recall_curve` points in the opposite order (sklearn lists
/// them from the lowest threshold up) and without the `(recall 0, precision 1)` point it
/// appends, which no threshold attains; every point is a real threshold's. The step sum
/// Σ (Rₙ − Rₙ₋₁)·Pₙ over them is [`auc_pr`](crate::auc_pr).
///
/// Errors: as [`auc_roc`](crate::auc_roc) (lengths, NaN, a test set of one class).
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricError> {
    let positives = check(scores, labels)? as f64;
    Ok(cumulative_counts(scores, labels)
        .into_iter()
        .map(|(tp, fp)| (tp as f64 / positives, tp as f64 / (tp + fp) as f64))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auc_pr, auc_roc};

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    fn above(scores: &[f64], threshold: f64) -> usize {
        scores.iter().filter(|s| **s > threshold).count()
    }

    #[test]
    fn threshold_lets_the_allowed_number_of_normals_above() {
        // n = 20, rate 0.05: k = ⌊1.0⌋ = 1 normal above, so the threshold is the second highest.
        let scores: Vec<f64> = (0..20).map(|i| ((i * 7) % 20) as f64).collect();
        let t = threshold_at_fpr(&scores, 0.05).unwrap();
        assert_eq!(t, 18.0);
        assert_eq!(above(&scores, t), 1);
        // n = 5, rate 0.05: k = ⌊0.25⌋ = 0, so the threshold is the maximum and flags nothing.
        let five = [0.3, 0.9, 0.1, 0.5, 0.7];
        assert_eq!(threshold_at_fpr(&five, 0.05).unwrap(), 0.9);
        assert_eq!(above(&five, 0.9), 0);
        // Rate 0: the maximum. n = 5, rate 0.4: k = 2, threshold = sorted[2] = 0.5, two above.
        assert_eq!(threshold_at_fpr(&five, 0.0).unwrap(), 0.9);
        assert_eq!(threshold_at_fpr(&five, 0.4).unwrap(), 0.5);
        // Rate 0.99: k = ⌊4.95⌋ = 4, the lowest score; never fewer than one below.
        assert_eq!(threshold_at_fpr(&five, 0.99).unwrap(), 0.1);
        assert_eq!(threshold_at_fpr(&[2.0], 0.5).unwrap(), 2.0);
    }

    #[test]
    fn threshold_with_ties_lets_fewer_above() {
        // Sorted [1, 2, 2, 2, 3], rate 0.4: k = 2, threshold = sorted[2] = 2; only the 3 lies
        // above, the tied 2s do not.
        let scores = [2.0, 3.0, 2.0, 1.0, 2.0];
        let t = threshold_at_fpr(&scores, 0.4).unwrap();
        assert_eq!(t, 2.0);
        assert_eq!(above(&scores, t), 1);
    }

    #[test]
    fn threshold_errors() {
        assert_eq!(threshold_at_fpr(&[], 0.1), Err(MetricError::Empty));
        assert_eq!(
            threshold_at_fpr(&[1.0, f64::NAN], 0.1),
            Err(MetricError::NaN)
        );
        assert_eq!(
            threshold_at_fpr(&[1.0], 1.0),
            Err(MetricError::BadRate(1.0))
        );
        assert_eq!(
            threshold_at_fpr(&[1.0], -0.1),
            Err(MetricError::BadRate(-0.1))
        );
        assert!(matches!(
            threshold_at_fpr(&[1.0], f64::NAN),
            Err(MetricError::BadRate(r)) if r.is_nan()
        ));
        assert_eq!(
            MetricError::BadRate(1.5).to_string(),
            "the target false-positive rate 1.5 is outside [0, 1)"
        );
    }

    #[test]
    fn confusion_by_hand() {
        // Threshold 0.4: flagged are 0.8 (anomaly) and 0.5 (normal); 0.4 itself is not flagged.
        let scores = [0.1, 0.4, 0.35, 0.8, 0.5];
        let labels = [false, false, true, true, false];
        let c = Confusion::at(&scores, &labels, 0.4).unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 1,
                fp: 1,
                tn: 2,
                fn_: 1
            }
        );
        close(c.precision().unwrap(), 0.5);
        close(c.recall().unwrap(), 0.5);
        close(c.f1().unwrap(), 0.5);
        close(c.fpr().unwrap(), 1.0 / 3.0);
        // precision 1, recall 1/2 → F1 = 2·1·0.5 / 1.5 = 2/3 = 2·1 / (2·1 + 0 + 1).
        let c = Confusion::at(&scores, &labels, 0.6).unwrap();
        close(c.precision().unwrap(), 1.0);
        close(c.f1().unwrap(), 2.0 / 3.0);
        close(c.fpr().unwrap(), 0.0);
    }

    #[test]
    fn confusion_rates_without_denominator_are_none() {
        // Nothing flagged: no precision; no anomaly: no recall; no normal: no FPR.
        let c = Confusion::at(&[0.1, 0.2], &[false, false], 1.0).unwrap();
        assert_eq!((c.precision(), c.recall(), c.f1()), (None, None, None));
        assert_eq!(c.fpr(), Some(0.0));
        let c = Confusion::at(&[0.1], &[true], 0.0).unwrap();
        assert_eq!((c.fpr(), c.recall(), c.f1()), (None, Some(1.0), Some(1.0)));
        let c = Confusion::at(&[], &[], 0.0).unwrap();
        assert_eq!(c, Confusion::default());
    }

    #[test]
    fn confusion_errors() {
        assert_eq!(
            Confusion::at(&[1.0], &[true, false], 0.0),
            Err(MetricError::LengthMismatch {
                scores: 1,
                labels: 2
            })
        );
        assert_eq!(
            Confusion::at(&[f64::NAN], &[true], 0.0),
            Err(MetricError::NaN)
        );
        assert_eq!(
            Confusion::at(&[1.0], &[true], f64::NAN),
            Err(MetricError::NaN)
        );
    }

    #[test]
    fn roc_curve_by_hand() {
        // sklearn: roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], drop_intermediate=False)
        //   fpr [0, 0, 0.5, 0.5, 1], tpr [0, 0.5, 0.5, 1, 1]
        let scores = [0.1, 0.4, 0.35, 0.8];
        let labels = [false, false, true, true];
        assert_eq!(
            roc_curve(&scores, &labels).unwrap(),
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // The trapezoids sum to the AUC: 0.5·0.5 + 0.5·1 = 0.75.
        let points = roc_curve(&scores, &labels).unwrap();
        let area: f64 = points
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        close(area, auc_roc(&scores, &labels).unwrap());
    }

    #[test]
    fn roc_curve_groups_ties_and_ranks_perfectly() {
        // Scores 0.9 (anomaly, normal) tie: one point (1/2, 1/2); then 0.5 (anomaly) → (1/2, 1);
        // then 0.1 (normal) → (1, 1).
        assert_eq!(
            roc_curve(&[0.9, 0.9, 0.5, 0.1], &[true, false, true, false]).unwrap(),
            vec![(0.0, 0.0), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // All tied: straight from (0, 0) to (1, 1).
        assert_eq!(
            roc_curve(&[1.0; 3], &[true, false, false]).unwrap(),
            vec![(0.0, 0.0), (1.0, 1.0)]
        );
        // Perfect ranking: up the left edge, then along the top.
        assert_eq!(
            roc_curve(&[3.0, 2.0, 1.0, 0.0], &[true, true, false, false]).unwrap(),
            vec![(0.0, 0.0), (0.0, 0.5), (0.0, 1.0), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn pr_curve_by_hand() {
        // sklearn: precision_recall_curve([1, 0, 1, 0, 1], [0.9, 0.9, 0.5, 0.4, 0.1]) gives,
        // from the highest threshold down (its arrays reversed, its final (0, 1) dropped):
        //   0.9: tp 1, fp 1 → (1/3, 1/2); 0.5: tp 2, fp 1 → (2/3, 2/3);
        //   0.4: tp 2, fp 2 → (2/3, 1/2); 0.1: tp 3, fp 2 → (1, 3/5).
        let scores = [0.9, 0.9, 0.5, 0.4, 0.1];
        let labels = [true, false, true, false, true];
        let points = pr_curve(&scores, &labels).unwrap();
        let expected = [
            (1.0 / 3.0, 0.5),
            (2.0 / 3.0, 2.0 / 3.0),
            (2.0 / 3.0, 0.5),
            (1.0, 0.6),
        ];
        assert_eq!(points.len(), expected.len());
        for (p, e) in points.iter().zip(expected) {
            close(p.0, e.0);
            close(p.1, e.1);
        }
        // The step sum is the average precision.
        let mut last = 0.0;
        let ap: f64 = points
            .iter()
            .map(|&(r, p)| {
                let step = (r - last) * p;
                last = r;
                step
            })
            .sum();
        close(ap, auc_pr(&scores, &labels).unwrap());
        // Perfect ranking: precision 1 until every anomaly is found.
        assert_eq!(
            pr_curve(&[3.0, 2.0, 1.0], &[true, true, false]).unwrap(),
            vec![(0.5, 1.0), (1.0, 1.0), (1.0, 2.0 / 3.0)]
        );
    }

    #[test]
    fn curves_of_one_class_are_errors() {
        assert!(matches!(
            roc_curve(&[1.0, 2.0], &[false, false]),
            Err(MetricError::OneClass { .. })
        ));
        assert!(matches!(
            pr_curve(&[1.0, 2.0], &[true, true]),
            Err(MetricError::OneClass { .. })
        ));
        assert_eq!(
            roc_curve(&[f64::NAN, 1.0], &[true, false]),
            Err(MetricError::NaN)
        );
    }
}
