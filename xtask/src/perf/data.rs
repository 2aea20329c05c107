//! `cargo xtask perf-data`: peak memory and step time of a training run against the size of its
//! data set and of the image cache (issue 30's benchmark): generated categories of N training
//! images, each run in a worker process of its own so that its peak resident memory is its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_train::{Profile, Progress, RunControl, RunRequest, TrainConfig};
use serde::{Deserialize, Serialize};

use super::worker::peak_rss_mb;

#[derive(Args)]
pub struct DataArgs {
    /// Training images of the generated data sets.
    #[arg(long, value_delimiter = ',', default_value = "2000,50000")]
    images: Vec<usize>,
    /// Image caches to compare, in MiB; 0 stands for the default (room for
    /// `DEFAULT_CACHE_IMAGES` images).
    #[arg(long, value_delimiter = ',', default_value = "0,32")]
    cache_mb: Vec<usize>,
    /// Training size (and the generated images' size).
    #[arg(long, default_value_t = 128)]
    image_size: u32,
    /// Optimiser steps of each run (batches of 48 and 5 references, the own-data profile's).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Where the data sets are generated (kept for the next time).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Args)]
pub struct DataWorkerArgs {
    #[arg(long)]
    category: PathBuf,
    /// 0: the default.
    #[arg(long)]
    cache_mb: usize,
    #[arg(long)]
    image_size: u32,
    #[arg(long)]
    steps: usize,
    #[arg(long)]
    out: PathBuf,
}

/// One run's measurement.
#[derive(Debug, Serialize, Deserialize)]
struct DataMeasurement {
    images: usize,
    cache_mb: usize,
    /// Seconds from the start to the first step: the data read, decoded and split.
    load_s: f64,
    /// Median seconds of a step, the first two left out (warm-up).
    step_s: f64,
    peak_rss_mb: f64,
}

pub fn perf_data(args: DataArgs) -> Result<()> {
    let root = args
        .data
        .clone()
        .unwrap_or_else(|| crate::workspace::root().join("target/perf-data"));
    let mut rows = Vec::new();
    for &n in &args.images {
        let spec = SyntheticSpec {
            image_size: args.image_size,
            n_train: n,
            n_test_good: 10,
            n_per_defect: 4,
            seed: 0,
        };
        let dir = root.join(format!("{n}-{}px", args.image_size));
        let started = Instant::now();
        let category = synthetic::ensure_category(&dir, "weave", &spec)?;
        eprintln!(
            "{n} images of {} px in {} ({:.0} s)",
            args.image_size,
            category.display(),
            started.elapsed().as_secs_f64()
        );
        for &cache_mb in &args.cache_mb {
            let out = dir.join(format!("run-{cache_mb}mb"));
            let output = Command::new(std::env::current_exe()?)
                .arg("perf-data-worker")
                .arg("--category")
                .arg(&category)
                .args(["--cache-mb", &cache_mb.to_string()])
                .args(["--image-size", &args.image_size.to_string()])
                .args(["--steps", &args.steps.to_string()])
                .arg("--out")
                .arg(&out)
                .output()
                .context("running perf-data-worker")?;
            if !output.status.success() {
                bail!(
                    "perf-data-worker ({n} images, --cache-mb {cache_mb}): {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let mut m: DataMeasurement = serde_json::from_slice(&output.stdout)
                .context("reading perf-data-worker's measurement")?;
            m.images = n;
            eprintln!(
                "{n} images, cache {} MiB: peak {:.0} MB, {:.3} s a step, load {:.1} s",
                m.cache_mb, m.peak_rss_mb, m.step_s, m.load_s
            );
            rows.push(m);
        }
    }
    println!(
        "| training images | cache MiB | peak RSS MB | median step s | load s |\n|---|---|---|---|---|"
    );
    for m in rows {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.1} |",
            m.images, m.cache_mb, m.peak_rss_mb, m.step_s, m.load_s
        );
    }
    Ok(())
}

pub fn perf_data_worker(args: DataWorkerArgs) -> Result<()> {
    let mut config = TrainConfig::for_profile(Profile::OwnData);
    config.image_size = args.image_size;
    (config.epochs, config.steps_per_epoch) = (1, args.steps);
    // Every training image trains (none held out to calibrate), and few labelled anomalies.
    config.calibration_fraction = 0.0;
    config.n_anomaly = 5;
    let request = RunRequest {
        config,
        dataset: "synthetic/weave".into(),
        category_dir: args.category.clone(),
        family: Family::Mvtec,
        out_dir: args.out.clone(),
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: None,
        control: RunControl {
            cache_bytes: (args.cache_mb > 0).then_some(args.cache_mb << 20),
            // The previous measurement's run.
            overwrite: true,
            ..Default::default()
        },
    };
    let start = Instant::now();
    let mut load_s = None;
    let budget_mb = request.control.cache_budget(args.image_size) >> 20;
    let mut marks = Vec::new();
    dra_train::train_with_progress(&request, &mut |p| match p {
        Progress::Started { .. } => {
            load_s = Some(start.elapsed().as_secs_f64());
            marks.push(start.elapsed().as_secs_f64());
        }
        Progress::Step { .. } => marks.push(start.elapsed().as_secs_f64()),
        _ => {}
    })?;
    let mut steps: Vec<f64> = marks.windows(2).map(|w| w[1] - w[0]).skip(2).collect();
    steps.sort_by(f64::total_cmp);
    let m = DataMeasurement {
        images: 0,
        cache_mb: budget_mb,
        load_s: load_s.unwrap_or(f64::NAN),
        step_s: steps.get(steps.len() / 2).copied().unwrap_or(f64::NAN),
        peak_rss_mb: peak_rss_mb(),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
