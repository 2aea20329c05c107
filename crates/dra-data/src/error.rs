use std::path::PathBuf;

/// Everything that can go wrong while reading data. Each variant names the file, folder or
/// option at fault, so that the message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A required folder or file is missing; `layout` describes what the loader expects.
    #[error("{path}: not found; expected the layout {layout}")]
    MissingFolder {
        /// The folder or file that does not exist.
        path: PathBuf,
        /// The folder layout the loader expects, as shown to the user.
        layout: &'static str,
    },
    /// A file that should be an image does not decode, or a rectangle does not fit inside it.
    #[error("{path}: cannot decode image: {reason}")]
    BadImage {
        /// The file at fault.
        path: PathBuf,
        /// The decoder's message, or what is wrong with the image.
        reason: String,
    },
    /// A folder that must hold images holds none.
    #[error("{path}: no image files in this folder")]
    EmptyFolder {
        /// The folder at fault.
        path: PathBuf,
    },
    /// The hard setting's known class is not a defect class of the category.
    #[error("unknown anomaly class `{name}` for --known-class; valid classes: {valid}")]
    UnknownClass {
        /// The class asked for.
        name: String,
        /// The category's defect classes, comma-separated.
        valid: String,
    },
    /// More labelled (or contaminating) anomalies were asked for than the category has.
    #[error("{flag}: {requested} labelled anomalies requested but only {available} exist{scope}")]
    NotEnoughAnomalies {
        /// The command-line option that asked for them.
        flag: &'static str,
        /// How many anomalies were asked for.
        requested: usize,
        /// How many there are to choose from.
        available: usize,
        /// Where they were counted: text appended to the message, starting with a space.
        scope: String,
    },
    /// A row of a data set's labels file does not parse.
    #[error("{path}: line {line}: {reason}")]
    BadLabels {
        /// The labels file at fault.
        path: PathBuf,
        /// The row at fault, counted from 1.
        line: usize,
        /// What is wrong with the row.
        reason: String,
    },
    /// An option's value is out of range or does not fit the data.
    #[error("{flag}: {message}")]
    InvalidOption {
        /// The command-line option at fault.
        flag: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// A file or folder named on the command line does not exist.
    #[error("{path}: no such file or folder")]
    MissingFile {
        /// The path as given.
        path: PathBuf,
    },
    /// Files that claim to be images but do not decode, sorted by path.
    #[error("{}", unreadable_message(files))]
    Unreadable {
        /// The files, each with the decoder's reason.
        files: Vec<crate::sample::Unreadable>,
    },
    /// No normal image is left to train on because every one of them is unreadable (even
    /// with `--skip-unreadable`, a data set needs normals).
    #[error("{path}: no image files that decode: {}", named_files(files))]
    NothingDecodes {
        /// The folder of the normal images (or the data set's folder).
        path: PathBuf,
        /// The unreadable files, each with the decoder's reason.
        files: Vec<crate::sample::Unreadable>,
    },
}

/// How many files an unreadable-files error names before it only counts the rest.
const NAMED_UNREADABLE: usize = 10;

/// One line: the count, the way out, then up to ten files with the decoder's reason.
fn unreadable_message(files: &[crate::sample::Unreadable]) -> String {
    let n = files.len();
    format!(
        "cannot decode {n} image file{} (--skip-unreadable leaves {} out): {}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" },
        named_files(files)
    )
}

/// Up to ten files with the decoder's reason, then a count of the rest.
fn named_files(files: &[crate::sample::Unreadable]) -> String {
    let named: Vec<String> = files
        .iter()
        .take(NAMED_UNREADABLE)
        .map(|f| format!("{}: {}", f.path.display(), f.reason))
        .collect();
    let mut text = named.join("; ");
    if files.len() > NAMED_UNREADABLE {
        text += &format!("; and {} more", files.len() - NAMED_UNREADABLE);
    }
    text
}

/// The crate's result type, failing with [`DataError`] unless told otherwise.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
