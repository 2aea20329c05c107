//! `scores.csv`, one row per scored test image, and the CSV that `dra predict` prints. Fields
//! are quoted as RFC 4180 says (the `csv` crate), so that any path survives the round trip,
//! commas, quotes and line breaks included.

use std::path::{Path, PathBuf};

use super::files::write_atomic;
use super::threshold::Threshold;
use crate::error::TrainError;

/// One row of `scores.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    /// The image file; for a rectangle of one (an AITEX tile), `path#x,y,w,h`.
    pub path: PathBuf,
    /// 1 for an anomaly, 0 for a normal image.
    pub label: u8,
    /// `good` for a normal image, otherwise the defect class (its folder's name).
    pub class: String,
    /// The method's anomaly score; for DRA s = −g_n + g_s + g_p + g_r.
    pub score: f64,
    /// g_n, g_s, g_p, g_r; NaN for a head the method does not have (DevNet fills g_s only,
    /// the other baselines none).
    pub heads: [f64; 4],
}

/// CSV text of `rows` of fields, a header first. Writing into memory cannot fail.
fn csv_text<I, R>(header: &[&str], rows: I) -> String
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).expect("CSV into memory");
    for row in rows {
        w.write_record(row).expect("CSV into memory");
    }
    let bytes = w.into_inner().expect("CSV into memory");
    String::from_utf8(bytes).expect("the fields are UTF-8")
}

/// `scores.csv`: `path,label,class,score,g_n,g_s,g_p,g_r`, one row per test image.
pub fn write_scores(path: &Path, rows: &[ScoreRow]) -> Result<(), TrainError> {
    let text = csv_text(
        &[
            "path", "label", "class", "score", "g_n", "g_s", "g_p", "g_r",
        ],
        rows.iter().map(|r| {
            [
                r.path.to_string_lossy().into_owned(),
                r.label.to_string(),
                r.class.clone(),
                r.score.to_string(),
                r.heads[0].to_string(),
                r.heads[1].to_string(),
                r.heads[2].to_string(),
                r.heads[3].to_string(),
            ]
        }),
    );
    write_atomic(path, text.as_bytes())
}

/// Reads `scores.csv` back (labels and scores), e.g. to recompute the metrics.
pub fn read_scores(path: &Path) -> Result<Vec<(u8, f64)>, TrainError> {
    let bad = |line: u64, why: &str| TrainError::InvalidOption {
        flag: "scores.csv",
        message: format!("{}: line {line}: {why}", path.display()),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != 8 {
            return Err(bad(line, "expected 8 fields"));
        }
        let label = record[1].parse().map_err(|_| bad(line, "bad label"))?;
        let score = record[3].parse().map_err(|_| bad(line, "bad score"))?;
        rows.push((label, score));
    }
    Ok(rows)
}

/// A CSV reader's error as ours: the file's own error when it could not be read.
fn csv_error(path: &Path, e: csv::Error) -> TrainError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => TrainError::io(path, e),
        other => TrainError::InvalidOption {
            flag: "scores.csv",
            message: format!("{}: {other:?}", path.display()),
        },
    }
}

/// The CSV that `dra predict` prints: `path,score,decision,g_n,g_s,g_p,g_r`. The decision is
/// `anomaly` when the score is above the threshold, `normal` otherwise, and empty without a
/// threshold.
pub fn predictions_csv(rows: &[ScoreRow], threshold: Option<&Threshold>) -> String {
    csv_text(
        &["path", "score", "decision", "g_n", "g_s", "g_p", "g_r"],
        rows.iter().map(|r| {
            let decision = match threshold {
                Some(t) if t.is_anomalous(r.score) => "anomaly",
                Some(_) => "normal",
                None => "",
            };
            let [n, s, p, g] = r.heads;
            [
                r.path.to_string_lossy().into_owned(),
                r.score.to_string(),
                decision.to_string(),
                n.to_string(),
                s.to_string(),
                p.to_string(),
                g.to_string(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_csv_round_trips_with_awkward_paths() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![ScoreRow {
            path: "/a,b/\"c\"\nd\re.png".into(),
            label: 1,
            class: "hole".into(),
            score: 0.25,
            heads: [1.0, 0.5, 0.5, 0.25],
        }];
        let path = dir.path().join("scores.csv");
        write_scores(&path, &rows).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "path,label,class,score,g_n,g_s,g_p,g_r\n\
             \"/a,b/\"\"c\"\"\nd\re.png\",1,hole,0.25,1,0.5,0.5,0.25\n"
        );
        assert_eq!(read_scores(&path).unwrap(), vec![(1, 0.25)]);
    }

    #[test]
    fn a_short_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        std::fs::write(
            &path,
            "path,label,class,score,g_n,g_s,g_p,g_r\na,0,good,1,1,1,1,1\nb,1\n",
        )
        .unwrap();
        let e = read_scores(&path).unwrap_err().to_string();
        assert!(
            e.starts_with("scores.csv: ") && e.ends_with("line 3: expected 8 fields"),
            "{e}"
        );
    }

    #[test]
    fn predictions_decide_strictly_above_the_threshold() {
        let row = |path: &str, score: f64| ScoreRow {
            path: path.into(),
            label: 0,
            class: String::new(),
            score,
            heads: [f64::NAN, 1.0, f64::NAN, f64::NAN],
        };
        let rows = [row("a.png", 0.5), row("b,c.png", 0.7)];
        assert_eq!(
            predictions_csv(&rows, Some(&Threshold::given(0.5))),
            "path,score,decision,g_n,g_s,g_p,g_r\n\
             a.png,0.5,normal,NaN,1,NaN,NaN\n\"b,c.png\",0.7,anomaly,NaN,1,NaN,NaN\n"
        );
        assert!(predictions_csv(&rows, None).contains("a.png,0.5,,NaN"));
    }
}
