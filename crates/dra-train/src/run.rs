//! One training run end to end: split → cached images → balanced batches → model → loss →
//! Adam → test scores → metrics, written to a run directory.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use dra_data::datasets::Family;
use dra_data::{
    BatchSource, ImageCache, ImageRef, Label, OnUnreadable, Prefetcher, Sample, Split, Unreadable,
};
use dra_model::{reset_parameters, Detector, ImageBatch, Target};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::decision::{normal_samples, AtThreshold, Threshold};
use crate::error::TrainError;
use crate::files::{prepare_out_dir, save_safetensors, writable_dir, write_json};
use crate::localization::{pixel_metrics, save_maps, Localization};
use crate::model::{detached_model, trainable};
use crate::optim::{Adam, AdamConfig};
use crate::scoring::{
    score_samples, score_with_maps, write_scores, References, ScoreRow, REFERENCES_FILE,
};
use crate::train_log::{LogRow, TrainLog};

/// What to train and where to put the results.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Every setting of the run, profile and overrides applied; validated before any work.
    pub config: TrainConfig,
    /// The data set's name as the user gave it (e.g. `mvtec/carpet`), for the records.
    pub dataset: String,
    /// The data's folder (for MVTec-layout data: the category folder).
    pub category_dir: PathBuf,
    /// The loader that reads `category_dir`.
    pub family: Family,
    /// Run directory: `config.json`, `model.safetensors`, `scores.csv`, `metrics.json`.
    pub out_dir: PathBuf,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Where the model trains and scores (CPU or a CUDA GPU).
    pub device: Device,
    /// Image files that do not decode: an error (the default), or left out and recorded in
    /// `config.json` and `metrics.json` (`--skip-unreadable`).
    pub on_unreadable: OnUnreadable,
    /// Write each test image's anomaly map here as `test/<class>/<name>.npy` (DRA only).
    pub save_maps: Option<PathBuf>,
}

/// `metrics.json`: the run's result. Written last, so its presence marks a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Area under the ROC curve of the test scores, as sklearn's `roc_auc_score`.
    pub auc_roc: f64,
    /// Average precision of the test scores, as sklearn's `average_precision_score`.
    pub auc_pr: f64,
    /// Normal training images, contaminants included.
    pub n_train_normal: usize,
    /// Labelled anomalies trained on.
    pub n_train_anomaly: usize,
    /// Normal test images scored.
    pub n_test_normal: usize,
    /// Anomalous test images scored.
    pub n_test_anomaly: usize,
    /// Mean total loss over the last epoch (`null` for `dra eval`).
    pub final_loss: Option<f64>,
    /// Wall-clock seconds from the start of the run to the end of training, loading the data
    /// and building the model included (0 for `dra eval`).
    pub train_seconds: f64,
    /// Wall-clock seconds spent scoring the test set.
    pub eval_seconds: f64,
    /// Wall-clock seconds of the whole run, up to the metrics (writing the files not counted).
    pub total_seconds: f64,
    /// Time the training loop spent waiting for batches (the data pipeline's cost to the model).
    pub data_wait_seconds: f64,
    /// Files (or tiles) of the data folder the loader left out; `config.json` says why.
    #[serde(default)]
    pub ignored: usize,
    /// Image files that did not decode and were left out (`--skip-unreadable`), with the
    /// decoder's reason.
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// Pixel-level AUROC of the anomaly maps against the ground-truth masks (`null` without
    /// masks or maps).
    #[serde(default)]
    pub pixel_auroc: Option<f64>,
    /// AUPRO up to a false-positive rate of 0.3, as the MVTec AD benchmark (`null` without
    /// masks or maps).
    #[serde(default)]
    pub aupro: Option<f64>,
    /// The run's decision threshold applied to the test set (`null` without a threshold).
    #[serde(default)]
    pub threshold: Option<AtThreshold>,
    /// What the user should know about this result (below chance, a setting that cannot
    /// work on real images, metrics that could not be computed), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Metrics {
    /// AUC-ROC, AUC-PR and counts of scored test rows; timings zero, no loss.
    pub fn of(rows: &[ScoreRow], split: &Split) -> Result<Self, TrainError> {
        let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
        let n_test_anomaly = labels.iter().filter(|l| **l).count();
        Ok(Self {
            auc_roc: dra_eval::auc_roc(&scores, &labels)?,
            auc_pr: dra_eval::auc_pr(&scores, &labels)?,
            n_train_normal: split.train_normal.len(),
            n_train_anomaly: split.train_anomaly.len(),
            n_test_normal: rows.len() - n_test_anomaly,
            n_test_anomaly,
            final_loss: None,
            train_seconds: 0.0,
            eval_seconds: 0.0,
            total_seconds: 0.0,
            data_wait_seconds: 0.0,
            ignored: 0,
            unreadable: Vec::new(),
            pixel_auroc: None,
            aupro: None,
            threshold: None,
            notes: Vec::new(),
        })
    }
}

/// What a data set's label is to the model's loss.
fn target(label: Label) -> Target {
    match label {
        Label::Normal => Target::Normal,
        Label::Anomaly => Target::Anomaly,
        Label::Pseudo => Target::PseudoAnomaly,
    }
}

/// `config.json`: every effective setting and the files the split chose.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The data set's name as the user gave it (e.g. `mvtec/carpet`).
    pub dataset: String,
    /// The data's folder (for MVTec-layout data: the category folder).
    pub dataset_dir: PathBuf,
    /// Every setting of the run, profile and overrides applied.
    pub config: TrainConfig,
    /// The labelled anomalies the split chose for training.
    pub train_anomalies: Vec<Sample>,
    /// Unlabelled anomalies mixed into the training normals (`--contamination`).
    #[serde(default)]
    pub contaminants: Vec<Sample>,
    /// What the loader left out of the data folder: reason → count (`dra data inspect` lists
    /// the files).
    #[serde(default)]
    pub ignored: std::collections::BTreeMap<String, usize>,
    /// Image files that did not decode and were left out (`--skip-unreadable`).
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// Normal training images, contaminants included.
    pub n_train_normal: usize,
    /// The training normals held out of training to calibrate the decision threshold
    /// (`--calibration-fraction`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calibration_normals: Vec<ImageRef>,
    /// Version of the `dra-train` crate that made the run.
    pub dra_rs_version: String,
}

/// Trains, evaluates and writes the run directory. Returns the metrics.
pub fn train(req: &RunRequest) -> Result<Metrics, TrainError> {
    let start = Instant::now();
    let cfg = &req.config;
    cfg.validate()?;
    prepare_out_dir(&req.out_dir)?;
    if let Some(dir) = &req.save_maps {
        check_maps_dir(dir, cfg.method)?;
    }
    let category = req.family.load(&req.category_dir, req.on_unreadable)?;
    let mut split = Split::new(&category, &cfg.split_config())?;
    let calibration = split.hold_out_normals(cfg.calibration_fraction, cfg.seed)?;
    let outliers = cfg
        .outlier_root
        .as_ref()
        .map(|root| dra_data::datasets::outlier_images(root, &category.name(), req.on_unreadable))
        .transpose()?;
    // Every file left out for not decoding, the outlier images' too.
    let mut unreadable = category.unreadable.clone();
    if let Some(outliers) = &outliers {
        unreadable.extend(outliers.unreadable.iter().cloned());
    }
    let record = RunRecord {
        dataset: req.dataset.clone(),
        dataset_dir: req.category_dir.clone(),
        config: TrainConfig {
            // AHL's settings in full, whether given or the profile's.
            ahl: cfg.method.is_ahl().then(|| cfg.ahl_config()),
            ..cfg.clone()
        },
        train_anomalies: split.train_anomaly.clone(),
        contaminants: split.contaminants.clone(),
        ignored: category
            .ignored
            .iter()
            .fold(Default::default(), |mut m, i| {
                *m.entry(i.reason.to_string()).or_insert(0) += 1;
                m
            }),
        unreadable: unreadable.clone(),
        n_train_normal: split.train_normal.len(),
        calibration_normals: calibration.clone(),
        dra_rs_version: env!("CARGO_PKG_VERSION").into(),
    };
    write_json(&req.out_dir.join("config.json"), &record)?;

    // Decode and resize every training image once, in parallel; a bad file stops us here.
    let normals = ImageCache::load(&split.train_normal, cfg.image_size)?;
    let anomaly_images: Vec<ImageRef> = split.train_anomaly.iter().map(Sample::image).collect();
    let anomalies = ImageCache::load(&anomaly_images, cfg.image_size)?;
    // AHL trains its heads on features of the same resized images after the base training.
    let ahl_images = cfg
        .method
        .is_ahl()
        .then(|| (normals.clone(), anomalies.clone()));
    let mut source = BatchSource::new(cfg.batch_config(), normals, anomalies, cfg.seed)?;
    if let Some(outliers) = &outliers {
        source = source.with_outliers(ImageCache::load(&outliers.images, cfg.image_size)?);
    }

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &req.device);
    let model = Detector::new(cfg.method, &cfg.model_config(), vb)?;
    reset_parameters(&varmap, cfg.seed)?;
    if let Some(weights) = &cfg.weights {
        crate::advice::check_torchvision_hash(weights)?;
        dra_model::load_into(&varmap, weights, dra_model::Scope::Backbone)?;
    }
    if let Some(model) = &cfg.init_model {
        dra_model::load_into(&varmap, model, dra_model::Scope::Full)?;
    }
    crate::methods::prepare(&varmap, cfg, &split.train_normal, &req.device)?;
    let mut adam = Adam::new(
        trainable(&varmap),
        AdamConfig {
            weight_decay: cfg.weight_decay,
            clip_norm: Some(cfg.clip_norm),
            ..Default::default()
        },
    )?;
    let mut prior_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0000_05EE_D0FD_E71A);

    let ahl_epochs = if cfg.method.is_ahl() {
        cfg.ahl_config().epochs
    } else {
        0
    };
    let bar = progress_bar(
        req.progress,
        (cfg.total_steps() + ahl_epochs) as u64,
        &req.dataset,
    );
    let mut prefetch = Prefetcher::spawn(source, 0..cfg.total_steps() as u64, 2);
    let size = cfg.image_size as usize;
    let mut log = TrainLog::create(&req.out_dir)?;
    let train_start = Instant::now();
    let mut final_loss = 0.0;
    for epoch in 0..cfg.epochs {
        let lr = cfg.lr_at_epoch(epoch);
        let mut epoch_loss = 0.0;
        for step in 0..cfg.steps_per_epoch {
            let batch = prefetch
                .recv()
                .expect("the prefetcher yields one batch per step");
            let targets: Vec<Target> = batch.labels.iter().map(|&l| target(l)).collect();
            let images = ImageBatch::from_values(batch.images, batch.n_ref, size, &req.device)?;
            let loss = model.loss_terms(&images, &targets, cfg.loss, &mut prior_rng)?;
            let value = loss.total.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    step,
                    loss: value,
                });
            }
            adam.step(&loss.total.backward()?, lr)?;
            let heads = match &loss.heads {
                Some(heads) => {
                    let mut values = [0.0; 4];
                    for (v, t) in values.iter_mut().zip(heads) {
                        *v = t.to_scalar::<f32>()? as f64;
                    }
                    Some(values)
                }
                None => None,
            };
            log.push(LogRow {
                epoch: epoch + 1,
                step: epoch * cfg.steps_per_epoch + step + 1,
                loss: value as f64,
                heads,
                lr,
                seconds: train_start.elapsed().as_secs_f64(),
            })?;
            epoch_loss += value as f64;
            bar.set_message(format!(
                "epoch {}/{} loss {:.3}",
                epoch + 1,
                cfg.epochs,
                epoch_loss / (step + 1) as f64
            ));
            bar.inc(1);
        }
        final_loss = epoch_loss / cfg.steps_per_epoch as f64;
    }
    let data_wait = prefetch.waited().as_secs_f64();
    let source = prefetch.finish();
    if let Some((normals, anomalies)) = &ahl_images {
        let ahl = crate::ahl::retrain_heads(
            &varmap,
            cfg,
            normals,
            anomalies,
            &req.device,
            |epoch, record| {
                let row = LogRow {
                    epoch: cfg.epochs + epoch,
                    step: cfg.total_steps() + epoch,
                    loss: record.query_loss,
                    heads: None,
                    lr: record.lr,
                    seconds: train_start.elapsed().as_secs_f64(),
                };
                bar.set_message(format!(
                    "AHL epoch {epoch}/{ahl_epochs} query loss {:.3}",
                    record.query_loss
                ));
                bar.inc(1);
                log.push(row)
            },
        )?;
        final_loss = ahl.epochs.last().map_or(final_loss, |r| r.query_loss);
    }
    bar.finish_and_clear();
    let train_seconds = start.elapsed().as_secs_f64();

    let eval_start = Instant::now();
    let eval_model = detached_model(&varmap, cfg, &req.device)?;
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
    let rows = &scored.rows;

    // A fixed, seeded reference set saved with the model, so that `dra predict` and
    // `dra eval --fixed-references` score an image the same way every time; the threshold is
    // calibrated with it, as `dra predict` will decide.
    let mut fixed =
        References::seeded_draw(&split.train_normal, cfg.n_ref, cfg.seed, cfg.image_size)?;
    let threshold = if calibration.is_empty() {
        None
    } else {
        let normals = score_samples(
            &eval_model,
            &normal_samples(&calibration),
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
        Some(maps) => pixel_metrics(&category, &split.test, maps, cfg.image_size),
        None => Localization::default(),
    };
    let base = Metrics::of(rows, &split)?;
    let mut notes = crate::advice::after_training(cfg, &req.dataset, base.auc_roc);
    notes.extend(localization.note.clone());
    if let Some(caution) = threshold.as_ref().and_then(Threshold::caution) {
        notes.push(caution);
    }
    let mut metrics = Metrics {
        final_loss: Some(final_loss),
        train_seconds,
        eval_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        data_wait_seconds: data_wait,
        ignored: category.ignored.len(),
        unreadable,
        pixel_auroc: localization.pixel_auroc,
        aupro: localization.aupro,
        threshold: at_threshold,
        notes,
        ..base
    };
    save_safetensors(&req.out_dir.join("model.safetensors"), |tmp| {
        varmap.save(tmp)
    })?;
    fixed.save(&req.out_dir.join(REFERENCES_FILE), cfg.image_size)?;
    if let Some(threshold) = &threshold {
        threshold.save(&req.out_dir)?;
    }
    if let (Some(dir), Some(maps)) = (&req.save_maps, &scored.maps) {
        save_maps(dir, &split.test, maps, cfg.image_size)?;
    }
    write_scores(&req.out_dir.join("scores.csv"), rows)?;
    let report = crate::run_report::write(&crate::run_report::RunView {
        title: format!("{} on {}", cfg.method, req.dataset),
        config: cfg,
        data_dir: &req.category_dir,
        category: &category,
        test: &split.test,
        scored: &scored,
        metrics: &metrics,
        threshold: threshold.as_ref(),
        decided_as: "with the stored references, as dra predict decides",
        log: log.rows(),
        out_dir: &req.out_dir,
    });
    // The report is for looking at; a failure to write it (an image gone since scoring) must
    // not cost the run its metrics.
    if let Err(e) = report {
        metrics.notes.push(format!(
            "{} not written: {e}",
            crate::run_report::REPORT_FILE
        ));
    }
    write_json(&req.out_dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `--save-maps DIR`: a method with maps, and a folder that can be written.
pub(crate) fn check_maps_dir(
    dir: &std::path::Path,
    method: dra_model::Method,
) -> Result<(), TrainError> {
    if method.base() != dra_model::Method::Dra {
        return Err(TrainError::InvalidOption {
            flag: "--save-maps",
            message: format!("anomaly maps come from DRA's heads; {method} has none"),
        });
    }
    writable_dir(dir, "--save-maps")
}

fn progress_bar(show: bool, len: u64, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg} ETA {eta}",
        )
        .expect("the template is valid"),
    );
    bar.set_prefix(name.to_string());
    bar
}
