//! The third phase of a run: the trained model scores the test set as the official evaluation
//! does, then with a fixed reference set that is stored with the model, on which the decision
//! threshold is calibrated and the decisions counted, as `dra predict` will decide.

use std::time::Instant;

use dra_data::BatchSource;

use super::fit::Fitted;
use super::load::Loaded;
use super::request::RunRequest;
use crate::engine::maps::{pixel_metrics, Localization};
use crate::engine::scoring::{
    detached_model, normal_samples, score_samples, score_with_maps, References, Scored,
};
use crate::error::TrainError;
use crate::record::{AtThreshold, Threshold};

/// What scoring gave the run.
pub(super) struct Scores {
    /// The test set scored with fresh random references per batch (the official evaluation),
    /// with DRA's maps.
    pub scored: Scored,
    /// Seconds spent on that scoring.
    pub eval_seconds: f64,
    /// The fixed, seeded reference set saved with the model.
    pub fixed: References,
    /// The threshold calibrated on the held-out normals, if any were held out.
    pub threshold: Option<Threshold>,
    /// That threshold's decisions on the test set, scored with `fixed`.
    pub at_threshold: Option<AtThreshold>,
    /// Pixel metrics of the maps against the masks, where the data has masks.
    pub localization: Localization,
}

/// Scores the test set, calibrates the threshold and counts its decisions.
pub(super) fn score(
    req: &RunRequest,
    loaded: &Loaded,
    fitted: &Fitted,
    source: BatchSource,
) -> Result<Scores, TrainError> {
    let cfg = &req.config;
    let split = &loaded.split;
    let eval_start = Instant::now();
    let eval_model = detached_model(&fitted.varmap, cfg, &req.device)?;
    let mut references = References::Random(Box::new(source));
    let scored = score_with_maps(
        &eval_model,
        &split.test,
        &mut references,
        cfg.image_size,
        cfg.eval_batch_size,
        &req.device,
    )?;
    let eval_seconds = eval_start.elapsed().as_secs_f64();

    // A fixed, seeded reference set saved with the model, so that `dra predict` and
    // `dra eval --fixed-references` score an image the same way every time; the threshold is
    // calibrated with it, as `dra predict` will decide.
    let mut fixed =
        References::seeded_draw(&split.train_normal, cfg.n_ref, cfg.seed, cfg.image_size)?;
    let threshold = if loaded.calibration.is_empty() {
        None
    } else {
        let normals = score_samples(
            &eval_model,
            &normal_samples(&loaded.calibration),
            &mut fixed,
            cfg.image_size,
            cfg.eval_batch_size,
            &req.device,
        )?;
        let scores: Vec<f64> = normals.iter().map(|r| r.score).collect();
        let source = format!(
            "{} training normals held out of training (--calibration-fraction {})",
            scores.len(),
            cfg.calibration_fraction
        );
        Some(Threshold::calibrate(&scores, cfg.target_fpr, source)?)
    };

    // The decisions on the test set as `dra predict` makes them: scored with the stored
    // references the threshold was calibrated with. The official scores above draw fresh
    // augmented references per batch, whose scale can differ enough (MobileNetV2 on ELPV: a
    // test false-positive rate of 54 % against 9 % with the stored set) to misstate them.
    let at_threshold = match &threshold {
        Some(t) => {
            let decided = score_samples(
                &eval_model,
                &split.test,
                &mut fixed,
                cfg.image_size,
                cfg.eval_batch_size,
                &req.device,
            )?;
            Some(AtThreshold::of(&decided, t)?)
        }
        None => None,
    };
    let localization = match &scored.maps {
        Some(maps) => pixel_metrics(&loaded.category, &split.test, maps, cfg.image_size),
        None => Localization::default(),
    };
    Ok(Scores {
        scored,
        eval_seconds,
        fixed,
        threshold,
        at_threshold,
        localization,
    })
}
