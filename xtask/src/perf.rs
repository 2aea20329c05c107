//! `cargo xtask perf`: throughput and peak memory of the training and evaluation workloads.
//!
//! Each (workload, size) runs in a child process of its own, so that its peak resident memory
//! (`VmHWM`) is its own. A warm-up repetition, then `reps` timed ones; the median is reported.

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
use dra_train::{trainable, Adam, AdamConfig};
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
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &size in &args.sizes {
        for workload in &args.workloads {
            let out = Command::new(&exe)
                .args([
                    "perf-worker",
                    "--workload",
                    workload,
                    "--size",
                    &size.to_string(),
                ])
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
            let m: Measurement =
                serde_json::from_slice(&out.stdout).context("reading the worker's result")?;
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
            bail!("unknown workload `{other}`; valid: backbone_train, backbone_eval, dra_step")
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
