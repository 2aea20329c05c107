//! The second phase of a run: the model built and initialised, then trained step by step on
//! the balanced batches (Adam with coupled L2, clipping, StepLR), and for AHL its heads
//! retrained after; every step is logged to `train_log.csv` and reported to the caller.

use std::time::Instant;

use candle_core::DType;
use candle_nn::{VarBuilder, VarMap};
use dra_data::{BatchSource, Label, Prefetcher};
use dra_model::weights::check_torchvision_digest;
use dra_model::{reset_parameters, Detector, ImageBatch, Target, WeightsError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::load::{Batches, Loaded};
use super::request::{Progress, RunRequest};
use crate::engine::optim::{trainable, Adam, AdamConfig};
use crate::engine::{ahl, deepsad};
use crate::error::TrainError;
use crate::record::{LogRow, TrainLog};

/// The trained model and what training measured.
pub(super) struct Fitted {
    /// Every tensor of the model by name, trained.
    pub varmap: VarMap,
    /// Mean loss of the last epoch (AHL: its last query loss).
    pub final_loss: f64,
    /// Time the loop waited for batches.
    pub data_wait: f64,
    /// Seconds from the start of the run to the end of training.
    pub train_seconds: f64,
    /// The log of every step, for the report.
    pub log: TrainLog,
}

/// What a data set's label is to the model's loss.
fn target(label: Label) -> Target {
    match label {
        Label::Normal => Target::Normal,
        Label::Anomaly => Target::Anomaly,
        Label::Pseudo => Target::PseudoAnomaly,
    }
}

/// Builds, initialises and trains the model. Returns it with the batch source, whose
/// generator the official evaluation goes on drawing random references from.
pub(super) fn fit(
    req: &RunRequest,
    loaded: &Loaded,
    batches: Batches,
    start: Instant,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Fitted, BatchSource), TrainError> {
    let cfg = &req.config;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &req.device);
    let model = Detector::new(cfg.method, &cfg.model_config(), vb)?;
    reset_parameters(&varmap, cfg.seed)?;
    if let Some(weights) = &cfg.weights {
        check_torchvision_digest(weights).map_err(|e| match e {
            WeightsError::Digest { .. } => TrainError::InvalidOption {
                flag: "--weights",
                message: e.to_string(),
            },
            e => e.into(),
        })?;
        dra_model::load_into(&varmap, weights, dra_model::Scope::Backbone)?;
    }
    if let Some(model) = &cfg.init_model {
        dra_model::load_into(&varmap, model, dra_model::Scope::Full)?;
    }
    deepsad::prepare(&varmap, cfg, &loaded.split.train_normal, &req.device)?;
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
    progress(Progress::Started {
        steps: cfg.total_steps() + ahl_epochs,
    });
    let mut prefetch = Prefetcher::spawn(batches.source, 0..cfg.total_steps() as u64, 2);
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
            progress(Progress::Step {
                epoch: epoch + 1,
                epochs: cfg.epochs,
                mean_loss: epoch_loss / (step + 1) as f64,
            });
        }
        final_loss = epoch_loss / cfg.steps_per_epoch as f64;
    }
    let data_wait = prefetch.waited().as_secs_f64();
    let source = prefetch.finish();
    if let Some((normals, anomalies)) = &batches.ahl_images {
        let outcome = ahl::retrain_heads(
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
                progress(Progress::AhlEpoch {
                    epoch,
                    epochs: ahl_epochs,
                    query_loss: record.query_loss,
                });
                log.push(row)
            },
        )?;
        final_loss = outcome.epochs.last().map_or(final_loss, |r| r.query_loss);
    }
    progress(Progress::Trained);
    Ok((
        Fitted {
            varmap,
            final_loss,
            data_wait,
            train_seconds: start.elapsed().as_secs_f64(),
            log,
        },
        source,
    ))
}
