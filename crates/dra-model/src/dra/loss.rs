//! The training loss: one binary loss per head over the rows that head is trained on, summed
//! without weights (official `Trainer.training`).

use candle_core::{Result, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::HeadScores;
use crate::head_set::HeadSet;

/// The per-head loss (`--criterion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Deviation loss (Pang et al.), margin 5, Gaussian prior: the paper's choice.
    #[default]
    Deviation,
    /// Binary cross-entropy on the score as a logit.
    Bce,
    /// Binary focal loss on logits, α = 1, γ = 2.
    Focal,
}

impl std::str::FromStr for LossKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "deviation" => Ok(Self::Deviation),
            "bce" => Ok(Self::Bce),
            "focal" => Ok(Self::Focal),
            other => Err(format!(
                "unknown loss `{other}`; valid: deviation, bce, focal"
            )),
        }
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deviation => "deviation",
            Self::Bce => "bce",
            Self::Focal => "focal",
        })
    }
}

/// Deviation-loss constants.
const MARGIN: f64 = 5.0;
const PRIOR_SAMPLES: usize = 5000;

/// The loss of a training step: the total and each head's term (normal, seen, pseudo, residual).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// The sum of the four heads' terms, a scalar: what the optimiser minimises.
    pub total: Tensor,
    /// Each head's scalar loss, in the order normal, seen, pseudo, residual.
    pub heads: [Tensor; 4],
}

/// Computes DRA's loss from head scores and the batch's labels (0 normal, 1 anomaly, 2 pseudo).
#[derive(Debug, Clone, Copy, Default)]
pub struct DraLoss {
    /// The loss every head uses.
    pub kind: LossKind,
    /// The heads whose terms make the total (all four for DRA; a subset for the ablation).
    /// Every head's term is still computed and reported in [`LossParts::heads`].
    pub heads: HeadSet,
}

impl DraLoss {
    /// DRA's loss with `kind` for every head.
    pub fn new(kind: LossKind) -> Self {
        Self {
            kind,
            heads: HeadSet::ALL,
        }
    }

    /// Routing (official `generate_target`):
    /// g_n on all rows, target "is normal"; g_s on rows that are not pseudo, target "is a real
    /// anomaly"; g_p on rows that are not real anomalies, target "is pseudo"; g_r on all rows,
    /// target "is any anomaly". `rng` draws the deviation loss's Gaussian prior afresh for each
    /// head, as the official loss does on every call.
    pub fn compute<R: Rng>(
        &self,
        scores: &HeadScores,
        labels: &[u8],
        rng: &mut R,
    ) -> Result<LossParts> {
        let priors = [(); 4].map(|_| match self.kind {
            LossKind::Deviation => Prior::draw(rng),
            _ => Prior::STANDARD,
        });
        self.compute_with_priors(scores, labels, priors)
    }

    /// [`DraLoss::compute`] with given deviation-loss priors (normal, seen, pseudo, residual),
    /// e.g. those recorded from a PyTorch run.
    pub fn compute_with_priors(
        &self,
        scores: &HeadScores,
        labels: &[u8],
        priors: [Prior; 4],
    ) -> Result<LossParts> {
        let all: Vec<usize> = (0..labels.len()).collect();
        let not_pseudo: Vec<usize> = all.iter().copied().filter(|&i| labels[i] != 2).collect();
        let not_anomaly: Vec<usize> = all.iter().copied().filter(|&i| labels[i] != 1).collect();
        let routes: [Route; 4] = [
            (&scores.normal, &all, |l| l == 0),
            (&scores.seen, &not_pseudo, |l| l == 1),
            (&scores.pseudo, &not_anomaly, |l| l == 2),
            (&scores.residual, &all, |l| l != 0),
        ];
        let mut heads = Vec::with_capacity(4);
        for ((head_scores, rows, is_target), prior) in routes.into_iter().zip(priors) {
            let targets: Vec<f32> = rows
                .iter()
                .map(|&i| is_target(labels[i]) as u8 as f32)
                .collect();
            heads.push(self.head(head_scores, rows, &targets, prior)?);
        }
        let heads: [Tensor; 4] = heads.try_into().expect("four heads");
        // Summed in head order, so that with all four the total is ((n + s) + p) + r.
        let mut total: Option<Tensor> = None;
        for (i, term) in heads.iter().enumerate() {
            if self.heads.has(i) {
                total = Some(match total {
                    Some(t) => (t + term)?,
                    None => term.clone(),
                });
            }
        }
        let total = total.expect("a head set holds at least one head");
        Ok(LossParts { total, heads })
    }

    fn head(
        &self,
        scores: &Tensor,
        rows: &[usize],
        targets: &[f32],
        prior: Prior,
    ) -> Result<Tensor> {
        let device = scores.device();
        if rows.is_empty() {
            // No row for this head in this batch: it contributes nothing (PyTorch would give NaN).
            return Tensor::zeros((), scores.dtype(), device);
        }
        let scores = if rows.len() == scores.dim(0)? {
            scores.clone()
        } else {
            let idx: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
            scores.index_select(&Tensor::new(idx.as_slice(), device)?, 0)?
        };
        let y = Tensor::new(targets, device)?.to_dtype(scores.dtype())?;
        self.kind.loss(&scores, &y, prior)
    }
}

/// A head's scores, the batch rows it is trained on, and which labels are its positives.
type Route<'a> = (&'a Tensor, &'a [usize], fn(u8) -> bool);

/// The deviation loss's reference distribution: mean and standard deviation of a sample of
/// N(0, 1) scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Mean μ of the reference scores; the deviation is (score − μ) / σ.
    pub mean: f64,
    /// Standard deviation σ of the reference scores.
    pub std: f64,
}

impl Prior {
    /// The exact N(0, 1).
    pub const STANDARD: Prior = Prior {
        mean: 0.0,
        std: 1.0,
    };

    /// Mean and unbiased standard deviation of 5000 fresh draws, as the official
    /// `DeviationLoss` computes on every call.
    pub fn draw<R: Rng>(rng: &mut R) -> Self {
        let draws: Vec<f64> = (0..PRIOR_SAMPLES)
            .map(|_| rng.sample(StandardNormal))
            .collect();
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

impl LossKind {
    /// Mean loss of `scores` against 0/1 `targets`; `prior` is used by the deviation loss only.
    pub fn loss(&self, scores: &Tensor, targets: &Tensor, prior: Prior) -> Result<Tensor> {
        match self {
            Self::Deviation => {
                let dev = ((scores - prior.mean)? / prior.std)?;
                let inlier = dev.abs()?;
                let outlier = dev.affine(-1.0, MARGIN)?.relu()?;
                let one_minus_y = targets.affine(-1.0, 1.0)?;
                ((one_minus_y * inlier)? + (targets * outlier)?)?.mean_all()
            }
            Self::Bce => bce_with_logits(scores, targets)?.mean_all(),
            Self::Focal => {
                let bce = bce_with_logits(scores, targets)?;
                let pt = bce.neg()?.exp()?;
                let weight = pt.affine(-1.0, 1.0)?.sqr()?;
                (weight * bce)?.mean_all()
            }
        }
    }
}

/// Element-wise `BCEWithLogits`, in the numerically stable form max(x,0) − x·y + log(1+e^−|x|).
fn bce_with_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let softplus = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    (x.relu()? - (x * y)?)? + softplus
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn scores(n: &[f32], s: &[f32], p: &[f32], r: &[f32]) -> HeadScores {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        HeadScores {
            normal: t(n),
            seen: t(s),
            pseudo: t(p),
            residual: t(r),
        }
    }

    #[test]
    fn deviation_loss_by_hand() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let s = Tensor::new(&[0.5f32, 2.0, 6.0], &Device::Cpu)?;
        let y = Tensor::new(&[0f32, 1., 1.], &Device::Cpu)?;
        let got = LossKind::Deviation
            .loss(&s, &y, Prior::draw(&mut rng))?
            .to_scalar::<f32>()?;
        // With μ≈0, σ≈1: (|0.5| + (5−2) + 0) / 3 ≈ 1.1667; the prior's noise moves it slightly.
        assert!((got - 3.5 / 3.0).abs() < 0.1, "{got}");
        Ok(())
    }

    #[test]
    fn bce_and_focal_by_hand() -> Result<()> {
        let s = Tensor::new(&[0f32, 2.0], &Device::Cpu)?;
        let y = Tensor::new(&[1f32, 0.], &Device::Cpu)?;
        let bce = LossKind::Bce
            .loss(&s, &y, Prior::STANDARD)?
            .to_scalar::<f32>()?;
        let want = ((2f32).ln() + (1.0 + 2f32.exp()).ln()) / 2.0;
        assert!((bce - want).abs() < 1e-5);
        let focal = LossKind::Focal
            .loss(&s, &y, Prior::STANDARD)?
            .to_scalar::<f32>()?;
        let f = |l: f32| (1.0 - (-l).exp()).powi(2) * l;
        let want = (f(2f32.ln()) + f((1.0 + 2f32.exp()).ln())) / 2.0;
        assert!((focal - want).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn routing_by_label() -> Result<()> {
        // Labels: normal, anomaly, pseudo. With BCE the terms are exact to check.
        let labels = [0u8, 1, 2];
        let sc = scores(
            &[1., 2., 3.],
            &[0.1, 0.2, 9.],
            &[0.3, 9., 0.4],
            &[0.5, 0.6, 0.7],
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let parts = DraLoss::new(LossKind::Bce).compute(&sc, &labels, &mut rng)?;
        let b = |x: f32, y: f32| x.max(0.0) - x * y + (1.0 + (-x.abs()).exp()).ln();
        let want = [
            (b(1., 1.) + b(2., 0.) + b(3., 0.)) / 3.0,
            (b(0.1, 0.) + b(0.2, 1.)) / 2.0,
            (b(0.3, 0.) + b(0.4, 1.)) / 2.0,
            (b(0.5, 0.) + b(0.6, 1.) + b(0.7, 1.)) / 3.0,
        ];
        for (h, w) in parts.heads.iter().zip(want) {
            assert!((h.to_scalar::<f32>()? - w).abs() < 1e-5);
        }
        let total = parts.total.to_scalar::<f32>()?;
        assert!((total - want.iter().sum::<f32>()).abs() < 1e-5);
        Ok(())
    }
}
