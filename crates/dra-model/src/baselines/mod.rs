//! The competing methods of the paper's tables, on DRA's backbone: one struct per method, each
//! built from a `VarBuilder` with its tensors found by name, each with a training loss on a
//! labelled batch and a per-image anomaly score. docs/methods.md says where each departs from
//! its original code.
//!
//! None of them uses reference images; only SAOE trains on pseudo anomalies (label 2).

mod classifier;
mod deepsad;
mod devnet;
mod minns;

pub use classifier::{Flos, Saoe};
pub use deepsad::DeepSad;
pub use devnet::DevNet;
pub use minns::Minns;

use candle_core::{Result, Tensor};

/// 0/1 targets, one per label: 1 for any anomaly (labelled, 1, or pseudo, 2), 0 for a normal.
pub(crate) fn anomaly_targets(labels: &[u8], like: &Tensor) -> Result<Tensor> {
    let y: Vec<f32> = labels.iter().map(|&l| (l != 0) as u8 as f32).collect();
    Tensor::new(y.as_slice(), like.device())?.to_dtype(like.dtype())
}

/// Fails on a batch whose labels do not match its images.
pub(crate) fn check_labels(scores: &Tensor, labels: &[u8]) -> Result<()> {
    let n = scores.dim(0)?;
    if n != labels.len() {
        candle_core::bail!("{n} images but {} labels", labels.len());
    }
    Ok(())
}
