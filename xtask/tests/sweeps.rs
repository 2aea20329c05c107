//! The sweeps' promises, through the `xtask` binary on tiny runs of the embedded data: reruns
//! resume, a `kill -9` loses no finished run and redoes none, a run stopped by SIGTERM goes on
//! from its checkpoint, shards merge into the unsharded table.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A run of a few seconds: one category, two steps of 32-px images.
const TINY: &[&str] = &[
    "--datasets",
    "synthetic/weave",
    "--shots",
    "1",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--n-scales",
    "1",
    "--image-size",
    "32",
    "--batch-size",
    "6",
];

fn xtask(args: &[&str], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .args(TINY)
        .args(extra)
        .output()
        .expect("xtask runs")
}

fn ok(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn data_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

#[test]
fn reruns_resume_and_shards_merge_into_the_unsharded_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    let (full, sh1, sh2, merged) = (dir("full"), dir("sh1"), dir("sh2"), dir("merged"));

    ok(xtask(
        &["bench-general", "--runs", "2", "--out", &full],
        &[],
    ));
    let runs = Path::new(&full).join("runs.csv");
    let first = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(data_lines(&runs).len(), 2);
    let table = std::fs::read_to_string(Path::new(&full).join("table.md")).unwrap();
    assert!(table.contains("| synthetic/weave | 0."), "{table}");

    let again = ok(xtask(
        &["bench-general", "--runs", "2", "--out", &full],
        &[],
    ));
    assert!(again.contains("2 run(s) already done, 0 to run"), "{again}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), first);

    for (shard, out) in [("1/2", &sh1), ("2/2", &sh2)] {
        ok(xtask(
            &[
                "bench-general",
                "--runs",
                "2",
                "--shard",
                shard,
                "--out",
                out,
            ],
            &[],
        ));
        assert_eq!(data_lines(&Path::new(out).join("runs.csv")).len(), 1);
        // A shard's table says that it is a part, and which run each cell holds, not a
        // spread of ±0.000 over "2 runs".
        let table = std::fs::read_to_string(Path::new(out).join("table.md")).unwrap();
        assert!(
            table.contains("a part of the sweep, 1 of its 2 runs"),
            "{table}"
        );
        assert!(
            table.contains("only)") && !table.contains("±0.000"),
            "{table}"
        );
    }
    ok(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["merge", &sh1, &sh2, "--out", &merged])
        .output()
        .unwrap());
    let merged_table = std::fs::read_to_string(Path::new(&merged).join("table.md")).unwrap();
    let full_table = std::fs::read_to_string(Path::new(&full).join("table.md")).unwrap();
    assert_eq!(merged_table, full_table);

    // Shards of different grids do not merge.
    let other = dir("other");
    ok(xtask(
        &["bench-general", "--runs", "1", "--out", &other],
        &[],
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["merge", &sh1, &other, "--out", &dir("bad")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another grid"), "{err}");

    // A changed setting is another configuration: the cells are run again.
    let changed = ok(xtask(
        &["bench-general", "--runs", "2", "--out", &full],
        &["--lr", "0.002"],
    ));
    assert!(!changed.contains("already done"), "{changed}");
    assert_ne!(std::fs::read_to_string(&runs).unwrap(), first);
}

#[test]
fn a_killed_sweep_loses_no_finished_run_and_redoes_none() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep").to_string_lossy().into_owned();
    let runs = Path::new(&out).join("runs.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench-hard", "--runs", "4", "--out", &out])
        .args(TINY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while data_lines(&runs).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no run finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = data_lines(&runs);
    assert!(!before.is_empty() && before.len() < 4, "{before:?}");

    let rerun = ok(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench-hard", "--runs", "4", "--out", &out])
        .args(TINY)
        .output()
        .unwrap());
    let after = data_lines(&runs);
    assert_eq!(after.len(), 4);
    // The finished rows are kept byte for byte (their wall time included): none was redone.
    for row in &before {
        assert!(after.contains(row), "{row} lost from {after:?}");
    }
    assert!(
        rerun.contains(&format!("{} run(s) already done", before.len()))
            || rerun.contains(&format!("{} run(s) already done", before.len() + 1)),
        "{rerun}"
    );
    let table = std::fs::read_to_string(Path::new(&out).join("table.md")).unwrap();
    assert!(table.contains("synthetic/weave / hole"), "{table}");
    assert!(table.contains("synthetic/weave / Mean"), "{table}");
}

#[test]
fn a_sweep_stopped_mid_run_goes_on_from_the_runs_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // One run of six steps (two epochs of three), so that a stop falls inside it.
    let sweep = |out: &str| -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(["bench-general", "--runs", "1", "--out", out]);
        c.args([
            "--datasets",
            "synthetic/weave",
            "--shots",
            "1",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "3",
            "--n-scales",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "6",
        ]);
        c
    };
    let whole = tmp.path().join("whole").to_string_lossy().into_owned();
    ok(sweep(&whole).output().unwrap());

    let out = tmp.path().join("stopped").to_string_lossy().into_owned();
    let child = sweep(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runs_dir = Path::new(&out).join("runs");
    let log = || -> Option<std::path::PathBuf> {
        let run = std::fs::read_dir(&runs_dir).ok()?.next()?.ok()?.path();
        Some(run.join("train_log.csv"))
    };
    let start = Instant::now();
    while log().is_none_or(|l| data_lines(&l).len() < 2) {
        assert!(start.elapsed() < Duration::from_secs(300), "no step 2");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's id, which it keeps until we wait for it.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopped = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&stopped.stdout);
    assert_eq!(stopped.status.code(), Some(130), "{said}");
    assert!(said.contains("stopped after step"), "{said}");
    let run = log().unwrap().parent().unwrap().to_path_buf();
    assert!(run.join("checkpoint.safetensors").is_file());
    assert!(data_lines(&Path::new(&out).join("runs.csv")).is_empty());

    let again = ok(sweep(&out).output().unwrap());
    assert!(again.contains("goes on from its checkpoint"), "{again}");
    let whole_run = Path::new(&whole)
        .join("runs")
        .join(run.file_name().unwrap());
    for file in ["model.safetensors", "scores.csv"] {
        assert!(
            std::fs::read(run.join(file)).unwrap() == std::fs::read(whole_run.join(file)).unwrap(),
            "{file}: the resumed run differs from the run never stopped"
        );
    }
    assert_eq!(data_lines(&Path::new(&out).join("runs.csv")).len(), 1);
}

#[test]
fn the_ablation_renders_a_row_per_head_subset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ablation");
    let stdout = ok(xtask(
        &[
            "bench-ablation",
            "--runs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    ));
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for variant in [
        "DRA1A (seen)",
        "DRA2A (seen,pseudo)",
        "DRA3Ar (seen,pseudo,residual)",
        "DRA3An (normal,seen,pseudo)",
        "DRA (normal,seen,pseudo,residual)",
    ] {
        assert!(
            table.contains(&format!("{variant} · synthetic/weave")),
            "{variant}: {table}"
        );
    }
    assert!(stdout.contains("bench-ablation"), "{stdout}");
    assert_eq!(data_lines(&out.join("runs.csv")).len(), 5);
    // Each run recorded its heads; the full DRA's config.json has none (all four).
    let record = std::fs::read_to_string(
        out.join("runs/synthetic_weave-DRA2A-dra-deviation-1shot-seed0/config.json"),
    )
    .unwrap();
    assert!(record.contains("\"heads\": \"seen,pseudo\""), "{record}");
    let scores = std::fs::read_to_string(
        out.join("runs/synthetic_weave-DRA2A-dra-deviation-1shot-seed0/scores.csv"),
    )
    .unwrap();
    let row: Vec<&str> = scores.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(
        (row[4], row[7]),
        ("NaN", "NaN"),
        "g_n and g_r are not in DRA2A"
    );
    assert!(out.join("table.html").is_file());
}

#[test]
fn the_pseudo_study_renders_a_row_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pseudo");
    // TINY's settings with ten shots (the weave's 12 holes allow it): Table 4 is 10-shot.
    let mut args = vec![
        "bench-pseudo",
        "--runs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(TINY);
    let shots = args.iter().position(|a| *a == "--shots").unwrap();
    args[shots + 1] = "10";
    ok(Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(&args)
        .output()
        .expect("xtask runs"));
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for source in ["cp-scar", "cp-mix", "cutmix"] {
        assert!(
            table.contains(&format!(
                "{source} · synthetic/weave (mean of 1 known-class subsets)"
            )),
            "{source}: {table}"
        );
    }
    assert_eq!(data_lines(&out.join("runs.csv")).len(), 3);
    // Beside the embedded data, Table 4's mean over its data sets, for reference (no Δ):
    // CutMix (.935 + .733 + .766 + .751) / 4, CP-Scar (.850 + .611 + .710 + .824) / 4.
    assert!(
        table.contains("(0.796)") && table.contains("(0.749)"),
        "{table}"
    );
    assert!(
        table.contains("for the shape of the comparison only"),
        "{table}"
    );
    let record = std::fs::read_to_string(
        out.join("runs/synthetic_weave-hole+cp-mix-dra-deviation-10shot-seed0/config.json"),
    )
    .unwrap();
    assert!(record.contains("\"pseudo\": \"cp-mix\""), "{record}");
}
