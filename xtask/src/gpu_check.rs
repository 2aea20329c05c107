//! `cargo xtask gpu-check`: the whole check of a GPU in one command, its results in one folder.
//!
//! 1. the GPU, as `nvidia-smi` names it;
//! 2. the binaries built with `--features cuda` (into `target/cuda`, so that the CPU build is
//!    left alone; `$CARGO_TARGET_DIR/cuda` where that is set), or taken from a folder that `--pack` filled on another machine;
//! 3. the parity tests against PyTorch's fixtures (`parity`) and the whole DRA step of both
//!    backbones against the CPU kernels (`device`), modules of dra-train's integration tests,
//!    on the GPU (`DRA_TEST_DEVICE=cuda`);
//! 4. `perf --device cuda` for both backbones at each size, and PyTorch's counterpart
//!    (`tools/perf/torch_perf.py --device cuda`) where torch sees a GPU;
//! 5. `summary.md`: all of it, with dra-rs against PyTorch side by side; also printed.
//!
//! A GPU machine may have no Rust (this project's lent machines have a CUDA toolkit and
//! PyTorch, no cargo): `--pack DIR` then builds the binaries here, where no GPU is needed to
//! compile and link them, and `DIR/xtask gpu-check --bundle DIR` runs the check there from
//! the repository's root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::perf::{nvidia_smi, Measurement};

#[derive(Args)]
pub struct GpuCheckArgs {
    /// Folder for the results: one log per step, the perf figures (JSON lines), summary.md.
    #[arg(long, default_value = "results/gpu-check")]
    out: PathBuf,
    /// Image sizes of the perf runs.
    #[arg(long, value_delimiter = ',', default_value = "128,224,448")]
    sizes: Vec<usize>,
    /// Timed repetitions of each perf workload (after one warm-up).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Build the CUDA binaries into this folder and stop, on a machine without a GPU.
    #[arg(long, conflicts_with = "bundle")]
    pack: Option<PathBuf>,
    /// Run with the binaries that `--pack` put in this folder instead of building them.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Leave out PyTorch's counterpart.
    #[arg(long)]
    no_torch: bool,
}

/// dra-train's integration-test binary (target name), and the modules of it that the check runs
/// on the GPU.
const TEST_BINARY: &str = "integration";
const TESTS: [&str; 2] = ["parity", "device"];
const BACKBONES: [&str; 2] = ["resnet18", "mobilenet_v2"];

/// The executables of one CUDA build.
struct Binaries {
    xtask: PathBuf,
    /// The integration-test binary.
    tests: PathBuf,
}

pub fn gpu_check(args: GpuCheckArgs) -> Result<()> {
    if let Some(dir) = &args.pack {
        return pack(dir);
    }
    if args.sizes.is_empty() || args.reps == 0 {
        bail!("--sizes and --reps: give at least one size and one repetition");
    }
    let root = match &args.bundle {
        // A packed binary was built elsewhere: the repository is where it runs from.
        Some(_) => std::env::current_dir()?,
        None => crate::workspace::root(),
    };
    if !root.join("crates/dra-train/tests/fixtures").is_dir() {
        bail!(
            "gpu-check: run it from the repository's root ({} has no crates/dra-train/tests/fixtures)",
            root.display()
        );
    }
    let gpu = nvidia_smi(&[
        "--query-gpu=name,driver_version,memory.total",
        "--format=csv,noheader",
    ])
    .context("gpu-check: no NVIDIA GPU here (nvidia-smi did not answer)")?;
    fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let mut summary = format!("# gpu-check\n\nGPU: {}\n\n", gpu.trim());

    let (bins, origin) = match &args.bundle {
        Some(dir) => (bundled(dir)?, "packed by `gpu-check --pack`"),
        None => (
            build(&root, &args.out.join("build.log"))?,
            "built with `--features cuda` into the target folder's `cuda/`",
        ),
    };
    summary.push_str(&format!("Binaries: {origin}\n\n"));

    summary.push_str("## Tests on the GPU\n\n| test | result |\n|---|---|\n");
    let mut failed = Vec::new();
    for name in TESTS {
        let log = args.out.join(format!("test-{name}.log"));
        let mut cmd = Command::new(&bins.tests);
        cmd.current_dir(root.join("crates/dra-train"))
            .env("DRA_TEST_DEVICE", "cuda")
            .env("CARGO_MANIFEST_DIR", root.join("crates/dra-train"))
            .args([format!("{name}::"), "--test-threads".into(), "1".into()]);
        let (ok, text) = logged(&mut cmd, &log)?;
        let result = text
            .lines()
            .rfind(|l| l.starts_with("test result:"))
            .unwrap_or("no result line: see the log")
            .to_string();
        // A filter that matches no test passes with nothing run: that is no check.
        if !ok || !result.contains(" passed") || result.contains(" 0 passed") {
            failed.push(name.to_string());
        }
        summary.push_str(&format!("| {name} | {result} |\n"));
    }

    let mut ours = Vec::new();
    let mut torch = Vec::new();
    let sizes = args
        .sizes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let torch_ready = !args.no_torch && torch_sees_a_gpu();
    let reps = args.reps.to_string();
    for backbone in BACKBONES {
        let options = [
            "--device",
            "cuda",
            "--sizes",
            &sizes,
            "--reps",
            &reps,
            "--backbone",
            backbone,
        ];
        let mut cmd = Command::new(&bins.xtask);
        cmd.args(["perf", "--json"]).args(options);
        let log = args.out.join(format!("perf-dra-rs-{backbone}.log"));
        let side = perf_side(
            &mut cmd,
            &root,
            &log,
            format!("perf {backbone}"),
            &mut failed,
        )?;
        ours.extend(side);
        if torch_ready {
            let mut cmd = Command::new("python3");
            cmd.arg("tools/perf/torch_perf.py").args(options);
            let log = args.out.join(format!("perf-torch-{backbone}.log"));
            let what = format!("torch perf {backbone}");
            torch.extend(perf_side(&mut cmd, &root, &log, what, &mut failed)?);
        }
    }
    let jsonl = |rows: &[Measurement]| -> Result<String> {
        rows.iter()
            .map(|m| Ok(serde_json::to_string(m)? + "\n"))
            .collect()
    };
    fs::write(args.out.join("perf-dra-rs.jsonl"), jsonl(&ours)?)?;
    fs::write(args.out.join("perf-torch.jsonl"), jsonl(&torch)?)?;
    summary.push_str(&perf_table(&ours, &torch, torch_ready));
    if !failed.is_empty() {
        summary.push_str(&format!(
            "\n**Failed**: {} (see the logs beside this file)\n",
            failed.join(", ")
        ));
    }
    fs::write(args.out.join("summary.md"), &summary)?;
    println!("{summary}");
    eprintln!("gpu-check: results in {}", args.out.display());
    if !failed.is_empty() {
        bail!("gpu-check: failed: {}", failed.join(", "));
    }
    Ok(())
}

/// dra-rs against PyTorch, one row per backbone, workload and size.
fn perf_table(ours: &[Measurement], torch: &[Measurement], torch_ran: bool) -> String {
    let mut t = String::from(
        "\n## Throughput and memory on the GPU\n\n\
         | backbone | workload | size | batch | dra-rs s | PyTorch s | dra-rs / PyTorch speed | \
         dra-rs GPU MB | PyTorch GPU MB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mb = |m: Option<&Measurement>| {
        m.and_then(|m| m.peak_gpu_mb)
            .map_or("-".to_string(), |v| format!("{v:.0}"))
    };
    for m in ours {
        let theirs = torch.iter().find(|t| {
            (t.backbone.as_str(), t.workload.as_str(), t.size)
                == (m.backbone.as_str(), m.workload.as_str(), m.size)
        });
        t.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} | {} | {} | {} | {} |\n",
            m.backbone,
            m.workload,
            m.size,
            m.batch,
            m.seconds_median,
            theirs.map_or("-".into(), |x| format!("{:.4}", x.seconds_median)),
            theirs.map_or("-".into(), |x| format!(
                "{:.2}×",
                x.seconds_median / m.seconds_median
            )),
            mb(Some(m)),
            mb(theirs),
        ));
    }
    if !torch_ran {
        t.push_str("\nPyTorch's counterpart did not run (--no-torch, or torch sees no GPU).\n");
    }
    t
}

/// Runs one side's perf command from `root`, logged to `log`: its measurements, with `what`
/// added to `failed` when it failed.
fn perf_side(
    cmd: &mut Command,
    root: &Path,
    log: &Path,
    what: String,
    failed: &mut Vec<String>,
) -> Result<Vec<Measurement>> {
    let (ok, text) = logged(cmd.current_dir(root), log)?;
    if !ok {
        failed.push(what);
    }
    Ok(measurements(&text))
}

/// The JSON lines of a perf run's output.
fn measurements(text: &str) -> Vec<Measurement> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `cmd`, writing its output (stdout, then stderr) to `log`; its success and stdout.
fn logged(cmd: &mut Command, log: &Path) -> Result<(bool, String)> {
    eprintln!("gpu-check: {:?}", cmd.get_program());
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("gpu-check: cannot run {:?}", cmd.get_program()))?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    fs::write(log, format!("{stdout}\n--- stderr ---\n{stderr}"))
        .with_context(|| format!("cannot write {}", log.display()))?;
    Ok((out.status.success(), stdout.into_owned()))
}

fn torch_sees_a_gpu() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Builds xtask and the test binaries with `--features cuda` into `cuda/` of the target
/// folder (`CARGO_TARGET_DIR` or `target`), logging cargo's output to `log`. A folder of its
/// own: built into the CPU build's, the CUDA binaries would replace the CPU ones.
fn build(root: &Path, log: &Path) -> Result<Binaries> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("cuda");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut text = String::new();
    let mut run = |args: &[&str]| -> Result<String> {
        eprintln!("gpu-check: cargo {}", args.join(" "));
        let out = Command::new(&cargo)
            .current_dir(root)
            .args(args)
            .arg("--target-dir")
            .arg(&target)
            .output()
            .context("gpu-check: cannot run cargo")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        text.push_str(&stderr);
        fs::write(log, &text)?;
        if !out.status.success() {
            bail!(
                "gpu-check: the CUDA build failed (docs/cuda.md says what it needs): {}",
                log.display()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["build", "--release", "-p", "xtask", "--features", "cuda"])?;
    let mut args = vec![
        "test",
        "--release",
        "-p",
        "dra-train",
        "--features",
        "cuda",
        "--no-run",
        "--message-format",
        "json",
    ];
    args.extend(["--test", TEST_BINARY]);
    let messages = run(&args)?;
    let mut tests = None;
    for line in messages.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            v["target"]["name"].as_str(),
            v["executable"]
                .as_str()
                .filter(|_| v["profile"]["test"] == true),
        ) else {
            continue;
        };
        if name == TEST_BINARY {
            tests = Some(PathBuf::from(exe));
        }
    }
    let Some(tests) = tests else {
        bail!("gpu-check: cargo did not build the test binary `{TEST_BINARY}`");
    };
    Ok(Binaries {
        xtask: target.join("release/xtask"),
        tests,
    })
}

/// Builds the binaries and copies them, stripped, into `dir`.
fn pack(dir: &Path) -> Result<()> {
    let root = crate::workspace::root();
    fs::create_dir_all(dir).with_context(|| format!("--pack: cannot create {}", dir.display()))?;
    let bins = build(&root, &dir.join("build.log"))?;
    let copies = [
        ("xtask".to_string(), bins.xtask),
        (TEST_BINARY.to_string(), bins.tests),
    ];
    for (name, from) in copies {
        let to = dir.join(&name);
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        // Debug information is most of a binary's size; without `strip` the copy stays whole.
        let _ = Command::new("strip").arg(&to).status();
        let size = fs::metadata(&to)?.len();
        eprintln!(
            "gpu-check: packed {} ({:.1} MB)",
            to.display(),
            size as f64 / 1e6
        );
    }
    eprintln!(
        "gpu-check: on the GPU machine, from the repository's root, with the CUDA libraries on \
         LD_LIBRARY_PATH: {}/xtask gpu-check --bundle {} --out DIR",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// The binaries in a folder filled by `--pack`.
fn bundled(dir: &Path) -> Result<Binaries> {
    let file = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "--bundle: {} is missing (fill the folder with gpu-check --pack)",
                path.display()
            );
        }
        Ok(path)
    };
    Ok(Binaries {
        xtask: file("xtask")?,
        tests: file(TEST_BINARY)?,
    })
}
