//! Project automation: `cargo xtask <task>`.

mod perf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dra_data::synthetic;
use dra_eval::table::{to_markdown, write_csv, TableBuilder};
use dra_eval::MeanStd;
use dra_train::{DatasetName, Metrics, Profile, RunRecord, RunRequest, TrainConfig};

#[derive(Parser)]
#[command(name = "xtask", about = "dra-rs automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// General setting (labelled anomalies from all classes): every data set × shots × runs,
    /// then the paper-style table. With no arguments: the embedded synthetic data set.
    BenchGeneral(BenchArgs),
    /// Throughput and peak memory of training and evaluation workloads.
    Perf(perf::PerfArgs),
    /// One perf measurement in a process of its own (used by `perf`).
    #[command(hide = true)]
    PerfWorker(perf::WorkerArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Folder holding the data sets (`mvtec_anomaly_detection/`, `synthetic/`); default `data/`.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Comma-separated data set names; default: every synthetic category.
    #[arg(long, value_delimiter = ',')]
    datasets: Vec<String>,
    /// Comma-separated numbers of labelled anomalies.
    #[arg(long, value_delimiter = ',', default_value = "10,1")]
    shots: Vec<usize>,
    /// Independent runs per cell (seeds 0..runs).
    #[arg(long, default_value_t = 1)]
    runs: u64,
    #[arg(long, value_enum, default_value_t = Profile::Quick)]
    profile: Profile,
    /// Results folder; default `results/bench-general`.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// One cell of the sweep's grid.
struct Job {
    dataset: String,
    shots: usize,
    seed: u64,
}

impl Job {
    fn dir_name(&self) -> String {
        format!(
            "{}-{}shot-seed{}",
            self.dataset.replace('/', "_"),
            self.shots,
            self.seed
        )
    }
}

/// The run's recorded metrics when the run directory holds a finished run of this very config.
fn finished(dir: &Path, config: &TrainConfig) -> Option<Metrics> {
    let record: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).ok()?).ok()?;
    if &record.config != config {
        return None;
    }
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).ok()?).ok()
}

fn bench_general(args: BenchArgs) -> Result<()> {
    let root = workspace_root();
    let data_root = args.data_root.clone().unwrap_or_else(|| root.join("data"));
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("results").join("bench-general"));
    let datasets = if args.datasets.is_empty() {
        synthetic::category_names()
            .iter()
            .map(|c| format!("synthetic/{c}"))
            .collect()
    } else {
        args.datasets.clone()
    };
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut jobs = Vec::new();
    for dataset in &datasets {
        for &shots in &args.shots {
            for seed in 0..args.runs {
                jobs.push(Job {
                    dataset: dataset.clone(),
                    shots,
                    seed,
                });
            }
        }
    }
    println!(
        "bench-general: {} data set(s) × shots {:?} × {} run(s) = {} runs, profile {}, results in {}",
        datasets.len(),
        args.shots,
        args.runs,
        jobs.len(),
        args.profile,
        out.display()
    );
    let mut results: BTreeMap<(String, usize), Vec<(u64, f64)>> = BTreeMap::new();
    let started = Instant::now();
    for (i, job) in jobs.iter().enumerate() {
        let name = DatasetName::parse(&job.dataset)?;
        let category_dir = name.resolve(Some(&data_root), None)?;
        let mut config = TrainConfig::for_profile(args.profile);
        config.n_anomaly = job.shots;
        config.seed = job.seed;
        let dir = out.join("runs").join(job.dir_name());
        let metrics = match finished(&dir, &config) {
            Some(m) => {
                println!(
                    "[{}/{}] {} {}-shot seed {}: AUC-ROC {:.3} (already done)",
                    i + 1,
                    jobs.len(),
                    job.dataset,
                    job.shots,
                    job.seed,
                    m.auc_roc
                );
                m
            }
            None => {
                let request = RunRequest {
                    config,
                    dataset: job.dataset.clone(),
                    category_dir,
                    family: name.family(),
                    out_dir: dir,
                    progress: true,
                    device: candle_core::Device::Cpu,
                };
                let m = dra_train::train(&request).with_context(|| {
                    format!("{} {}-shot seed {}", job.dataset, job.shots, job.seed)
                })?;
                println!(
                    "[{}/{}] {} {}-shot seed {}: AUC-ROC {:.3}, AUC-PR {:.3} in {:.0} s (elapsed {:.0} s)",
                    i + 1,
                    jobs.len(),
                    job.dataset,
                    job.shots,
                    job.seed,
                    m.auc_roc,
                    m.auc_pr,
                    m.total_seconds,
                    started.elapsed().as_secs_f64()
                );
                m
            }
        };
        results
            .entry((job.dataset.clone(), job.shots))
            .or_default()
            .push((job.seed, metrics.auc_roc));
    }
    render(&results, &datasets, &args.shots, &out)
}

/// The paper-style table: a row per data set plus the mean row of the synthetic categories
/// (mean over categories per seed, then mean ± std over seeds, as "MVTec AD" in the paper).
fn render(
    results: &BTreeMap<(String, usize), Vec<(u64, f64)>>,
    datasets: &[String],
    shots: &[usize],
    out: &Path,
) -> Result<()> {
    let mut table = TableBuilder::new("Dataset");
    let column = |s: usize| format!("DRA {s}-shot (AUC-ROC)");
    for &s in shots {
        table.column(&column(s));
    }
    for dataset in datasets {
        for &s in shots {
            let aucs: Vec<f64> = results
                .get(&(dataset.clone(), s))
                .map(|v| v.iter().map(|x| x.1).collect())
                .unwrap_or_default();
            if let Some(m) = MeanStd::of(&aucs) {
                table.mean_std(dataset, &column(s), m);
            }
        }
    }
    let group: Vec<&String> = datasets
        .iter()
        .filter(|d| d.starts_with("synthetic/"))
        .collect();
    if group.len() > 1 {
        let label = format!("Synthetic (mean of {})", group.len());
        for &s in shots {
            let mut per_seed: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for d in &group {
                for (seed, auc) in results.get(&((*d).clone(), s)).into_iter().flatten() {
                    per_seed.entry(*seed).or_default().push(*auc);
                }
            }
            let means: Vec<f64> = per_seed
                .values()
                .filter(|v| v.len() == group.len())
                .map(|v| v.iter().sum::<f64>() / v.len() as f64)
                .collect();
            if let Some(m) = MeanStd::of(&means) {
                table.mean_std(&label, &column(s), m);
            }
        }
    }
    let mut df = table.build()?;
    let markdown = to_markdown(&df)?;
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    std::fs::write(out.join("table.md"), &markdown)
        .with_context(|| out.join("table.md").display().to_string())?;
    write_csv(&mut df, &out.join("table.csv"))?;
    println!(
        "\n{markdown}\n(table.md and table.csv in {})",
        out.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BenchGeneral(args) => bench_general(args),
        Task::Perf(args) => perf::perf(args),
        Task::PerfWorker(args) => perf::worker(args),
    }
}
