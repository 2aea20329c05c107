//! `cargo xtask perf`: throughput and peak memory of the training and evaluation workloads.
//!
//! Each (workload, size) runs in a child process of its own, so that its peak resident memory
//! (`VmHWM`) is its own. A warm-up repetition, then `reps` timed ones; the median is reported.
//! With `--pytorch`, the official PyTorch model (`tools/perf/torch_perf.py`) runs the same
//! workloads in turn with dra-rs, round after round, and each round's speed ratio is reported.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use dra_model::backbones::{Backbone, BackboneKind};
use dra_model::{reset_parameters, Dra, DraConfig, DraLoss, Kernels, LossKind, Winograd};
use dra_train::engine::{trainable, Adam, AdamConfig};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct PerfArgs {
    /// Image sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "128,224")]
    sizes: Vec<usize>,
    /// Workloads: backbone_train, backbone_eval, dra_step.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "backbone_train,backbone_eval,dra_step"
    )]
    workloads: Vec<String>,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Use candle's stock convolution, BatchNorm and max-pool instead of dra-model's kernels.
    #[arg(long)]
    stock: bool,
    /// Run the stride-1 3×3 convolutions by im2col + GEMM instead of Winograd.
    #[arg(long)]
    no_winograd: bool,
    /// Run every Winograd convolution with F(2×2, 3×3) tiles, none with F(4×4, 3×3).
    #[arg(long)]
    winograd_f2: bool,
    /// The feature extractor measured (and DRA's, in dra_step): resnet18 or mobilenet_v2.
    #[arg(long, default_value = "resnet18")]
    backbone: BackboneKind,
    /// Also run the official PyTorch model on the same workloads (`tools/perf/torch_perf.py`),
    /// alternating with dra-rs round by round, and report the speed ratio of each round: on a
    /// machine whose speed drifts, side by side is the only fair comparison.
    #[arg(long)]
    pytorch: bool,
    /// With `--pytorch`: rounds of (PyTorch, dra-rs) per workload and size, the order swapped
    /// every other round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), requires = "pytorch")]
    rounds: u32,
    /// With `--pytorch`: the Python interpreter that has torch and torchvision.
    #[arg(long, default_value = "python3", requires = "pytorch")]
    python: String,
}

/// One measurement, as printed with `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub workload: String,
    pub size: usize,
    pub batch: usize,
    pub img_per_s: f64,
    pub seconds_median: f64,
    /// The fastest repetition: steadier than the median on a noisy machine, for A/B runs.
    #[serde(default)]
    pub seconds_min: f64,
    pub peak_rss_mb: f64,
    /// On a GPU: the most device memory `nvidia-smi` saw the worker hold (its CUDA context
    /// included), polled every 50 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gpu_mb: Option<f64>,
    pub device: String,
    /// `dra-rs` (this crate's kernels), `dra-rs-im2col` (without Winograd) or `candle-stock`.
    pub kernels: String,
    /// The backbone measured (measurements made before the option existed: ResNet-18).
    #[serde(default = "resnet18")]
    pub backbone: String,
}

fn resnet18() -> String {
    BackboneKind::Resnet18.to_string()
}

/// The batch of a workload: DRA's 48 + 5 references for a step; the backbone measured at 48
/// up to 224 px and 16 at 448 px (as the PyTorch figures in the issue).
fn batch_for(workload: &str, size: usize) -> usize {
    match workload {
        "dra_step" => 48,
        _ if size >= 448 => 16,
        _ => 48,
    }
}

pub fn perf(args: PerfArgs) -> Result<()> {
    if args.pytorch {
        return compare(&args);
    }
    let mut rows = Vec::new();
    for &size in &args.sizes {
        for workload in &args.workloads {
            let m = measure(&args, workload, size)?;
            if args.json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                let gpu = m
                    .peak_gpu_mb
                    .map_or(String::new(), |mb| format!(", GPU {mb:.0} MB"));
                eprintln!(
                    "{workload} {size} px: {:.2} img/s, peak {:.0} MB{gpu}",
                    m.img_per_s, m.peak_rss_mb
                );
            }
            rows.push(m);
        }
    }
    if !args.json {
        println!("| workload | backbone | size | batch | kernels | img/s | median s | peak RSS MB | peak GPU MB |\n|---|---|---|---|---|---|---|---|---|");
        for m in rows {
            println!(
                "| {} | {} | {} | {} | {} | {:.2} | {:.3} | {:.0} | {} |",
                m.workload,
                m.backbone,
                m.size,
                m.batch,
                m.kernels,
                m.img_per_s,
                m.seconds_median,
                m.peak_rss_mb,
                m.peak_gpu_mb.map_or("-".into(), |mb| format!("{mb:.0}"))
            );
        }
    }
    Ok(())
}

/// One (workload, size) by dra-rs, in a worker process of its own.
fn measure(args: &PerfArgs, workload: &str, size: usize) -> Result<Measurement> {
    let out = Command::new(std::env::current_exe()?)
        .args(["perf-worker", "--workload", workload])
        .args(["--size", &size.to_string()])
        .args(["--reps", &args.reps.to_string(), "--device", &args.device])
        .args(["--backbone", &args.backbone.to_string()])
        .args(args.stock.then_some("--stock"))
        .args(args.no_winograd.then_some("--no-winograd"))
        .args(args.winograd_f2.then_some("--winograd-f2"))
        .output()
        .context("running the perf worker")?;
    if !out.status.success() {
        bail!(
            "{workload} at {size} px failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the worker's result")
}

/// PyTorch's measurement of one (workload, size): the fields of `torch_perf.py`'s JSON line
/// that the comparison reads.
#[derive(Debug, Serialize, Deserialize)]
struct TorchMeasurement {
    seconds_median: f64,
    peak_rss_mb: f64,
    #[serde(rename = "impl")]
    version: String,
}

/// The workloads both sides know (`--pytorch` checks them before any round runs:
/// `torch_perf.py` takes any other name for `dra_step`).
const WORKLOADS: [&str; 3] = ["backbone_train", "backbone_eval", "dra_step"];

/// `tools/perf/torch_perf.py`.
fn torch_script() -> std::path::PathBuf {
    crate::workspace_root().join("tools/perf/torch_perf.py")
}

/// One (workload, size) by the official PyTorch model, in a worker process of its own.
fn measure_torch(args: &PerfArgs, workload: &str, size: usize) -> Result<TorchMeasurement> {
    let script = torch_script();
    let out = Command::new(&args.python)
        .arg(&script)
        .args(["--worker", workload, &size.to_string()])
        .args(["--reps", &args.reps.to_string(), "--device", &args.device])
        .args(["--backbone", &args.backbone.to_string()])
        .output()
        .with_context(|| format!("--python: cannot run `{}`", args.python))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let status = out.status.to_string();
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(&status);
        bail!(
            "PyTorch's {workload} at {size} px failed (torch and torchvision installed for `{}`? \
             `pip install torch torchvision`): {}",
            args.python,
            last.trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).with_context(|| {
        let last = text.lines().last().unwrap_or("").trim();
        let last: String = last.chars().take(200).collect();
        format!("reading {}'s result: `{last}`", script.display())
    })
}

/// Both sides of one (workload, size) over the rounds.
#[derive(Clone, Debug, Serialize)]
struct Comparison {
    workload: String,
    size: usize,
    backbone: String,
    torch: String,
    /// Per round: PyTorch's median step over dra-rs's (above 1: dra-rs is faster).
    speedups: Vec<f64>,
    dra_rs_seconds: Vec<f64>,
    pytorch_seconds: Vec<f64>,
    dra_rs_peak_rss_mb: f64,
    pytorch_peak_rss_mb: f64,
}

/// `--pytorch`: each (workload, size) by both, alternating round by round.
fn compare(args: &PerfArgs) -> Result<()> {
    if let Some(w) = args
        .workloads
        .iter()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        bail!(
            "--workloads: unknown workload `{w}`; valid: {}",
            WORKLOADS.join(", ")
        );
    }
    let script = torch_script();
    if !script.is_file() {
        bail!("--pytorch: {} is missing", script.display());
    }
    let mut rows = Vec::new();
    for &size in &args.sizes {
        for workload in &args.workloads {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for round in 0..args.rounds {
                // Swapped every other round, so that neither side always runs first.
                if round % 2 == 0 {
                    theirs.push(measure_torch(args, workload, size)?);
                    ours.push(measure(args, workload, size)?);
                } else {
                    ours.push(measure(args, workload, size)?);
                    theirs.push(measure_torch(args, workload, size)?);
                }
                eprintln!(
                    "{workload} {size} px, round {}: dra-rs {:.3} s, PyTorch {:.3} s",
                    round + 1,
                    ours[ours.len() - 1].seconds_median,
                    theirs[theirs.len() - 1].seconds_median
                );
            }
            let row = Comparison {
                workload: workload.clone(),
                size,
                backbone: args.backbone.to_string(),
                torch: theirs[0].version.clone(),
                speedups: ours
                    .iter()
                    .zip(&theirs)
                    .map(|(o, t)| t.seconds_median / o.seconds_median)
                    .collect(),
                dra_rs_seconds: ours.iter().map(|m| m.seconds_median).collect(),
                pytorch_seconds: theirs.iter().map(|m| m.seconds_median).collect(),
                dra_rs_peak_rss_mb: ours.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max),
                pytorch_peak_rss_mb: theirs.iter().map(|m| m.peak_rss_mb).fold(0.0, f64::max),
            };
            if args.json {
                println!("{}", serde_json::to_string(&row)?);
            }
            rows.push(row);
        }
    }
    if !args.json {
        println!("{}", comparison_table(&rows));
    }
    Ok(())
}

/// The comparison as a Markdown table: medians over the rounds, and the range of the
/// per-round speed ratios.
fn comparison_table(rows: &[Comparison]) -> String {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let range = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        if (hi - lo).abs() < 0.005 {
            format!("{lo:.2}")
        } else {
            format!("{lo:.2}–{hi:.2}")
        }
    };
    let mut out = String::from(
        "| workload | backbone | size | dra-rs s | PyTorch s | speed-up per round | median of the rounds' speed-ups | peak RSS MB dra-rs / PyTorch |\n|---|---|---|---|---|---|---|---|",
    );
    for r in rows {
        out.push_str(&format!(
            "\n| {} | {} | {} | {:.3} | {:.3} | {} | {:.2} | {:.0} / {:.0} |",
            r.workload,
            r.backbone,
            r.size,
            median(&r.dra_rs_seconds),
            median(&r.pytorch_seconds),
            range(&r.speedups),
            median(&r.speedups),
            r.dra_rs_peak_rss_mb,
            r.pytorch_peak_rss_mb
        ));
    }
    out
}

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    workload: String,
    #[arg(long)]
    size: usize,
    #[arg(long)]
    reps: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    stock: bool,
    #[arg(long)]
    no_winograd: bool,
    #[arg(long)]
    winograd_f2: bool,
    #[arg(long, default_value = "resnet18")]
    backbone: BackboneKind,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The most device memory this process holds on the GPU, as `nvidia-smi` reports it (the same
/// measure as `tools/perf/torch_perf.py` takes of PyTorch), polled by a thread of its own.
struct GpuMemory {
    peak_mb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl GpuMemory {
    fn poll() -> Self {
        let (peak_mb, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (peak, done) = (peak_mb.clone(), stop.clone());
        let pid = std::process::id().to_string();
        let thread = std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(mb) = gpu_memory_of(&pid) {
                    peak.fetch_max(mb, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        Self {
            peak_mb,
            stop,
            thread,
        }
    }

    fn peak_mb(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        // A poller that panicked has simply stopped polling: its peak so far stands.
        let _ = self.thread.join();
        self.peak_mb.load(Ordering::Relaxed) as f64
    }
}

/// The device memory (MiB) that process `pid` holds, from `nvidia-smi`; in a container whose
/// process ids `nvidia-smi` does not see, the one process on the GPU (a worker runs alone).
fn gpu_memory_of(pid: &str) -> Option<u64> {
    let text = nvidia_smi(&[
        "--query-compute-apps=pid,used_memory",
        "--format=csv,noheader,nounits",
    ])
    .ok()?;
    let rows: Vec<(&str, u64)> = text
        .lines()
        .filter_map(|l| {
            let (p, mb) = l.split_once(',')?;
            Some((p.trim(), mb.trim().parse().ok()?))
        })
        .collect();
    match rows.iter().find(|(p, _)| *p == pid) {
        Some(&(_, mb)) => Some(mb),
        None if rows.len() == 1 => Some(rows[0].1),
        None => None,
    }
}

/// What `nvidia-smi` prints for `args`, or its error.
pub(crate) fn nvidia_smi(args: &[&str]) -> Result<String> {
    let out = Command::new("nvidia-smi").args(args).output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => bail!("--device: unknown device `{other}`"),
    })
}

pub fn worker(args: WorkerArgs) -> Result<()> {
    let dev = device(&args.device)?;
    let kernels = match (args.stock, args.no_winograd, args.winograd_f2) {
        (true, _, _) => Kernels::Stock,
        (false, true, _) => Kernels::Custom {
            winograd: Winograd::Off,
        },
        (false, false, true) => Kernels::Custom {
            winograd: Winograd::F2,
        },
        (false, false, false) => Kernels::default(),
    };
    let size = args.size;
    let batch = batch_for(&args.workload, size);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let mut step: Box<dyn FnMut() -> Result<()>> = match args.workload.as_str() {
        "backbone_train" => {
            let net = Backbone::new(args.backbone, kernels, vb.pp("net"))?;
            reset_parameters(&varmap, 0)?;
            let x = Tensor::randn(0f32, 1., (batch, 3, size, size), &dev)?;
            Box::new(move || {
                let y = net.forward_t(&x, true)?;
                let grads = y.sum_all()?.backward()?;
                std::hint::black_box(grads);
                Ok(())
            })
        }
        "backbone_eval" => {
            Backbone::new(args.backbone, kernels, vb.pp("net"))?;
            reset_parameters(&varmap, 0)?;
            let tensors = varmap
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect();
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
            let net = Backbone::new(args.backbone, kernels, vb.pp("net"))?;
            let x = Tensor::randn(0f32, 1., (batch, 3, size, size), &dev)?;
            Box::new(move || {
                let y = net.forward_t(&x, false)?;
                y.sum_all()?.to_scalar::<f32>()?;
                Ok(())
            })
        }
        "dra_step" => {
            let n_ref = 5;
            let config = DraConfig {
                kernels,
                backbone: args.backbone,
                ..Default::default()
            };
            let model = Dra::new(config, vb)?;
            reset_parameters(&varmap, 0)?;
            let mut adam = Adam::new(
                trainable(&varmap),
                AdamConfig {
                    weight_decay: 1e-5,
                    clip_norm: Some(1.0),
                    ..Default::default()
                },
            )?;
            let x = Tensor::randn(0f32, 1., (n_ref + batch, 3, size, size), &dev)?;
            // 16 normal, 16 pseudo, 16 anomalies: the expected official batch.
            let labels: Vec<u8> = (0..batch).map(|i| [0u8, 2, 1][i * 3 / batch]).collect();
            let loss_fn = DraLoss::new(LossKind::Deviation);
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
            Box::new(move || {
                let scores = model.forward_t(&x, true)?;
                let loss = loss_fn.compute(&scores, &labels, &mut rng)?;
                adam.step(&loss.total.backward()?, 2e-4)?;
                Ok(())
            })
        }
        other => {
            bail!(
                "unknown workload `{other}`; valid: {}",
                WORKLOADS.join(", ")
            )
        }
    };
    // On a GPU the ops are queued on a stream: a step ends when the device has run it.
    let gpu_memory = (!dev.is_cpu()).then(GpuMemory::poll);
    step()?; // warm-up
    dev.synchronize()?;
    let mut times = Vec::new();
    for _ in 0..args.reps.max(1) {
        let t = Instant::now();
        step()?;
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let m = Measurement {
        workload: args.workload.clone(),
        size,
        batch,
        img_per_s: batch as f64 / median,
        seconds_median: median,
        seconds_min: times[0],
        peak_rss_mb: peak_rss_mb(),
        peak_gpu_mb: gpu_memory.map(GpuMemory::peak_mb),
        device: args.device.clone(),
        kernels: match (args.stock, args.no_winograd, args.winograd_f2) {
            (true, _, _) => "candle-stock",
            (false, true, _) => "dra-rs-im2col",
            (false, false, true) => "dra-rs-f2",
            (false, false, false) => "dra-rs",
        }
        .into(),
        backbone: args.backbone.to_string(),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_table_gives_medians_and_ranges() {
        let row = Comparison {
            workload: "dra_step".into(),
            size: 128,
            backbone: "resnet18".into(),
            torch: "torch 2.15.0".into(),
            speedups: vec![1.5, 1.25, 1.4],
            dra_rs_seconds: vec![0.7, 0.8, 0.75],
            pytorch_seconds: vec![1.05, 1.0, 1.05],
            dra_rs_peak_rss_mb: 816.4,
            pytorch_peak_rss_mb: 1644.0,
        };
        let even = Comparison {
            speedups: vec![1.5, 1.2],
            dra_rs_seconds: vec![0.7, 0.8],
            pytorch_seconds: vec![1.05, 0.96],
            ..row.clone()
        };
        let table = comparison_table(&[row, even]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[2],
            "| dra_step | resnet18 | 128 | 0.750 | 1.050 | 1.25–1.50 | 1.40 | 816 / 1644 |"
        );
        // Two rounds: the medians are the means of the middle two.
        assert_eq!(
            lines[3],
            "| dra_step | resnet18 | 128 | 0.750 | 1.005 | 1.20–1.50 | 1.35 | 816 / 1644 |"
        );
    }
}
