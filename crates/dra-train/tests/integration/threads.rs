//! The same command gives the same result on any number of threads (issue #29): a short DRA
//! run and an AHL run trained on pools of 1, 2 and 3 threads save the same weights, scores and
//! anomaly maps byte for byte, and `dra predict` and `dra eval --fixed-references` print and
//! write the same bytes under `RAYON_NUM_THREADS` 1, 2 and 3 (which sizes candle's own pool
//! and gemm's threads too).
//!
//! And `--reproducible` runs give the same bytes on a CPU's AVX-512 and AVX2 kernels, where it
//! has both.
//!
//! Three counts, not two: a count that does not divide the kernels' pieces (`PIECES`, eight)
//! leaves some threads a piece more than others, where a sum cut per thread would differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::ops::KernelTier;
use dra_model::Method;
use dra_train::record::{AhlConfig, RunRecord};
use dra_train::{RunRequest, TrainConfig};

const THREADS: [usize; 3] = [1, 2, 3];

/// Four steps of twelve 48-px images (the batch falls into pieces of one and two images), one
/// scale, then scoring and maps of the whole test set; AHL adds two short epochs.
fn config(method: Method) -> TrainConfig {
    let mut c = TrainConfig::quick();
    c.method = method;
    c.image_size = 48;
    c.batch_size = 12;
    c.n_scales = 1;
    c.epochs = 2;
    c.steps_per_epoch = 2;
    c.seed = 7;
    if method.is_ahl() {
        c.ahl = Some(AhlConfig {
            epochs: 2,
            inner_steps: 2,
            query_batches: 2,
            window: 2,
            ..AhlConfig::default()
        });
    }
    c
}

/// Every file under `dir` (relative path → bytes), `names` only where given.
fn files(dir: &Path, names: Option<&[&str]>) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if names.is_none_or(|n| n.iter().any(|n| rel == Path::new(n))) {
                let bytes = std::fs::read(&path).unwrap();
                let bytes = if rel == Path::new("metrics.json") {
                    without_timings(&bytes)
                } else {
                    bytes
                };
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// metrics.json without its wall-clock seconds, the one thing in it that is not a result.
fn without_timings(bytes: &[u8]) -> Vec<u8> {
    let mut json: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let object = json.as_object_mut().expect("metrics.json holds an object");
    object.retain(|key, _| !key.ends_with("_seconds"));
    serde_json::to_vec(&json).unwrap()
}

/// Fails naming the first file whose bytes differ between the thread counts.
fn assert_same(what: &str, runs: &[BTreeMap<PathBuf, Vec<u8>>]) {
    let first = &runs[0];
    assert!(!first.is_empty(), "{what}: nothing written");
    for (threads, run) in THREADS.iter().zip(runs).skip(1) {
        assert_eq!(
            first.keys().collect::<Vec<_>>(),
            run.keys().collect::<Vec<_>>(),
            "{what}: other files on {threads} threads"
        );
        for (name, bytes) in first {
            assert!(
                &run[name] == bytes,
                "{what}: {} differs between 1 and {threads} threads",
                name.display()
            );
        }
    }
}

/// `dra ARGS` under `RAYON_NUM_THREADS=threads`: its standard output, on success.
fn dra(threads: usize, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_dra"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dra {args:?} on {threads} threads: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn runs_predictions_and_evaluations_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let category = dir.path().join("washer");
    let results = ["model.safetensors", "scores.csv", "metrics.json"];

    for method in [Method::Dra, Method::Ahl] {
        let runs: Vec<_> = THREADS
            .iter()
            .map(|&threads| {
                let out = dir.path().join(format!("{method:?}-{threads}"));
                let request = RunRequest {
                    config: config(method),
                    dataset: "synthetic/washer".into(),
                    category_dir: category.clone(),
                    family: Family::Mvtec,
                    out_dir: out.clone(),
                    device: Device::Cpu,
                    on_unreadable: dra_data::OnUnreadable::Error,
                    save_maps: Some(out.join("maps")),
                    control: dra_train::RunControl {
                        overwrite: false,
                        ..Default::default()
                    },
                };
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| dra_train::train(&request))
                    .unwrap();
                let record: RunRecord =
                    serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap())
                        .unwrap();
                let arithmetic = record.arithmetic.expect("the arithmetic is recorded");
                assert_eq!(arithmetic.kernel_tier, Some(KernelTier::allowed()));
                assert!(!arithmetic.reproducible);
                let mut written = files(&out, Some(&results));
                let maps = files(&out.join("maps"), None);
                assert!(!maps.is_empty(), "{method:?}: no maps");
                written.extend(
                    maps.into_iter()
                        .map(|(k, v)| (Path::new("maps").join(k), v)),
                );
                written
            })
            .collect();
        assert_same(&format!("{method:?} training"), &runs);
    }

    // The saved DRA run, used by the program as a user runs it.
    let model = dir.path().join("Dra-1");
    let images = [
        category.join("test/good/000.png"),
        category.join("test/good/001.png"),
    ];
    let predictions: Vec<_> = THREADS
        .iter()
        .map(|&threads| {
            let overlays = dir.path().join(format!("predict-{threads}"));
            let mut args = vec![
                "predict".as_ref(),
                "--model".as_ref(),
                model.as_os_str(),
                "--out".as_ref(),
                overlays.as_os_str(),
            ];
            args.extend(images.iter().map(|p| p.as_os_str()));
            let stdout = dra(threads, &args);
            let mut written = files(&overlays, None);
            written.insert("stdout".into(), stdout);
            written
        })
        .collect();
    assert_same("dra predict", &predictions);

    let evaluations: Vec<_> = THREADS
        .iter()
        .map(|&threads| {
            let out = dir.path().join(format!("eval-{threads}"));
            dra(
                threads,
                &[
                    "eval".as_ref(),
                    "--model".as_ref(),
                    model.as_os_str(),
                    "--dataset".as_ref(),
                    "synthetic/washer".as_ref(),
                    "--dataset-dir".as_ref(),
                    dir.path().as_os_str(),
                    "--fixed-references".as_ref(),
                    "--out".as_ref(),
                    out.as_os_str(),
                ],
            );
            files(&out, Some(&["scores.csv", "metrics.json"]))
        })
        .collect();
    assert_same("dra eval --fixed-references", &evaluations);
}

/// With `--reproducible` the bytes do not depend on the CPU's vector units: a run on this CPU's
/// AVX-512 equals one capped at AVX2 + FMA (`DRA_KERNEL_TIER`), and both record the portable
/// tier. Skipped, saying so, on a CPU without AVX-512, where the two would be one run.
#[test]
fn reproducible_runs_are_the_same_on_avx2_and_avx512() {
    if KernelTier::detected() < KernelTier::Avx512 {
        eprintln!(
            "skipped reproducible_runs_are_the_same_on_avx2_and_avx512: this CPU has no AVX-512 \
             (its best tier is {}), so it cannot run both tiers",
            KernelTier::detected()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let runs: Vec<_> = ["avx512", "avx2+fma"]
        .iter()
        .map(|tier| {
            let out = dir.path().join(tier);
            let status = Command::new(env!("CARGO_BIN_EXE_dra"))
                .args(["train", "--dataset", "synthetic/washer", "--dataset-dir"])
                .arg(dir.path())
                .arg("--out")
                .arg(&out)
                .args([
                    "--profile",
                    "quick",
                    "--image-size",
                    "48",
                    "--batch-size",
                    "12",
                ])
                .args(["--epochs", "2", "--steps-per-epoch", "2", "--n-scales", "1"])
                .args(["--seed", "7", "--reproducible", "--quiet"])
                .env("DRA_KERNEL_TIER", tier)
                .status()
                .unwrap();
            assert!(status.success(), "dra train with DRA_KERNEL_TIER={tier}");
            let record: RunRecord =
                serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
            let arithmetic = record.arithmetic.expect("the arithmetic is recorded");
            assert!(arithmetic.reproducible);
            assert_eq!(arithmetic.kernel_tier, Some(KernelTier::Avx2Fma));
            files(
                &out,
                Some(&["model.safetensors", "scores.csv", "metrics.json"]),
            )
        })
        .collect();
    let first = &runs[0];
    for (name, bytes) in first {
        assert!(
            &runs[1][name] == bytes,
            "{} differs between AVX-512 and AVX2 with --reproducible",
            name.display()
        );
    }
}
