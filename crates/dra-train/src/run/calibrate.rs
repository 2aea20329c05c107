//! `dra calibrate`: a decision threshold for a saved run, set on normal images the model never
//! saw at a chosen false-positive rate, and written into the run.

use std::path::PathBuf;

use candle_core::Device;
use dra_data::{Listing, OnUnreadable};

use super::saved::LoadedModel;
use crate::engine::scoring::{normal_samples, score_samples};
use crate::error::TrainError;
use crate::record::{lock_dir, Threshold};

/// `dra calibrate`: scores the normal images of `normals` (files or folders) with the run's
/// stored references, sets the threshold at `target_fpr` and writes it to the run directory
/// (replacing its threshold, if it had one), which is locked meanwhile: a run folder that
/// another dra process is writing is refused.
pub fn calibrate(
    loaded: &LoadedModel,
    normals: &[PathBuf],
    target_fpr: f64,
    on_unreadable: OnUnreadable,
    device: &Device,
) -> Result<(Threshold, Listing), TrainError> {
    let Some(run_dir) = &loaded.run_dir else {
        return Err(TrainError::InvalidOption {
            flag: "--model",
            message: "give a run directory: the threshold is stored in it".into(),
        });
    };
    if !(0.0..1.0).contains(&target_fpr) {
        return Err(TrainError::InvalidOption {
            flag: "--target-fpr",
            message: format!("must lie in [0, 1), got {target_fpr}"),
        });
    }
    // Held until the threshold is written: no other dra process writes the run meanwhile.
    let _lock = lock_dir(run_dir)?;
    let listing = Listing::of_inputs(normals)?.require(on_unreadable)?;
    if listing.images.is_empty() {
        return Err(TrainError::InvalidOption {
            flag: "--normals",
            message: format!(
                "no images in {}",
                normals
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut references = loaded.stored_references()?;
    let cfg = &loaded.config;
    let rows = score_samples(
        &loaded.model,
        &normal_samples(&listing.images),
        &mut references,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let source = format!(
        "{} normal image(s) from {}",
        scores.len(),
        normals
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let threshold = Threshold::calibrate(&scores, target_fpr, source)?;
    threshold.save(run_dir)?;
    Ok((threshold, listing))
}
