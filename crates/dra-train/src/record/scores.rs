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
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |line: u64, why: &str| TrainError::InvalidOption {
        flag: "scores.csv",
        message: format!("{}: line {line}: {why}", path.display()),
    };
    let rows = csv_rows(&text).map_err(|why| TrainError::InvalidOption {
        flag: "scores.csv",
        message: format!("{}: {why}", path.display()),
    })?;
    let mut out = Vec::new();
    for (line, fields) in rows.into_iter().skip(1) {
        if fields.len() != 8 {
            return Err(bad(line, "expected 8 fields"));
        }
        let label = fields[1].parse().map_err(|_| bad(line, "bad label"))?;
        let score = fields[3].parse().map_err(|_| bad(line, "bad score"))?;
        out.push((label, score));
    }
    Ok(out)
}

/// The records of a CSV text (RFC 4180 quoting undone, blank lines skipped), each with the
/// line it starts on, counted from 1, for errors that name it; `runs.csv` is read the same way.
pub fn csv_rows(text: &str) -> Result<Vec<(u64, Vec<String>)>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        // The reader's position is where it began to look for the record: before any blank
        // lines it skipped.
        let (start, line) = record
            .position()
            .map_or((0, 1), |p| (p.byte() as usize, p.line()));
        let blank = text.as_bytes()[start.min(text.len())..]
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .filter(|&&b| b == b'\n')
            .count() as u64;
        rows.push((line + blank, record.iter().map(String::from).collect()));
    }
    Ok(rows)
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
            "path,label,class,score,g_n,g_s,g_p,g_r\na,0,good,1,1,1,1,1\n\n\r\nb,1\n",
        )
        .unwrap();
        let e = read_scores(&path).unwrap_err().to_string();
        assert!(
            e.starts_with("scores.csv: ") && e.ends_with("line 5: expected 8 fields"),
            "{e}"
        );
    }

    #[test]
    fn rows_name_the_line_they_start_on() {
        let text = "h,i\n\"two\nlines\",1\n\n\nx,2\r\ny\n";
        let rows = csv_rows(text).unwrap();
        let lines: Vec<u64> = rows.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 2, 6, 7]);
        assert_eq!(rows[1].1, ["two\nlines", "1"]);
        assert_eq!(rows[3].1, ["y"]);
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
