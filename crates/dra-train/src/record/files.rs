//! Writing a run directory's files so that a reader never sees half a file and a failure names
//! the path: the output folder checked before any work, every file written through a
//! temporary file and a rename.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::TrainError;

/// A folder held for writing: an advisory lock on its [`LOCK_FILE`](super::LOCK_FILE), released when this is
/// dropped, and by the operating system when the process ends, a crash included.
#[derive(Debug)]
pub struct OutputLock {
    _file: fs::File,
}

/// Locks `dir` for this process, or fails at once, naming it, where another process holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<OutputLock, TrainError> {
    let path = dir.join(super::LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| TrainError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(OutputLock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(TrainError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(TrainError::io(&path, e)),
    }
}

/// Claims `dir` (`flag`'s folder) for a run: a writable folder, locked, that holds no results
/// of an earlier run (any of `results`) unless `overwrite`. The files of `clear` that are there
/// (results, or what a run that failed early left) are removed first, in their order, so that
/// nothing of an earlier run mixes with this one: put the file that marks a finished run first,
/// so that a removal that fails leaves no folder that looks finished.
pub(crate) fn claim_dir(
    dir: &Path,
    flag: &'static str,
    results: &[&str],
    clear: &[&str],
    overwrite: bool,
) -> Result<OutputLock, TrainError> {
    writable_dir(dir, flag)?;
    let lock = lock_dir(dir)?;
    let present = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .filter(|f| dir.join(f).is_file())
            .map(|f| f.to_string())
            .collect()
    };
    let found = present(results);
    if !found.is_empty() && !overwrite {
        return Err(TrainError::OutputExists {
            flag,
            dir: dir.to_path_buf(),
            stopped_run: found.iter().any(|f| f == super::CHECKPOINT_FILE),
            files: found,
        });
    }
    for f in present(clear) {
        remove_if_exists(&dir.join(f))?;
    }
    Ok(lock)
}

/// Creates `dir` if it is missing and checks that a file can be written there, so that a bad
/// output folder fails before any work, naming `flag` and the path.
pub(crate) fn writable_dir(dir: &Path, flag: &'static str) -> Result<(), TrainError> {
    if dir.exists() && !dir.is_dir() {
        return Err(TrainError::InvalidOption {
            flag,
            message: format!("{}: exists and is not a folder", dir.display()),
        });
    }
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let probe = dir.join(format!(".dra-write-check-{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| TrainError::io(dir, e))?;
    remove_if_exists(&probe)
}

fn remove_if_exists(path: &Path) -> Result<(), TrainError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(path, e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a reader never sees
/// half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })()
    .map_err(|e| TrainError::io(path, e))
    .and_then(|()| fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e)));
    if written.is_err() {
        // A half-written temporary file is of no use to anyone.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes `value` as pretty JSON. A record that JSON cannot hold (a file name that is not
/// UTF-8 among the recorded paths) is an error naming the file we were writing.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| {
        TrainError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes a safetensors file through a temporary file and a rename, like [`write_atomic`]:
/// `save` writes the temporary file; an error names `path` and leaves no temporary file.
pub(crate) fn save_safetensors(
    path: &Path,
    save: impl FnOnce(&Path) -> candle_core::Result<()>,
) -> Result<(), TrainError> {
    let tmp = path.with_extension(format!("tmp-{}.safetensors", std::process::id()));
    let saved = save(&tmp)
        .map_err(|e| TrainError::io(path, std::io::Error::other(e.to_string())))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e)));
    if saved.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    saved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_names_the_file_and_leaves_nothing_half_written() {
        // The temporary file is where the bytes go; pointed at /dev/full, every write fails
        // with ENOSPC, as on a full disk.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let err = write_atomic(&path, b"{}").unwrap_err().to_string();
        assert!(
            err.contains("metrics.json") && err.contains("No space left"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        assert!(!path.exists());
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the temporary file is left"
        );
    }
}
