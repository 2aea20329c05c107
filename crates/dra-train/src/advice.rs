//! Honest defaults: one sentence when a setting cannot make a detector on real images, or when
//! a finished run ranks anomalies below normals, with the setting to try instead.

use crate::config::TrainConfig;

/// Torchvision's ImageNet ResNet-18 weights (`IMAGENET1K_V1`), the paper's starting point:
/// torchvision names the file by the first eight hex digits of its SHA-256 and checks them on
/// download.
pub const IMAGENET_RESNET18: &str = "resnet18-f37072fd.pth";

/// The whole SHA-256 of [`IMAGENET_RESNET18`] (46,830,571 bytes), as recorded by several
/// independent public projects that pin the file; a file of that name must match it.
pub const IMAGENET_RESNET18_SHA256: &str =
    "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec";

/// Checks a weights file named as torchvision names its downloads, `<model>-<8 hex digits>.pth`:
/// the digits are the start of the file's SHA-256, and torchvision refuses a file whose hash
/// does not start with them. A damaged or substituted `resnet18-f37072fd.pth` is refused here
/// the same way; a file named otherwise is not checked.
pub fn check_torchvision_hash(path: &std::path::Path) -> Result<(), crate::TrainError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let Some(prefix) = name
        .strip_suffix(".pth")
        .and_then(|stem| stem.rsplit_once('-'))
        .map(|(_, digits)| digits)
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(());
    };
    let mut file = std::fs::File::open(path).map_err(|e| crate::TrainError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| crate::TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The one file whose whole digest we know is checked in full.
    let expected = if name == IMAGENET_RESNET18 {
        IMAGENET_RESNET18_SHA256.to_string()
    } else {
        prefix.to_ascii_lowercase()
    };
    if !digest.starts_with(&expected) {
        return Err(crate::TrainError::InvalidOption {
            flag: "--weights",
            message: format!(
                "{}: its SHA-256 is {digest}, not {expected}… as torchvision's name says: the \
                 file is damaged or not torchvision's",
                path.display()
            ),
        });
    }
    Ok(())
}

/// The smallest image size at which DRA from random weights ranks a real texture's anomalies
/// above its normals (64 px ranks them below, in the official code too).
pub const MIN_SIZE_FROM_SCRATCH: u32 = 128;

/// Whether `dataset` (as the user named it) is the embedded synthetic data, on which small
/// images from random weights do learn.
fn is_embedded(dataset: &str) -> bool {
    dataset.starts_with(crate::SYNTHETIC_FOLDER)
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
    fn torchvision_names_are_checked_against_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        // SHA-256("abc") = ba7816bf…
        let good = dir.path().join("resnet18-ba7816bf.pth");
        std::fs::write(&good, b"abc").unwrap();
        check_torchvision_hash(&good).unwrap();
        let bad = dir.path().join("resnet18-f37072fd.pth");
        std::fs::write(&bad, b"abc").unwrap();
        let err = check_torchvision_hash(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("--weights") && err.contains("ba7816bf"),
            "{err}"
        );
        let other = dir.path().join("my-weights.pth");
        std::fs::write(&other, b"abc").unwrap();
        check_torchvision_hash(&other).unwrap();
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
