//! One interface over DRA and the baselines, for the trainer and the evaluation: a training loss
//! on a labelled batch and per-image anomaly scores.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rand::Rng;

use crate::baselines::{DeepSad, DevNet, Flos, Minns, Saoe};
use crate::dra::{Dra, DraLoss, HeadScores, LossKind};
use crate::head_set::HeadSet;
use crate::image_batch::{ImageBatch, Target};
use crate::model_config::ModelConfig;
use crate::onnx::{check, proto::ModelProto, Dim, Graph, ANOMALY_MAP, HEAD_OUTPUTS, INPUT, SCORE};
use crate::Method;

/// A trainable anomaly detector of any [`Method`].
#[derive(Debug, Clone)]
pub enum Detector {
    /// Boxed: DRA's four heads make it twice the size of any baseline.
    Dra(Box<Dra>),
    /// DevNet: DRA's seen-abnormality head alone.
    DevNet(DevNet),
    /// Deep SAD: distance to a fixed centre in an embedding space.
    DeepSad(DeepSad),
    /// MINNS: top-K multiple-instance pooling of per-cell logits.
    Minns(Minns),
    /// FLOS: a pooled-feature classifier trained with the focal loss.
    Flos(Flos),
    /// SAOE: a pooled-feature classifier whose anomaly class includes pseudo anomalies.
    Saoe(Saoe),
}

/// A training step's loss: what the optimiser minimises, and DRA's head terms.
#[derive(Debug, Clone)]
pub struct LossTerms {
    /// The scalar loss.
    pub total: Tensor,
    /// DRA's head terms (normal, seen, pseudo, residual), scalars; `None` for the baselines.
    pub heads: Option<[Tensor; 4]>,
}

/// DRA's scores: the anomaly score of the heads in `set`, and those heads' scores.
fn dra_scores(h: HeadScores, set: HeadSet) -> Result<DetectorScores> {
    let score = h.anomaly_score_of(set)?;
    let keep = |i: usize, t: Tensor| set.has(i).then_some(t);
    Ok(DetectorScores {
        score,
        heads: [
            keep(0, h.normal),
            keep(1, h.seen),
            keep(2, h.pseudo),
            keep(3, h.residual),
        ],
    })
}

/// The names of an exported detector's values per image, as [`DetectorScores`] has them:
/// what [`Detector::to_onnx`] declares the graph's outputs.
#[derive(Debug, Clone)]
pub struct ExportedDetector {
    /// The anomaly score, `(B,)`.
    pub score: String,
    /// g_n, g_s, g_p, g_r where [`DetectorScores::heads`] has them, each `(B,)`.
    pub heads: [Option<String>; 4],
    /// DRA's anomaly map at the image's size, `(B, S, S)`; `None` for the baselines.
    pub map: Option<String>,
}

/// Per-image scores of a batch in eval mode.
#[derive(Debug, Clone)]
pub struct DetectorScores {
    /// The anomaly score, `(B,)`: larger means more anomalous.
    pub score: Tensor,
    /// g_n, g_s, g_p, g_r where the method has that head: all four for DRA, g_s for DevNet
    /// (DRA's seen-abnormality head is DevNet's only head), none for the others.
    pub heads: [Option<Tensor>; 4],
}

impl Detector {
    /// Builds `method`'s model from `vb`. `config` gives the backbone, the top-K rate, the
    /// pyramid (DRA and DevNet) and the references (DRA only).
    /// AHL builds its base's model (DRA or DevNet): that is what it trains and saves.
    pub fn new(method: Method, config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match method.base() {
            Method::Dra => Self::Dra(Box::new(Dra::new(config.clone(), vb)?)),
            Method::DevNet => Self::DevNet(DevNet::new(config, vb)?),
            Method::DeepSad => Self::DeepSad(DeepSad::new(config, vb)?),
            Method::Minns => Self::Minns(Minns::new(config, vb)?),
            Method::Flos => Self::Flos(Flos::new(config, vb)?),
            Method::Saoe => Self::Saoe(Saoe::new(config, vb)?),
            Method::Ahl | Method::AhlDevNet => unreachable!("AHL's base is DRA or DevNet"),
        })
    }

    /// The [`Method`] this detector implements (for an AHL model, its base).
    pub fn method(&self) -> Method {
        match self {
            Self::Dra(_) => Method::Dra,
            Self::DevNet(_) => Method::DevNet,
            Self::DeepSad(_) => Method::DeepSad,
            Self::Minns(_) => Method::Minns,
            Self::Flos(_) => Method::Flos,
            Self::Saoe(_) => Method::Saoe,
        }
    }

    /// Whether batches must start with reference images (DRA's `n_ref`).
    pub fn uses_references(&self) -> bool {
        self.method().uses_references()
    }

    /// The number of references a batch must start with: DRA's `n_ref`, 0 for the others.
    pub fn n_ref(&self) -> usize {
        match self {
            Self::Dra(m) => m.config().n_ref,
            _ => 0,
        }
    }

    /// The backbone's eval-mode feature maps of `images` (no references) at pyramid level `s`,
    /// for the methods whose heads score feature maps level by level (DRA and DevNet): what
    /// AHL trains its heads on. An error for the other methods.
    pub fn level_features(&self, images: &Tensor, s: usize) -> Result<Tensor> {
        match self {
            Self::Dra(m) => m.features_t(images, s, false),
            Self::DevNet(m) => m.features_t(images, s, false),
            _ => candle_core::bail!("{} has no per-level heads", self.method()),
        }
    }

    /// The detector in eval mode as an ONNX model on images of `size` × `size` pixels and any
    /// batch size: input [`INPUT`]; outputs [`SCORE`], the head scores it has under their
    /// `scores.csv` names ([`HEAD_OUTPUTS`]) and, for DRA, [`ANOMALY_MAP`]. DRA's `references`
    /// (normalised, `(n_ref, 3, S, S)`) are baked in. `metadata` becomes the file's
    /// `metadata_props`. The graph is checked by ONNX's rules ([`check`]) before it is
    /// returned.
    pub fn to_onnx(
        &self,
        size: usize,
        references: Option<&Tensor>,
        metadata: &[(String, String)],
    ) -> Result<ModelProto> {
        let mut g = Graph::new();
        let image = [
            Dim::Named("batch"),
            Dim::Fixed(3),
            Dim::Fixed(size),
            Dim::Fixed(size),
        ];
        let x = g.input(INPUT, &image);
        let out = self.export(&mut g, &x, size, references)?;
        let batch = [Dim::Named("batch")];
        g.output(&out.score, SCORE, &batch);
        for (head, name) in out.heads.iter().zip(HEAD_OUTPUTS) {
            if let Some(head) = head {
                g.output(head, name, &batch);
            }
        }
        if let Some(map) = &out.map {
            let map_dims = [Dim::Named("batch"), Dim::Fixed(size), Dim::Fixed(size)];
            g.output(map, ANOMALY_MAP, &map_dims);
        }
        let model = g.into_model(self.method().name(), metadata);
        // A graph that breaks ONNX's rules is this crate's bug: caught here, not in a runtime.
        check(&model).map_err(|e| candle_core::Error::Msg(format!("invalid ONNX graph: {e}")))?;
        Ok(model)
    }

    /// The detector in eval mode as ONNX nodes on the value `x`, images `(B, 3, S, S)` of
    /// `size` = S pixels, giving what [`Detector::scores_with_maps`] gives; for DRA,
    /// `references` (`(n_ref, 3, S, S)`, normalised) are baked in ([`Dra::export`]).
    pub fn export(
        &self,
        g: &mut Graph,
        x: &str,
        size: usize,
        references: Option<&Tensor>,
    ) -> Result<ExportedDetector> {
        let only = |score: String| ExportedDetector {
            score,
            heads: [None, None, None, None],
            map: None,
        };
        Ok(match self {
            Self::Dra(m) => {
                let Some(references) = references else {
                    candle_core::bail!("DRA's export needs the run's reference images");
                };
                let out = m.export(g, x, references)?;
                let set = m.config().heads;
                let [n, s, p, r] = out.heads;
                let keep = |i: usize, name: String| set.has(i).then_some(name);
                ExportedDetector {
                    score: out.score,
                    heads: [keep(0, n), keep(1, s), keep(2, p), keep(3, r)],
                    map: Some(out.map),
                }
            }
            Self::DevNet(m) => {
                let score = m.export(g, x, (size, size))?;
                ExportedDetector {
                    heads: [None, Some(score.clone()), None, None],
                    score,
                    map: None,
                }
            }
            Self::DeepSad(m) => only(m.export(g, x)?),
            Self::Minns(m) => only(m.export(g, x, (size, size))?),
            Self::Flos(m) => only(m.export(g, x)?),
            Self::Saoe(m) => only(m.export(g, x)?),
        })
    }

    /// Checks that `batch` has the references this detector expects.
    fn check(&self, batch: &ImageBatch) -> Result<()> {
        if batch.n_ref() != self.n_ref() {
            candle_core::bail!(
                "{} expects {} reference image(s) before the queries, the batch has {}",
                self.method(),
                self.n_ref(),
                batch.n_ref()
            );
        }
        Ok(())
    }

    /// The training loss of one batch, one target per query. `kind` is the loss of DRA's heads
    /// and DevNet's head; the other methods have their own. `rng` draws the deviation loss's
    /// priors.
    pub fn loss<R: Rng>(
        &self,
        batch: &ImageBatch,
        targets: &[Target],
        kind: LossKind,
        rng: &mut R,
    ) -> Result<Tensor> {
        Ok(self.loss_terms(batch, targets, kind, rng)?.total)
    }

    /// [`Detector::loss`] with DRA's four head terms beside the total (normal, seen, pseudo,
    /// residual), for the training log; `heads` is `None` for the other methods. The total is
    /// the same tensor `loss` returns.
    pub fn loss_terms<R: Rng>(
        &self,
        batch: &ImageBatch,
        targets: &[Target],
        kind: LossKind,
        rng: &mut R,
    ) -> Result<LossTerms> {
        self.check(batch)?;
        if targets.len() != batch.n_queries() {
            candle_core::bail!(
                "{} targets for {} query images",
                targets.len(),
                batch.n_queries()
            );
        }
        let images = batch.images();
        let labels: Vec<u8> = targets.iter().map(|t| t.as_u8()).collect();
        let labels = &labels[..];
        let total = |total: Tensor| LossTerms { total, heads: None };
        Ok(match self {
            Self::Dra(m) => {
                let loss = DraLoss {
                    kind,
                    heads: m.config().heads,
                };
                let parts = loss.compute(&m.forward_t(images, true)?, labels, rng)?;
                LossTerms {
                    total: parts.total,
                    heads: Some(parts.heads),
                }
            }
            Self::DevNet(m) => total(m.loss(images, labels, kind, rng)?),
            Self::DeepSad(m) => total(m.loss(images, labels)?),
            Self::Minns(m) => total(m.loss(images, labels)?),
            Self::Flos(m) => total(m.loss(images, labels)?),
            Self::Saoe(m) => total(m.loss(images, labels)?),
        })
    }

    /// [`Detector::scores`] and, for DRA, each query's anomaly map `(B, h, w)` at the backbone's
    /// resolution from the same pass ([`Dra::scores_and_maps`]): the scores are those of
    /// `scores` bit for bit. The other methods have no map (`None`).
    pub fn scores_with_maps(&self, batch: &ImageBatch) -> Result<(DetectorScores, Option<Tensor>)> {
        match self {
            Self::Dra(m) => {
                self.check(batch)?;
                let (h, maps) = m.scores_and_maps(batch.images())?;
                Ok((dra_scores(h, m.config().heads)?, Some(maps)))
            }
            _ => Ok((self.scores(batch)?, None)),
        }
    }

    /// Scores each query of a batch in eval mode.
    pub fn scores(&self, batch: &ImageBatch) -> Result<DetectorScores> {
        self.check(batch)?;
        let images = batch.images();
        let only = |score: Tensor| DetectorScores {
            score,
            heads: [None, None, None, None],
        };
        Ok(match self {
            Self::Dra(m) => dra_scores(m.forward_t(images, false)?, m.config().heads)?,
            Self::DevNet(m) => {
                let score = m.forward_t(images, false)?;
                DetectorScores {
                    heads: [None, Some(score.clone()), None, None],
                    score,
                }
            }
            Self::DeepSad(m) => only(m.forward_t(images, false)?),
            Self::Minns(m) => only(m.forward_t(images, false)?),
            Self::Flos(m) => only(m.forward_t(images, false)?),
            Self::Saoe(m) => only(m.forward_t(images, false)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Each method builds under its documented names, scores a batch without references and
    /// gives a finite loss.
    #[test]
    fn every_baseline_builds_scores_and_trains() -> Result<()> {
        let dev = Device::Cpu;
        // Two pyramid levels: DevNet uses them (64 and 32 px), the others ignore them.
        let config = ModelConfig::default();
        let x = ImageBatch::queries(Tensor::randn(0f32, 1., (4, 3, 64, 64), &dev)?)?;
        let labels = [
            Target::Normal,
            Target::Normal,
            Target::Anomaly,
            Target::PseudoAnomaly,
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for (method, head) in [
            (Method::DevNet, "conv.weight"),
            (Method::DeepSad, "projection.weight"),
            (Method::Minns, "scoring.weight"),
            (Method::Flos, "fc.weight"),
            (Method::Saoe, "fc.bias"),
        ] {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
            let model = Detector::new(method, &config, vb)?;
            assert_eq!(model.method(), method);
            assert!(!model.uses_references());
            {
                let data = varmap.data().lock().unwrap();
                assert!(data.contains_key(head), "{method}: no {head}");
                assert!(data.contains_key("feature_extractor.net.layer4.1.bn2.running_var"));
                assert_eq!(
                    data.contains_key(DeepSad::CENTER),
                    method == Method::DeepSad
                );
            }
            let s = model.scores(&x)?;
            assert_eq!(s.score.dims(), [4], "{method}");
            assert_eq!(s.heads[1].is_some(), method == Method::DevNet);
            let loss = model
                .loss(&x, &labels, LossKind::Deviation, &mut rng)?
                .to_scalar::<f32>()?;
            assert!(loss.is_finite() && loss >= 0.0, "{method}: {loss}");
        }
        Ok(())
    }

    /// A head subset trains and scores with its heads only: the total is the sum of their
    /// terms, the heads outside it get no gradient, and the score leaves them out.
    #[test]
    fn a_head_subset_trains_and_scores_with_its_heads_only() -> Result<()> {
        let dev = Device::Cpu;
        let heads: HeadSet = "seen,pseudo".parse().expect("valid heads");
        let config = ModelConfig {
            n_ref: 2,
            heads,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let model = Detector::new(
            Method::Dra,
            &config,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )?;
        crate::reset_parameters(&varmap, 1)?;
        let batch = ImageBatch::with_references(Tensor::randn(0f32, 1., (6, 3, 64, 64), &dev)?, 2)?;
        let targets = [
            Target::Normal,
            Target::Normal,
            Target::Anomaly,
            Target::PseudoAnomaly,
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let terms = model.loss_terms(&batch, &targets, LossKind::Deviation, &mut rng)?;
        let parts = terms.heads.as_ref().expect("DRA reports its head terms");
        let want = (&parts[1] + &parts[2])?.to_scalar::<f32>()?;
        assert_eq!(terms.total.to_scalar::<f32>()?, want);
        let grads = terms.total.backward()?;
        let data = varmap.data().lock().unwrap();
        for (name, trained) in [
            ("seen_head.scoring.weight", true),
            ("pseudo_head.scoring.weight", true),
            ("holistic_head.fc1.weight", false),
            ("composite_head.scoring.weight", false),
        ] {
            assert_eq!(
                grads.get(data[name].as_tensor()).is_some(),
                trained,
                "{name}"
            );
        }
        drop(data);
        let s = model.scores(&batch)?;
        assert!(s.heads[0].is_none() && s.heads[3].is_none());
        let sum = (s.heads[1].as_ref().unwrap() + s.heads[2].as_ref().unwrap())?;
        assert_eq!(s.score.to_vec1::<f32>()?, sum.to_vec1::<f32>()?);
        Ok(())
    }

    use rand::SeedableRng;
}
