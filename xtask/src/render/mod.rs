//! The paper's tables from a results folder: `sweep.json` says what the grid is, `runs.csv`
//! holds the finished runs. The table is a function of those two files alone, so a merged set
//! of shards renders exactly as the unsharded sweep. Each sweep kind builds its rows in a
//! module of its own; the table around them is shared.

mod ablation;
mod cross_domain;
mod general;
mod hard;
mod pseudo;
mod rows;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use dra_eval::html::escape_html;
use dra_eval::table::{html_page, to_html, to_markdown, write_csv, TableBuilder};
use dra_eval::MeanStd;

use crate::paper::{PaperResults, PaperTable, PaperValue};
use crate::runs::{self, run_key, RunRow};
use crate::spec::{read_spec, SweepKind, SweepSpec};
use rows::{Column, Row, Seeds};

/// Renders `OUT/table.md`, `OUT/table.html` and `OUT/table.csv` (and prints the Markdown).
pub fn render_dir(out: &Path) -> Result<()> {
    let spec = read_spec(out)?;
    let rows = runs::read(&out.join("runs.csv"))?;
    let markdown = render(&spec, &rows, out)?;
    println!(
        "\n{markdown}\n(table.md, table.html and table.csv in {})",
        out.display()
    );
    Ok(())
}

/// The results of the grid's cells by key.
fn results_by_key(rows: &[RunRow]) -> BTreeMap<String, f64> {
    rows.iter().map(|r| (r.key(), r.auc_roc)).collect()
}

fn method_title(method: &str) -> String {
    match method {
        "dra" => "DRA".into(),
        "devnet" => "DevNet".into(),
        "deepsad" => "Deep SAD".into(),
        "minns" => "MINNS".into(),
        "flos" => "FLOS".into(),
        "saoe" => "SAOE".into(),
        "ahl" => "AHL(DRA)".into(),
        "ahl-devnet" => "AHL(DevNet)".into(),
        other => other.to_string(),
    }
}

fn render(spec: &SweepSpec, rows: &[RunRow], out: &Path) -> Result<String> {
    let paper = PaperResults::load()?;
    let found = results_by_key(rows);
    let held = spec
        .units()
        .iter()
        .flatten()
        .filter(|job| found.contains_key(&job.key()))
        .count();
    if spec.sweep == SweepKind::CrossDomain {
        let table = cross_domain::table(spec, &found, &paper);
        return write_table(spec, table, cross_domain::NOTES.into(), held, out);
    }
    let columns = columns(spec);
    let seeds_of = |dataset: &str, subset: &str, c: &Column| -> Seeds {
        (0..spec.runs)
            .filter_map(|seed| {
                let key = run_key(
                    dataset,
                    subset,
                    &c.method,
                    &c.loss.to_string(),
                    c.shots,
                    seed,
                );
                found.get(&key).map(|auc| (seed, *auc))
            })
            .collect()
    };
    let table_rows = match spec.sweep {
        SweepKind::General => general::rows(spec, &columns, &seeds_of),
        SweepKind::Ablation => ablation::rows(spec, &columns, &seeds_of),
        SweepKind::Pseudo => pseudo::rows(spec, &columns, &seeds_of),
        SweepKind::Hard | SweepKind::Loss | SweepKind::CrossDomain => {
            hard::rows(spec, &columns, &seeds_of)
        }
    };
    let paper_table = match spec.sweep {
        SweepKind::General => Some(PaperTable::General),
        SweepKind::Hard => Some(PaperTable::Hard),
        SweepKind::Ablation => Some(PaperTable::Ablation),
        SweepKind::Pseudo => Some(PaperTable::Pseudo),
        // The paper gives the loss study as a chart only (seed Fig. 5).
        SweepKind::Loss | SweepKind::CrossDomain => None,
    };
    let titles = column_titles(spec, &columns);
    let (table, mut notes) = rows_table(spec, &columns, &titles, &table_rows, |row, c| {
        let pt = paper_table?;
        if let Some(v) = paper.get(pt, &row.paper_key.0, &row.paper_key.1, &c.method, c.shots) {
            return Some((v, true));
        }
        // For reference only: the mean of the paper's numbers on its own data.
        let values: Option<Vec<f64>> = row
            .reference
            .iter()
            .map(|(d, s)| paper.get(pt, d, s, &c.method, c.shots).map(|v| v.mean))
            .collect();
        let values = values.filter(|v| !v.is_empty())?;
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        Some((PaperValue { mean, std: None }, false))
    });
    if spec.sweep == SweepKind::Loss {
        if let Some(note) = hard::loss_chart(&table_rows, &titles, out)? {
            notes += note;
        }
    }
    write_table(spec, table, notes, held, out)
}

/// The table's columns: method × loss × shots, in the spec's order.
fn columns(spec: &SweepSpec) -> Vec<Column> {
    spec.methods
        .iter()
        .flat_map(|m| {
            spec.losses.iter().flat_map(move |&loss| {
                spec.shots.iter().map(move |&shots| Column {
                    method: m.clone(),
                    loss,
                    shots,
                })
            })
        })
        .collect()
}

/// A column's title: the method and shots, or for the loss study the loss.
fn column_titles(spec: &SweepSpec, columns: &[Column]) -> Vec<String> {
    columns
        .iter()
        .map(|c| match spec.sweep {
            SweepKind::Loss if spec.methods.len() > 1 => {
                format!("{} {} {}-shot", method_title(&c.method), c.loss, c.shots)
            }
            SweepKind::Loss => format!("{} {}-shot", c.loss, c.shots),
            _ => format!("{} {}-shot", method_title(&c.method), c.shots),
        })
        .collect()
}

/// The table of rows × columns: mean±std of ours, and where the paper has a number for some
/// row of a column, the published number and the difference. Returns the table and its notes.
fn rows_table(
    spec: &SweepSpec,
    columns: &[Column],
    titles: &[String],
    table_rows: &[(Row, Vec<Seeds>)],
    published: impl Fn(&Row, &Column) -> Option<(PaperValue, bool)>,
) -> (TableBuilder, String) {
    let mut table = TableBuilder::new(match spec.sweep {
        SweepKind::General => "Dataset",
        SweepKind::Ablation => "Heads · dataset",
        SweepKind::Pseudo => "Pseudo anomalies · dataset",
        _ => "Dataset / known class",
    });
    // Paper columns only where the paper has a number for some row (none for synthetic data).
    let with_paper: Vec<bool> = columns
        .iter()
        .map(|c| {
            table_rows
                .iter()
                .any(|(row, _)| published(row, c).is_some())
        })
        .collect();
    for (t, paper) in titles.iter().zip(&with_paper) {
        table.column(t);
        if *paper {
            table.column(&format!("paper {t}"));
            table.column(&format!("Δ {t}"));
        }
    }
    for (row, cells) in table_rows {
        for ((c, title), seeds) in columns.iter().zip(titles).zip(cells) {
            let ours = MeanStd::of(&seeds.values().copied().collect::<Vec<_>>());
            let text = match (&ours, row.absent) {
                (_, true) => "absent".to_string(),
                (Some(m), _) => cell_text(m, seeds, spec.runs),
                (None, _) => "-".to_string(),
            };
            table.text(&row.label, title, text);
            if let Some((p, same_data)) = published(row, c) {
                let text = if same_data {
                    p.to_string()
                } else {
                    format!("({p})")
                };
                table.text(&row.label, &format!("paper {title}"), text);
                if let Some(m) = ours.filter(|_| !row.absent && same_data) {
                    table.text(
                        &row.label,
                        &format!("Δ {title}"),
                        format!("{:+.3}", m.mean - p.mean),
                    );
                }
            }
        }
    }
    let mut notes = String::new();
    if with_paper.iter().any(|p| *p) {
        notes += "\n`paper`: the published number (data/paper/results.csv); `Δ`: ours − paper.\n";
    }
    let references_shown = table_rows.iter().any(|(row, _)| {
        columns
            .iter()
            .any(|c| matches!(published(row, c), Some((_, false))))
    });
    if references_shown {
        notes += "\nA paper number in parentheses is the paper's result on its own data (for the \
                  embedded data: MVTec AD, or the mean of Table 4's data sets), printed for the \
                  shape of the comparison only, so no `Δ` is taken.\n";
    }
    (table, notes)
}

/// A cell of ours: mean±std over the cell's runs, saying so where it holds fewer than the grid
/// asks (a shard's or an unfinished sweep's), rather than a spread of ±0.000 that one run has.
fn cell_text(m: &MeanStd, seeds: &Seeds, runs: u64) -> String {
    match seeds.len() as u64 {
        n if n >= runs => m.to_string(),
        1 => {
            let (seed, auc) = seeds.iter().next().expect("one run");
            format!("{auc:.3} (seed {seed} only)")
        }
        n => format!("{m} ({n} of {runs} runs)"),
    }
}

/// Writes `table.md` (title, table, notes), the same as a standalone page `table.html`, and
/// `table.csv`; returns the Markdown. `held` is how many of the grid's runs the folder holds:
/// the title of a part (a shard, an unfinished sweep) says that it is one.
fn write_table(
    spec: &SweepSpec,
    table: TableBuilder,
    notes: String,
    held: usize,
    out: &Path,
) -> Result<String> {
    let df = table.build()?;
    let grid: usize = spec.units().iter().map(Vec::len).sum();
    let heading = if held < grid {
        format!(
            "{}: AUC-ROC, mean±std over the runs held, profile {}: a part of the sweep, {held} \
             of its {grid} runs (a shard, or a sweep not finished; `cargo xtask merge` unites \
             shards)",
            spec.sweep.name(),
            spec.profile,
        )
    } else {
        format!(
            "{}: AUC-ROC, mean±std over {} run(s) (seeds 0–{}), profile {}",
            spec.sweep.name(),
            spec.runs,
            spec.runs - 1,
            spec.profile,
        )
    };
    let mut after = notes;
    let absent = spec.absent();
    if !absent.is_empty() {
        after += &format!(
            "\nAbsent (no folder under --data-root): {}.\n",
            absent.join(", ")
        );
    }
    let markdown = format!("# {heading}\n\n{}{after}", to_markdown(&df)?);
    let md_path = out.join("table.md");
    runs::write_atomic(&md_path, markdown.as_bytes())?;
    let html = html_page(&heading, &(to_html(&df)? + &paragraphs(&after)));
    runs::write_atomic(&out.join("table.html"), html.as_bytes())?;
    let csv_path = out.join("table.csv");
    let tmp = out.join("table.csv.tmp");
    write_csv(&df, &tmp).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &csv_path).with_context(|| csv_path.display().to_string())?;
    Ok(markdown)
}

/// The notes (Markdown text) as HTML paragraphs, one per block between blank lines, escaped
/// and otherwise as written: the page shows the same words as `table.md`.
fn paragraphs(markdown: &str) -> String {
    markdown
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>\n", escape_html(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dra_test_support::json;

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 120,
            failure_persistence: None,
            ..Default::default()
        })]

        /// A damaged `sweep.json` renders a table or gives an error naming the file; it never
        /// panics or loops over a grid it made up.
        #[test]
        fn a_damaged_sweep_json_renders_or_fails_cleanly(
            edits in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), json::leaf()), 1..4),
        ) {
            let spec = SweepSpec {
                sweep: SweepKind::General,
                profile: dra_train::Profile::Quick,
                entries: vec![crate::spec::Entry {
                    dataset: "synthetic/weave".into(),
                    known_classes: Vec::new(),
                    dir: Some("/d/weave".into()),
                }],
                shots: vec![10, 1],
                runs: 2,
                losses: vec![dra_model::LossKind::Deviation],
                methods: vec!["dra".into()],
                fine_tune_epochs: None,
                heads: Vec::new(),
                pseudo: Vec::new(),
            };
            let value = json::edit(serde_json::to_value(&spec).unwrap(), edits);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("sweep.json"), value.to_string()).unwrap();
            let row = |seed| crate::runs::tests::row("synthetic/weave", seed, 0.75);
            std::fs::write(dir.path().join("runs.csv"), runs::to_csv(&[row(0), row(1)])).unwrap();
            if let Err(e) = render_dir(dir.path()) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
