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
    /// The predict workload through tract on the exported graph instead of dra-rs.
    #[arg(long)]
    onnx: bool,
    /// Write the predict workload's exported graph into this folder.
    #[arg(long)]
    save_onnx: Option<std::path::PathBuf>,
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

/// A builder over detached copies of `varmap`'s tensors: a model built from it runs in eval
/// mode without recording an autograd graph, as a loaded run does.
fn detached(varmap: &VarMap, dev: &Device) -> VarBuilder<'static> {
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    VarBuilder::from_tensors(tensors, DType::F32, dev)
}

/// The predict workload by dra-rs: the scores and maps of the queries after the references,
/// as `dra predict` computes them.
fn predict_step(model: Dra, x: Tensor) -> Box<dyn FnMut() -> Result<()>> {
    Box::new(move || {
        let (scores, maps) = model.scores_and_maps(&x)?;
        scores.anomaly_score()?.sum_all()?.to_scalar::<f32>()?;
        maps.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    })
}

/// The predict workload by tract on the exported graph (the references baked in): the same
/// queries, every output computed.
#[cfg(feature = "onnx")]
fn onnx_step(bytes: &[u8], queries: &Tensor) -> Result<Box<dyn FnMut() -> Result<()>>> {
    use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoTensor};
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .into_optimized()?
        .into_runnable()?;
    let values = queries.flatten_all()?.to_vec1::<f32>()?;
    let input = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(
        queries.dims().to_vec(),
        values,
    )?
    .into_tensor();
    Ok(Box::new(move || {
        let outputs = plan.run(tvec!(input.clone().into()))?;
        std::hint::black_box(outputs);
        Ok(())
    }))
}

#[cfg(not(feature = "onnx"))]
fn onnx_step(_: &[u8], _: &Tensor) -> Result<Box<dyn FnMut() -> Result<()>>> {
    bail!("--onnx runs tract, which this xtask was built without: cargo run -p xtask --release --features onnx -- perf --workloads predict --onnx")
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
            let net = Backbone::new(args.backbone, kernels, detached(&varmap, &dev).pp("net"))?;
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
        "predict" => {
            let n_ref = 5;
            let config = ModelConfig {
                kernels,
                backbone: args.backbone,
                n_ref,
                ..Default::default()
            };
            Dra::new(config.clone(), vb)?;
            reset_parameters(&varmap, 0)?;
            // Eval mode over detached tensors, as a loaded run scores.
            let model = Dra::new(config, detached(&varmap, &dev))?;
            let x = Tensor::randn(0f32, 1., (n_ref + batch, 3, size, size), &dev)?;
            let exported = if args.onnx || args.save_onnx.is_some() {
                let references = x.narrow(0, 0, n_ref)?.to_device(&Device::Cpu)?;
                let detector = dra_model::Detector::Dra(Box::new(model.clone()));
                let model = detector.to_onnx(size, Some(&references), &[])?;
                Some(dra_model::onnx::encode(&model))
            } else {
                None
            };
            if let (Some(dir), Some(bytes)) = (&args.save_onnx, &exported) {
                std::fs::create_dir_all(dir)?;
                std::fs::write(
                    dir.join(format!("predict-{}-{size}.onnx", args.backbone)),
                    bytes,
                )?;
            }
            match exported {
                Some(bytes) if args.onnx => onnx_step(&bytes, &x.narrow(0, n_ref, batch)?)?,
                _ => predict_step(model, x),
            }
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
                (false, false, false) if args.onnx => "tract-onnx",
                (false, false, false) => "dra-rs",
            },
            if args.reproducible { "-portable" } else { "" }
        ),
        backbone: args.backbone.to_string(),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
