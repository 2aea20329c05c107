//! `dra export`: a trained run as one ONNX file that scores as `dra predict` does in any ONNX
//! runtime, the run's reference set baked in and the preprocessing contract, threshold and
//! provenance in its metadata (docs/deploy.md).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use dra_data::transform::{IMAGENET_MEAN, IMAGENET_STD};
use dra_model::onnx::{self, INPUT};
use sha2::{Digest, Sha256};

use super::saved::LoadedModel;
use crate::engine::scoring::References;
use crate::error::TrainError;
use crate::record::{write_atomic, MODEL_FILE, REFERENCES_FILE};

/// How the metadata names the resize every exported model expects: the test transform's.
const RESIZE_RULE: &str = "PIL Image.convert('RGB'), then Image.resize((S, H), Image.BILINEAR) and Image.resize((S, S), Image.BILINEAR), H the image's height: the whole image, width first (antialiased; aspect ratio not kept, no crop)";

/// What [`export`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The model file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: usize,
    /// The graph's outputs, in order.
    pub outputs: Vec<String>,
    /// The file's `metadata_props`, in order.
    pub metadata: Vec<(String, String)>,
}

/// Writes the run in `run_dir` to `out` as an ONNX model on the run's image size with a
/// dynamic batch: DRA with the run's stored references baked in (AHL runs are DRA models), or
/// a baseline. The file is written atomically: a failure leaves no partial model, and an
/// existing `out` is kept unless `overwrite`.
pub fn export(run_dir: &Path, out: &Path, overwrite: bool) -> Result<Exported, TrainError> {
    if !run_dir.is_dir() {
        let what = if run_dir.exists() {
            "is not a run directory"
        } else {
            "no such run directory"
        };
        return Err(TrainError::InvalidOption {
            flag: "--model",
            message: format!(
                "{}: {what}; dra export takes a folder written by dra train (its settings, \
                 references and threshold go into the model)",
                run_dir.display()
            ),
        });
    }
    check_out(out, overwrite)?;
    // The graph's constants are read from the CPU; the export is a one-off, not a hot path.
    let loaded = LoadedModel::load(run_dir, &crate::TrainConfig::paper(), &Device::Cpu)?;
    let cfg = &loaded.config;
    let size = cfg.image_size as usize;
    let references = match loaded.stored_references()? {
        References::Fixed { images, n_ref } if n_ref > 0 => Some(Tensor::from_vec(
            images,
            (n_ref, 3, size, size),
            &Device::Cpu,
        )?),
        _ => None,
    };
    let mut metadata = vec![
        (
            "producer".to_string(),
            format!("dra-rs {}", env!("CARGO_PKG_VERSION")),
        ),
        ("method".into(), cfg.method.name().into()),
        ("model".into(), cfg.method.base().name().into()),
        ("backbone".into(), cfg.backbone.to_string()),
        ("dataset".into(), loaded.dataset.clone().unwrap_or_default()),
        (
            "input".into(),
            format!("{INPUT}: float32 [N, 3, {size}, {size}]"),
        ),
        ("image_size".into(), size.to_string()),
        ("resize".into(), RESIZE_RULE.into()),
        ("channel_order".into(), "RGB, channels first (NCHW)".into()),
        ("scale".into(), "1/255".into()),
        ("mean".into(), json_floats(&IMAGENET_MEAN)),
        ("std".into(), json_floats(&IMAGENET_STD)),
        (
            "normalize".into(),
            "x = (pixel / 255 - mean) / std per channel, in float32".into(),
        ),
    ];
    if cfg.method.base() == dra_model::Method::Dra {
        metadata.push(("heads".into(), cfg.heads.to_string()));
        metadata.push(("n_ref".into(), cfg.n_ref.to_string()));
    }
    if let Some(t) = &loaded.threshold {
        metadata.push(("threshold".into(), t.value.to_string()));
        if let Some(rate) = t.target_fpr {
            metadata.push(("threshold_target_fpr".into(), rate.to_string()));
        }
        metadata.push(("threshold_source".into(), t.source.clone()));
        metadata.push((
            "decision".into(),
            "anomalous when score > threshold, compared in float64".into(),
        ));
    }
    metadata.push(("model_sha256".into(), sha256_of(&run_dir.join(MODEL_FILE))?));
    if references.is_some() {
        metadata.push((
            "references_sha256".into(),
            sha256_of(&run_dir.join(REFERENCES_FILE))?,
        ));
    }
    let model = loaded.model.to_onnx(size, references.as_ref(), &metadata)?;
    let outputs: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    let bytes = onnx::encode(&model);
    write_atomic(out, &bytes)?;
    Ok(Exported {
        path: out.to_path_buf(),
        bytes: bytes.len(),
        outputs,
        metadata,
    })
}

/// `--out`: a file in a folder that exists, not a folder, and not an earlier export unless
/// `overwrite` (a deployed model is work too).
fn check_out(out: &Path, overwrite: bool) -> Result<(), TrainError> {
    let bad = |message: String| TrainError::InvalidOption {
        flag: "--out",
        message: format!("{}: {message}", out.display()),
    };
    if out.is_dir() {
        return Err(bad(
            "is a folder; give the model file's path (model.onnx)".into()
        ));
    }
    if out.exists() && !overwrite {
        return Err(bad("exists already; give --overwrite to replace it".into()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(bad(format!("no such folder {}", parent.display())));
    }
    Ok(())
}

/// A JSON array of `values` at f32's shortest round-trip precision: `[0.485,0.456,0.406]`,
/// which a reader parsing it to float32 gets back bit for bit.
fn json_floats(values: &[f32]) -> String {
    let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// The file's SHA-256, lowercase hex.
fn sha256_of(path: &Path) -> Result<String, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_back_as_the_same_f32() {
        let text = json_floats(&IMAGENET_MEAN);
        assert_eq!(text, "[0.485,0.456,0.406]");
        let back: Vec<f32> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, IMAGENET_MEAN);
    }

    #[test]
    fn an_existing_model_or_a_missing_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.onnx");
        std::fs::write(&file, b"deployed").unwrap();
        let err = check_out(&file, false).unwrap_err().to_string();
        assert!(
            err.contains("--overwrite") && err.contains("model.onnx"),
            "{err}"
        );
        check_out(&file, true).unwrap();
        let err = check_out(dir.path(), true).unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let err = check_out(&dir.path().join("no/model.onnx"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such folder"), "{err}");
    }
}
