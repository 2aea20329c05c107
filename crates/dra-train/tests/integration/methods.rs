//! The competing methods end to end: each baseline trains through the same pipeline as DRA on an
//! easy generated set, learns, and its saved run reloads and re-scores to the same numbers.

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::baselines::DeepSad;
use dra_model::Method;
use dra_train::record::RunRecord;
use dra_train::{evaluate, predict, LoadedModel, ReferenceChoice, RunRequest, TrainConfig};

/// One loop over the five baselines (AHL has its own tests, `ahl.rs`) (one data set, generated once), so that the whole check
/// stays around a minute on two cores.
#[test]
fn every_baseline_learns_saves_and_reloads() {
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
    config.epochs = 5;
    config.steps_per_epoch = 6;
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
        let rows = predict(&loaded, &images, &mut refs, None, &Device::Cpu).unwrap();
        assert_eq!(rows.len(), 12);
        let err = predict(
            &loaded,
            &images,
            &mut refs,
            Some(&dir.path().join("heat")),
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
    eprintln!("AUC-ROC: {report:?}");
    // DevNet needs more data than this small set gives it (AUC-ROC 0.48–0.72 here): it is held
    // to the bar by `devnet_learns_on_the_default_category` below. Its run is still checked for
    // saving and reloading above.
    for (method, auc) in report.iter().filter(|(m, _)| *m != Method::DevNet) {
        assert!(
            *auc >= 0.75,
            "{method} did not learn: AUC-ROC {auc} ({report:?})"
        );
    }
}

/// DevNet on a default-sized category (80 normals, 10 labelled anomalies), 48 px, one scale,
/// 40 steps of 24: it learns (AUC-ROC 0.88 measured), where the five-method loop's smaller
/// set leaves it near chance.
#[test]
fn devnet_learns_on_the_default_category() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    let mut config = TrainConfig::quick();
    config.method = Method::DevNet;
    config.image_size = 48;
    config.n_scales = 1;
    config.epochs = 4;
    let metrics = dra_train::train(&RunRequest {
        config,
        dataset: "synthetic/washer".into(),
        category_dir: dir.path().join("washer"),
        family: Family::Mvtec,
        out_dir: dir.path().join("run"),
        device: Device::Cpu,
        on_unreadable: dra_data::OnUnreadable::Error,
        save_maps: None,
    })
    .unwrap();
    assert!(
        metrics.auc_roc >= 0.75,
        "DevNet did not learn: AUC-ROC {}",
        metrics.auc_roc
    );
}
