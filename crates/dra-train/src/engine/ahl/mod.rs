//! AHL (Zhu, Ding, Tian & Pang, "Anomaly Heterogeneity Learning for Open-set Supervised
//! Anomaly Detection", CVPR 2024) on top of a trained DRA or DevNet: the base model's heads
//! retrained over episodes of heterogeneous anomaly distributions, built from clusters of the
//! normal data, the labelled anomalies and several pseudo-anomaly generators, on the base
//! model's frozen features. `docs/methods.md` describes the method as built and every
//! departure from the paper and the public code; `docs/ahl-notes.md` is the reading of that
//! code it rests on.

pub mod episodes;
pub mod features;
pub mod heads;
pub mod kmeans;
pub mod psi;
pub mod train;

pub use features::FeatureCache;
pub use train::{train_heads, AhlOutcome, AhlSetup, EpochRecord};

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dra_data::ImageCache;

use crate::engine::scoring::detached_model;
use crate::error::TrainError;
use crate::record::TrainConfig;

/// Where the backbone's tensors live in every base model; the rest are the heads.
const BACKBONE_PREFIX: &str = "feature_extractor.";

/// AHL's phase of a run: the trained base model in `varmap` gives the features of the
/// training images (resized, as the base trained on them), AHL trains fresh heads on them,
/// and those heads replace the base's in `varmap` under the same names, so that the run saves,
/// reloads and scores as a model of the base's kind.
pub(crate) fn retrain_heads(
    varmap: &VarMap,
    cfg: &TrainConfig,
    normals: &ImageCache,
    anomalies: &ImageCache,
    device: &Device,
    progress: impl FnMut(usize, &EpochRecord) -> Result<(), TrainError>,
) -> Result<AhlOutcome, TrainError> {
    let base = detached_model(varmap, cfg, device)?;
    let cache = FeatureCache::extract(
        &base,
        normals,
        anomalies,
        cfg.n_scales,
        cfg.eval_batch_size,
        cfg.seed,
        device,
    )?;
    drop(base);
    let setup = AhlSetup {
        base: cfg.method.base(),
        model: cfg.model_config(),
        ahl: cfg.ahl_config(),
        batch_size: cfg.batch_size,
        loss: cfg.loss,
        seed: cfg.seed,
    };
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let base_heads: HashMap<String, Tensor> = data
        .iter()
        .filter(|(name, _)| !name.starts_with(BACKBONE_PREFIX))
        .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
        .collect();
    let outcome = train_heads(
        &cache,
        anomalies.len(),
        &base_heads,
        &setup,
        device,
        progress,
    )?;
    for (name, tensor) in &outcome.heads {
        let var = data
            .get(name)
            .expect("AHL's heads carry the base model's names");
        var.set(tensor)?;
    }
    Ok(outcome)
}
