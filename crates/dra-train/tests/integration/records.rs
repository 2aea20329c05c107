//! Property tests of the records a user may hand back to `dra`: a run directory's
//! `config.json` (read by `dra eval` and `dra predict`) and `scores.csv`. Damaged or hand-edited
//! files give an error naming the file, never a panic.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use dra_model::Detector;
use dra_train::record::{read_scores, RunRecord};
use dra_train::{LoadedModel, TrainConfig};
use proptest::prelude::*;
use proptest::sample::Index;

use dra_test_support::json;

/// A run directory with a valid `config.json` and the weights it describes.
fn run_dir(dir: &Path) -> serde_json::Value {
    let mut config = TrainConfig::quick();
    config.image_size = 32;
    config.n_scales = 1;
    let varmap = VarMap::new();
    Detector::new(
        config.method,
        &config.model_config(),
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    let record = RunRecord {
        dataset: "mvtec/toy".into(),
        dataset_dir: "/d/toy".into(),
        config,
        train_anomalies: Vec::new(),
        contaminants: Vec::new(),
        ignored: Default::default(),
        unreadable: Vec::new(),
        n_train_normal: 4,
        calibration_normals: Vec::new(),
        dra_rs_version: "0.1.0".into(),
        arithmetic: None,
    };
    serde_json::to_value(&record).unwrap()
}

#[test]
fn the_valid_record_loads() {
    let dir = tempfile::tempdir().unwrap();
    let value = run_dir(dir.path());
    std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
    LoadedModel::load(dir.path(), &TrainConfig::paper(), &Device::Cpu).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 150,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Values replaced anywhere in `config.json`: the model loads, or an error says why.
    #[test]
    fn an_edited_config_json_loads_or_fails_cleanly(
        edits in prop::collection::vec((any::<Index>(), json::leaf()), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let value = json::edit(run_dir(dir.path()), edits);
        std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
        if let Err(e) = LoadedModel::load(dir.path(), &TrainConfig::paper(), &Device::Cpu) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Bytes overwritten or cut anywhere in `config.json`.
    #[test]
    fn a_damaged_config_json_fails_cleanly(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = run_dir(dir.path()).to_string().into_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
        if let Err(e) = LoadedModel::load(dir.path(), &TrainConfig::paper(), &Device::Cpu) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Any text in `scores.csv`: rows, or an error naming the file and line.
    #[test]
    fn any_scores_csv_reads_or_names_a_line(body in "[ -~\n\"]{0,300}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        std::fs::write(&path, format!("path,label,class,score,g_n,g_s,g_p,g_r\n{body}")).unwrap();
        if let Err(e) = read_scores(&path) {
            prop_assert!(e.to_string().contains("scores.csv") && e.to_string().contains("line"), "{e}");
        }
    }
}
