//! Project automation: `cargo xtask <task>`.

mod chart;
mod cli;
mod gpu_check;
mod grid;
mod merge;
mod paper;
mod perf;
mod probe;
mod render;
mod runs;
mod spec;
mod sweep;
mod tidy;
mod workspace;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use dra_model::LossKind;

#[derive(Parser)]
#[command(name = "xtask", about = "dra-rs automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// General setting (labelled anomalies from all classes): data sets × shots × runs, then
    /// the layout of paper Table 1 / seed Table 7. With no arguments: the embedded data.
    BenchGeneral(cli::SweepArgs),
    /// Hard setting (labelled anomalies from one known class): each known-class subset × shots
    /// × runs, then the layout of paper Table 2 / seed Table 8.
    BenchHard(cli::SweepArgs),
    /// The hard setting with each loss on all four heads (seed §C.2, Fig. 5): a table and a chart.
    BenchLoss(LossArgs),
    /// Seed Table 9: train on each source, fine-tune on every other target's normal images,
    /// evaluate on the target; the source × target matrix.
    BenchCrossDomain(CrossArgs),
    /// Paper Table 3: DRA with subsets of its heads (DRA1A, DRA2A, DRA3Ar, DRA3An, DRA), general
    /// setting, 10-shot, MVTec's categories (with no --data-root: the embedded data).
    BenchAblation(cli::SweepArgs),
    /// Paper Table 4: DRA's pseudo anomalies from CutPaste-Scar, CutPaste's mix, CutMix and, with
    /// --outlier-root DIR, outlier exposure from DIR; hard setting (Carpet, AITEX, ELPV,
    /// Hyper-Kvasir; with no --data-root: the embedded data).
    BenchPseudo(cli::SweepArgs),
    /// Unite the results folders of a sweep's shards and render the tables.
    Merge(merge::MergeArgs),
    /// Throughput and peak memory of training and evaluation workloads.
    Perf(perf::PerfArgs),
    /// The whole check of a GPU: build with `--features cuda`, the parity and device tests on
    /// the GPU, `perf --device cuda` beside PyTorch's at 128, 224 and 448 px; results and
    /// summary.md in one folder. `--pack DIR` builds on a machine without a GPU for one without
    /// Rust.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// A fingerprint of every result (model steps of every method, backbone, dtype and kernel
    /// setting; whole runs and their files) to show that a refactor changed none of them.
    Probe(probe::ProbeArgs),
    /// The checks that keep the map true: no import cycle in any crate, dra-train's tiers
    /// kept, ARCHITECTURE.md's code map matching the tree, no file over 900 lines (also run by
    /// `cargo test`).
    Tidy,
    /// One perf measurement in a process of its own (used by `perf`).
    #[command(hide = true)]
    PerfWorker(perf::WorkerArgs),
    /// Peak memory and step time of training runs on generated data sets of N images, with
    /// the default image cache and with others (docs/performance.md, "Memory and data size").
    PerfData(perf::DataArgs),
    /// One `perf-data` run in a process of its own.
    #[command(hide = true)]
    PerfDataWorker(perf::DataWorkerArgs),
}

#[derive(Args)]
struct LossArgs {
    #[command(flatten)]
    sweep: cli::SweepArgs,
    /// Comma-separated losses to compare.
    #[arg(long, value_delimiter = ',', default_value = "deviation,bce,focal")]
    losses: Vec<LossKind>,
}

#[derive(Args)]
struct CrossArgs {
    #[command(flatten)]
    sweep: cli::SweepArgs,
    /// Epochs of fine-tuning on the target's normal images [default: 10 (paper), 3 (quick)].
    #[arg(long)]
    fine_tune_epochs: Option<usize>,
}

/// The sweep's loss: `--loss` or the paper's deviation loss.
fn single_loss(args: &cli::SweepArgs) -> Vec<LossKind> {
    vec![args.overrides.loss.unwrap_or_default()]
}

fn main() -> Result<()> {
    // First, while this is the only thread; untuned, training is only slower.
    if let Err(e) = dra_model::configure_cpu_runtime() {
        eprintln!("warning: {e}");
    }
    match Cli::parse().task {
        Task::BenchGeneral(args) => {
            sweep::run(spec::SweepKind::General, &args, single_loss(&args), None)
        }
        Task::BenchHard(args) => sweep::run(spec::SweepKind::Hard, &args, single_loss(&args), None),
        Task::BenchPseudo(args) => {
            sweep::run(spec::SweepKind::Pseudo, &args, single_loss(&args), None)
        }
        Task::BenchAblation(args) => {
            sweep::run(spec::SweepKind::Ablation, &args, single_loss(&args), None)
        }
        Task::BenchCrossDomain(args) => {
            let epochs = args.fine_tune_epochs.unwrap_or(match args.sweep.profile {
                dra_train::Profile::Paper => 10,
                dra_train::Profile::Quick | dra_train::Profile::OwnData => 3,
            });
            if epochs == 0 {
                bail!("--fine-tune-epochs must be at least 1");
            }
            let losses = single_loss(&args.sweep);
            sweep::run(
                spec::SweepKind::CrossDomain,
                &args.sweep,
                losses,
                Some(epochs),
            )
        }
        Task::BenchLoss(args) => {
            if args.sweep.overrides.loss.is_some() {
                bail!("--loss: bench-loss compares losses; use --losses");
            }
            if args.losses.is_empty() {
                bail!("--losses: give at least one loss");
            }
            sweep::run(
                spec::SweepKind::Loss,
                &args.sweep,
                args.losses.clone(),
                None,
            )
        }
        Task::Merge(args) => merge::merge(&args),
        Task::Perf(args) => perf::perf(args),
        Task::GpuCheck(args) => gpu_check::gpu_check(args),
        Task::Probe(args) => probe::probe(&args),
        Task::Tidy => tidy::tidy(&workspace::root()),
        Task::PerfWorker(args) => perf::worker(args),
        Task::PerfData(args) => perf::perf_data(args),
        Task::PerfDataWorker(args) => perf::perf_data_worker(args),
    }
}
