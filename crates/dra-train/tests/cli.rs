//! The `dra` program on bad input: a one-line error naming the file or flag, never a panic.

use std::path::Path;
use std::process::Command;

use image::{Rgb, RgbImage};

fn dra(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args(args)
        .output()
        .expect("dra runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "dra panicked: {stderr}");
    (out.status.success(), stderr)
}

fn write_image(path: &Path, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(40, 40, Rgb([shade, shade, shade]))
        .save(path)
        .unwrap();
}

/// A tiny category in MVTec layout under `<root>/mvtec_anomaly_detection/toy`.
fn toy(root: &Path) -> std::path::PathBuf {
    let cat = root.join("mvtec_anomaly_detection/toy");
    for i in 0..4 {
        write_image(&cat.join(format!("train/good/{i}.png")), 100);
        write_image(&cat.join(format!("test/good/{i}.png")), 100);
        write_image(&cat.join(format!("test/crack/{i}.png")), 10);
    }
    cat
}

fn train_args<'a>(root: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data-root",
        root,
        "--dataset",
        "mvtec/toy",
        "--out",
        out,
        "--profile",
        "quick",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    args
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {stderr}");
    lines[0]
}

#[test]
fn missing_folder_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let out = dir.path().join("run");
    let (ok, err) = dra(&train_args(root, out.to_str().unwrap(), &[]));
    assert!(!ok);
    assert!(
        one_line(&err).contains("mvtec_anomaly_detection/toy"),
        "{err}"
    );
}

#[test]
fn unknown_class_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let root = dir.path().to_str().unwrap();
    let out = dir.path().join("run");
    let (ok, err) = dra(&train_args(
        root,
        out.to_str().unwrap(),
        &["--known-class", "hole"],
    ));
    assert!(!ok);
    let line = one_line(&err);
    assert!(
        line.contains("hole") && line.contains("valid classes: crack"),
        "{err}"
    );
}

#[test]
fn too_many_anomalies_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let root = dir.path().to_str().unwrap();
    let out = dir.path().join("run");
    let (ok, err) = dra(&train_args(
        root,
        out.to_str().unwrap(),
        &["--n-anomaly", "10"],
    ));
    assert!(!ok);
    let line = one_line(&err);
    assert!(
        line.contains("--n-anomaly") && line.contains("only 4 exist"),
        "{err}"
    );
}

#[test]
fn corrupt_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cat = toy(dir.path());
    std::fs::write(cat.join("train/good/2.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let root = dir.path().to_str().unwrap();
    let out = dir.path().join("run");
    let (ok, err) = dra(&train_args(
        root,
        out.to_str().unwrap(),
        &["--n-anomaly", "1"],
    ));
    assert!(!ok);
    let line = one_line(&err);
    assert!(
        line.contains("train/good/2.png") && line.contains("cannot decode"),
        "{err}"
    );
}

#[test]
fn impossible_option_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let root = dir.path().to_str().unwrap();
    let out = dir.path().join("run");
    let (ok, err) = dra(&train_args(
        root,
        out.to_str().unwrap(),
        &["--image-size", "16"],
    ));
    assert!(!ok);
    assert!(one_line(&err).contains("--image-size"), "{err}");
    let (ok, err) = dra(&["train", "--dataset", "nope", "--out", out.to_str().unwrap()]);
    assert!(!ok);
    assert!(one_line(&err).contains("--dataset"), "{err}");
}

#[test]
fn data_inspect_counts_raw_and_mvtec_layouts() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let root = dir.path().to_str().unwrap();
    let (ok, err) = dra(&[
        "data",
        "inspect",
        "--dataset",
        "mvtec",
        "--data-root",
        root,
        "--format",
        "csv",
    ]);
    assert!(ok, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args([
            "data",
            "inspect",
            "--dataset",
            "mvtec",
            "--data-root",
            root,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        csv,
        "dataset,subset,split,class,count\nmvtec,toy,train,good,4\nmvtec,toy,test,good,4\nmvtec,toy,test,crack,4\n"
    );
    // BrainMRI in its raw layout: 8 normals split 6 / 2, 3 tumours.
    let brain = dir.path().join("brain_tumor_dataset");
    for i in 0..8 {
        write_image(&brain.join(format!("no/{i}.jpg")), 50);
    }
    for i in 0..3 {
        write_image(&brain.join(format!("yes/Y{i}.png")), 200);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args([
            "data",
            "inspect",
            "--dataset",
            "brainmri",
            "--data-root",
            root,
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.contains("brainmri,brainmri,train,good,6\n")
            && csv.contains("brainmri,brainmri,test,defect,3\n"),
        "{csv}"
    );
    let (ok, err) = dra(&[
        "data",
        "inspect",
        "--dataset",
        "headct",
        "--data-root",
        root,
    ]);
    assert!(!ok);
    assert!(one_line(&err).contains("head_ct"), "{err}");
}
