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
    #[error("{path}: no such file or folder")]
    MissingFile { path: PathBuf },
    /// Files that claim to be images but do not decode, sorted by path.
    #[error("{}", unreadable_message(files))]
    Unreadable {
        files: Vec<crate::listing::Unreadable>,
    },
}

/// How many files an unreadable-files error names before it only counts the rest.
const NAMED_UNREADABLE: usize = 10;

/// One line: the count, the way out, then up to ten files with the decoder's reason.
fn unreadable_message(files: &[crate::listing::Unreadable]) -> String {
    let n = files.len();
    let mut text = format!(
        "cannot decode {n} image file{} (--skip-unreadable leaves {} out): ",
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" },
    );
    let named: Vec<String> = files
        .iter()
        .take(NAMED_UNREADABLE)
        .map(|f| format!("{}: {}", f.path.display(), f.reason))
        .collect();
    text += &named.join("; ");
    if n > NAMED_UNREADABLE {
        text += &format!("; and {} more", n - NAMED_UNREADABLE);
    }
    text
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
