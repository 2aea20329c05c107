//! A long run loses nothing when it is stopped (issue 30): SIGTERM stops `dra train` at a step
//! boundary with a checkpoint, a `kill -9` leaves the last one, and `dra train --resume` ends
//! with the very bytes of a run that was never stopped (weights, stored references, scores,
//! metrics but their timings, the training log but its clock): for DRA, a baseline and AHL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dra_data::synthetic::{self, SyntheticSpec};
use dra_train::record::{CHECKPOINT_FILE, METRICS_FILE, TRAIN_LOG_FILE};

use super::common::run;

/// Six steps (two epochs of three) of 32-px images, one scale; AHL with a short phase.
fn args<'a>(data: &'a str, out: &'a str, method: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic/washer",
        "--dataset-dir",
        data,
        "--out",
        out,
        "--method",
        method,
        "--profile",
        "quick",
        "--image-size",
        "32",
        "--n-scales",
        "1",
        "--batch-size",
        "6",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--seed",
        "4",
        "--quiet",
    ];
    if method == "ahl" {
        args.extend([
            "--ahl-epochs",
            "2",
            "--ahl-inner-steps",
            "2",
            "--ahl-query-batches",
            "1",
        ]);
    }
    args
}

/// Starts `dra` and waits until the run's log holds `steps` steps.
fn start_and_wait(args: &[&str], out: &Path, steps: usize) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dra runs");
    let start = Instant::now();
    let logged = || {
        std::fs::read_to_string(out.join(TRAIN_LOG_FILE))
            .map_or(0, |t| t.lines().count().saturating_sub(1))
    };
    while logged() < steps {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dra ended ({status}) before step {steps}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no step {steps}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// What must be equal between a stopped-and-resumed run and an uninterrupted one: every file
/// but the report, byte for byte, with the timings taken out of metrics.json and the clock
/// column out of train_log.csv.
fn fingerprint(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for name in [
        "model.safetensors",
        "references.safetensors",
        "scores.csv",
        "config.json",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        files.push((name.to_string(), bytes));
    }
    let metrics = std::fs::read_to_string(dir.join(METRICS_FILE)).unwrap();
    let metrics: String = metrics
        .lines()
        .filter(|l| !l.contains("_seconds"))
        .collect();
    files.push((METRICS_FILE.into(), metrics.into_bytes()));
    let log = std::fs::read_to_string(dir.join(TRAIN_LOG_FILE)).unwrap();
    let log: String = log
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    files.push((TRAIN_LOG_FILE.into(), log.into_bytes()));
    files
}

fn assert_same(a: &Path, b: &Path) {
    for ((name, x), (_, y)) in fingerprint(a).into_iter().zip(fingerprint(b)) {
        assert!(
            x == y,
            "{name} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn a_run_stopped_with_sigterm_goes_on_to_the_bytes_of_one_never_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::ensure(tmp.path(), &SyntheticSpec::default()).unwrap();
    let data = tmp.path().to_str().unwrap();
    for method in ["dra", "devnet", "ahl"] {
        let whole = tmp.path().join(format!("{method}-whole"));
        let (ok, _, err) = run(&args(data, whole.to_str().unwrap(), method));
        assert!(ok, "{method}: {err}");
        assert!(
            !whole.join(CHECKPOINT_FILE).exists(),
            "a finished run keeps its checkpoint"
        );

        let out = tmp.path().join(format!("{method}-stopped"));
        let out_s = out.to_str().unwrap();
        let child = start_and_wait(&args(data, out_s, method), &out, 2);
        // SAFETY: kill(2) on our own child's id, which it keeps until we wait for it.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let stopped = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&stopped.stderr);
        assert_eq!(stopped.status.code(), Some(130), "{method}: {err}");
        assert!(
            err.contains(&format!("dra train --resume {out_s}")),
            "{method}: {err}"
        );
        assert!(out.join(CHECKPOINT_FILE).is_file(), "{method}: {err}");
        assert!(!out.join(METRICS_FILE).exists(), "{method}: looks finished");

        // The folder is not trained over by mistake; --resume goes on with it.
        let (ok, _, err) = run(&args(data, out_s, method));
        assert!(!ok && err.contains("--resume"), "{method}: {err}");
        let (ok, _, err) = run(&["train", "--resume", out_s, "--quiet"]);
        assert!(ok, "{method}: {err}");
        assert_same(&whole, &out);
        assert!(!out.join(CHECKPOINT_FILE).exists());
        let (ok, _, err) = run(&["train", "--resume", out_s, "--quiet"]);
        assert!(!ok && err.contains("has finished"), "{method}: {err}");
    }
}

#[test]
fn a_run_killed_outright_goes_on_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    synthetic::ensure(tmp.path(), &SyntheticSpec::default()).unwrap();
    let data = tmp.path().to_str().unwrap();
    let whole = tmp.path().join("whole");
    let (ok, _, err) = run(&args(data, whole.to_str().unwrap(), "dra"));
    assert!(ok, "{err}");

    // A checkpoint every 2 steps, killed (SIGKILL: no chance to write one) at step 3 or later:
    // the log may hold steps past the checkpoint, which the resumed run takes again.
    let out = tmp.path().join("killed");
    let out_s = out.to_str().unwrap();
    let mut a = args(data, out_s, "dra");
    a.extend(["--checkpoint-every", "2"]);
    let mut child = start_and_wait(&a, &out, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.join(CHECKPOINT_FILE).is_file());
    let (ok, _, err) = run(&["train", "--resume", out_s, "--quiet"]);
    assert!(ok, "{err}");
    assert_same(&whole, &out);
}

#[test]
fn resume_refuses_what_it_cannot_go_on_with() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty_s = empty.to_str().unwrap();
    for (args, expect) in [
        (
            vec!["train", "--resume", empty_s],
            "holds no checkpoint.safetensors",
        ),
        (
            vec![
                "train",
                "--resume",
                tmp.path().join("none").to_str().unwrap(),
            ],
            "no such run folder",
        ),
        (
            vec!["train", "--resume", empty_s, "--epochs", "3"],
            "settings it started with",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok);
        let line = super::common::one_line(&err);
        assert!(line.contains("--resume") && line.contains(expect), "{line}");
    }
    // Another data set's settings with --resume: clap's refusal names both flags.
    let (ok, _, err) = run(&[
        "train",
        "--resume",
        empty_s,
        "--dataset",
        "synthetic/washer",
    ]);
    assert!(
        !ok && err.contains("--resume") && err.contains("--dataset"),
        "{err}"
    );
}
