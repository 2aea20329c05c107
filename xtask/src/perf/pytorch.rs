//! `--pytorch`: the official PyTorch model (`tools/perf/torch_perf.py`) on the same workloads,
//! alternating with dra-rs round by round, and the speed ratio of each round.

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::measure::{measure, PerfArgs, WORKLOADS};

/// PyTorch's measurement of one (workload, size): the fields of `torch_perf.py`'s JSON line
/// that the comparison reads.
#[derive(Debug, Serialize, Deserialize)]
struct TorchMeasurement {
    seconds_median: f64,
    peak_rss_mb: f64,
    #[serde(rename = "impl")]
    version: String,
}

/// `tools/perf/torch_perf.py`.
fn torch_script() -> std::path::PathBuf {
    crate::workspace::root().join("tools/perf/torch_perf.py")
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
pub(super) fn compare(args: &PerfArgs) -> Result<()> {
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
                    ours.push(measure(args, workload, size, false)?);
                } else {
                    ours.push(measure(args, workload, size, false)?);
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
