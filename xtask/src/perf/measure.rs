//! What `cargo xtask perf` measures and how one measurement is run: in a worker process of
//! its own, so that its peak resident memory is its own.

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use dra_model::backbones::BackboneKind;
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct PerfArgs {
    /// Image sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "128,224")]
    pub(super) sizes: Vec<usize>,
    /// Workloads: backbone_train, backbone_eval, dra_step, predict (DRA scoring a batch with
    /// five stored references and its maps, eval mode, as `dra predict`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "backbone_train,backbone_eval,dra_step"
    )]
    pub(super) workloads: Vec<String>,
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub(super) reps: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub(super) json: bool,
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    /// Use candle's stock convolution, BatchNorm and max-pool instead of dra-model's kernels.
    #[arg(long)]
    pub(super) stock: bool,
    /// Run the stride-1 3×3 convolutions by im2col + GEMM instead of Winograd.
    #[arg(long)]
    pub(super) no_winograd: bool,
    /// Run every Winograd convolution with F(2×2, 3×3) tiles, none with F(4×4, 3×3).
    #[arg(long)]
    winograd_f2: bool,
    /// Compute the GEMMs portably, as `dra train --reproducible` does (AVX2 + FMA, fixed depth
    /// blocks): its cost.
    #[arg(long)]
    reproducible: bool,
    /// The feature extractor measured (and DRA's, in dra_step): resnet18 or mobilenet_v2.
    #[arg(long, default_value = "resnet18")]
    pub(super) backbone: BackboneKind,
    /// Also run the official PyTorch model on the same workloads (`tools/perf/torch_perf.py`),
    /// alternating with dra-rs round by round, and report the speed ratio of each round: on a
    /// machine whose speed drifts, side by side is the only fair comparison.
    #[arg(long)]
    pub(super) pytorch: bool,
    /// With `--pytorch`: rounds of (PyTorch, dra-rs) per workload and size, the order swapped
    /// every other round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), requires = "pytorch")]
    pub(super) rounds: u32,
    /// With the predict workload: also run the same batch through tract on the exported ONNX
    /// graph, side by side (needs xtask built with `--features onnx`: `cargo run -p xtask
    /// --release --features onnx -- perf --workloads predict --onnx`).
    #[arg(long)]
    pub(super) onnx: bool,
    /// With the predict workload: write each size's exported graph here
    /// (`predict-<backbone>-<size>.onnx`), for `tools/perf/ort_perf.py` (ONNX Runtime).
    #[arg(long)]
    pub(super) save_onnx: Option<std::path::PathBuf>,
    /// With `--pytorch`: the Python interpreter that has torch and torchvision.
    #[arg(long, default_value = "python3", requires = "pytorch")]
    pub(super) python: String,
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
pub(super) fn batch_for(workload: &str, size: usize) -> usize {
    match workload {
        "dra_step" => 48,
        _ if size >= 448 => 16,
        _ => 48,
    }
}

/// The workloads both sides know (`--pytorch` checks them before any round runs:
/// `torch_perf.py` takes any other name for `dra_step`).
pub(super) const WORKLOADS: [&str; 4] = ["backbone_train", "backbone_eval", "dra_step", "predict"];

/// One (workload, size) by dra-rs (or, with `onnx`, tract on the exported graph), in a worker
/// process of its own.
pub(super) fn measure(
    args: &PerfArgs,
    workload: &str,
    size: usize,
    onnx: bool,
) -> Result<Measurement> {
    let out = Command::new(std::env::current_exe()?)
        .args(["perf-worker", "--workload", workload])
        .args(["--size", &size.to_string()])
        .args(["--reps", &args.reps.to_string(), "--device", &args.device])
        .args(["--backbone", &args.backbone.to_string()])
        .args(args.stock.then_some("--stock"))
        .args(args.no_winograd.then_some("--no-winograd"))
        .args(args.winograd_f2.then_some("--winograd-f2"))
        .args(args.reproducible.then_some("--reproducible"))
        .args(onnx.then_some("--onnx"))
        .args(
            args.save_onnx
                .iter()
                .flat_map(|dir| [std::ffi::OsStr::new("--save-onnx"), dir.as_os_str()]),
        )
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
