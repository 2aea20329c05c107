//! Train DRA on your own images and score new ones, through the library alone (no CLI).
//!
//! ```sh
//! cargo run --release -p dra-train --example train_and_score -- \
//!     CATEGORY_DIR NEW_IMAGES_DIR [RUN_DIR]
//! ```
//!
//! `CATEGORY_DIR` is in the MVTec AD layout (`train/good/`, `test/good/`, `test/<defect>/`);
//! the run is written to `RUN_DIR` (default `runs/example`), as `dra train` writes it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::{Listing, OnUnreadable};
use dra_train::{LoadedModel, Profile, RunRequest, TrainConfig};

fn main() -> Result<()> {
    dra_model::configure_cpu_runtime().unwrap_or_else(|e| eprintln!("warning: {e}"));
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [category, images, rest @ ..] = &args[..] else {
        bail!("usage: train_and_score CATEGORY_DIR NEW_IMAGES_DIR [RUN_DIR]");
    };
    let run = rest
        .first()
        .cloned()
        .unwrap_or_else(|| "runs/example".into());
    // The CPU-sized schedule; `Profile::Paper` is the official protocol (448 px, 600 steps).
    let config = TrainConfig::for_profile(Profile::Quick);
    for (path, score) in train_and_score(category, images, &run, config)? {
        println!("{score:.4}  {}", path.display());
    }
    Ok(())
}

/// Trains on `category`, saves the run in `run`, then scores every image of `images` with the
/// saved model: (file, anomaly score), higher meaning more anomalous.
fn train_and_score(
    category: &Path,
    images: &Path,
    run: &Path,
    config: TrainConfig,
) -> Result<Vec<(PathBuf, f64)>> {
    let metrics = dra_train::train(&RunRequest {
        config,
        dataset: format!("mvtec/{}", category.display()),
        category_dir: category.to_path_buf(),
        family: Family::Mvtec,
        out_dir: run.to_path_buf(),
        device: Device::Cpu,
        on_unreadable: OnUnreadable::Error,
        save_maps: None,
        control: dra_train::RunControl {
            overwrite: false,
            ..Default::default()
        },
    })?;
    eprintln!("test set: AUC-ROC {:.3}", metrics.auc_roc);

    // Later, or in another program: load the run and score new images against its stored
    // reference set, so that an image always gets the same score.
    let model = LoadedModel::load(run, &TrainConfig::paper(), &Device::Cpu)?;
    let mut references = model.stored_references()?;
    let paths = Listing::of_inputs(&[images.to_path_buf()])?
        .require(OnUnreadable::Error)?
        .paths();
    let rows = dra_train::predict(
        &model,
        &paths,
        &mut references,
        Default::default(),
        &Device::Cpu,
    )?;
    Ok(rows.into_iter().map(|r| (r.path, r.score)).collect())
}

#[cfg(test)]
mod tests {
    use dra_data::synthetic::{self, SyntheticSpec};

    use super::*;

    #[test]
    fn trains_and_scores_a_tiny_generated_category() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SyntheticSpec {
            image_size: 64,
            n_train: 8,
            n_test_good: 4,
            n_per_defect: 3,
            seed: 5,
        };
        synthetic::ensure(dir.path(), &spec).unwrap();
        let mut config = TrainConfig::quick();
        (config.batch_size, config.n_ref, config.n_anomaly) = (6, 2, 2);
        (config.epochs, config.steps_per_epoch) = (1, 2);
        let category = dir.path().join("weave");
        let scored = train_and_score(
            &category,
            &category.join("test/good"),
            &dir.path().join("run"),
            config,
        )
        .unwrap();
        assert_eq!(scored.len(), 4);
        assert!(scored.iter().all(|(p, s)| p.exists() && s.is_finite()));
    }
}
