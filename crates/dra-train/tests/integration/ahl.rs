//! AHL end to end on generated data: it learns as well as DRA trained with the same budget, is
//! deterministic on the CPU, and its saved run reloads and re-scores identically.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::Method;
use dra_train::record::{AhlConfig, HeadInit, RunRecord};
use dra_train::{evaluate, LoadedModel, Metrics, ReferenceChoice, RunRequest, TrainConfig};

/// 48 px, one scale, 40 steps of 24: the settings DevNet's learning test uses, with the
/// portable arithmetic (`--reproducible`), so that every x86-64 CPU with AVX2 and FMA gives
/// these runs the same bytes and the tests below the same verdict.
fn base_config(method: Method, seed: u64) -> TrainConfig {
    let mut c = TrainConfig::quick();
    c.method = method;
    c.image_size = 48;
    c.n_scales = 1;
    c.epochs = 4;
    c.seed = seed;
    c.reproducible = true;
    if method.is_ahl() {
        c.ahl = Some(small_ahl());
    }
    c
}

/// An AHL phase of about the base training's cost at this size.
fn small_ahl() -> AhlConfig {
    AhlConfig {
        epochs: 6,
        inner_steps: 5,
        query_batches: 3,
        window: 2,
        ..AhlConfig::default()
    }
}

fn train(config: TrainConfig, category: &Path, out: PathBuf) -> Metrics {
    dra_train::train(&RunRequest {
        config,
        dataset: "synthetic/washer".into(),
        category_dir: category.to_path_buf(),
        family: Family::Mvtec,
        out_dir: out,
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: None,
        control: dra_train::RunControl {
            overwrite: false,
            ..Default::default()
        },
    })
    .unwrap()
}

fn tensors(run: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Two seeds of DRA and of AHL(DRA) with DRA's budget plus an AHL phase of about its cost
/// (DRA 20 s, AHL 35–38 s a run on two cores, measured alone). AHL's run trains the same base as
/// DRA's (same seed, same batches), then adapts its heads: the backbone and the heads'
/// BatchNorm statistics are DRA's bit for bit and the heads' parameters are not.
///
/// The bars leave room for any seed, not only these two. Measured with these settings on seeds
/// 0–4 (2026-12-07, portable arithmetic): DRA 0.756, 0.977, 0.954, 0.977, 0.858; AHL 0.758,
/// 0.977, 0.952, 0.983, 0.865, so AHL minus DRA −0.002 to +0.007 per seed (−0.035 on seed 0
/// with the native AVX2 arithmetic, 0.860 against 0.825). Required on each seed: DRA and AHL
/// above 0.6 (the worst of the five are 0.756 and 0.758; this is DRA's learning test too), and
/// AHL's mean at least DRA's − 0.1. Before, with native arithmetic, AVX2 and AVX-512 machines
/// gave these seeds 0.91–0.93 and 0.92–1.0, and the bars (AHL 0.8; DRA − 0.05) were within a
/// few hundredths of them.
#[test]
fn ahl_learns_as_well_as_dra_is_deterministic_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let category = dir.path().join("washer");
    let mut report = Vec::new();
    for seed in [1, 2] {
        let dra_run = dir.path().join(format!("dra{seed}"));
        let ahl_run = dir.path().join(format!("ahl{seed}"));
        let dra = train(base_config(Method::Dra, seed), &category, dra_run.clone());
        let ahl = train(base_config(Method::Ahl, seed), &category, ahl_run.clone());
        report.push((dra.auc_roc, ahl.auc_roc));
        let (d, a) = (tensors(&dra_run), tensors(&ahl_run));
        assert_eq!(d.len(), a.len(), "AHL saves a DRA model");
        for (name, t) in &d {
            let same = values(t) == values(&a[name]);
            // The backbone and, for heads that start from DRA's, the BatchNorm statistics.
            let kept =
                name.starts_with("feature_extractor.") || dra_model::weights::is_buffer(name);
            assert_eq!(same, kept, "{name}: the backbone is DRA's, the heads AHL's");
        }
        assert!(
            dra.auc_roc > 0.6 && ahl.auc_roc > 0.6,
            "seed {seed}: DRA or AHL did not learn ({report:?})"
        );
    }
    eprintln!("(DRA AUC-ROC, AHL AUC-ROC) per seed: {report:?}");
    let mean = |f: fn(&(f64, f64)) -> f64| report.iter().map(f).sum::<f64>() / report.len() as f64;
    assert!(
        mean(|r| r.1) >= mean(|r| r.0) - 0.1,
        "AHL falls behind DRA by more than the seeds' spread: {report:?}"
    );

    // The record says AHL with its settings in full.
    let run = dir.path().join("ahl2");
    let record: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(record.config.method, Method::Ahl);
    assert_eq!(record.config.ahl, Some(small_ahl()));
    let log = std::fs::read_to_string(run.join("train_log.csv")).unwrap();
    assert_eq!(
        log.lines().count(),
        1 + 40 + small_ahl().epochs,
        "base steps, then AHL epochs"
    );

    // The same seed gives the same run, file for file.
    let again = dir.path().join("ahl2-again");
    train(base_config(Method::Ahl, 2), &category, again.clone());
    for file in ["scores.csv", "model.safetensors"] {
        assert_eq!(
            std::fs::read(run.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }

    // The saved run reloads as a DRA model and re-scores identically with its stored
    // references.
    let loaded = LoadedModel::load(&run, &TrainConfig::paper(), &Device::Cpu).unwrap();
    assert_eq!(loaded.model.method(), Method::Dra);
    let eval = |name: &str| {
        let out = dir.path().join(name);
        let m = evaluate(
            &loaded,
            Family::Mvtec,
            &category,
            dra_data::OnUnreadable::Error,
            &ReferenceChoice::Stored,
            &out,
            None,
            false,
            &Device::Cpu,
        )
        .unwrap();
        (
            m.auc_roc,
            std::fs::read_to_string(out.join("scores.csv")).unwrap(),
        )
    };
    assert_eq!(eval("e1"), eval("e2"));
}

/// AHL on DevNet from fresh heads: DevNet's head trained anew, above chance; the run saves and
/// reloads as a DevNet model. DevNet varies most from seed to seed: with these settings seeds
/// 0–4 scored 0.815, 0.948, 0.585, 0.987, 0.923 (2026-12-07, portable arithmetic), so the bar is
/// chance (0.5), below the worst of them, and this seed (3) is not singled out for its 0.987.
#[test]
fn ahl_on_devnet_trains_and_reloads_as_devnet() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let category = dir.path().join("washer");
    let run = dir.path().join("run");
    // Fresh heads, as the released code trains them.
    let mut config = base_config(Method::AhlDevNet, 3);
    config.ahl = Some(AhlConfig {
        init: HeadInit::Fresh,
        ..small_ahl()
    });
    let metrics = train(config, &category, run.clone());
    assert!(
        metrics.auc_roc > 0.5,
        "AHL(DevNet): AUC-ROC {}",
        metrics.auc_roc
    );
    let loaded = LoadedModel::load(&run, &TrainConfig::paper(), &Device::Cpu).unwrap();
    assert_eq!(loaded.model.method(), Method::DevNet);
    assert_eq!(loaded.config.method, Method::AhlDevNet);
    assert!(tensors(&run).contains_key("conv.weight"));
}
