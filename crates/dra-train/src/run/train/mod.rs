//! `dra train`: one run end to end, in four phases that hand typed values down a line:
//! [`load`] (data folder → split → decoded images, `config.json`), [`fit`] (model, optimiser,
//! the training loop, AHL's phase), [`score`] (test scores and maps, stored references,
//! threshold) and [`write`] (the run folder's files, `metrics.json` last).

mod fit;
mod load;
mod request;
mod score;
mod write;

use std::time::Instant;

pub use request::{Progress, RunControl, RunRequest, StopSignal, DEFAULT_CACHE_IMAGES};

use crate::error::TrainError;
use crate::record::Metrics;

/// Trains, evaluates and writes the run directory, silently. Returns the metrics.
pub fn train(req: &RunRequest) -> Result<Metrics, TrainError> {
    train_with_progress(req, &mut |_| {})
}

/// [`train`], reporting each step to `progress`.
pub fn train_with_progress(
    req: &RunRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<Metrics, TrainError> {
    let start = Instant::now();
    let (loaded, batches) = load::load(req)?;
    let (fitted, source) = fit::fit(req, &loaded, batches, start, progress)?;
    let scored = score::score(req, &loaded, &fitted, source)?;
    write::write(req, &loaded, &fitted, scored, start)
}
