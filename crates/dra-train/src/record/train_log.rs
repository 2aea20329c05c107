//! `train_log.csv`: one row per optimiser step, written as training goes (a run that fails
//! half-way keeps the log of what it did).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::files::write_atomic;
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

    /// Goes on with the log of a run resumed after `steps` optimiser steps: its rows up to
    /// that step are kept, byte for byte, and those a stopped run wrote after its checkpoint
    /// (steps it will take again) are dropped. A log that lacks some of those steps, or is not
    /// a log, is an error naming the file.
    pub fn resume(dir: &Path, steps: usize) -> Result<Self, TrainError> {
        let path = dir.join(TRAIN_LOG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let bad = |message: String| TrainError::InvalidOption {
            flag: "--resume",
            message: format!("{}: {message}", path.display()),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(
                "not a training log (its first line is not the header)".into()
            ));
        }
        let mut kept = format!("{HEADER}\n");
        let mut rows = Vec::with_capacity(steps);
        for (i, line) in lines.take(steps).enumerate() {
            let row = parse_row(line)
                .filter(|r| r.step == i + 1)
                .ok_or_else(|| bad(format!("line {} is not step {} of the log", i + 2, i + 1)))?;
            kept.push_str(line);
            kept.push('\n');
            rows.push(row);
        }
        if rows.len() < steps {
            return Err(bad(format!(
                "holds {} step(s), the checkpoint {steps}",
                rows.len()
            )));
        }
        write_atomic(&path, kept.as_bytes())?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self {
            path,
            file: BufWriter::new(file),
            rows,
        })
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

/// A line of the log read back (`None` where it is not one).
fn parse_row(line: &str) -> Option<LogRow> {
    let fields: Vec<&str> = line.split(',').collect();
    let [epoch, step, loss, h0, h1, h2, h3, lr, seconds] = fields[..] else {
        return None;
    };
    let heads = if [h0, h1, h2, h3].iter().all(|h| h.is_empty()) {
        None
    } else {
        Some([
            h0.parse().ok()?,
            h1.parse().ok()?,
            h2.parse().ok()?,
            h3.parse().ok()?,
        ])
    };
    Some(LogRow {
        epoch: epoch.parse().ok()?,
        step: step.parse().ok()?,
        loss: loss.parse().ok()?,
        heads,
        lr: lr.parse().ok()?,
        seconds: seconds.parse().ok()?,
    })
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

    #[test]
    fn a_resumed_log_keeps_the_steps_of_its_checkpoint_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let row = |step: usize| LogRow {
            epoch: 1,
            step,
            loss: 1.0 / step as f64,
            heads: step.is_multiple_of(2).then_some([0.1, 0.2, 0.3, 1.0 / 3.0]),
            lr: 2e-4,
            seconds: step as f64,
        };
        let mut log = TrainLog::create(dir.path()).unwrap();
        for step in 1..=5 {
            log.push(row(step)).unwrap();
        }
        drop(log);
        let path = dir.path().join(TRAIN_LOG_FILE);
        let before = std::fs::read_to_string(&path).unwrap();
        let mut resumed = TrainLog::resume(dir.path(), 3).unwrap();
        assert_eq!(resumed.rows(), &[row(1), row(2), row(3)]);
        resumed.push(row(4)).unwrap();
        drop(resumed);
        let after = std::fs::read_to_string(&path).unwrap();
        let first: Vec<&str> = before.lines().take(5).collect();
        assert_eq!(after.lines().collect::<Vec<_>>(), first);

        let err = TrainLog::resume(dir.path(), 9).err().unwrap().to_string();
        assert!(
            err.contains(TRAIN_LOG_FILE) && err.contains("holds 4 step(s)"),
            "{err}"
        );
        std::fs::write(&path, "not,a,log\n").unwrap();
        let err = TrainLog::resume(dir.path(), 1).err().unwrap().to_string();
        assert!(err.contains("not a training log"), "{err}");
    }
}
