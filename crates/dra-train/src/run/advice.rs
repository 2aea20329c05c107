//! Honest defaults: one sentence when a setting cannot make a detector on real images, or when
//! a finished run ranks anomalies below normals, with the setting to try instead.

use dra_data::datasets::SYNTHETIC_FOLDER;
use dra_model::weights::IMAGENET_RESNET18;

use crate::record::TrainConfig;

/// The smallest image size at which DRA from random weights ranks a real texture's anomalies
/// above its normals (64 px ranks them below, in the official code too).
pub const MIN_SIZE_FROM_SCRATCH: u32 = 128;

/// Whether `dataset` (as the user named it) is the embedded synthetic data, on which small
/// images from random weights do learn.
fn is_embedded(dataset: &str) -> bool {
    dataset.starts_with(SYNTHETIC_FOLDER)
}

/// Before training: a setting that is a pipeline check rather than a detector on real images.
pub fn before_training(cfg: &TrainConfig, dataset: &str) -> Option<String> {
    (cfg.from_random_weights() && cfg.image_size < MIN_SIZE_FROM_SCRATCH && !is_embedded(dataset))
        .then(|| {
            format!(
                "{} px from random weights is a pipeline check, not a detector: on real images it \
                 can rank anomalies below normals; use --profile own-data ({MIN_SIZE_FROM_SCRATCH} \
                 px, 100 steps of 48) or at least --image-size {MIN_SIZE_FROM_SCRATCH}, and \
                 ImageNet weights (--weights {IMAGENET_RESNET18}) for the paper's results",
                cfg.image_size
            )
        })
}

/// After scoring a labelled test set: the sentences the user must read, the pipeline-check
/// warning included.
pub fn after_training(cfg: &TrainConfig, dataset: &str, auc_roc: f64) -> Vec<String> {
    let mut notes: Vec<String> = before_training(cfg, dataset).into_iter().collect();
    if auc_roc < 0.5 {
        let instead = if cfg.from_random_weights() && cfg.image_size < MIN_SIZE_FROM_SCRATCH {
            format!(
                "--profile own-data ({MIN_SIZE_FROM_SCRATCH} px) and --weights {IMAGENET_RESNET18}"
            )
        } else if cfg.from_random_weights() {
            format!("ImageNet weights (--weights {IMAGENET_RESNET18}) or more steps (--epochs)")
        } else {
            "more steps (--epochs) or more labelled anomalies (--n-anomaly)".into()
        };
        notes.push(format!(
            "AUC-ROC {auc_roc:.3} is below chance (0.5): this model ranks anomalies below \
             normals and is worse than no model; try {instead}"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_from_scratch_are_called_a_pipeline_check_on_real_data_only() {
        let quick = TrainConfig::quick();
        assert!(before_training(&quick, "mvtec/carpet")
            .unwrap()
            .contains("--profile own-data"));
        assert_eq!(before_training(&quick, "synthetic/weave"), None);
        assert_eq!(before_training(&TrainConfig::own_data(), "elpv"), None);
        let mut with_weights = quick.clone();
        with_weights.weights = Some("w.pth".into());
        assert_eq!(before_training(&with_weights, "elpv"), None);
    }

    #[test]
    fn below_chance_says_what_to_try() {
        let own = TrainConfig::own_data();
        assert!(after_training(&own, "elpv", 0.7).is_empty());
        let notes = after_training(&own, "elpv", 0.3);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("below chance") && notes[0].contains(IMAGENET_RESNET18));
        assert_eq!(after_training(&TrainConfig::quick(), "elpv", 0.3).len(), 2);
    }
}
