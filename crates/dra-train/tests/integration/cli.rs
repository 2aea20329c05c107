//! The `dra` program on bad input: a one-line error naming the file or flag, never a panic.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::common::one_line;

/// Runs `dra` and returns (success, stderr).
fn dra(args: &[&str]) -> (bool, String) {
    let (ok, _, stderr) = crate::common::run(args);
    (ok, stderr)
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

/// Runs `dra train --profile quick` on the data under `root` (`mvtec/toy`), expects it to
/// fail, and returns its one-line error.
fn train_error(root: &Path, extra: &[&str]) -> String {
    let out = root.join("run");
    let mut args = vec![
        "train",
        "--data-root",
        root.to_str().unwrap(),
        "--dataset",
        "mvtec/toy",
    ];
    args.extend([
        "--out",
        out.to_str().unwrap(),
        "--profile",
        "quick",
        "--quiet",
    ]);
    args.extend_from_slice(extra);
    let (ok, err) = dra(&args);
    assert!(!ok, "dra train {extra:?} succeeded");
    one_line(&err).to_string()
}

#[test]
fn missing_folder_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let line = train_error(dir.path(), &[]);
    assert!(line.contains("mvtec_anomaly_detection/toy"), "{line}");
}

#[test]
fn unknown_class_lists_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let line = train_error(dir.path(), &["--known-class", "hole"]);
    assert!(
        line.contains("hole") && line.contains("valid classes: crack"),
        "{line}"
    );
}

#[test]
fn too_many_anomalies_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let line = train_error(dir.path(), &["--n-anomaly", "10"]);
    assert!(
        line.contains("--n-anomaly") && line.contains("only 4 exist"),
        "{line}"
    );
}

#[test]
fn corrupt_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cat = toy(dir.path());
    std::fs::write(cat.join("train/good/2.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let line = train_error(dir.path(), &["--n-anomaly", "1"]);
    assert!(
        line.contains("train/good/2.png") && line.contains("cannot decode"),
        "{line}"
    );
}

#[test]
fn impossible_option_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    assert!(train_error(dir.path(), &["--image-size", "16"]).contains("--image-size"));
    let (ok, err) = dra(&["train", "--dataset", "nope", "--out", "unused"]);
    assert!(!ok);
    assert!(one_line(&err).contains("--dataset"), "{err}");
}

#[test]
fn a_damaged_torchvision_weights_file_is_refused_naming_the_flag_and_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    // Named as torchvision names ImageNet's ResNet-18, holding "abc" (SHA-256 ba7816bf…).
    let weights = dir.path().join("resnet18-f37072fd.pth");
    std::fs::write(&weights, b"abc").unwrap();
    let line = train_error(
        dir.path(),
        &["--n-anomaly", "1", "--weights", weights.to_str().unwrap()],
    );
    assert!(
        line.starts_with("error: --weights: ")
            && line.contains("resnet18-f37072fd.pth: its SHA-256 is ba7816bf"),
        "{line}"
    );
    // One that cannot be read at all: the operating system's reason, naming the file.
    std::fs::remove_file(&weights).unwrap();
    std::fs::create_dir(&weights).unwrap();
    let line = train_error(
        dir.path(),
        &["--n-anomaly", "1", "--weights", weights.to_str().unwrap()],
    );
    assert!(
        line.starts_with(&format!("error: {}: ", weights.display())),
        "{line}"
    );
}

#[test]
fn data_inspect_counts_raw_and_mvtec_layouts() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let root = dir.path().to_str().unwrap();
    let (ok, csv, err) = inspect(&["--dataset", "mvtec", "--data-root", root, "--format", "csv"]);
    assert!(ok, "{err}");
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
    let (_, csv, _) = inspect(&[
        "--dataset",
        "brainmri",
        "--data-root",
        root,
        "--format",
        "csv",
    ]);
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

/// Runs `dra data inspect` and returns (success, stdout, stderr).
fn inspect(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["data", "inspect"];
    all.extend_from_slice(args);
    crate::common::run(&all)
}

#[test]
fn data_inspect_cuts_sdd_into_thirds_and_reports_what_it_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let sdd = dir.path().join("KolektorSDD");
    // Four 40 × 40 images: thirds of rows [0, 13), [13, 26), [26, 40). Part0's label marks
    // row 30 (last third); the others are clean: 11 normal thirds, 1 anomaly.
    for part in 0..4 {
        write_image(&sdd.join(format!("kos01/Part{part}.jpg")), 90);
        let mut label = image::GrayImage::new(40, 40);
        if part == 0 {
            label.put_pixel(5, 30, image::Luma([255]));
        }
        label
            .save(sdd.join(format!("kos01/Part{part}_label.bmp")))
            .unwrap();
    }
    std::fs::write(sdd.join("kos01/notes.txt"), "x").unwrap();
    let (ok, csv, err) = inspect(&["--dataset", "sdd", "--data-root", root, "--format", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(
        csv,
        "dataset,subset,split,class,count\nsdd,sdd,train,good,8\nsdd,sdd,test,good,3\nsdd,sdd,test,defect,1\n"
    );
    assert!(
        err.contains("ignored: sdd: 1 × neither a .jpg image") && err.contains("notes.txt"),
        "{err}"
    );
    let (ok, table, _) = inspect(&["--dataset", "sdd", "--dataset-dir", sdd.to_str().unwrap()]);
    assert!(ok);
    assert!(table.contains("| sdd | 8 | 3 | 1 | defect 1 |"), "{table}");
    assert!(
        table.contains("Ignored") && table.contains("notes.txt"),
        "{table}"
    );
    let (ok, json, _) = inspect(&["--dataset", "sdd", "--data-root", root, "--format", "json"]);
    assert!(ok);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["counts"].as_array().unwrap().len(), 3);
    let ignored = value["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1);
    assert!(ignored[0]["path"].as_str().unwrap().ends_with("notes.txt"));
    // A missing label is a one-line error naming the file it expected.
    std::fs::remove_file(sdd.join("kos01/Part2_label.bmp")).unwrap();
    let (ok, _, err) = inspect(&["--dataset", "sdd", "--data-root", root]);
    assert!(!ok);
    assert!(one_line(&err).contains("Part2_label.bmp"), "{err}");
}

#[test]
fn method_flag_lists_the_methods_and_checks_their_options() {
    let dir = tempfile::tempdir().unwrap();
    toy(dir.path());
    let (ok, err) = dra(&[
        "train",
        "--dataset",
        "mvtec/toy",
        "--out",
        "x",
        "--method",
        "svdd",
    ]);
    assert!(!ok);
    assert!(
        err.contains("svdd") && err.contains("dra, devnet, deepsad, minns, flos, saoe"),
        "{err}"
    );
    let line = train_error(
        dir.path(),
        &[
            "--method",
            "flos",
            "--outlier-root",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(
        line.contains("--outlier-root") && line.contains("flos"),
        "{line}"
    );
}
