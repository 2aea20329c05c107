//! The bottom tier: what a run folder holds. Each file's name is one constant here, its
//! contents one type (or one writer) in a module of its own; every file written whole goes
//! through a temporary file and a rename ([`write_atomic`]), and `train_log.csv` is appended
//! to as training goes. Nothing here trains or scores; the tiers above import these records,
//! never the other way.
//!
//! | file | type |
//! |---|---|
//! | [`CONFIG_FILE`] | [`RunRecord`], holding the [`TrainConfig`] |
//! | [`MODEL_FILE`] | the weights by name (safetensors) |
//! | [`REFERENCES_FILE`] | the fixed reference set `dra predict` scores with |
//! | [`SCORES_FILE`] | [`ScoreRow`]s ([`write_scores`], [`read_scores`]) |
//! | [`TRAIN_LOG_FILE`] | [`LogRow`]s, appended as training goes |
//! | [`CHECKPOINT_FILE`] | where training stood at its last checkpoint (`checkpoint.rs`), removed when the run ends |
//! | [`THRESHOLD_FILE`] | [`Threshold`] |
//! | [`METRICS_FILE`] | [`Metrics`]: written last, so that it marks a finished run |
//! | [`REPORT_FILE`] | the page `dra_eval::report` renders |

mod ahl_config;
mod checkpoint;
mod files;
mod metrics;
mod overrides;
mod profile;
mod run_record;
mod scores;
mod threshold;
mod train_config;
mod train_log;

pub use ahl_config::{AhlConfig, Draws, HeadInit, Members};
pub(crate) use checkpoint::{Checkpoint, TrainState};
pub use files::write_atomic;
pub use files::OutputLock;
pub(crate) use files::{claim_dir, lock_dir, save_safetensors, writable_dir, write_json};
pub use metrics::{AtThreshold, Metrics};
pub use overrides::Overrides;
pub use profile::Profile;
pub use run_record::{ArithmeticRecord, RunRecord};
pub use scores::{csv_rows, predictions_csv, read_scores, write_scores, ScoreRow};
pub use threshold::Threshold;
pub use train_config::{TrainConfig, DEFAULT_TARGET_FPR};
pub use train_log::LogRow;
pub(crate) use train_log::TrainLog;

/// Every effective setting and the files the split chose ([`RunRecord`]).
pub const CONFIG_FILE: &str = "config.json";
/// The weights, under the official model's `state_dict` names.
pub const MODEL_FILE: &str = "model.safetensors";
/// The fixed, seeded reference set saved with the model.
pub const REFERENCES_FILE: &str = "references.safetensors";
/// One row per test image ([`ScoreRow`]).
pub const SCORES_FILE: &str = "scores.csv";
/// One row per optimiser step ([`LogRow`]).
pub const TRAIN_LOG_FILE: &str = "train_log.csv";
/// The decision threshold ([`Threshold`]).
pub const THRESHOLD_FILE: &str = "threshold.json";
/// The result ([`Metrics`]); its presence marks a finished run.
pub const METRICS_FILE: &str = "metrics.json";
/// The self-contained page that shows the run.
pub const REPORT_FILE: &str = "report.html";
/// Where training stood at its last checkpoint, for `dra train --resume`; removed once the run's
/// results are written.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The advisory lock a process holds on a folder while it writes there.
pub const LOCK_FILE: &str = ".dra.lock";

/// Every file a training run writes into its folder, removed before a new run starts there:
/// [`METRICS_FILE`] first, which marks a finished run.
pub const RUN_FILES: [&str; 9] = [
    METRICS_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    REFERENCES_FILE,
    SCORES_FILE,
    TRAIN_LOG_FILE,
    THRESHOLD_FILE,
    REPORT_FILE,
    CHECKPOINT_FILE,
];

/// The files that make a folder hold a run's work, which `dra train` replaces only with
/// `--overwrite`: a trained run's results, or the checkpoint of one that stopped (`--resume`
/// goes on with it). A `config.json` or `train_log.csv` alone is what a run that failed before
/// its first checkpoint left, and is replaced.
pub const RESULT_FILES: [&str; 4] = [METRICS_FILE, MODEL_FILE, SCORES_FILE, CHECKPOINT_FILE];
