//! The last phase of a run: the metrics put together and every file of the run folder
//! written, `metrics.json` last so that its presence marks a finished run.

use std::time::Instant;

use super::fit::Fitted;
use super::load::Loaded;
use super::request::RunRequest;
use super::score::Scores;
use crate::engine::maps::save_maps;
use crate::error::TrainError;
use crate::record::{
    save_safetensors, write_json, write_scores, Metrics, Threshold, CHECKPOINT_FILE, METRICS_FILE,
    MODEL_FILE, REFERENCES_FILE, REPORT_FILE, SCORES_FILE,
};
use crate::run::advice;
use crate::run::report::{self, RunView};

/// Writes the run folder and returns the metrics it holds.
pub(super) fn write(
    req: &RunRequest,
    loaded: &Loaded,
    fitted: &Fitted,
    scores: Scores,
    start: Instant,
) -> Result<Metrics, TrainError> {
    let cfg = &req.config;
    let split = &loaded.split;
    let rows = &scores.scored.rows;
    let base = Metrics::of(rows, split)?;
    let mut notes = advice::after_training(cfg, &req.dataset, base.auc_roc);
    notes.extend(scores.localization.note.clone());
    if let Some(caution) = scores.threshold.as_ref().and_then(Threshold::caution) {
        notes.push(caution);
    }
    let mut metrics = Metrics {
        final_loss: Some(fitted.final_loss),
        train_seconds: fitted.train_seconds,
        eval_seconds: scores.eval_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        data_wait_seconds: fitted.data_wait,
        ignored: loaded.category.ignored.len(),
        unreadable: loaded.unreadable.clone(),
        pixel_auroc: scores.localization.pixel_auroc,
        aupro: scores.localization.aupro,
        threshold: scores.at_threshold,
        notes,
        ..base
    };
    save_safetensors(&req.out_dir.join(MODEL_FILE), |tmp| fitted.varmap.save(tmp))?;
    scores
        .fixed
        .save(&req.out_dir.join(REFERENCES_FILE), cfg.image_size)?;
    if let Some(threshold) = &scores.threshold {
        threshold.save(&req.out_dir)?;
    }
    if let (Some(dir), Some(maps)) = (&req.save_maps, &scores.scored.maps) {
        save_maps(dir, &split.test, maps, cfg.image_size)?;
    }
    write_scores(&req.out_dir.join(SCORES_FILE), rows)?;
    let report = report::write(&RunView {
        title: format!("{} on {}", cfg.method, req.dataset),
        config: cfg,
        data_dir: &req.category_dir,
        category: &loaded.category,
        test: &split.test,
        scored: &scores.scored,
        metrics: &metrics,
        threshold: scores.threshold.as_ref(),
        decided_as: "with the stored references, as dra predict decides",
        log: fitted.log.rows(),
        out_dir: &req.out_dir,
    });
    // The report is for looking at; a failure to write it (an image gone since scoring) must
    // not cost the run its metrics.
    if let Err(e) = report {
        metrics
            .notes
            .push(format!("{REPORT_FILE} not written: {e}"));
    }
    write_json(&req.out_dir.join(METRICS_FILE), &metrics)?;
    // The run is finished: its checkpoint has no more use. Kept until here, so that a run whose
    // results could not be written goes on from it; left behind only where it cannot be
    // removed, which does no harm (a finished run is never resumed).
    let _ = std::fs::remove_file(req.out_dir.join(CHECKPOINT_FILE));
    Ok(metrics)
}
