//! Nothing a user trained is lost (issue 30): `dra train`, `dra eval` and `dra predict` refuse
//! a folder that holds results unless told `--overwrite`, and every command that writes (those
//! and `dra calibrate`) a folder that another process is writing, each with a one-line error
//! naming the folder; what was there stays as it was.

use std::path::Path;

use dra_data::synthetic::{self, SyntheticSpec};

use super::common::{one_line, run};

/// A one-step run of 48-px images into `out` (with `extra` flags): success and standard error.
fn train(data: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec![
        "train",
        "--dataset",
        "synthetic/washer",
        "--dataset-dir",
        data,
        "--out",
        out,
        "--profile",
        "quick",
        "--image-size",
        "48",
        "--n-scales",
        "1",
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let (ok, _, stderr) = run(&args);
    (ok, stderr)
}

#[test]
fn a_run_is_replaced_only_with_overwrite_and_a_busy_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let out = dir.path().join("run");
    let model = || std::fs::read(out.join("model.safetensors")).unwrap();

    let (ok, err) = train(dir.path(), &out, &[]);
    assert!(ok, "{err}");
    let first = model();

    // Again into the same folder: refused, naming it and the way out; nothing changed.
    let (ok, err) = train(dir.path(), &out, &["--seed", "5"]);
    assert!(!ok, "a second run replaced the first without --overwrite");
    let line = one_line(&err);
    assert!(line.contains(out.to_str().unwrap()), "{line}");
    assert!(line.contains("--overwrite"), "{line}");
    assert_eq!(model(), first);
    assert!(out.join("metrics.json").exists());

    // With --overwrite the new run replaces it.
    let (ok, err) = train(dir.path(), &out, &["--seed", "5", "--overwrite"]);
    assert!(ok, "{err}");
    let second = model();
    assert_ne!(second, first, "another seed trains another model");

    // While another process holds the folder's lock, a writer is refused, even with
    // --overwrite, and the folder keeps its run.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(dra_train::record::LOCK_FILE))
        .unwrap();
    lock.lock().unwrap();
    let (ok, err) = train(dir.path(), &out, &["--overwrite"]);
    assert!(!ok, "a second writer ran while the folder was locked");
    let line = one_line(&err);
    assert!(
        line.contains(out.to_str().unwrap()) && line.contains("another dra process"),
        "{line}"
    );
    assert_eq!(model(), second);

    // The commands that use the run: none writes where another process writes.
    let run_s = out.to_str().unwrap();
    let good = dir.path().join("washer/test/good");
    let normals = good.to_str().unwrap();
    let (ok, _, err) = run(&["calibrate", "--model", run_s, "--normals", normals]);
    assert!(
        !ok && one_line(&err).contains("another dra process"),
        "{err}"
    );
    assert!(!out.join("threshold.json").exists());
    drop(lock);

    // `dra eval --out`: an earlier evaluation is replaced only with --overwrite.
    let eval_out = dir.path().join("eval");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--model",
            run_s,
            "--dataset",
            "synthetic/washer",
            "--dataset-dir",
            dir.path().to_str().unwrap(),
            "--out",
            eval_out.to_str().unwrap(),
            "--fixed-references",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, _, err) = eval(&[]);
    assert!(ok, "{err}");
    let scores = std::fs::read(eval_out.join("scores.csv")).unwrap();
    std::fs::write(eval_out.join("note.txt"), "mine").unwrap();
    let (ok, _, err) = eval(&[]);
    let line = one_line(&err);
    assert!(
        !ok && line.contains("earlier results") && line.contains("--overwrite"),
        "{line}"
    );
    let (ok, _, err) = eval(&["--overwrite"]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(eval_out.join("scores.csv")).unwrap(), scores);
    // What is not a run's file is the user's, and stays.
    assert!(eval_out.join("note.txt").exists());

    // `dra predict --out`: overlays of the same names are replaced only with --overwrite.
    let maps = dir.path().join("maps");
    let image = std::fs::read_dir(&good)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predict = |extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--model",
            run_s,
            "--out",
            maps.to_str().unwrap(),
            image.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, _, err) = predict(&[]);
    assert!(ok, "{err}");
    let (ok, _, err) = predict(&[]);
    let line = one_line(&err);
    assert!(
        !ok && line.contains("_heatmap.png") && line.contains("--overwrite"),
        "{line}"
    );
    let (ok, _, err) = predict(&["--overwrite"]);
    assert!(ok, "{err}");
}
