//! Loading weights by name: torchvision ResNet-18 checkpoints (for the backbone) and whole DRA
//! state dicts written by the official code, from `.pth` (PyTorch zip pickles) or safetensors;
//! and which of a model's tensors are state rather than parameters ([`is_buffer`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

/// Names of the tensors that are state, not parameters: they are saved with the model but
/// never given to the optimiser (BatchNorm statistics, Deep SAD's centre).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked")
        || name == crate::baselines::DeepSad::CENTER
}

/// The prefix of the backbone's tensors in DRA's state dict.
pub const BACKBONE_PREFIX: &str = "feature_extractor.net.";

/// What can go wrong when loading weights; each variant names the file and the tensors at fault.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read as safetensors or a PyTorch state dict.
    #[error("{path}: cannot read weights: {reason}")]
    Read {
        /// The weights file.
        path: PathBuf,
        /// The underlying error, as text.
        reason: String,
    },
    /// The file's tensors do not match the model's: missing, unexpected or of the wrong shape.
    #[error("{path}: {problem}: {tensors}")]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// What is wrong, e.g. "missing tensors" or "tensors with the wrong shape".
        problem: &'static str,
        /// The offending tensors' names, sorted and comma-separated (with both shapes for a
        /// wrong shape).
        tensors: String,
    },
    /// A file named as torchvision names its downloads (`<model>-<8 hex digits>.pth`) whose
    /// SHA-256 does not start with those digits: damaged, or not torchvision's.
    #[error(
        "{path}: its SHA-256 is {found}, not {expected}… as torchvision's name says: the file \
         is damaged or not torchvision's"
    )]
    Digest {
        /// The weights file.
        path: PathBuf,
        /// The file's SHA-256, in hex.
        found: String,
        /// What its name (or, for [`IMAGENET_RESNET18`], the known digest) says it must be.
        expected: String,
    },
    /// A file could not be read (while checking its digest): the operating system's error.
    #[error("{path}: {source}")]
    Io {
        /// The weights file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A tensor could not be converted to the model's dtype and device or copied into it.
    #[error("{path}: {source}")]
    Model {
        /// The weights file.
        path: PathBuf,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
}

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
/// the same way ([`WeightsError::Digest`]); a file named otherwise is not checked.
pub fn check_torchvision_digest(path: &Path) -> Result<(), WeightsError> {
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
    let read_err = |source: std::io::Error| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let found: String = hasher
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
    if found.starts_with(&expected) {
        Ok(())
    } else {
        Err(WeightsError::Digest {
            path: path.to_path_buf(),
            found,
            expected,
        })
    }
}

/// Reads every tensor of a `.safetensors` file or a PyTorch `.pth`/`.pt`/`.pkl` state dict
/// (also one nested under a `state_dict` key), as float32 on the CPU.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, WeightsError> {
    let read_err = |reason: String| WeightsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
        f.read_exact(&mut head)
            .map_err(|e| read_err(e.to_string()))?;
    }
    // A zip archive (PyTorch ≥ 1.6 checkpoints) starts with "PK".
    let tensors: Vec<(String, Tensor)> = if &head[..2] == b"PK" {
        let all = read_pickle(path, None).map_err(read_err)?;
        if all.is_empty() {
            read_pickle(path, Some("state_dict")).map_err(read_err)?
        } else {
            all
        }
    } else {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| read_err(e.to_string()))?
            .into_iter()
            .collect()
    };
    tensors
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| {
            let t = t
                .to_dtype(DType::F32)
                .map_err(|e| read_err(e.to_string()))?;
            Ok((name, t))
        })
        .collect()
}

/// The tensors of a PyTorch zip pickle (under `key`, if given). candle's pickle reader panics
/// on some damaged files (an index past the end of its stack); a weights file is the user's
/// input, so that panic becomes an error like any other damage.
fn read_pickle(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>, String> {
    std::panic::catch_unwind(|| candle_core::pickle::read_all_with_key(path, key))
        .map_err(|_| "the pickle is damaged (candle's reader gave up on it)".to_string())?
        .map_err(|e| e.to_string())
}

/// Which tensors of `varmap` a file provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only the backbone (`feature_extractor.net.*`); the file may use torchvision's names
    /// (`conv1.weight`, …, its `fc.*` is ignored) or DRA's.
    Backbone,
    /// The whole model, under DRA's names.
    Full,
}

/// Copies tensors into `varmap` by name. Every tensor in scope must be present with the right
/// shape, and the file may hold nothing unexpected; otherwise the error lists the offenders.
/// Returns how many tensors were loaded.
pub fn load_into(varmap: &VarMap, path: &Path, scope: Scope) -> Result<usize, WeightsError> {
    let file = read_tensors(path)?;
    let torchvision_names = !file
        .keys()
        .any(|k| k.starts_with(BACKBONE_PREFIX) || k.contains("_head."));
    // Rename to DRA's names and drop what is out of scope.
    let mut renamed: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for (name, t) in file {
        let dra_name = if torchvision_names {
            format!("{BACKBONE_PREFIX}{name}")
        } else {
            name.clone()
        };
        // ResNet's classifier: in torchvision files, and in the official DRA state dict too
        // (its feature extractor wraps the whole torchvision model), but never used by DRA.
        if dra_name.starts_with(&format!("{BACKBONE_PREFIX}fc.")) {
            continue;
        }
        if scope == Scope::Backbone && !dra_name.starts_with(BACKBONE_PREFIX) {
            continue;
        }
        renamed.insert(dra_name, t);
    }
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let in_scope = |n: &str| scope == Scope::Full || n.starts_with(BACKBONE_PREFIX);
    let mut missing = Vec::new();
    let mut wrong_shape = Vec::new();
    for (name, var) in data.iter().filter(|(n, _)| in_scope(n)) {
        match renamed.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => wrong_shape.push(format!(
                "{name} (file {:?}, model {:?})",
                t.dims(),
                var.dims()
            )),
            Some(_) => {}
        }
    }
    for name in renamed.keys() {
        if !data.contains_key(name) {
            unexpected.push(name.clone());
        }
    }
    let fail = |problem: &'static str, mut tensors: Vec<String>| {
        tensors.sort();
        Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            problem,
            tensors: tensors.join(", "),
        })
    };
    if !wrong_shape.is_empty() {
        return fail("tensors with the wrong shape", wrong_shape);
    }
    if !missing.is_empty() {
        // BatchNorm statistics alone missing is still a broken checkpoint: say so plainly.
        let only_buffers = missing
            .iter()
            .all(|n| is_buffer(n) && n != crate::baselines::DeepSad::CENTER);
        return fail(
            if only_buffers {
                "missing BatchNorm statistics"
            } else {
                "missing tensors"
            },
            missing,
        );
    }
    if !unexpected.is_empty() {
        return fail("tensors this model does not have", unexpected);
    }
    let mut loaded = 0;
    for (name, t) in &renamed {
        let var = &data[name];
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()));
        t.and_then(|t| var.set(&t))
            .map_err(|source| WeightsError::Model {
                path: path.to_path_buf(),
                source,
            })?;
        loaded += 1;
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{dra_varmap as model, values as get};

    #[test]
    fn torchvision_names_load_into_the_backbone() {
        let source = model(1);
        let mut tv: HashMap<String, Tensor> = source
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(n, v)| {
                n.strip_prefix(BACKBONE_PREFIX)
                    .map(|s| (s.to_string(), v.as_tensor().clone()))
            })
            .collect();
        tv.insert(
            "fc.weight".into(),
            Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resnet18.safetensors");
        candle_core::safetensors::save(&tv, &path).unwrap();
        let target = model(2);
        let n = load_into(&target, &path, Scope::Backbone).unwrap();
        // 20 convolutions + 20 BatchNorms × (weight, bias, running mean, running variance).
        assert_eq!(n, 100);
        let name = "feature_extractor.net.layer3.1.conv2.weight";
        assert_eq!(get(&target, name), get(&source, name));
        // The heads keep their own initialisation.
        assert_ne!(
            get(&target, "seen_head.scoring.weight"),
            get(&source, "seen_head.scoring.weight")
        );
    }

    #[test]
    fn mismatches_are_listed() {
        let source = model(1);
        let mut tensors: HashMap<String, Tensor> = source
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        tensors.remove("composite_head.scoring.bias");
        // The official state dict carries ResNet's unused classifier: accepted and ignored.
        tensors.insert(
            "feature_extractor.net.fc.weight".into(),
            Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
        );
        tensors.insert(
            "seen_head.scoring.weight".into(),
            Tensor::zeros((2, 512, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dra.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let err = load_into(&model(2), &path, Scope::Full)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wrong shape") && err.contains("seen_head.scoring.weight"),
            "{err}"
        );
        tensors.insert(
            "seen_head.scoring.weight".into(),
            Tensor::zeros((1, 512, 1, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let err = load_into(&model(2), &path, Scope::Full)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing tensors: composite_head.scoring.bias"),
            "{err}"
        );
    }

    #[test]
    fn pytorch_pickle_is_read() {
        // A torch.save()d state dict of a stray 2-layer model (tools/golden/make_pth_fixture.py).
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny_state_dict.pth"
        ));
        let tensors = read_tensors(path).unwrap();
        assert_eq!(tensors["conv1.weight"].dims(), [4, 3, 3, 3]);
        assert!(!tensors.contains_key("bn1.num_batches_tracked"));
        let err = load_into(&model(0), path, Scope::Backbone)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tiny_state_dict.pth") && err.contains("conv1.weight"),
            "{err}"
        );
    }

    #[test]
    fn torchvision_names_are_checked_against_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        // SHA-256("abc") = ba7816bf…
        let good = dir.path().join("resnet18-ba7816bf.pth");
        std::fs::write(&good, b"abc").unwrap();
        check_torchvision_digest(&good).unwrap();
        let bad = dir.path().join(IMAGENET_RESNET18);
        std::fs::write(&bad, b"abc").unwrap();
        let err = check_torchvision_digest(&bad).unwrap_err();
        assert!(matches!(err, WeightsError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("ba7816bf"), "{err}");
        let other = dir.path().join("my-weights.pth");
        std::fs::write(&other, b"abc").unwrap();
        check_torchvision_digest(&other).unwrap();
    }
}
