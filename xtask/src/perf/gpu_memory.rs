//! Peak GPU memory of a process, as `nvidia-smi` reports it (the same measure as
//! `tools/perf/torch_perf.py` takes of PyTorch).

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};

/// The most device memory this process holds on the GPU, as `nvidia-smi` reports it (the same
/// measure as `tools/perf/torch_perf.py` takes of PyTorch), polled by a thread of its own.
pub(super) struct GpuMemory {
    peak_mb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl GpuMemory {
    pub(super) fn poll() -> Self {
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

    pub(super) fn peak_mb(self) -> f64 {
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
