//! `dra eval`: a trained model re-scores a data set's test split and writes the results as a
//! training run does (`scores.csv`, `report.html`, `metrics.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::{BatchSource, ImageCache, OnUnreadable, Split};

use super::report::{self, RunView};
use super::saved::LoadedModel;
use super::train::RunControl;
use crate::engine::maps::{self, check_maps_dir, pixel_metrics, Localization};
use crate::engine::scoring::{score_with_maps, References};
use crate::error::TrainError;
use crate::record::{
    claim_dir, write_json, write_scores, AtThreshold, Metrics, METRICS_FILE, REPORT_FILE,
    RESULT_FILES, RUN_FILES, SCORES_FILE,
};

/// Which references `dra eval` uses.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceChoice {
    /// Fresh random draws per test batch from the training normals (official, the default).
    Random {
        /// Seed of the draws.
        seed: u64,
    },
    /// The run's stored fixed set.
    Stored,
    /// These images, through the test transform.
    Paths(Vec<PathBuf>),
}

/// Re-scores the test split of `category_dir` and writes `scores.csv`, `report.html` and
/// `metrics.json` (last, so that its presence marks a finished evaluation) into `out_dir`; with
/// `save_maps`, each test image's anomaly map too. `out_dir` is claimed as `dra train` claims
/// its folder: locked while the evaluation writes it, and refused where it holds results (an
/// earlier evaluation's, a run's) unless `overwrite`, which removes them first.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    loaded: &LoadedModel,
    family: Family,
    category_dir: &Path,
    on_unreadable: OnUnreadable,
    references: &ReferenceChoice,
    out_dir: &Path,
    save_maps: Option<&Path>,
    overwrite: bool,
    device: &Device,
) -> Result<Metrics, TrainError> {
    let start = Instant::now();
    let cfg = &loaded.config;
    if let Some(run_dir) = &loaded.run_dir {
        if same_folder(run_dir, out_dir) {
            return Err(TrainError::InvalidOption {
                flag: "--out",
                message: format!(
                    "{}: is the model's run directory; its scores.csv and metrics.json are the \
                     training run's results (give another folder)",
                    out_dir.display()
                ),
            });
        }
    }
    let _lock = claim_dir(out_dir, "--out", &RESULT_FILES, &RUN_FILES, overwrite)?;
    if let Some(dir) = save_maps {
        check_maps_dir(dir, cfg.method)?;
    }
    let category = family.load(category_dir, on_unreadable)?;
    let split = Split::new(&category, &cfg.split_config())?;
    let mut refs = match references {
        _ if !cfg.method.uses_references() => References::none(),
        ReferenceChoice::Random { seed } => {
            let normals = ImageCache::load_within(
                &split.train_normal,
                cfg.image_size,
                RunControl::default().cache_budget(cfg.image_size),
            )?;
            let empty = ImageCache::from_images(Vec::new());
            References::Random(Box::new(BatchSource::new(
                cfg.batch_config(),
                normals,
                empty,
                *seed,
            )?))
        }
        ReferenceChoice::Stored => loaded.stored_references()?,
        ReferenceChoice::Paths(paths) => References::from_paths(paths, cfg.image_size)?,
    };
    let scored = score_with_maps(
        &loaded.model,
        &split.test,
        &mut refs,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let rows = &scored.rows;
    let seconds = start.elapsed().as_secs_f64();
    let localization = match &scored.maps {
        Some(maps) => pixel_metrics(&category, &split.test, maps, cfg.image_size),
        None => Localization::default(),
    };
    let base = Metrics::of(rows, &split)?;
    let mut notes: Vec<String> = localization.note.clone().into_iter().collect();
    if base.auc_roc < 0.5 {
        notes.push(format!(
            "AUC-ROC {:.3} is below chance (0.5): this model ranks anomalies below normals",
            base.auc_roc
        ));
    }
    let mut metrics = Metrics {
        eval_seconds: seconds,
        total_seconds: seconds,
        ignored: category.ignored.len(),
        unreadable: category.unreadable.clone(),
        pixel_auroc: localization.pixel_auroc,
        aupro: localization.aupro,
        threshold: loaded
            .threshold
            .as_ref()
            .map(|t| AtThreshold::of(rows, t))
            .transpose()?,
        notes,
        ..base
    };
    if let (Some(dir), Some(maps)) = (save_maps, &scored.maps) {
        maps::save_maps(dir, &split.test, maps, cfg.image_size)?;
    }
    write_scores(&out_dir.join(SCORES_FILE), rows)?;
    let report = report::write(&RunView {
        title: format!("{} on {} (evaluation)", cfg.method, category_dir.display()),
        config: cfg,
        data_dir: category_dir,
        category: &category,
        test: &split.test,
        scored: &scored,
        metrics: &metrics,
        threshold: loaded.threshold.as_ref(),
        decided_as: match references {
            ReferenceChoice::Random { .. } => {
                "with random references (--fixed-references decides as dra predict does)"
            }
            _ => "with fixed references",
        },
        log: &[],
        out_dir,
    });
    // The report is for looking at; a failure to write it (an image gone since scoring) must
    // not cost the run its metrics.
    if let Err(e) = report {
        metrics
            .notes
            .push(format!("{REPORT_FILE} not written: {e}"));
    }
    write_json(&out_dir.join(METRICS_FILE), &metrics)?;
    Ok(metrics)
}

/// Whether `a` and `b` name the same existing folder (through links and `..` too).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
