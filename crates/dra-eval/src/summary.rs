//! Mean ± standard deviation over independent runs, in the paper's notation.

use serde::{Deserialize, Serialize};

/// Mean and standard deviation of a set of runs. The deviation is the population one (NumPy's
/// `np.std`, ddof = 0); the paper does not say which it used.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Arithmetic mean of the runs.
    pub mean: f64,
    /// Population standard deviation of the runs (divisor `n`, not `n − 1`).
    pub std: f64,
    /// Number of runs summarised.
    pub n: usize,
}

impl MeanStd {
    /// `None` for an empty set.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Some(Self {
            mean,
            std: var.sqrt(),
            n: values.len(),
        })
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_mean_std(self.mean, self.std))
    }
}

/// The paper's cell format, three decimals: `0.959±0.003`.
pub fn format_mean_std(mean: f64, std: f64) -> String {
    format!("{mean:.3}±{std:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_population_std() {
        let m = MeanStd::of(&[0.9, 1.0, 0.95]).unwrap();
        assert!((m.mean - 0.95).abs() < 1e-12);
        assert!((m.std - (0.005f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(m.to_string(), "0.950±0.041");
        assert_eq!(MeanStd::of(&[]), None);
        assert_eq!(MeanStd::of(&[0.5]).unwrap().to_string(), "0.500±0.000");
    }
}
