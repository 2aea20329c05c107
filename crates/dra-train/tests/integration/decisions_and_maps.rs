//! The practitioner's loop end to end on a generated category with masks: a calibrated
//! threshold, pixel metrics that anyone can recompute from the saved maps, the training log,
//! the report, and `dra predict`'s decisions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_train::record::{RunRecord, Threshold};
use dra_train::{Metrics, RunRequest, TrainConfig};

use crate::common::read_npy;

const MODEL_SIZE: usize = 64;

/// A run of a two-epoch model on a generated category whose images (80 px) and masks are
/// larger than the model's input, with a calibration slice and saved maps.
fn run(dir: &Path) -> (PathBuf, PathBuf, Metrics, TrainConfig) {
    let spec = SyntheticSpec {
        image_size: 80,
        n_train: 16,
        n_test_good: 6,
        n_per_defect: 3,
        seed: 11,
    };
    synthetic::ensure(&dir.join("data"), &spec).unwrap();
    let mut config = TrainConfig::quick();
    config.image_size = MODEL_SIZE as u32;
    config.batch_size = 6;
    config.n_ref = 2;
    config.epochs = 2;
    config.steps_per_epoch = 3;
    config.n_anomaly = 2;
    config.eval_batch_size = 8;
    config.calibration_fraction = 0.25;
    let out = dir.join("run");
    let maps = dir.join("maps");
    let metrics = dra_train::train(&RunRequest {
        config: config.clone(),
        dataset: "synthetic/weave".into(),
        category_dir: dir.join("data/weave"),
        family: dra_data::datasets::Family::Mvtec,
        out_dir: out.clone(),
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: Some(maps.clone()),
        control: dra_train::RunControl {
            overwrite: false,
            ..Default::default()
        },
    })
    .unwrap();
    (out, maps, metrics, config)
}

#[test]
fn a_run_carries_a_threshold_pixel_metrics_a_log_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let (out, maps, metrics, config) = run(dir.path());

    // Calibration: 4 of the 16 training normals held out, recorded, and a threshold from them.
    let record: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(record.calibration_normals.len(), 4);
    assert_eq!(metrics.n_train_normal, 12);
    let threshold = Threshold::load(&out)
        .unwrap()
        .expect("a calibrated run has a threshold");
    assert_eq!(threshold.n_normals, 4);
    let at = metrics
        .threshold
        .as_ref()
        .expect("metrics at the threshold");
    assert_eq!(at.threshold, threshold.value);
    assert_eq!(at.counts.tp + at.counts.fn_, metrics.n_test_anomaly);
    assert_eq!(at.counts.fp + at.counts.tn, metrics.n_test_normal);

    // Pixel metrics equal those recomputed here from the saved maps and the masks.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let pixel_auroc = json["pixel_auroc"]
        .as_f64()
        .expect("pixel_auroc in metrics.json");
    let aupro = json["aupro"].as_f64().expect("aupro in metrics.json");
    let (values, masks) = maps_and_masks(&maps, &dir.path().join("data/weave"));
    assert_eq!(values.len(), metrics.n_test_normal + metrics.n_test_anomaly);
    let (want_auroc, want_aupro) = reference_metrics(&values, &masks);
    assert!(
        (pixel_auroc - want_auroc).abs() < 1e-9,
        "{pixel_auroc} vs {want_auroc}"
    );
    assert!((aupro - want_aupro).abs() < 1e-9, "{aupro} vs {want_aupro}");

    // One log row per step, with every head's term.
    let log = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    let rows: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(rows.len(), config.total_steps());
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 9);
        assert_eq!(fields[1], (i + 1).to_string());
        let total: f64 = fields[2].parse().unwrap();
        let heads: f64 = fields[3..7].iter().map(|f| f.parse::<f64>().unwrap()).sum();
        assert!((total - heads).abs() < 1e-4 * total.abs().max(1.0), "{row}");
    }

    // The report: one file, its curves, its gallery and nothing fetched from elsewhere.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.matches("<svg").count() >= 4,
        "ROC, PR, histogram and loss charts"
    );
    assert!(html.contains("ROC") && html.contains("Precision"));
    assert!(html.contains("Worst false positives") || html.contains("Highest-scored normal"));
    assert!(html.contains("Best detections"));
    assert!(html.matches("data:image/png;base64,").count() >= 3);
    for external in ["http://", "https://", "<script", "src=\"/", "src=\"file:"] {
        assert!(!html.contains(external), "report refers to {external}");
    }

    // dra predict decides each image with the run's threshold.
    let images = [
        dir.path().join("data/weave/test/good/000.png"),
        dir.path().join("data/weave/test/hole/002.png"),
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_dra"))
        .arg("predict")
        .arg("--model")
        .arg(&out)
        .args(&images)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("path,score,decision,g_n,g_s,g_p,g_r"));
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let score: f64 = fields[1].parse().unwrap();
        let expected = if score > threshold.value {
            "anomaly"
        } else {
            "normal"
        };
        assert_eq!(fields[2], expected, "{line}");
    }
}

/// Each saved map (read as NumPy would) with its mask (read here with nearest sampling:
/// input pixel ⌊(x + ½) · in / out⌋), keyed by file so that the order is fixed.
fn maps_and_masks(maps: &Path, data: &Path) -> (Vec<Vec<f32>>, Vec<Vec<bool>>) {
    let mut files = BTreeMap::new();
    for class in std::fs::read_dir(maps.join("test")).unwrap() {
        let class = class.unwrap().path();
        for file in std::fs::read_dir(&class).unwrap() {
            let file = file.unwrap().path();
            files.insert(file.clone(), class.file_name().unwrap().to_owned());
        }
    }
    let mut values = Vec::new();
    let mut masks = Vec::new();
    for (file, class) in files {
        values.push(read_npy(&file, MODEL_SIZE));
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let mask_path = data
            .join("ground_truth")
            .join(&class)
            .join(format!("{stem}_mask.png"));
        masks.push(if class == "good" {
            vec![false; MODEL_SIZE * MODEL_SIZE]
        } else {
            let mask = image::open(&mask_path).unwrap().to_luma8();
            let (w, h) = (mask.width() as usize, mask.height() as usize);
            let mut out = Vec::new();
            for y in 0..MODEL_SIZE {
                for x in 0..MODEL_SIZE {
                    let sx = ((x as f64 + 0.5) * w as f64 / MODEL_SIZE as f64) as u32;
                    let sy = ((y as f64 + 0.5) * h as f64 / MODEL_SIZE as f64) as u32;
                    out.push(mask.get_pixel(sx, sy)[0] > 0);
                }
            }
            out
        });
    }
    (values, masks)
}

/// Pixel AUROC by average ranks (Mann–Whitney U), and AUPRO by sweeping the distinct map
/// values from the top with per-region counters: region = 8-connected component of a mask,
/// FPR over every defect-free pixel, PRO the mean over regions of the covered share, the
/// curve cut at FPR 0.3 (interpolated) and its area divided by 0.3.
fn reference_metrics(values: &[Vec<f32>], masks: &[Vec<bool>]) -> (f64, f64) {
    // Regions by flood fill.
    let n = MODEL_SIZE;
    let mut region_of = Vec::new(); // per pixel: Some(region)
    let mut region_sizes: Vec<usize> = Vec::new();
    for mask in masks {
        let mut labels: Vec<Option<usize>> = vec![None; n * n];
        for start in 0..n * n {
            if !mask[start] || labels[start].is_some() {
                continue;
            }
            let id = region_sizes.len();
            region_sizes.push(0);
            let mut stack = vec![start];
            labels[start] = Some(id);
            while let Some(p) = stack.pop() {
                region_sizes[id] += 1;
                let (x, y) = ((p % n) as i64, (p / n) as i64);
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (nx, ny) = (x + dx, y + dy);
                        if nx < 0 || ny < 0 || nx >= n as i64 || ny >= n as i64 {
                            continue;
                        }
                        let q = ny as usize * n + nx as usize;
                        if mask[q] && labels[q].is_none() {
                            labels[q] = Some(id);
                            stack.push(q);
                        }
                    }
                }
            }
        }
        region_of.extend(labels);
    }
    let pixels: Vec<(f32, Option<usize>)> =
        values.iter().flatten().copied().zip(region_of).collect();

    // AUROC from average ranks.
    let mut order: Vec<usize> = (0..pixels.len()).collect();
    order.sort_by(|&a, &b| pixels[a].0.total_cmp(&pixels[b].0));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && pixels[order[j]].0 == pixels[order[i]].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks i+1 ..= j
        rank_sum_pos += avg_rank
            * order[i..j]
                .iter()
                .filter(|&&k| pixels[k].1.is_some())
                .count() as f64;
        i = j;
    }
    let n_pos = pixels.iter().filter(|p| p.1.is_some()).count() as f64;
    let n_neg = pixels.len() as f64 - n_pos;
    let auroc = (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg);

    // PRO curve over distinct thresholds, highest first.
    let mut covered = vec![0usize; region_sizes.len()];
    let mut negatives_above = 0usize;
    let mut curve = vec![(0.0f64, 0.0f64)];
    let mut i = order.len();
    while i > 0 {
        let value = pixels[order[i - 1]].0;
        while i > 0 && pixels[order[i - 1]].0 == value {
            match pixels[order[i - 1]].1 {
                Some(r) => covered[r] += 1,
                None => negatives_above += 1,
            }
            i -= 1;
        }
        let pro = covered
            .iter()
            .zip(&region_sizes)
            .map(|(c, s)| *c as f64 / *s as f64)
            .sum::<f64>()
            / region_sizes.len() as f64;
        curve.push((negatives_above as f64 / n_neg, pro));
    }
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 >= 0.3 {
            break;
        }
        if x1 <= 0.3 {
            area += (x1 - x0) * (y0 + y1) / 2.0;
        } else {
            let y = y0 + (y1 - y0) * (0.3 - x0) / (x1 - x0);
            area += (0.3 - x0) * (y0 + y) / 2.0;
        }
    }
    (auroc, area / 0.3)
}
