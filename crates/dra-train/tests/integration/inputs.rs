//! Trusting the inputs, through the `dra` program: an image file that does not decode stops
//! `train`, `eval` and `predict` with a one-line error naming it, or with `--skip-unreadable` is
//! left out and listed; nothing is dropped in silence. Failed writes name the path and never
//! leave a run directory that looks finished.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::common::{one_line, run as dra};

use dra_test_support::bytes::npy_v1;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn png_bytes(shade: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    RgbImage::from_fn(40, 40, |x, y| Rgb([shade, (x * 6) as u8, (y * 6) as u8]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A 40 × 40 × 3 `uint8` NumPy array, as `np.save` writes it.
fn npy_bytes(shade: u8) -> Vec<u8> {
    let body: Vec<u8> = (0..40 * 40 * 3)
        .map(|i| shade.wrapping_add((i % 7) as u8))
        .collect();
    npy_v1(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (40, 40, 3), }",
        &body,
    )
}

/// The four kinds of broken file, by name and content.
fn broken_files() -> Vec<(&'static str, Vec<u8>)> {
    let png = png_bytes(50);
    vec![
        ("zero.png", Vec::new()),
        ("truncated.png", png[..png.len() / 2].to_vec()),
        (
            "garbage.jpg",
            b"just some bytes that are no JPEG at all".to_vec(),
        ),
        (
            "garbage.npy",
            b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'shape': (9,".to_vec(),
        ),
    ]
}

/// A category in MVTec layout under `<root>/mvtec_anomaly_detection/toy`.
fn toy(root: &Path) -> PathBuf {
    let cat = root.join("mvtec_anomaly_detection/toy");
    for (dir, n, shade) in [
        ("train/good", 6, 100),
        ("test/good", 3, 100),
        ("test/crack", 3, 10),
    ] {
        std::fs::create_dir_all(cat.join(dir)).unwrap();
        for i in 0..n {
            std::fs::write(
                cat.join(format!("{dir}/{i}.png")),
                png_bytes(shade + i as u8),
            )
            .unwrap();
        }
    }
    cat
}

/// The smallest training that runs the whole pipeline.
const TINY: &[&str] = &[
    "--profile",
    "quick",
    "--image-size",
    "32",
    "--n-scales",
    "1",
    "--epochs",
    "1",
    "--steps-per-epoch",
    "1",
    "--batch-size",
    "4",
    "--n-ref",
    "2",
    "--n-anomaly",
    "1",
    "--eval-batch-size",
    "8",
    "--quiet",
];

fn train(root: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "train",
        "--data-root",
        s(root),
        "--dataset",
        "mvtec/toy",
        "--out",
        s(out),
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    dra(&args)
}

fn eval(root: &Path, model: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "eval",
        "--model",
        s(model),
        "--data-root",
        s(root),
        "--dataset",
        "mvtec/toy",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    dra(&args)
}

#[test]
fn unreadable_images_stop_every_command_or_are_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cat = toy(root);
    let model = root.join("model");
    let (ok, _, err) = train(root, &model, &[]);
    assert!(ok, "{err}");

    for place in ["train/good", "test/crack"] {
        for (name, bytes) in broken_files() {
            let bad = cat.join(place).join(name);
            std::fs::write(&bad, &bytes).unwrap();
            let named = format!("{place}/{name}");
            let (ok, _, err) = train(root, &root.join("run"), &[]);
            assert!(!ok, "train accepted {named}");
            let line = one_line(&err);
            assert!(
                line.contains(&named) && line.contains("--skip-unreadable"),
                "{named}: {line}"
            );
            assert!(!root.join("run/metrics.json").exists());
            let (ok, _, err) = eval(root, &model, &root.join("eval"), &[]);
            assert!(!ok, "eval accepted {named}");
            assert!(one_line(&err).contains(&named), "{named}: {err}");
            let (ok, stdout, err) = dra(&["predict", "--model", s(&model), s(&cat.join(place))]);
            assert!(!ok, "predict accepted {named}");
            assert!(one_line(&err).contains(&named), "{named}: {err}");
            assert!(stdout.is_empty(), "predict printed scores: {stdout}");
            std::fs::remove_file(&bad).unwrap();
        }
    }

    // All eight at once, skipped: each is printed and recorded, and the rest is used.
    let mut broken = Vec::new();
    for place in ["train/good", "test/crack"] {
        for (name, bytes) in broken_files() {
            let path = cat.join(place).join(name);
            std::fs::write(&path, &bytes).unwrap();
            broken.push(path);
        }
    }
    let listed = |stderr: &str| {
        for path in &broken {
            assert!(
                stderr.contains(&format!("left out (does not decode): {}", path.display())),
                "{} not listed in: {stderr}",
                path.display()
            );
        }
    };
    let run = root.join("run");
    let (ok, stdout, err) = train(root, &run, &["--skip-unreadable"]);
    assert!(ok, "{err}");
    listed(&err);
    assert!(
        stdout.contains("3 normal + 2 anomalous test images"),
        "{stdout}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let recorded: Vec<&str> = record["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = broken.iter().map(|p| p.display().to_string()).collect();
    expected.sort();
    assert_eq!(recorded, expected);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["unreadable"].as_array().unwrap().len(), 8);

    let (ok, _, err) = eval(root, &model, &root.join("eval"), &["--skip-unreadable"]);
    assert!(ok, "{err}");
    listed(&err);
    let (ok, stdout, err) = dra(&[
        "predict",
        "--model",
        s(&model),
        "--skip-unreadable",
        s(&cat.join("train/good")),
        s(&cat.join("test/crack")),
    ]);
    assert!(ok, "{err}");
    listed(&err);
    assert_eq!(stdout.lines().count(), 1 + 6 + 3, "{stdout}");

    // `data inspect` lists them too, with the decoder's reason.
    let (ok, json, err) = dra(&[
        "data",
        "inspect",
        "--dataset",
        "mvtec/toy",
        "--data-root",
        s(root),
        "--format",
        "json",
        "--skip-unreadable",
    ]);
    assert!(ok, "{err}");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let unreadable = value["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 8);
    let reason_of = |name: &str| {
        unreadable
            .iter()
            .find(|u| {
                u["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("train/good/{name}"))
            })
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(reason_of("zero.png"), "empty file (0 bytes)");
    assert!(
        reason_of("garbage.npy").contains(".npy"),
        "{}",
        reason_of("garbage.npy")
    );
    let (ok, _, err) = dra(&[
        "data",
        "inspect",
        "--dataset",
        "mvtec/toy",
        "--data-root",
        s(root),
    ]);
    assert!(!ok);
    assert!(
        one_line(&err).starts_with("error: cannot decode 8 image files"),
        "{err}"
    );
}

#[test]
fn predict_scores_a_folder_of_npy_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    toy(root);
    let model = root.join("model");
    let (ok, _, err) = train(root, &model, &[]);
    assert!(ok, "{err}");
    let arrays = root.join("arrays");
    std::fs::create_dir_all(&arrays).unwrap();
    for i in 0..3u8 {
        std::fs::write(arrays.join(format!("frame{i}.npy")), npy_bytes(40 * i)).unwrap();
    }
    std::fs::write(arrays.join("README.txt"), "frames from the line camera").unwrap();
    let (ok, stdout, err) = dra(&["predict", "--model", s(&model), s(&arrays)]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    for (i, row) in rows.iter().enumerate() {
        assert!(row.contains(&format!("frame{i}.npy,")), "{row}");
        let score: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert!(score.is_finite(), "{row}");
    }
}

#[test]
fn mastcam_counts_follow_table_5_and_report_the_all_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mastcam = dir.path().join("mastcam");
    let write = |rel: String, shade: u8| {
        let path = mastcam.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, npy_bytes(shade)).unwrap();
    };
    for i in 0..5 {
        write(format!("train_typical/t{i}.npy"), i);
        write(format!("validation_typical/v{i}.npy"), i);
    }
    for i in 0..2 {
        write(format!("test_typical/n{i}.npy"), i);
    }
    for (class, n) in [("bedrock", 2), ("veins", 3)] {
        for i in 0..n {
            write(format!("test_novel/{class}/{i}.npy"), 200);
            write(format!("test_novel/all/{class}_{i}.npy"), 200);
        }
    }
    let (ok, csv, err) = dra(&[
        "data",
        "inspect",
        "--dataset",
        "mastcam",
        "--dataset-dir",
        s(&mastcam),
        "--format",
        "csv",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        csv,
        "dataset,subset,split,class,count\n\
         mastcam,mastcam,train,good,5\n\
         mastcam,mastcam,test,good,2\n\
         mastcam,mastcam,test,bedrock,2\n\
         mastcam,mastcam,test,veins,3\n"
    );
    assert!(
        err.contains("test_novel/all/ repeats the class folders' frames")
            && err.contains(&format!("{}", mastcam.join("test_novel/all").display())),
        "{err}"
    );
    assert!(err.contains("validation_typical"), "{err}");
}

#[test]
fn failed_writes_name_the_path_and_leave_no_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    toy(root);
    // --out is an existing file.
    let file = root.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (ok, _, err) = train(root, &file, &[]);
    assert!(!ok);
    let line = one_line(&err);
    assert!(line.contains("--out") && line.contains(s(&file)), "{line}");
    // --out lies under a file: the folder cannot be made.
    let under = file.join("run");
    let (ok, _, err) = train(root, &under, &[]);
    assert!(!ok);
    assert!(one_line(&err).contains(s(&under)), "{err}");

    // A write that fails after training (here scores.csv is taken by a folder) names the file,
    // and the metrics.json of the run replaced (--overwrite) is gone, so the folder does not
    // look finished.
    let run = root.join("run");
    let (ok, _, err) = train(root, &run, &[]);
    assert!(ok, "{err}");
    std::fs::remove_file(run.join("scores.csv")).unwrap();
    std::fs::create_dir_all(run.join("scores.csv/taken")).unwrap();
    let (ok, _, err) = train(root, &run, &["--overwrite"]);
    assert!(!ok);
    assert!(one_line(&err).contains(s(&run.join("scores.csv"))), "{err}");
    assert!(!run.join("metrics.json").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The checkpoint written when training ended is kept: once the way is clear, --resume
    // scores and writes the run without training it again, and then removes it.
    let checkpoint = run.join(dra_train::record::CHECKPOINT_FILE);
    assert!(checkpoint.is_file());
    std::fs::remove_dir_all(run.join("scores.csv")).unwrap();
    let (ok, _, err) = dra(&["train", "--resume", s(&run), "--quiet"]);
    assert!(ok, "{err}");
    assert!(run.join("metrics.json").is_file() && !checkpoint.exists());

    // The same for `dra eval`: an earlier evaluation's metrics.json does not survive a failure.
    let model = root.join("model");
    let (ok, _, err) = train(root, &model, &[]);
    assert!(ok, "{err}");
    let out = root.join("eval");
    let (ok, _, err) = eval(root, &model, &out, &[]);
    assert!(ok, "{err}");
    assert!(out.join("metrics.json").exists());
    std::fs::remove_file(out.join("scores.csv")).unwrap();
    std::fs::create_dir_all(out.join("scores.csv/taken")).unwrap();
    let (ok, _, err) = eval(root, &model, &out, &["--overwrite"]);
    assert!(!ok);
    assert!(one_line(&err).contains(s(&out.join("scores.csv"))), "{err}");
    assert!(!out.join("metrics.json").exists());

    // `dra eval --out` into the model's own run directory would overwrite the training run's
    // results: refused before anything is touched, also when named another way.
    let metrics = std::fs::read(model.join("metrics.json")).unwrap();
    let (ok, _, err) = eval(root, &model, &model.join("."), &[]);
    assert!(!ok);
    let line = one_line(&err);
    assert!(
        line.contains("--out") && line.contains("run directory"),
        "{line}"
    );
    assert_eq!(std::fs::read(model.join("metrics.json")).unwrap(), metrics);

    // `dra predict --out` that cannot be a folder fails before any scoring.
    let (ok, _, err) = dra(&[
        "predict",
        "--model",
        s(&model),
        "--out",
        s(&file),
        s(&root.join("mvtec_anomaly_detection/toy/test/good")),
    ]);
    assert!(!ok);
    let line = one_line(&err);
    assert!(line.contains("--out") && line.contains(s(&file)), "{line}");
}
