//! A folder of any size trains within a fixed memory (issue 30): the decoded training images
//! are held up to a budget and read again from disk past it, and a run whose budget holds a
//! few of its images writes the bytes of one that holds them all (DRA, and AHL, whose phase
//! reads the whole set).

use candle_core::Device;
use dra_data::datasets::Family;
use dra_data::synthetic::{self, SyntheticSpec};
use dra_model::Method;
use dra_train::record::AhlConfig;
use dra_train::{RunControl, RunRequest, TrainConfig};

#[test]
fn a_small_image_cache_trains_the_run_a_large_one_does() {
    let dir = tempfile::tempdir().unwrap();
    synthetic::ensure(dir.path(), &SyntheticSpec::default()).unwrap();
    for method in [Method::Dra, Method::Ahl] {
        let mut config = TrainConfig::quick();
        (config.method, config.image_size, config.n_scales) = (method, 32, 1);
        (config.epochs, config.steps_per_epoch, config.batch_size) = (2, 3, 6);
        if method.is_ahl() {
            config.ahl = Some(AhlConfig {
                epochs: 1,
                inner_steps: 1,
                query_batches: 1,
                ..AhlConfig::default()
            });
        }
        // All 80 training normals, and room for 5 of them.
        let runs: Vec<Vec<Vec<u8>>> = [None, Some(5 * dra_data::image_bytes(32))]
            .into_iter()
            .enumerate()
            .map(|(k, cache_bytes)| {
                let out = dir.path().join(format!("{method}-{k}"));
                dra_train::train(&RunRequest {
                    config: config.clone(),
                    dataset: "synthetic/washer".into(),
                    category_dir: dir.path().join("washer"),
                    family: Family::Mvtec,
                    out_dir: out.clone(),
                    device: Device::Cpu,
                    on_unreadable: dra_data::OnUnreadable::Error,
                    save_maps: None,
                    control: RunControl {
                        cache_bytes,
                        ..Default::default()
                    },
                })
                .unwrap();
                ["model.safetensors", "references.safetensors", "scores.csv"]
                    .iter()
                    .map(|f| std::fs::read(out.join(f)).unwrap())
                    .collect()
            })
            .collect();
        assert!(
            runs[0] == runs[1],
            "{method}: the cache's size changed the run"
        );
    }
}
