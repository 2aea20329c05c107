//! `checkpoint.safetensors`: where training stood at a step boundary, so that a run stopped
//! there (a signal, a crash, a full disk) goes on with `dra train --resume` and ends with the
//! bytes it would have had uninterrupted. One file, written through a temporary file and a
//! rename: a crash mid-write leaves the previous checkpoint whole.
//!
//! The tensors are the model's (every variable, BatchNorm's statistics and Deep SAD's centre
//! included) under `model/<name>` and Adam's moment estimates under `adam/<name>`; the rest of
//! the state ([`TrainState`]) is JSON in the file's metadata. The batches need no state of
//! their own: each one's augmentation is drawn from its step alone and the sampling order is
//! replayed cheaply (`BatchSource::skip`), so the step count is the prefetcher's position.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use super::{CHECKPOINT_FILE, METRICS_FILE};
use crate::error::TrainError;

/// The metadata key that holds the [`TrainState`].
const STATE_KEY: &str = "dra.train_state";
/// The layout of the file; a checkpoint of another layout is refused, not misread.
const FORMAT: u32 = 1;

const MODEL_PREFIX: &str = "model/";
const ADAM_PREFIX: &str = "adam/";

/// Everything of a training run at a step boundary that is not a tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrainState {
    /// The file's layout ([`FORMAT`]).
    pub format: u32,
    /// Optimiser steps taken; the run goes on with the next.
    pub steps_done: usize,
    /// Optimiser steps of the base training in all.
    pub steps: usize,
    /// The sum of the current epoch's losses so far (its mean is the reported loss).
    pub epoch_loss: f64,
    /// The mean loss of the last finished epoch.
    pub final_loss: f64,
    /// The position of the loss's random stream (the deviation loss's prior draws).
    pub loss_rng_word_pos: u128,
    /// Adam's step count per parameter, in the optimiser's order (parameters without a
    /// gradient do not count a step).
    pub adam_steps: Vec<i32>,
    /// Seconds spent training so far, over every session of the run.
    pub train_seconds: f64,
    /// Seconds the loop waited for batches so far.
    pub data_wait_seconds: f64,
    /// What the run was asked that `config.json` does not say, for `--resume`: whether
    /// image files that do not decode are left out (`--skip-unreadable`)...
    pub skip_unreadable: bool,
    /// ...and where the test images' maps go (`--save-maps`).
    pub save_maps: Option<PathBuf>,
}

/// A checkpoint: the state and the tensors.
pub(crate) struct Checkpoint {
    /// Where training stood.
    pub state: TrainState,
    /// Every variable of the model by name.
    pub model: HashMap<String, Tensor>,
    /// Adam's `[m; v]` per trainable parameter, by the parameter's name.
    pub adam: HashMap<String, Tensor>,
}

impl TrainState {
    /// A state of the current layout; the caller fills in the rest.
    pub fn new(steps_done: usize, steps: usize) -> Self {
        Self {
            format: FORMAT,
            steps_done,
            steps,
            epoch_loss: 0.0,
            final_loss: 0.0,
            loss_rng_word_pos: 0,
            adam_steps: Vec::new(),
            train_seconds: 0.0,
            data_wait_seconds: 0.0,
            skip_unreadable: false,
            save_maps: None,
        }
    }
}

impl Checkpoint {
    /// Writes `dir/checkpoint.safetensors` atomically, replacing the previous one.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let path = dir.join(CHECKPOINT_FILE);
        let bad = |e: String| TrainError::io(&path, std::io::Error::other(e));
        let state = serde_json::to_string(&self.state).map_err(|e| bad(e.to_string()))?;
        // Tensors on a GPU are copied to the host by safetensors' view of them.
        let tensors = self
            .model
            .iter()
            .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t))
            .chain(
                self.adam
                    .iter()
                    .map(|(n, t)| (format!("{ADAM_PREFIX}{n}"), t)),
            );
        let metadata = HashMap::from([(STATE_KEY.to_string(), state)]);
        let bytes =
            safetensors::serialize(tensors, Some(metadata)).map_err(|e| bad(e.to_string()))?;
        write_atomic(&path, &bytes)
    }

    /// The state of `dir`'s checkpoint without its tensors (the file's header alone is read);
    /// `None` where there is none.
    pub fn read_state(dir: &Path) -> Result<Option<TrainState>, TrainError> {
        use std::io::Read;
        let path = dir.join(CHECKPOINT_FILE);
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| not_a_checkpoint(&path, e.to_string()))?;
        let n = u64::from_le_bytes(len);
        // safetensors' own limit on a header, which also keeps a garbage length from
        // allocating the machine's memory.
        if n > 100_000_000 {
            return Err(not_a_checkpoint(&path, "a header too large".into()));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| not_a_checkpoint(&path, e.to_string()))?;
        parse_state(&path, &header).map(Some)
    }

    /// The state of the run to resume in `dir`: one that holds a checkpoint and no finished
    /// run. A folder that is missing, finished or without a checkpoint is a one-line error
    /// naming it and `--resume`.
    pub fn resumable(dir: &Path) -> Result<TrainState, TrainError> {
        let refuse = |message: String| TrainError::InvalidOption {
            flag: "--resume",
            message: format!("{}: {message}", dir.display()),
        };
        if dir.join(METRICS_FILE).is_file() {
            return Err(refuse(format!(
                "the run has finished ({METRICS_FILE}); nothing to resume"
            )));
        }
        if !dir.is_dir() {
            return Err(refuse("no such run folder".into()));
        }
        Self::read_state(dir)?.ok_or_else(|| {
            refuse(format!(
                "holds no {CHECKPOINT_FILE} (the run stopped before its first checkpoint, or \
                 this is not a run folder); train it again"
            ))
        })
    }

    /// Reads `dir/checkpoint.safetensors` onto `device`; `None` where there is none. A file
    /// that is not a checkpoint of this layout is an error naming it.
    pub fn load(dir: &Path, device: &Device) -> Result<Option<Self>, TrainError> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TrainError::io(&path, e)),
        };
        let bad = |what: String| not_a_checkpoint(&path, what);
        let header = bytes
            .get(8..)
            .zip(bytes.get(..8))
            .and_then(|(rest, len)| {
                let n = u64::from_le_bytes(len.try_into().ok()?);
                rest.get(..usize::try_from(n).ok()?)
            })
            .ok_or_else(|| bad("no header".into()))?;
        let state = parse_state(&path, header)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| bad(e.to_string()))?;
        let mut model = HashMap::new();
        let mut adam = HashMap::new();
        for (name, tensor) in tensors {
            if let Some(n) = name.strip_prefix(MODEL_PREFIX) {
                model.insert(n.to_string(), tensor);
            } else if let Some(n) = name.strip_prefix(ADAM_PREFIX) {
                adam.insert(n.to_string(), tensor);
            } else {
                return Err(bad(format!("an unknown tensor `{name}`")));
            }
        }
        Ok(Some(Self { state, model, adam }))
    }
}

fn not_a_checkpoint(path: &Path, what: String) -> TrainError {
    TrainError::InvalidOption {
        flag: "--resume",
        message: format!("{}: not a dra checkpoint ({what})", path.display()),
    }
}

/// The [`TrainState`] in a safetensors header (the JSON after the length): its metadata's
/// [`STATE_KEY`].
fn parse_state(path: &Path, header: &[u8]) -> Result<TrainState, TrainError> {
    let bad = |what: String| not_a_checkpoint(path, what);
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header = serde_json::from_slice(header).map_err(|e| bad(e.to_string()))?;
    let state = header
        .metadata
        .get(STATE_KEY)
        .ok_or_else(|| bad("no training state".into()))?;
    let state: TrainState =
        serde_json::from_str(state).map_err(|e| bad(format!("its state: {e}")))?;
    if state.format != FORMAT {
        return Err(bad(format!(
            "layout {}, this dra reads {FORMAT}",
            state.format
        )));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let mut state = TrainState::new(7, 20);
        state.epoch_loss = 0.1 + 0.2;
        state.final_loss = f64::MIN_POSITIVE;
        state.loss_rng_word_pos = u128::from(u64::MAX) + 5;
        state.adam_steps = vec![7, 6];
        state.save_maps = Some("maps".into());
        let w = Tensor::new(&[[1.5f32, -2.0], [3.25, 1e-30]], &dev).unwrap();
        let m = Tensor::new(&[[0.1f32, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]], &dev).unwrap();
        let checkpoint = Checkpoint {
            state: state.clone(),
            model: HashMap::from([("layer.weight".to_string(), w.clone())]),
            adam: HashMap::from([("layer.weight".to_string(), m.clone())]),
        };
        checkpoint.save(dir.path()).unwrap();
        let back = Checkpoint::load(dir.path(), &dev).unwrap().unwrap();
        assert_eq!(back.state, state);
        assert_eq!(Checkpoint::read_state(dir.path()).unwrap(), Some(state));
        let same = |a: &Tensor, b: &Tensor| {
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert!(same(&back.model["layer.weight"], &w));
        assert!(same(&back.adam["layer.weight"], &m));
        assert!(Checkpoint::load(&dir.path().join("none"), &dev)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"not safetensors").unwrap();
        let err = Checkpoint::load(dir.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(CHECKPOINT_FILE) && err.contains("not a dra checkpoint"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        let err = Checkpoint::read_state(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a dra checkpoint"), "{err}");
    }
}
