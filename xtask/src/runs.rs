//! `OUT/runs.csv`: one row per finished run, the sweep's results file.
//!
//! Every change rewrites the whole file through a temporary file and a rename while holding an
//! exclusive lock on `OUT/runs.csv.lock`: a process killed at any moment leaves either the old
//! or the new file, never half a row, and two processes sharing one results folder (shards on
//! one machine) never lose each other's rows.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The columns of `runs.csv`, in order.
pub const COLUMNS: [&str; 14] = [
    "sweep",
    "dataset",
    "subset",
    "setting",
    "known_class",
    "shots",
    "loss",
    "method",
    "seed",
    "auc_roc",
    "auc_pr",
    "seconds",
    "config_hash",
    "run_dir",
];

/// One finished run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    /// `bench-general`, `bench-hard`, …
    pub sweep: String,
    /// The data trained and tested on, as `--dataset` names it (`mvtec/carpet`, `aitex`).
    pub dataset: String,
    /// The table's subset: the known class (hard setting), the source data set (cross-domain),
    /// empty in the general setting.
    pub subset: String,
    /// `general` or `hard`.
    pub setting: String,
    pub known_class: String,
    pub shots: usize,
    pub loss: String,
    pub method: String,
    pub seed: u64,
    pub auc_roc: f64,
    pub auc_pr: f64,
    /// Wall time of the run (training and scoring).
    pub seconds: f64,
    /// Hash of everything that determines the run's result (see `sweep::config_hash`).
    pub config_hash: String,
    /// The run's own folder (`config.json`, `scores.csv`, `metrics.json`, the model).
    pub run_dir: PathBuf,
}

impl RunRow {
    /// The grid cell this row fills; unique within a sweep.
    pub fn key(&self) -> String {
        run_key(
            &self.dataset,
            &self.subset,
            &self.method,
            &self.loss,
            self.shots,
            self.seed,
        )
    }

    fn fields(&self) -> [String; 14] {
        [
            self.sweep.clone(),
            self.dataset.clone(),
            self.subset.clone(),
            self.setting.clone(),
            self.known_class.clone(),
            self.shots.to_string(),
            self.loss.clone(),
            self.method.clone(),
            self.seed.to_string(),
            // `{}` prints the shortest text that reads back to the same f64.
            self.auc_roc.to_string(),
            self.auc_pr.to_string(),
            format!("{:.1}", self.seconds),
            self.config_hash.clone(),
            self.run_dir.to_string_lossy().into_owned(),
        ]
    }

    fn parse(f: &[String]) -> std::result::Result<Self, String> {
        if f.len() != COLUMNS.len() {
            return Err(format!(
                "expected {} fields, found {}",
                COLUMNS.len(),
                f.len()
            ));
        }
        let num = |i: usize| -> std::result::Result<f64, String> {
            f[i].parse()
                .map_err(|_| format!("{}: `{}` is not a number", COLUMNS[i], &f[i]))
        };
        let int = |i: usize| -> std::result::Result<u64, String> {
            f[i].parse()
                .map_err(|_| format!("{}: `{}` is not an integer", COLUMNS[i], &f[i]))
        };
        Ok(Self {
            sweep: f[0].clone(),
            dataset: f[1].clone(),
            subset: f[2].clone(),
            setting: f[3].clone(),
            known_class: f[4].clone(),
            shots: int(5)? as usize,
            loss: f[6].clone(),
            method: f[7].clone(),
            seed: int(8)?,
            auc_roc: num(9)?,
            auc_pr: num(10)?,
            seconds: num(11)?,
            config_hash: f[12].clone(),
            run_dir: PathBuf::from(&f[13]),
        })
    }
}

/// The unique name of a grid cell; also its run directory's name.
pub fn run_key(
    dataset: &str,
    subset: &str,
    method: &str,
    loss: &str,
    shots: usize,
    seed: u64,
) -> String {
    let mut key = dataset.replace(['/', '\\'], "_");
    if !subset.is_empty() {
        key += "-";
        key += &subset.replace(['/', '\\'], "_");
    }
    format!("{key}-{method}-{loss}-{shots}shot-seed{seed}")
}

/// Reads a `runs.csv`; a missing file is an empty one. A malformed row names its line.
pub fn read(path: &Path) -> Result<Vec<RunRow>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let rows = dra_train::record::csv_rows(&text)
        .map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
    let mut rows = rows.into_iter();
    match rows.next() {
        Some((_, header)) if header.iter().eq(COLUMNS) => {}
        None => return Ok(Vec::new()),
        Some(_) => bail!(
            "{}: line 1: not a dra-rs runs.csv header (expected `{}`)",
            path.display(),
            COLUMNS.join(",")
        ),
    }
    rows.map(|(line, fields)| {
        RunRow::parse(&fields)
            .map_err(|why| anyhow::anyhow!("{}: line {line}: {why}", path.display()))
    })
    .collect()
}

/// Renders rows as `runs.csv` text (RFC 4180 quoting: any path survives the round trip).
pub fn to_csv(rows: &[RunRow]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).expect("CSV into memory");
    for r in rows {
        w.write_record(r.fields()).expect("CSV into memory");
    }
    String::from_utf8(w.into_inner().expect("CSV into memory")).expect("the fields are UTF-8")
}

/// Adds `row` to `OUT/runs.csv`, replacing a row of the same grid cell (a rerun with another
/// configuration); returns all rows after the change.
pub fn upsert(out: &Path, row: RunRow) -> Result<Vec<RunRow>> {
    let _lock = Lock::acquire(out)?;
    let path = out.join("runs.csv");
    let mut rows = read(&path)?;
    let key = row.key();
    rows.retain(|r| r.key() != key);
    rows.push(row);
    write_atomic(&path, to_csv(&rows).as_bytes())?;
    #[cfg(feature = "parquet")]
    dra_eval::table::csv_to_parquet(&path, &out.join("runs.parquet"))
        .with_context(|| out.join("runs.parquet").display().to_string())?;
    Ok(rows)
}

/// Replaces `OUT/runs.csv` by `rows` (used by `merge`).
pub fn write_all(out: &Path, rows: &[RunRow]) -> Result<()> {
    let _lock = Lock::acquire(out)?;
    let path = out.join("runs.csv");
    write_atomic(&path, to_csv(rows).as_bytes())?;
    #[cfg(feature = "parquet")]
    dra_eval::table::csv_to_parquet(&path, &out.join("runs.parquet"))
        .with_context(|| out.join("runs.parquet").display().to_string())?;
    Ok(())
}

/// An exclusive advisory lock on `OUT/runs.csv.lock`, released when dropped (or when the process
/// dies, so a killed sweep never leaves a stale lock).
struct Lock(fs::File);

impl Lock {
    fn acquire(out: &Path) -> Result<Self> {
        fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        let path = out.join("runs.csv.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| path.display().to_string())?;
        file.lock()
            .with_context(|| format!("{}: cannot lock", path.display()))?;
        Ok(Self(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Writes through a temporary file in the same folder, synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(dra_train::record::write_atomic(path, bytes)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bench-general row of DRA, 10 shots.
    pub(crate) fn row(dataset: &str, seed: u64, auc: f64) -> RunRow {
        RunRow {
            sweep: "bench-general".into(),
            dataset: dataset.into(),
            subset: String::new(),
            setting: "general".into(),
            known_class: String::new(),
            shots: 10,
            loss: "deviation".into(),
            method: "dra".into(),
            seed,
            auc_roc: auc,
            auc_pr: 0.1 + auc / 3.0,
            seconds: 12.5,
            config_hash: "abc".into(),
            run_dir: "/r/a,\"b\"".into(),
        }
    }

    #[test]
    fn rows_round_trip_exactly_and_upsert_replaces_a_cell() {
        let dir = tempfile::tempdir().unwrap();
        upsert(dir.path(), row("synthetic/weave", 0, 0.9123456789012345)).unwrap();
        upsert(dir.path(), row("synthetic/weave", 1, 1.0 / 3.0)).unwrap();
        let rows = upsert(dir.path(), row("synthetic/weave", 0, 0.5)).unwrap();
        assert_eq!(rows.len(), 2);
        let back = read(&dir.path().join("runs.csv")).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[0].auc_roc, 1.0 / 3.0);
        assert_eq!(back[1].auc_roc, 0.5);
        assert_eq!(back[1].run_dir, Path::new("/r/a,\"b\""));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.csv");
        let mut text = to_csv(&[row("a", 0, 0.5)]);
        text += "bench-general,b,,general,,ten,deviation,dra,0,0.5,0.5,1.0,h,/r\n";
        fs::write(&path, text).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("shots"), "{err}");
        fs::write(&path, "a,b\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("line 1"));
    }

    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        // Commas, quotes and line breaks: everything CSV quoting must survive.
        "[a-z/_ ,\"\n\r\\-]{0,12}"
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 200,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any rows written are read back exactly.
        #[test]
        fn any_rows_round_trip(
            rows in proptest::collection::vec(
                (text(), text(), 0usize..100, proptest::num::u64::ANY, proptest::num::f64::ANY, text()),
                0..5,
            ),
        ) {
            let rows: Vec<RunRow> = rows
                .into_iter()
                .map(|(dataset, subset, shots, seed, auc, dir)| RunRow {
                    dataset,
                    subset,
                    shots,
                    seed,
                    auc_roc: auc,
                    run_dir: dir.into(),
                    ..row("x", 0, 0.5)
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.csv");
            fs::write(&path, to_csv(&rows)).unwrap();
            let back = read(&path).unwrap();
            proptest::prop_assert_eq!(back.len(), rows.len());
            for (a, b) in back.iter().zip(&rows) {
                // NaN is the one value that is not equal to itself.
                proptest::prop_assert!(a.auc_roc == b.auc_roc || (a.auc_roc.is_nan() && b.auc_roc.is_nan()));
                proptest::prop_assert_eq!(
                    RunRow { auc_roc: 0.0, ..a.clone() },
                    RunRow { auc_roc: 0.0, ..b.clone() }
                );
            }
        }

        /// Any text after the header: rows or an error naming a line, never a panic.
        #[test]
        fn any_text_reads_or_names_a_line(body in "[ -~\n\"]{0,300}") {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.csv");
            fs::write(&path, format!("{}\n{body}", COLUMNS.join(","))).unwrap();
            if let Err(e) = read(&path) {
                proptest::prop_assert!(e.to_string().contains("line"), "{e}");
            }
        }
    }

    #[test]
    fn keys_are_distinct_file_names() {
        assert_eq!(
            run_key("mvtec/carpet", "color", "dra", "deviation", 10, 2),
            "mvtec_carpet-color-dra-deviation-10shot-seed2"
        );
        assert_eq!(
            run_key("aitex", "", "dra", "bce", 1, 0),
            "aitex-dra-bce-1shot-seed0"
        );
    }
}
