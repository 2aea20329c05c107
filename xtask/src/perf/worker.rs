//! `perf-worker`: one measurement in a process of its own, printed as one JSON line.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use dra_model::backbones::{Backbone, BackboneKind};
use dra_model::ops::Arithmetic;
use dra_model::{reset_parameters, Dra, DraLoss, Kernels, LossKind, ModelConfig, Winograd};
use dra_train::engine::{trainable, Adam, AdamConfig};

use super::gpu_memory::GpuMemory;
use super::measure::{batch_for, Measurement, WORKLOADS};

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    pub(super) workload: String,
    #[arg(long)]
    pub(super) size: usize,
    #[arg(long)]
    pub(super) reps: usize,
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    #[arg(long)]
    pub(super) stock: bool,
    #[arg(long)]
    pub(super) no_winograd: bool,
    #[arg(long)]
    winograd_f2: bool,
    #[arg(long)]
    reproducible: bool,
    #[arg(long, default_value = "resnet18")]
    pub(super) backbone: BackboneKind,
}

pub(super) fn peak_rss_mb() -> f64 {
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
            arithmetic: Arithmetic::Native,
        },
        (false, false, true) => Kernels::Custom {
            winograd: Winograd::F2,
            arithmetic: Arithmetic::Native,
        },
        (false, false, false) => Kernels::default(),
    };
    let kernels = if args.reproducible {
        kernels.with_arithmetic(Arithmetic::Portable)
    } else {
        kernels
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
            let config = ModelConfig {
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
        kernels: format!(
            "{}{}",
            match (args.stock, args.no_winograd, args.winograd_f2) {
                (true, _, _) => "candle-stock",
                (false, true, _) => "dra-rs-im2col",
                (false, false, true) => "dra-rs-f2",
                (false, false, false) => "dra-rs",
            },
            if args.reproducible { "-portable" } else { "" }
        ),
        backbone: args.backbone.to_string(),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
