//! `train_log.csv`: one row per optimiser step, written as training goes (a run that fails
//! half-way keeps the log of what it did).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::TRAIN_LOG_FILE;
use crate::error::TrainError;

const HEADER: &str = "epoch,step,loss,loss_normal,loss_seen,loss_pseudo,loss_residual,lr,seconds";

/// One optimiser step.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// Epoch, counted from 1.
    pub epoch: usize,
    /// Step over the whole run, counted from 1.
    pub step: usize,
    /// The loss the step minimised.
    pub loss: f64,
    /// DRA's head terms (normal, seen, pseudo, residual); `None` for the baselines.
    pub heads: Option<[f64; 4]>,
    /// The learning rate of the step.
    pub lr: f64,
    /// Seconds since training started, at the end of the step.
    pub seconds: f64,
}

/// The log being written, and its rows kept for the report.
pub struct TrainLog {
    path: PathBuf,
    file: BufWriter<File>,
    rows: Vec<LogRow>,
}

impl TrainLog {
    /// Starts `train_log.csv` in `dir` with its header.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(TRAIN_LOG_FILE);
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut log = Self {
            path,
            file: BufWriter::new(file),
            rows: Vec::new(),
        };
        log.line(HEADER.to_string())?;
        Ok(log)
    }

    fn line(&mut self, line: String) -> Result<(), TrainError> {
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Appends a step (head columns empty for a method without DRA's heads).
    pub fn push(&mut self, row: LogRow) -> Result<(), TrainError> {
        let heads = match row.heads {
            Some(h) => h.map(|v| v.to_string()).join(","),
            None => ",,,".into(),
        };
        self.line(format!(
            "{},{},{},{heads},{},{:.3}",
            row.epoch, row.step, row.loss, row.lr, row.seconds
        ))?;
        self.rows.push(row);
        Ok(())
    }

    /// The rows written so far.
    pub fn rows(&self) -> &[LogRow] {
        &self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_step_readable_as_csv() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = TrainLog::create(dir.path()).unwrap();
        log.push(LogRow {
            epoch: 1,
            step: 1,
            loss: 2.5,
            heads: Some([1.0, 0.5, 0.5, 0.5]),
            lr: 2e-4,
            seconds: 0.25,
        })
        .unwrap();
        log.push(LogRow {
            epoch: 1,
            step: 2,
            loss: 2.0,
            heads: None,
            lr: 2e-4,
            seconds: 0.5,
        })
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join(TRAIN_LOG_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines[1], "1,1,2.5,1,0.5,0.5,0.5,0.0002,0.250");
        assert_eq!(lines[2], "1,2,2,,,,,0.0002,0.500");
        assert!(lines.iter().all(|l| l.split(',').count() == 9));
        assert_eq!(log.rows().len(), 2);
    }
}
