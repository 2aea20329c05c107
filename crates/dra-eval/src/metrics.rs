//! Ranking metrics of anomaly scores against 0/1 labels (1 = anomaly).

/// Why a metric is undefined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// The score and label slices do not pair up one to one.
    #[error("scores and labels differ in length ({scores} vs {labels})")]
    LengthMismatch {
        /// Number of scores given.
        scores: usize,
        /// Number of labels given.
        labels: usize,
    },
    /// Every label is the same, so there is no anomaly–normal pair to rank; sklearn raises a
    /// `ValueError` here too (for AUC-ROC) rather than returning a number.
    #[error(
        "the test set needs both normal and anomalous samples ({positives} anomalies of {total})"
    )]
    OneClass {
        /// Number of samples labelled anomalous.
        positives: usize,
        /// Number of samples in the test set.
        total: usize,
    },
    /// A score is NaN, which has no place in a ranking.
    #[error("a score is NaN")]
    NaN,
    /// No scores at all: a threshold has nothing to be chosen from.
    #[error("no scores given")]
    Empty,
    /// A target false-positive rate outside `[0, 1)`: at rate 1 every normal may be flagged, so
    /// no threshold is needed, and a negative rate (or NaN) allows nothing.
    #[error("the target false-positive rate {0} is outside [0, 1)")]
    BadRate(f64),
    /// There are not as many anomaly maps as ground-truth masks.
    #[error("{maps} anomaly maps but {masks} masks")]
    ImageCount {
        /// Number of anomaly maps given.
        maps: usize,
        /// Number of masks given.
        masks: usize,
    },
    /// An anomaly map or a mask does not have `width × height` pixels.
    #[error("image {image}: the anomaly map has {map} pixels and the mask {mask}, not {expected} (width × height)")]
    ImageSize {
        /// Position of the image in the input, from 0.
        image: usize,
        /// `width × height`.
        expected: usize,
        /// Pixels in its anomaly map.
        map: usize,
        /// Pixels in its mask.
        mask: usize,
    },
    /// An image of more pixels than a `u32` counts: region labels and sizes are `u32`, to keep
    /// the per-pixel memory of tens of millions of pixels small.
    #[error("a {width}×{height} image has more pixels than a u32 counts")]
    ImageTooLarge {
        /// Width given.
        width: usize,
        /// Height given.
        height: usize,
    },
    /// The masks hold no anomalous pixel (no region, so the PRO is undefined) or no normal one
    /// (no false-positive rate).
    #[error("the masks need both anomalous and normal pixels ({anomalous} anomalous of {total})")]
    PixelClasses {
        /// Number of pixels marked anomalous.
        anomalous: usize,
        /// Number of pixels of all images.
        total: usize,
    },
}

/// The number of anomalies, after checking that the slices pair up, hold no NaN and both classes.
pub(crate) fn check(scores: &[f64], labels: &[bool]) -> Result<usize, MetricError> {
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch {
            scores: scores.len(),
            labels: labels.len(),
        });
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(MetricError::NaN);
    }
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 || positives == labels.len() {
        return Err(MetricError::OneClass {
            positives,
            total: labels.len(),
        });
    }
    Ok(positives)
}

/// Indices sorted by descending score.
pub(crate) fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// Area under the ROC curve, as sklearn's `roc_auc_score`: the Mann–Whitney statistic, a tie
/// between an anomaly and a normal counting one half.
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let positives = check(scores, labels)?;
    let negatives = labels.len() - positives;
    let order = descending(scores);
    // Walk groups of tied scores from the top: each positive in a group beats every negative
    // below the group and ties with the negatives inside it.
    let mut negatives_below = negatives as f64;
    let mut wins = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut pos, mut neg) = (0usize, 0usize);
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                pos += 1;
            } else {
                neg += 1;
            }
            j += 1;
        }
        negatives_below -= neg as f64;
        wins += pos as f64 * (negatives_below + 0.5 * neg as f64);
        i = j;
    }
    Ok(wins / (positives as f64 * negatives as f64))
}

/// Average precision, as sklearn's `average_precision_score`: Σ (Rₙ − Rₙ₋₁)·Pₙ over the
/// distinct score thresholds, from the highest down (a step function, no interpolation).
pub fn auc_pr(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let positives = check(scores, labels)? as f64;
    let mut last_recall = 0.0;
    let mut ap = 0.0;
    for (tp, fp) in cumulative_counts(scores, labels) {
        let recall = tp as f64 / positives;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
    }
    Ok(ap)
}

/// (true positives, false positives) flagged at each distinct threshold, from the highest score
/// down: tied scores form one threshold, since no threshold separates them.
pub(crate) fn cumulative_counts(scores: &[f64], labels: &[bool]) -> Vec<(usize, usize)> {
    let order = descending(scores);
    let (mut tp, mut fp) = (0, 0);
    let mut counts = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        counts.push((tp, fp));
        i = j;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn roc_by_hand() {
        // sklearn: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        close(
            auc_roc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(),
            0.75,
        );
        // Perfect and reversed rankings.
        close(auc_roc(&[1.0, 2.0], &[false, true]).unwrap(), 1.0);
        close(auc_roc(&[2.0, 1.0], &[false, true]).unwrap(), 0.0);
    }

    #[test]
    fn roc_counts_ties_half() {
        // All scores equal → 0.5. One positive tied with one of two negatives → (1 + 0.5) / 2.
        close(
            auc_roc(&[1.0; 4], &[true, false, true, false]).unwrap(),
            0.5,
        );
        close(
            auc_roc(&[0.0, 1.0, 1.0], &[false, false, true]).unwrap(),
            0.75,
        );
    }

    #[test]
    fn average_precision_by_hand() {
        // sklearn: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333…
        close(
            auc_pr(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(),
            (0.5 * 1.0) + (0.5 * 2.0 / 3.0),
        );
        // Ties form one threshold: all tied → AP = prevalence.
        close(
            auc_pr(&[0.5; 4], &[true, false, false, false]).unwrap(),
            0.25,
        );
        // sklearn: average_precision_score([1, 0, 1, 0, 1], [0.9, 0.9, 0.5, 0.4, 0.1]) == 0.5888…
        // thresholds 0.9 (R=1/3, P=1/2), 0.5 (R=2/3, P=2/3), 0.4 (P=2/4), 0.1 (R=1, P=3/5)
        close(
            auc_pr(
                &[0.9, 0.9, 0.5, 0.4, 0.1],
                &[true, false, true, false, true],
            )
            .unwrap(),
            (1.0 / 3.0) * 0.5 + (1.0 / 3.0) * (2.0 / 3.0) + (1.0 / 3.0) * 0.6,
        );
    }

    #[test]
    fn undefined_cases_are_errors() {
        assert!(matches!(
            auc_roc(&[1.0, 2.0], &[true, true]),
            Err(MetricError::OneClass { .. })
        ));
        assert!(matches!(
            auc_pr(&[1.0], &[true, false]),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert_eq!(
            auc_roc(&[f64::NAN, 1.0], &[true, false]),
            Err(MetricError::NaN)
        );
    }
}
