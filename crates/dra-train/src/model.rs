//! The model of a run as the trainer holds it: a `VarMap` of named tensors, the parameters the
//! optimiser updates, and a detached copy for scoring.

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use dra_model::Detector;

use crate::config::TrainConfig;
use crate::error::TrainError;

/// The parameters the optimiser updates, in name order: everything but BatchNorm statistics.
pub fn trainable(varmap: &VarMap) -> Vec<Var> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let mut named: Vec<(&String, &Var)> = data
        .iter()
        .filter(|(n, _)| !dra_model::weights::is_buffer(n))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, v)| v.clone()).collect()
}

/// A copy of the model over detached tensors: evaluation then records no autograd graph and
/// frees each activation as soon as it is used.
pub fn detached_model(
    varmap: &VarMap,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Detector, TrainError> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let tensors = data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(Detector::new(cfg.method, &cfg.model_config(), vb)?)
}
