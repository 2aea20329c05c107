//! `dra export` as a practitioner deploys it: a small trained and calibrated run of each
//! backbone (one with a head subset, one trained by AHL, and a DevNet baseline) exported, loaded by tract (an
//! independent ONNX runtime), fed images preprocessed as docs/deploy.md tells a Python user
//! to, and found to give `dra predict`'s scores, head scores, decisions and `--save-maps`
//! maps; and the one-line refusals of what cannot be exported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::{BackboneKind, Method};
use dra_train::record::AhlConfig;
use dra_train::{RunRequest, TrainConfig};
use prost::Message;
use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoTensor};

use crate::common::{one_line, read_npy, run};

const SIZE: u32 = 64;

/// The lines of docs/deploy.md's Python snippet that say how an image becomes the model's
/// input and how a score becomes a decision; [`preprocess`] and the decisions below do the
/// same, step for step, so the doc and this test cannot drift apart.
const DOC_STEPS: [&str; 7] = [
    r#"mean = np.array(json.loads(meta["mean"]), dtype=np.float32)"#,
    r#"std = np.array(json.loads(meta["std"]), dtype=np.float32)"#,
    r#"img = Image.open(path).convert("RGB")"#,
    r#"img = img.resize((size, img.height), Image.BILINEAR).resize((size, size), Image.BILINEAR)"#,
    r#"x = (np.asarray(img, dtype=np.float32) / np.float32(255) - mean) / std"#,
    "return x.transpose(2, 0, 1)",
    r#"decision = "anomaly" if float(score) > threshold else "normal""#,
];

/// A calibrated run of `config` on the generated `weave` category under `dir`.
fn train(dir: &Path, name: &str, config: TrainConfig) -> PathBuf {
    let spec = SyntheticSpec {
        image_size: 64,
        n_train: 16,
        n_test_good: 4,
        n_per_defect: 2,
        seed: 5,
    };
    synthetic::ensure(&dir.join("data"), &spec).unwrap();
    let out = dir.join(name);
    dra_train::train(&RunRequest {
        config,
        dataset: "synthetic/weave".into(),
        category_dir: dir.join("data/weave"),
        family: dra_data::datasets::Family::Mvtec,
        out_dir: out.clone(),
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: None,
        control: Default::default(),
    })
    .unwrap();
    out
}

fn small_config(backbone: BackboneKind) -> TrainConfig {
    let mut config = TrainConfig::quick();
    config.image_size = SIZE;
    config.backbone = backbone;
    config.batch_size = 6;
    config.n_ref = 2;
    config.epochs = 1;
    config.steps_per_epoch = 2;
    config.n_anomaly = 2;
    config.eval_batch_size = 4;
    config.calibration_fraction = 0.25;
    config
}

/// Seven images in one folder, as a user would gather them: two normal and three anomalous
/// test images, and two of other sizes and shapes than the training images (a blank and a
/// noise picture, which also spread the scores of a barely trained model).
fn folder_of_images(dir: &Path) -> PathBuf {
    let folder = dir.join("incoming");
    std::fs::create_dir_all(&folder).unwrap();
    let test = dir.join("data/weave/test");
    let mut k = 0;
    for class in ["good", "hole", "scratch", "stain"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(test.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let take = if class == "good" { 2 } else { 1 };
        for file in files.into_iter().take(take) {
            std::fs::copy(&file, folder.join(format!("{k}_{class}.png"))).unwrap();
            k += 1;
        }
    }
    image::RgbImage::from_pixel(90, 70, image::Rgb([0, 0, 0]))
        .save(folder.join("5_blank.png"))
        .unwrap();
    image::RgbImage::from_fn(70, 90, |x, y| {
        let v = |c: u32| ((x * 7919 + y * 104_729 + c * 15_485_863) % 251) as u8;
        image::Rgb([v(0), v(1), v(2)])
    })
    .save(folder.join("6_noise.png"))
    .unwrap();
    folder
}

/// `dra predict`'s CSV rows by file name: score, decision, the four heads (NaN where absent).
struct Predicted {
    score: f64,
    decision: String,
    heads: [f64; 4],
}

/// `dra predict` on the folder, with `--save-maps` when `maps` is given.
fn predict(run_dir: &Path, folder: &Path, maps: Option<&Path>) -> HashMap<String, Predicted> {
    let mut args = vec![
        "predict",
        "--model",
        run_dir.to_str().unwrap(),
        folder.to_str().unwrap(),
    ];
    if let Some(maps) = maps {
        args.extend(["--save-maps", maps.to_str().unwrap()]);
    }
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("path,score,decision,g_n,g_s,g_p,g_r"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let name = Path::new(f[0]).file_name().unwrap().to_string_lossy();
            let number = |s: &str| s.parse::<f64>().unwrap();
            let row = Predicted {
                score: number(f[1]),
                decision: f[2].to_string(),
                heads: [number(f[3]), number(f[4]), number(f[5]), number(f[6])],
            };
            (name.into_owned(), row)
        })
        .collect()
}

/// The image at `path` as the model's input, by docs/deploy.md's steps ([`DOC_STEPS`]):
/// decoded to RGB, resized by PIL's antialiased bilinear filter to `size` wide, then to `size`
/// high, scaled to [0, 1], normalised by the metadata's mean and std in float32, channels
/// first.
fn preprocess(path: &Path, size: u32, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let img = dra_data::load_rgb(path).unwrap();
    let height = img.height();
    let img = dra_data::transform::resize_bilinear(&img, size, height);
    let img = dra_data::transform::resize_bilinear(&img, size, size);
    let plane = (size * size) as usize;
    let mut x = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            x[c * plane + i] = (px[c] as f32 / 255f32 - mean[c]) / std[c];
        }
    }
    x
}

/// Runs the model's plan on a batch and returns each output by name.
fn run_plan(
    plan: &tract_onnx::prelude::TypedRunnableModel<tract_onnx::prelude::TypedModel>,
    names: &[String],
    batch: &[Vec<f32>],
    size: usize,
) -> HashMap<String, Vec<f32>> {
    let values: Vec<f32> = batch.iter().flatten().copied().collect();
    let input = tract_onnx::prelude::tract_ndarray::ArrayD::from_shape_vec(
        vec![batch.len(), 3, size, size],
        values,
    )
    .unwrap()
    .into_tensor();
    let outputs = plan.run(tvec!(input.into())).unwrap();
    names
        .iter()
        .zip(outputs.iter())
        .map(|(name, o)| {
            let v = o.to_array_view::<f32>().unwrap().iter().copied().collect();
            (name.clone(), v)
        })
        .collect()
}

/// The largest minus the smallest of `values`.
fn range(values: &[f64]) -> f64 {
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    hi - lo
}

/// Fails where `got` and `want` differ by more than 1e-5 of `range` (the range of the anomaly
/// scores over the images, or of the maps' values).
fn assert_within_range(what: &str, got: &[f64], want: &[f64], range: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let tolerance = 1e-5 * range;
    let worst = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((g - w).abs()));
    eprintln!(
        "{what}: largest difference {worst:e}, {:.3} of the tolerance",
        worst / tolerance
    );
    assert!(
        worst <= tolerance,
        "{what}: largest difference {worst:e} > 1e-5 of the range {range}"
    );
}

/// Exports `run_dir`, checks the file's contract and scores the folder through tract as
/// `dra predict` does: the score, `expect_heads` and, for DRA, the map.
fn check_run(dir: &Path, run_dir: &Path, folder: &Path, expect_heads: &[&str]) {
    let record = dra_train::record::RunRecord::read(run_dir, "--model").unwrap();
    let has_map = record.config.method.base() == Method::Dra;
    let model_path = dir.join(format!(
        "{}.onnx",
        run_dir.file_name().unwrap().to_string_lossy()
    ));
    let (ok, stdout, stderr) = run(&[
        "export",
        "--model",
        run_dir.to_str().unwrap(),
        "--out",
        model_path.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("threshold"), "{stdout}");

    // The file: standard ONNX by the checker's rules, and its contract in the metadata.
    let bytes = std::fs::read(&model_path).unwrap();
    let model = dra_model::onnx::proto::ModelProto::decode(bytes.as_slice()).unwrap();
    dra_model::onnx::check(&model).unwrap();
    let meta: HashMap<String, String> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let size: u32 = meta["image_size"].parse().unwrap();
    assert_eq!(size, SIZE);
    let floats = |key: &str| -> [f32; 3] { serde_json::from_str(&meta[key]).unwrap() };
    let (mean, std) = (floats("mean"), floats("std"));
    assert_eq!(mean, dra_data::transform::IMAGENET_MEAN);
    assert_eq!(std, dra_data::transform::IMAGENET_STD);
    assert_eq!(meta["channel_order"], "RGB, channels first (NCHW)");
    assert!(meta["resize"].contains("Image.resize((S, H), Image.BILINEAR)"));
    assert!(meta["resize"].contains("width first"));
    let threshold: f64 = meta["threshold"].parse().unwrap();
    let stored = dra_train::record::Threshold::load(run_dir)
        .unwrap()
        .unwrap();
    assert_eq!(threshold, stored.value);
    assert_eq!(
        meta["threshold_target_fpr"],
        stored.target_fpr.unwrap().to_string()
    );
    let digests = [
        ("model_sha256", "model.safetensors"),
        ("references_sha256", "references.safetensors"),
    ];
    for (key, file) in &digests[..if has_map { 2 } else { 1 }] {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(run_dir.join(file)).unwrap());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(meta[*key], hex, "{key}");
    }
    let names: Vec<String> = model
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let mut expected = vec!["score"];
    expected.extend(expect_heads);
    if has_map {
        expected.push("anomaly_map");
    }
    assert_eq!(names, expected);

    // tract loads it, infers every shape, and runs it.
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract infers every shape")
        .into_runnable()
        .unwrap();

    let maps_dir = dir.join(format!(
        "{}-maps",
        run_dir.file_name().unwrap().to_string_lossy()
    ));
    let predicted = predict(run_dir, folder, has_map.then_some(maps_dir.as_path()));
    let mut files: Vec<String> = predicted.keys().cloned().collect();
    files.sort();
    assert_eq!(files.len(), 7);
    let inputs: Vec<Vec<f32>> = files
        .iter()
        .map(|f| preprocess(&folder.join(f), size, &mean, &std))
        .collect();
    let s = size as usize;
    let together = run_plan(&plan, &names, &inputs, s);
    let alone: Vec<HashMap<String, Vec<f32>>> = inputs
        .iter()
        .map(|x| run_plan(&plan, &names, std::slice::from_ref(x), s))
        .collect();

    let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|x| f64::from(*x)).collect() };
    let scores: Vec<f64> = files.iter().map(|n| predicted[n].score).collect();
    let want_maps: Vec<f64> = files
        .iter()
        .filter(|_| has_map)
        .flat_map(|f| {
            let stem = Path::new(f).file_stem().unwrap().to_string_lossy();
            read_npy(&maps_dir.join(format!("{stem}.npy")), s)
        })
        .map(f64::from)
        .collect();
    let (score_range, map_range) = (range(&scores), range(&want_maps));
    // A model whose scores hardly vary would make "within 1e-5 of the range" no check.
    let magnitude = scores.iter().fold(0f64, |m, v| m.max(v.abs()));
    assert!(
        score_range > 1e-2 * magnitude,
        "scores {scores:?} hardly vary: train the run longer"
    );
    // Batch sizes 1 and 7 give each image the same values.
    for name in &names {
        let one_by_one: Vec<f32> = alone.iter().flat_map(|o| o[name].clone()).collect();
        let basis = if name == "anomaly_map" {
            map_range
        } else {
            score_range
        };
        assert_within_range(
            &format!("{name}: batch 1 vs 7"),
            &wide(&one_by_one),
            &wide(&together[name]),
            basis,
        );
    }
    // The scores and heads are dra predict's; so are the decisions at the stored threshold.
    assert_within_range("score", &wide(&together["score"]), &scores, score_range);
    for (k, head) in ["g_n", "g_s", "g_p", "g_r"].iter().enumerate() {
        let column: Vec<f64> = files.iter().map(|n| predicted[n].heads[k]).collect();
        match together.get(*head) {
            Some(values) => assert_within_range(head, &wide(values), &column, score_range),
            None => assert!(column.iter().all(|v| v.is_nan()), "{head} is not exported"),
        }
    }
    let mut flagged = 0;
    for (file, score) in files.iter().zip(&together["score"]) {
        // docs/deploy.md: `float(score) > threshold`.
        let decision = if f64::from(*score) > threshold {
            "anomaly"
        } else {
            "normal"
        };
        assert_eq!(decision, predicted[file].decision, "{file}");
        flagged += (decision == "anomaly") as usize;
    }
    eprintln!(
        "{}: {flagged} of 7 flagged",
        run_dir.file_name().unwrap().to_string_lossy()
    );
    // The maps are --save-maps' .npy files.
    if has_map {
        let maps = wide(&together["anomaly_map"]);
        assert_within_range("anomaly_map", &maps, &want_maps, map_range);
    }
}

#[test]
fn exported_runs_score_in_tract_as_dra_predict_does() {
    let dir = tempfile::tempdir().unwrap();
    let resnet = train(dir.path(), "resnet", small_config(BackboneKind::Resnet18));
    let mut config = small_config(BackboneKind::MobilenetV2);
    // MobileNetV2 from random weights scores every image alike (to 1e-5) until its
    // BatchNorms' running statistics have forgotten their start (momentum 0.1): measured,
    // scores within 0.04 of each other after 30 steps, spread over 3..29 after 40.
    (config.epochs, config.steps_per_epoch, config.batch_size) = (8, 5, 4);
    config.heads = "seen,pseudo,residual".parse().unwrap();
    let mobilenet = train(dir.path(), "mobilenet", config);
    let mut config = small_config(BackboneKind::Resnet18);
    config.method = Method::Ahl;
    config.ahl = Some(AhlConfig {
        epochs: 1,
        inner_steps: 1,
        query_batches: 1,
        ..AhlConfig::default()
    });
    let ahl = train(dir.path(), "ahl", config);
    let mut config = small_config(BackboneKind::Resnet18);
    config.method = Method::DevNet;
    let devnet = train(dir.path(), "devnet", config);
    let folder = folder_of_images(dir.path());
    check_run(dir.path(), &resnet, &folder, &["g_n", "g_s", "g_p", "g_r"]);
    check_run(dir.path(), &mobilenet, &folder, &["g_s", "g_p", "g_r"]);
    check_run(dir.path(), &ahl, &folder, &["g_n", "g_s", "g_p", "g_r"]);
    // A baseline: DevNet's score and its one head, no map.
    check_run(dir.path(), &devnet, &folder, &["g_s"]);
}

#[test]
fn the_deploy_guide_preprocesses_as_the_test_does() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy.md");
    let text = std::fs::read_to_string(&guide).unwrap();
    for step in DOC_STEPS {
        assert!(
            text.contains(step),
            "docs/deploy.md no longer says `{step}`: change the test's preprocessing with it"
        );
    }
    // The metadata keys the snippet reads are those dra export writes.
    for key in ["image_size", "mean", "std", "threshold"] {
        assert!(text.contains(&format!(r#"meta["{key}"]"#)), "{key}");
    }
}

#[test]
fn what_cannot_be_exported_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = train(dir.path(), "run", small_config(BackboneKind::Resnet18));
    let out = dir.path().join("model.onnx");
    let export = |model: &Path, out: &Path| {
        run(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };

    // A run without weights, with an unknown method, and a file that is not a run.
    let no_weights = dir.path().join("no-weights");
    copy_dir(&run_dir, &no_weights);
    std::fs::remove_file(no_weights.join("model.safetensors")).unwrap();
    let (ok, _, err) = export(&no_weights, &out);
    assert!(!ok && one_line(&err).contains("model.safetensors"), "{err}");

    let unknown = dir.path().join("unknown-method");
    copy_dir(&run_dir, &unknown);
    let config = std::fs::read_to_string(unknown.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&config).unwrap();
    let method = json["config"]["method"].as_str().unwrap().to_string();
    let edited = config.replacen(&format!("\"{method}\""), "\"fastflow\"", 1);
    std::fs::write(unknown.join("config.json"), edited).unwrap();
    let (ok, _, err) = export(&unknown, &out);
    let line = one_line(&err);
    assert!(
        !ok && line.contains("config.json") && line.contains("fastflow"),
        "{err}"
    );

    let (ok, _, err) = export(&run_dir.join("config.json"), &out);
    assert!(
        !ok && one_line(&err).contains("not a run directory"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written on a refusal");

    // An --out that cannot be written: no file, no leftovers.
    let missing = dir.path().join("nowhere/model.onnx");
    let (ok, _, err) = export(&run_dir, &missing);
    assert!(!ok && one_line(&err).contains("nowhere"), "{err}");
    let (ok, _, err) = export(&run_dir, dir.path());
    assert!(!ok && one_line(&err).contains("is a folder"), "{err}");

    // An existing model is kept unless --overwrite.
    std::fs::write(&out, b"the model in production").unwrap();
    let (ok, _, err) = export(&run_dir, &out);
    assert!(!ok && one_line(&err).contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the model in production");
    let (ok, _, err) = run(&[
        "export",
        "--model",
        run_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert!(ok, "{err}");
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("model.") && n != "model.onnx")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
