use std::path::PathBuf;

/// Everything that can go wrong while reading data. Each variant names the file, folder or
/// option at fault, so that the message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required folder or file is missing; `layout` describes what the loader expects.
    #[error("{path}: not found; expected the layout {layout}")]
    MissingFolder { path: PathBuf, layout: &'static str },
    #[error("{path}: cannot decode image: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("{path}: no image files in this folder")]
    EmptyFolder { path: PathBuf },
    #[error("unknown anomaly class `{name}` for --known-class; valid classes: {valid}")]
    UnknownClass { name: String, valid: String },
    #[error("{flag}: {requested} labelled anomalies requested but only {available} exist{scope}")]
    NotEnoughAnomalies {
        flag: &'static str,
        requested: usize,
        available: usize,
        scope: String,
    },
    #[error("{path}: line {line}: {reason}")]
    BadLabels {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{flag}: {message}")]
    InvalidOption { flag: &'static str, message: String },
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
