//! The second phase of a run: the model built and initialised (or, resumed, rebuilt from the
//! folder's checkpoint), then trained step by step on the balanced batches (Adam with coupled
//! L2, clipping, StepLR), and for AHL its heads retrained after; every step is logged to
//! `train_log.csv` and reported to the caller, and a checkpoint written at the end of each
//! epoch (or every `checkpoint_every` steps), when training ends, and when a stop is asked.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use dra_data::{BatchSource, Label, OnUnreadable, Prefetcher};
use dra_model::weights::check_torchvision_digest;
use dra_model::{reset_parameters, Detector, ImageBatch, Target, WeightsError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::load::{Batches, Loaded};
use super::request::{Progress, RunRequest, StopSignal};
use crate::engine::optim::{trainable_named, Adam, AdamConfig};
use crate::engine::{ahl, deepsad};
use crate::error::TrainError;
use crate::record::{Checkpoint, LogRow, TrainLog, TrainState, CHECKPOINT_FILE};

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

/// Builds, initialises and trains the model, or with `--resume` rebuilds it from the folder's
/// checkpoint and goes on from there. Returns it with the batch source, whose generator the
/// official evaluation goes on drawing random references from.
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
    let resume_from = if req.control.resume {
        let checkpoint = Checkpoint::load(&req.out_dir, &req.device)?.ok_or_else(|| {
            TrainError::InvalidOption {
                flag: "--resume",
                message: format!("{}: holds no checkpoint", req.out_dir.display()),
            }
        })?;
        Some(checkpoint)
    } else {
        initialise(&varmap, req, loaded)?;
        None
    };
    let named = trainable_named(&varmap);
    let mut adam = Adam::new(
        named.iter().map(|(_, v)| v.clone()).collect(),
        AdamConfig {
            weight_decay: cfg.weight_decay,
            clip_norm: Some(cfg.clip_norm),
            ..Default::default()
        },
    )?;
    let mut prior_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0000_05EE_D0FD_E71A);
    let total = cfg.total_steps();
    let mut state = TrainState::new(0, total);
    let mut source = batches.source;
    let mut log = match resume_from {
        Some(checkpoint) => {
            let done = restore(&checkpoint, &varmap, &named, &mut adam, &req.out_dir, total)?;
            state = checkpoint.state;
            prior_rng.set_word_pos(state.loss_rng_word_pos);
            source.skip(done as u64);
            TrainLog::resume(&req.out_dir, done)?
        }
        None => TrainLog::create(&req.out_dir)?,
    };
    // What this session was asked, for the next resume.
    state.skip_unreadable = req.on_unreadable == OnUnreadable::Skip;
    state.save_maps = req.save_maps.clone();
    let ahl_epochs = if cfg.method.is_ahl() {
        cfg.ahl_config().epochs
    } else {
        0
    };
    progress(Progress::Started {
        steps: total + ahl_epochs,
        done: state.steps_done,
    });
    let mut prefetch = Prefetcher::spawn(source, state.steps_done as u64..total as u64, 2);
    let size = cfg.image_size as usize;
    let session = Instant::now();
    // The run's time (from its start: loading included) and data waits in the sessions before
    // this one, and where the log's clock (from the first step) stood.
    let (seconds_before, waited_before) = (state.train_seconds, state.data_wait_seconds);
    let log_before = log.rows().last().map_or(0.0, |r| r.seconds);
    let stop_raised = || req.control.stop.as_ref().is_some_and(StopSignal::is_raised);
    for global in state.steps_done..total {
        let (epoch, step) = (global / cfg.steps_per_epoch, global % cfg.steps_per_epoch);
        if step == 0 {
            state.epoch_loss = 0.0;
        }
        let lr = cfg.lr_at_epoch(epoch);
        let batch = prefetch
            .recv()
            .expect("the prefetcher yields one batch per step")?;
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
            step: global + 1,
            loss: value as f64,
            heads,
            lr,
            seconds: log_before + session.elapsed().as_secs_f64(),
        })?;
        state.epoch_loss += value as f64;
        let epoch_done = step + 1 == cfg.steps_per_epoch;
        if epoch_done {
            state.final_loss = state.epoch_loss / cfg.steps_per_epoch as f64;
        }
        progress(Progress::Step {
            epoch: epoch + 1,
            epochs: cfg.epochs,
            mean_loss: state.epoch_loss / (step + 1) as f64,
        });
        state.steps_done = global + 1;
        let stop = stop_raised();
        let due = match req.control.checkpoint_every {
            Some(every) => state.steps_done.is_multiple_of(every.max(1)),
            None => epoch_done,
        };
        if due || stop || state.steps_done == total {
            state.loss_rng_word_pos = prior_rng.get_word_pos();
            state.train_seconds = seconds_before + start.elapsed().as_secs_f64();
            state.data_wait_seconds = waited_before + prefetch.waited().as_secs_f64();
            save_checkpoint(&state, &varmap, &named, &adam, &req.out_dir)?;
        }
        if stop {
            return Err(stopped(req, &state));
        }
    }
    let data_wait = waited_before + prefetch.waited().as_secs_f64();
    let source = prefetch.finish();
    let mut final_loss = state.final_loss;
    if let Some((normals, anomalies)) = &batches.ahl_images {
        // AHL's phase is not checkpointed: a run stopped in it goes on from the end of the
        // base training, whose checkpoint is written, and repeats the phase, whose draws
        // depend on the seed alone.
        let outcome = ahl::retrain_heads(
            &varmap,
            cfg,
            normals,
            anomalies,
            &req.device,
            |epoch, record| {
                let row = LogRow {
                    epoch: cfg.epochs + epoch,
                    step: total + epoch,
                    loss: record.query_loss,
                    heads: None,
                    lr: record.lr,
                    seconds: log_before + session.elapsed().as_secs_f64(),
                };
                progress(Progress::AhlEpoch {
                    epoch,
                    epochs: ahl_epochs,
                    query_loss: record.query_loss,
                });
                log.push(row)?;
                if stop_raised() {
                    return Err(stopped(req, &state));
                }
                Ok(())
            },
        )?;
        final_loss = outcome.epochs.last().map_or(final_loss, |r| r.query_loss);
    }
    if stop_raised() {
        return Err(stopped(req, &state));
    }
    progress(Progress::Trained);
    Ok((
        Fitted {
            varmap,
            final_loss,
            data_wait,
            train_seconds: seconds_before + start.elapsed().as_secs_f64(),
            log,
        },
        source,
    ))
}

/// A new model's weights: seeded, then `--weights` (the backbone, its digest checked) and
/// `--init-model` over them; Deep SAD's centre from the result.
fn initialise(varmap: &VarMap, req: &RunRequest, loaded: &Loaded) -> Result<(), TrainError> {
    let cfg = &req.config;
    reset_parameters(varmap, cfg.seed)?;
    if let Some(weights) = &cfg.weights {
        check_torchvision_digest(weights).map_err(|e| match e {
            WeightsError::Digest { .. } => TrainError::InvalidOption {
                flag: "--weights",
                message: e.to_string(),
            },
            e => e.into(),
        })?;
        dra_model::load_into(varmap, weights, dra_model::Scope::Backbone)?;
    }
    if let Some(model) = &cfg.init_model {
        dra_model::load_into(varmap, model, dra_model::Scope::Full)?;
    }
    deepsad::prepare(varmap, cfg, &loaded.split.train_normal, &req.device)
}

/// Writes the checkpoint of a run that stands at `state`.
fn save_checkpoint(
    state: &TrainState,
    varmap: &VarMap,
    named: &[(String, Var)],
    adam: &Adam,
    dir: &Path,
) -> Result<(), TrainError> {
    let mut state = state.clone();
    let (moments, steps): (Vec<Tensor>, Vec<i32>) = adam.state().into_iter().unzip();
    state.adam_steps = steps;
    let model = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned")
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let adam = named.iter().map(|(n, _)| n.clone()).zip(moments).collect();
    Checkpoint { state, model, adam }.save(dir)
}

/// Puts a checkpoint's weights and optimiser state back; returns the steps it had done. A
/// checkpoint that does not fit the model is an error naming the file.
fn restore(
    checkpoint: &Checkpoint,
    varmap: &VarMap,
    named: &[(String, Var)],
    adam: &mut Adam,
    dir: &Path,
    total: usize,
) -> Result<usize, TrainError> {
    let unfit = |message: String| TrainError::InvalidOption {
        flag: "--resume",
        message: format!("{}: {message}", dir.join(CHECKPOINT_FILE).display()),
    };
    {
        let data = varmap
            .data()
            .lock()
            .expect("the var map lock is not poisoned");
        if data.len() != checkpoint.model.len() {
            return Err(unfit(format!(
                "holds {} of the model's tensors, the model has {}",
                checkpoint.model.len(),
                data.len()
            )));
        }
        for (name, var) in data.iter() {
            let tensor = checkpoint
                .model
                .get(name)
                .ok_or_else(|| unfit(format!("lacks the model's `{name}`")))?;
            var.set(tensor)
                .map_err(|e| unfit(format!("`{name}` does not fit: {e}")))?;
        }
    }
    let state = named
        .iter()
        .zip(&checkpoint.state.adam_steps)
        .map(|((name, _), &steps)| {
            let moments = checkpoint
                .adam
                .get(name)
                .ok_or_else(|| unfit(format!("lacks the optimiser's state of `{name}`")))?;
            Ok((moments.clone(), steps))
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    if state.len() != named.len() {
        return Err(unfit("lacks some of the optimiser's state".into()));
    }
    adam.restore(state)
        .map_err(|e| unfit(format!("the optimiser's state: {e}")))?;
    let (done, steps) = (checkpoint.state.steps_done, checkpoint.state.steps);
    if steps != total || done > total {
        return Err(unfit(format!(
            "stands at step {done} of {steps}; the run has {total}"
        )));
    }
    Ok(done)
}

/// The error of a run stopped at `state`, whose checkpoint is written.
fn stopped(req: &RunRequest, state: &TrainState) -> TrainError {
    TrainError::Stopped {
        dir: req.out_dir.clone(),
        step: state.steps_done,
        steps: state.steps,
    }
}
