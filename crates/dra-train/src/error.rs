use std::path::PathBuf;

/// Errors of training and evaluation runs.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] dra_data::DataError),
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Weights(#[from] dra_model::WeightsError),
    #[error("metrics: {0}")]
    Metric(#[from] dra_eval::MetricError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{flag}: {message}")]
    InvalidOption { flag: &'static str, message: String },
    #[error("training diverged at epoch {epoch}, step {step}: the loss is {loss}")]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
