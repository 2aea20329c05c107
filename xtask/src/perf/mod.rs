//! `cargo xtask perf`: throughput and peak memory of the training and evaluation workloads.
//!
//! Each (workload, size) runs in a child process of its own, so that its peak resident memory
//! (`VmHWM`) is its own. A warm-up repetition, then `reps` timed ones; the median is reported.
//! With `--pytorch`, the official PyTorch model (`tools/perf/torch_perf.py`) runs the same
//! workloads in turn with dra-rs, round after round, and each round's speed ratio is reported.
//!
//! `measure` runs one measurement in a child process (`worker`, which peaks its own memory,
//! polled on a GPU by `gpu_memory`); `pytorch` runs the official model's side and compares.
//! `perf-data` (`data`) measures whole training runs against the data set's size and the
//! image cache's.

mod data;
mod gpu_memory;
mod measure;
mod pytorch;
mod worker;

use anyhow::Result;

pub use data::{perf_data, perf_data_worker, DataArgs, DataWorkerArgs};
pub(crate) use gpu_memory::nvidia_smi;
pub use measure::{Measurement, PerfArgs};
pub use worker::{worker, WorkerArgs};

use measure::measure;

pub fn perf(args: PerfArgs) -> Result<()> {
    if args.pytorch {
        return pytorch::compare(&args);
    }
    let mut rows = Vec::new();
    for &size in &args.sizes {
        for workload in &args.workloads {
            // The exported graph in tract beside dra-rs, on the same batch.
            let sides: &[bool] = if args.onnx && workload == "predict" {
                &[false, true]
            } else {
                &[false]
            };
            for &onnx in sides {
                let m = measure(&args, workload, size, onnx)?;
                if args.json {
                    println!("{}", serde_json::to_string(&m)?);
                } else {
                    let gpu = m
                        .peak_gpu_mb
                        .map_or(String::new(), |mb| format!(", GPU {mb:.0} MB"));
                    eprintln!(
                        "{workload} {size} px ({}): {:.2} img/s, peak {:.0} MB{gpu}",
                        m.kernels, m.img_per_s, m.peak_rss_mb
                    );
                }
                rows.push(m);
            }
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
