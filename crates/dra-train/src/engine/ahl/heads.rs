//! The heads AHL trains, on cached feature maps: DRA's four (base DRA) or DevNet's one, under
//! the base model's tensor names so that the result loads into the base model.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use dra_model::dra::PlainHead;
use dra_model::{
    baselines::DevNet, DraHeads, DraLoss, HeadScores, LossKind, Method, ModelConfig, Prior,
};
use rand::Rng;

/// The base model's heads over one pyramid's cached feature maps.
#[derive(Debug, Clone)]
pub enum AhlHeads {
    /// DRA's four heads; each level's batch starts with the reference normals' maps. Boxed:
    /// four heads against DevNet's one.
    Dra(Box<DraHeads>),
    /// DevNet's head; batches have no references.
    DevNet(PlainHead),
}

impl AhlHeads {
    /// The heads of `base` (DRA or DevNet) under `vb`, with the base model's names.
    pub fn new(base: Method, config: &ModelConfig, vb: &VarBuilder) -> Result<Self> {
        match base {
            Method::Dra => Ok(Self::Dra(Box::new(DraHeads::new(config, vb)?))),
            Method::DevNet => Ok(Self::DevNet(DevNet::head(config, vb)?)),
            other => candle_core::bail!("AHL's base is DRA or DevNet, not {other}"),
        }
    }

    /// The heads over fresh variables holding copies of `tensors` (name → value): an
    /// episode's adapted weights φ, which SGD updates in place while θ stays as it is.
    pub fn over_copies(
        base: Method,
        config: &ModelConfig,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<(Self, Vec<(String, Var)>)> {
        let mut vars: Vec<(String, Var)> = tensors
            .iter()
            .map(|(n, t)| Ok((n.clone(), Var::from_tensor(&t.detach().copy()?)?)))
            .collect::<Result<_>>()?;
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let dtype = vars.first().map_or(DType::F32, |(_, v)| v.dtype());
        let map = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        // In the tensors' own type: a conversion would cut the heads off the variables.
        let vb = VarBuilder::from_tensors(map, dtype, device);
        Ok((Self::new(base, config, &vb)?, vars))
    }

    /// The heads' anomaly scores `(B,)` of one batch, each level's maps `(n_ref + B, C, h, w)`
    /// (DRA) or `(B, C, h, w)` (DevNet), averaged over the levels as the base model averages
    /// its pyramid. `train` puts the residual head's BatchNorm in training mode.
    pub fn scores(
        &self,
        levels: &[Tensor],
        train: bool,
        heads: dra_model::HeadSet,
    ) -> Result<Tensor> {
        match self {
            Self::Dra(h) => Self::dra_scores(h, levels, train)?.anomaly_score_of(heads),
            Self::DevNet(h) => Self::devnet_scores(h, levels),
        }
    }

    fn dra_scores(h: &DraHeads, levels: &[Tensor], train: bool) -> Result<HeadScores> {
        let per_level = levels
            .iter()
            .map(|l| Ok(h.forward_t(l, train, false)?.0))
            .collect::<Result<Vec<_>>>()?;
        HeadScores::average(&per_level)
    }

    fn devnet_scores(h: &PlainHead, levels: &[Tensor]) -> Result<Tensor> {
        let per_level = levels
            .iter()
            .map(|l| h.forward(l))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&per_level, 1)?.mean(1)
    }

    /// The training loss of one batch with labels 0 (normal), 1 (labelled anomaly) and 2
    /// (pseudo anomaly): DRA's routed four-head loss, or for DevNet `kind` against "is an
    /// anomaly" with pseudo anomalies counted as anomalies (the AHL code relabels them so).
    /// `rng` draws the deviation loss's priors.
    pub fn loss<R: Rng>(
        &self,
        levels: &[Tensor],
        labels: &[u8],
        kind: LossKind,
        heads: dra_model::HeadSet,
        rng: &mut R,
    ) -> Result<Tensor> {
        match self {
            Self::Dra(h) => {
                let scores = Self::dra_scores(h, levels, true)?;
                Ok(DraLoss { kind, heads }.compute(&scores, labels, rng)?.total)
            }
            Self::DevNet(h) => {
                let scores = Self::devnet_scores(h, levels)?;
                let targets: Vec<f32> = labels.iter().map(|&l| (l != 0) as u8 as f32).collect();
                let targets = Tensor::from_vec(targets, labels.len(), scores.device())?;
                let prior = match kind {
                    LossKind::Deviation => Prior::draw(rng),
                    _ => Prior::STANDARD,
                };
                kind.loss(&scores, &targets, prior)
            }
        }
    }
}

/// A fresh, seeded set of `base`'s heads in their own var map: AHL's unified heads θ, which
/// start from PyTorch's default initialisation as DRA's heads do.
pub fn fresh_heads(
    base: Method,
    config: &ModelConfig,
    seed: u64,
    device: &Device,
) -> Result<(AhlHeads, VarMap)> {
    let varmap = VarMap::new();
    let heads = AhlHeads::new(
        base,
        config,
        &VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    dra_model::reset_parameters(&varmap, seed)?;
    Ok((heads, varmap))
}
