//! The benchmark sweeps: a grid of training runs over data sets × subsets × losses × shots ×
//! seeds, run in a deterministic order, sharded, resumable, recorded in `OUT/runs.csv` and
//! rendered as the paper's tables.
//!
//! Resumption rests on three facts: a run directory's `metrics.json` is written last (so its
//! presence marks a finished run), `runs.csv` is replaced atomically, and a grid cell is skipped
//! only when its row carries the same configuration hash as the run the command would start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dra_data::datasets::DatasetName;
use dra_model::LossKind;
use dra_train::record::{RunRecord, CHECKPOINT_FILE, METRICS_FILE};
use dra_train::{Metrics, RunControl, RunRequest, StopSignal, TrainConfig, TrainError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::SweepArgs;
use crate::grid::{config_hash, job_config, Job};
use crate::runs::{self, RunRow};
use crate::spec::{write_spec, SweepKind, SweepSpec};

/// Runs this shard's part of the sweep and renders the tables from everything in `out`.
pub fn run(
    kind: SweepKind,
    args: &SweepArgs,
    losses: Vec<LossKind>,
    fine_tune_epochs: Option<usize>,
) -> Result<()> {
    let spec = SweepSpec::new(kind, args, losses, fine_tune_epochs)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::workspace::root().join("results").join(kind.name()));
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    write_spec(&out, &spec)?;

    let units = spec.units();
    let n_all: usize = units.iter().map(Vec::len).sum();
    let shard = args.shard;
    let jobs: Vec<&Job> = units
        .iter()
        .enumerate()
        .filter(|(i, _)| i % shard.count == shard.index - 1)
        .flat_map(|(_, unit)| unit)
        .collect();
    let absent = spec.absent();
    println!(
        "{}: {} data set(s) present{} × shots {:?} × {} run(s): {} runs{}, profile {}, results in {}",
        kind.name(),
        spec.entries.len() - absent.len(),
        if absent.is_empty() {
            String::new()
        } else {
            format!(" ({} absent: {})", absent.len(), absent.join(", "))
        },
        spec.shots,
        spec.runs,
        n_all,
        if shard.count > 1 {
            format!(" (this shard {shard}: {})", jobs.len())
        } else {
            String::new()
        },
        spec.profile,
        out.display()
    );

    // What is already done: rows with this very configuration, or finished run directories whose
    // row was lost to a kill between the two writes.
    let existing: BTreeMap<String, RunRow> = runs::read(&out.join("runs.csv"))?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let mut pending = Vec::new();
    let mut done = 0;
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    for job in jobs {
        let config = job_config(job, &spec, &args.overrides, &out);
        let parent = job.source.as_ref().map(|_| {
            let key = config
                .init_model
                .as_ref()
                .and_then(|m| m.parent()?.file_name());
            let key = key
                .map(|k| k.to_string_lossy().into_owned())
                .unwrap_or_default();
            hashes.get(&key).cloned().unwrap_or_default()
        });
        let hash = config_hash(&job.dataset, &job.subset(), &config, parent.as_deref());
        let key = job.key();
        hashes.insert(key.clone(), hash.clone());
        let dir = out.join("runs").join(&key);
        // A source's model must still be on disk for its fine-tuning runs.
        let model_needed = spec.sweep == SweepKind::CrossDomain && job.source.is_none();
        let model_ok = !model_needed || dir.join("model.safetensors").is_file();
        if model_ok && existing.get(&key).is_some_and(|r| r.config_hash == hash) {
            done += 1;
            continue;
        }
        if let Some(m) = finished(&dir, &job.dataset, &config).filter(|_| model_ok) {
            runs::upsert(&out, row_for(kind, job, &m, hash, dir))?;
            done += 1;
            continue;
        }
        pending.push((job, config, hash, dir));
    }
    if done > 0 {
        println!("{done} run(s) already done, {} to run", pending.len());
    }

    // SIGINT/SIGTERM stop the run under way at a step boundary, with a checkpoint that the
    // next invocation goes on from; a second signal ends the process at once.
    let stop = StopSignal::on_termination().context("setting up the stop on SIGINT/SIGTERM")?;
    let bar = progress_bar(pending.len() as u64);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut failed_keys: Vec<String> = Vec::new();
    for (i, (job, config, hash, dir)) in pending.iter().enumerate() {
        bar.set_message(job.describe());
        let source_failed = config
            .init_model
            .as_ref()
            .and_then(|m| m.parent()?.file_name())
            .is_some_and(|k| failed_keys.iter().any(|f| k == f.as_str()));
        if source_failed {
            failures.push(format!("{}: its source run failed", job.describe()));
            bar.inc(1);
            continue;
        }
        let request = RunRequest {
            config: config.clone(),
            dataset: job.dataset.clone(),
            category_dir: job.dir.clone(),
            family: DatasetName::parse(&job.dataset)?.family(),
            out_dir: dir.clone(),
            device: candle_core::Device::Cpu,
            on_unreadable: if args.skip_unreadable {
                dra_data::OnUnreadable::Skip
            } else {
                dra_data::OnUnreadable::Error
            },
            save_maps: None,
            // A stopped run of this configuration goes on; anything else in the folder (an
            // unfinished run of another configuration) is replaced.
            control: RunControl {
                resume: resumable(dir, &job.dataset, config),
                overwrite: true,
                stop: Some(stop.clone()),
                ..Default::default()
            },
        };
        if request.control.resume {
            bar.suspend(|| println!("{}: goes on from its checkpoint", job.describe()));
        }
        match dra_train::train(&request) {
            Ok(m) => {
                runs::upsert(&out, row_for(kind, job, &m, hash.clone(), dir.clone()))?;
                bar.suspend(|| {
                    for u in &m.unreadable {
                        eprintln!(
                            "left out (does not decode): {}: {}",
                            u.path.display(),
                            u.reason
                        );
                    }
                    println!(
                        "[{}/{}] {}: AUC-ROC {:.3}, AUC-PR {:.3} in {:.0} s (elapsed {})",
                        i + 1,
                        pending.len(),
                        job.describe(),
                        m.auc_roc,
                        m.auc_pr,
                        m.total_seconds,
                        clock(started.elapsed())
                    )
                });
            }
            Err(e @ TrainError::Stopped { .. }) => {
                bar.finish_and_clear();
                println!("{}: {e}", job.describe());
                println!(
                    "stopped; the same command goes on (finished runs are kept, this one resumes from its checkpoint)"
                );
                std::process::exit(130);
            }
            Err(e) => {
                bar.suspend(|| {
                    println!(
                        "[{}/{}] {}: FAILED: {e}",
                        i + 1,
                        pending.len(),
                        job.describe()
                    )
                });
                failures.push(format!("{}: {e}", job.describe()));
                failed_keys.push(job.key());
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    crate::render::render_dir(&out)?;
    if !failures.is_empty() {
        bail!(
            "{} run(s) failed (the table shows the others):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30} run {pos}/{len} ETA {eta_precise} {msg}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_secs(1));
    bar
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Whether `dir` holds a run (finished or not) of exactly this configuration: its
/// `config.json` records it, with AHL's settings in full as a run records them.
fn same_run(dir: &Path, dataset: &str, config: &TrainConfig) -> bool {
    let Ok(record) = RunRecord::read(dir, "--out") else {
        return false;
    };
    let effective = TrainConfig {
        ahl: config.method.is_ahl().then(|| config.ahl_config()),
        ..config.clone()
    };
    record.config == effective && record.dataset == dataset
}

/// The recorded metrics when `dir` holds a finished run of exactly this configuration.
fn finished(dir: &Path, dataset: &str, config: &TrainConfig) -> Option<Metrics> {
    if !same_run(dir, dataset, config) {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(dir.join(METRICS_FILE)).ok()?).ok()
}

/// Whether `dir` holds a stopped run of exactly this configuration, which goes on from its
/// checkpoint rather than from step 0.
fn resumable(dir: &Path, dataset: &str, config: &TrainConfig) -> bool {
    dir.join(CHECKPOINT_FILE).is_file()
        && !dir.join(METRICS_FILE).exists()
        && same_run(dir, dataset, config)
}

fn row_for(
    kind: SweepKind,
    job: &Job,
    metrics: &Metrics,
    hash: String,
    run_dir: PathBuf,
) -> RunRow {
    RunRow {
        sweep: kind.name().into(),
        dataset: job.dataset.clone(),
        subset: job.subset(),
        setting: match (&job.known_class, &job.source) {
            (Some(_), _) => "hard",
            (None, Some(_)) => "cross-domain",
            (None, None) => "general",
        }
        .into(),
        known_class: job.known_class.clone().unwrap_or_default(),
        shots: job.shots,
        loss: job.loss.to_string(),
        method: job.method.clone(),
        seed: job.seed,
        auc_roc: metrics.auc_roc,
        auc_pr: metrics.auc_pr,
        seconds: metrics.total_seconds,
        config_hash: hash,
        run_dir,
    }
}
