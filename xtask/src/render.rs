//! The paper's tables from a results folder: `sweep.json` says what the grid is, `runs.csv`
//! holds the finished runs. The table is a function of those two files alone, so a merged set
//! of shards renders exactly as the unsharded sweep.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use dra_eval::table::{to_markdown, write_csv, TableBuilder};
use dra_eval::MeanStd;
use dra_model::LossKind;

use crate::paper::{PaperResults, PaperTable};
use crate::runs::{self, run_key, RunRow};
use crate::sweep::{read_spec, SweepKind, SweepSpec};

/// AUC-ROC per seed of one table cell.
type Seeds = BTreeMap<u64, f64>;

/// One row of a table: its label, its paper key, and the per-seed results of each column.
struct Row {
    label: String,
    /// (`dataset`, `subset`) in `data/paper/results.csv`.
    paper_key: (String, String),
    /// No data: the folder was missing.
    absent: bool,
}

/// Renders `OUT/table.md` and `OUT/table.csv` (and prints the Markdown).
pub fn render_dir(out: &Path) -> Result<()> {
    let spec = read_spec(out)?;
    let rows = runs::read(&out.join("runs.csv"))?;
    let markdown = render(&spec, &rows, out)?;
    println!(
        "\n{markdown}\n(table.md and table.csv in {})",
        out.display()
    );
    Ok(())
}

/// The results of the grid's cells by key.
fn results_by_key(rows: &[RunRow]) -> BTreeMap<String, f64> {
    rows.iter().map(|r| (r.key(), r.auc_roc)).collect()
}

/// The cells of a table column: (method, loss, shots).
struct Column {
    method: String,
    loss: LossKind,
    shots: usize,
}

fn method_title(method: &str) -> String {
    match method {
        "dra" => "DRA".into(),
        "devnet" => "DevNet".into(),
        "deepsad" => "Deep SAD".into(),
        "minns" => "MINNS".into(),
        "flos" => "FLOS".into(),
        "saoe" => "SAOE".into(),
        other => other.to_string(),
    }
}

/// Per-seed means over members, over the seeds every member has.
fn mean_over(members: &[Seeds]) -> Seeds {
    let Some(first) = members.first() else {
        return Seeds::new();
    };
    first
        .keys()
        .filter(|s| members.iter().all(|m| m.contains_key(s)))
        .map(|s| {
            let sum: f64 = members.iter().map(|m| m[s]).sum();
            (*s, sum / members.len() as f64)
        })
        .collect()
}

fn render(spec: &SweepSpec, rows: &[RunRow], out: &Path) -> Result<String> {
    let paper = PaperResults::load()?;
    let found = results_by_key(rows);
    if spec.sweep == SweepKind::CrossDomain {
        let table = cross_domain_table(spec, &found, &paper);
        let notes = "\nRows: the target; columns: the source model, fine-tuned on the target's \
            normal images only; `(paper …)`: seed Table 9; `*`: no fine-tuning, the source \
            model on its own test set.\n";
        return write_table(spec, table, notes.into(), out);
    }
    let columns: Vec<Column> = spec
        .methods
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
        .collect();
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

    // Rows with, per column, the per-seed AUCs.
    let mut table_rows: Vec<(Row, Vec<Seeds>)> = Vec::new();
    match spec.sweep {
        SweepKind::General => {
            let groups = [
                ("mvtec/", "mvtec", "MVTec AD"),
                ("synthetic/", "synthetic", "Synthetic"),
            ];
            let entries = &spec.entries;
            for (i, e) in entries.iter().enumerate() {
                let cells = columns
                    .iter()
                    .map(|c| seeds_of(&e.dataset, "", c))
                    .collect();
                table_rows.push((
                    Row {
                        label: e.dataset.clone(),
                        paper_key: (e.dataset.clone(), String::new()),
                        absent: e.dir.is_none(),
                    },
                    cells,
                ));
                // After the group's last member: its mean row, as the paper's "MVTec AD".
                let Some(&(prefix, key, title)) =
                    groups.iter().find(|g| e.dataset.starts_with(g.0))
                else {
                    continue;
                };
                let members: Vec<_> = entries
                    .iter()
                    .filter(|m| m.dataset.starts_with(prefix))
                    .collect();
                let is_last = !entries[i + 1..]
                    .iter()
                    .any(|m| m.dataset.starts_with(prefix));
                if !is_last || members.len() < 2 {
                    continue;
                }
                let present: Vec<_> = members.iter().filter(|m| m.dir.is_some()).collect();
                let label = if present.len() == members.len() || present.is_empty() {
                    format!("{title} (mean of {})", members.len())
                } else {
                    format!("{title} (mean of {} present)", present.len())
                };
                let cells = columns
                    .iter()
                    .map(|c| {
                        let per: Vec<Seeds> = present
                            .iter()
                            .map(|m| seeds_of(&m.dataset, "", c))
                            .collect();
                        mean_over(&per)
                    })
                    .collect();
                table_rows.push((
                    Row {
                        label,
                        paper_key: (key.into(), String::new()),
                        absent: present.is_empty(),
                    },
                    cells,
                ));
            }
        }
        SweepKind::Hard | SweepKind::Loss | SweepKind::CrossDomain => {
            for e in &spec.entries {
                for class in &e.known_classes {
                    let cells = columns
                        .iter()
                        .map(|c| seeds_of(&e.dataset, class, c))
                        .collect();
                    table_rows.push((
                        Row {
                            label: format!("{} / {class}", e.dataset),
                            paper_key: (e.dataset.clone(), class.clone()),
                            absent: e.dir.is_none(),
                        },
                        cells,
                    ));
                }
                let cells = columns
                    .iter()
                    .map(|c| {
                        let per: Vec<Seeds> = e
                            .known_classes
                            .iter()
                            .map(|class| seeds_of(&e.dataset, class, c))
                            .collect();
                        mean_over(&per)
                    })
                    .collect();
                table_rows.push((
                    Row {
                        label: format!("{} / Mean", e.dataset),
                        paper_key: (e.dataset.clone(), "mean".into()),
                        absent: e.dir.is_none(),
                    },
                    cells,
                ));
            }
        }
    }

    let paper_table = match spec.sweep {
        SweepKind::General => Some(PaperTable::General),
        SweepKind::Hard => Some(PaperTable::Hard),
        // The paper gives the loss study as a chart only (seed Fig. 5).
        SweepKind::Loss | SweepKind::CrossDomain => None,
    };
    let mut table = TableBuilder::new(match spec.sweep {
        SweepKind::General => "Dataset",
        _ => "Dataset / known class",
    });
    let titles: Vec<String> = columns
        .iter()
        .map(|c| match spec.sweep {
            SweepKind::Loss if spec.methods.len() > 1 => {
                format!("{} {} {}-shot", method_title(&c.method), c.loss, c.shots)
            }
            SweepKind::Loss => format!("{} {}-shot", c.loss, c.shots),
            _ => format!("{} {}-shot", method_title(&c.method), c.shots),
        })
        .collect();
    let published = |row: &Row, c: &Column| {
        paper_table
            .and_then(|pt| paper.get(pt, &row.paper_key.0, &row.paper_key.1, &c.method, c.shots))
    };
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
    for (row, cells) in &table_rows {
        for ((c, title), seeds) in columns.iter().zip(&titles).zip(cells) {
            let ours = MeanStd::of(&seeds.values().copied().collect::<Vec<_>>());
            let text = match (&ours, row.absent) {
                (_, true) => "absent".to_string(),
                (Some(m), _) => m.to_string(),
                (None, _) => "-".to_string(),
            };
            table.text(&row.label, title, text);
            if let Some(p) = published(row, c) {
                table.text(&row.label, &format!("paper {title}"), p.to_string());
                if let Some(m) = ours.filter(|_| !row.absent) {
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
    if spec.sweep == SweepKind::Loss {
        // Seed Fig. 5: the dataset-level means, one bar per loss (and number of shots).
        let means: Vec<&(Row, Vec<Seeds>)> = table_rows
            .iter()
            .filter(|(row, _)| row.label.ends_with(" / Mean") && !row.absent)
            .collect();
        let groups: Vec<String> = means
            .iter()
            .map(|(row, _)| row.label.trim_end_matches(" / Mean").to_string())
            .collect();
        let values: Vec<Vec<Option<f64>>> = means
            .iter()
            .map(|(_, cells)| {
                cells
                    .iter()
                    .map(|seeds| {
                        MeanStd::of(&seeds.values().copied().collect::<Vec<_>>()).map(|m| m.mean)
                    })
                    .collect()
            })
            .collect();
        if !groups.is_empty() {
            crate::chart::BarChart {
                title: "Hard setting, mean over known-class subsets",
                y_label: "AUC-ROC",
                groups: &groups,
                series: &titles,
                values: &values,
            }
            .write_png(&out.join("chart.png"))?;
            notes += "\nChart: chart.png.\n";
        }
    }
    write_table(spec, table, notes, out)
}

/// Writes `table.md` (title, table, notes) and `table.csv`; returns the Markdown.
fn write_table(spec: &SweepSpec, table: TableBuilder, notes: String, out: &Path) -> Result<String> {
    let mut df = table.build()?;
    let mut markdown = format!(
        "# {}: AUC-ROC, mean±std over {} run(s) (seeds 0–{}), profile {}\n\n{}{notes}",
        spec.sweep.name(),
        spec.runs,
        spec.runs - 1,
        spec.profile,
        to_markdown(&df)?
    );
    let absent = spec.absent();
    if !absent.is_empty() {
        markdown += &format!(
            "\nAbsent (no folder under --data-root): {}.\n",
            absent.join(", ")
        );
    }
    let md_path = out.join("table.md");
    runs::write_atomic(&md_path, markdown.as_bytes())?;
    let csv_path = out.join("table.csv");
    let tmp = out.join("table.csv.tmp");
    write_csv(&mut df, &tmp).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &csv_path).with_context(|| csv_path.display().to_string())?;
    Ok(markdown)
}

/// Seed Table 9's layout: a row per target, a column per source (and number of shots).
fn cross_domain_table(
    spec: &SweepSpec,
    found: &BTreeMap<String, f64>,
    paper: &PaperResults,
) -> TableBuilder {
    let loss = spec.losses[0].to_string();
    let method = &spec.methods[0];
    let mut table = TableBuilder::new("Target \\ source");
    let short = |d: &str| d.rsplit('/').next().unwrap_or(d).to_string();
    let title = |source: &str, shots: usize| {
        if spec.shots.len() == 1 {
            short(source)
        } else {
            format!("{} {shots}-shot", short(source))
        }
    };
    for &shots in &spec.shots {
        for source in &spec.entries {
            table.column(&title(&source.dataset, shots));
        }
    }
    for target in &spec.entries {
        for &shots in &spec.shots {
            for source in &spec.entries {
                let column = title(&source.dataset, shots);
                if target.dir.is_none() || source.dir.is_none() {
                    table.text(&target.dataset, &column, "absent");
                    continue;
                }
                let in_domain = target.dataset == source.dataset;
                let subset = if in_domain {
                    ""
                } else {
                    source.dataset.as_str()
                };
                let values: Vec<f64> = (0..spec.runs)
                    .filter_map(|seed| {
                        let key = run_key(&target.dataset, subset, method, &loss, shots, seed);
                        found.get(&key).copied()
                    })
                    .collect();
                let mut text = MeanStd::of(&values)
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into());
                if in_domain {
                    text += "*";
                } else if let Some(p) = paper.get(
                    PaperTable::CrossDomain,
                    &target.dataset,
                    &short(&source.dataset),
                    method,
                    shots,
                ) {
                    text += &format!(" (paper {p})");
                }
                table.text(&target.dataset, &column, text);
            }
        }
    }
    table
}

/// Hand-edited JSON for the property tests, shared with the other crates' tests.
#[cfg(test)]
#[path = "../../crates/dra-data/tests/support/json.rs"]
mod json;

#[cfg(test)]
mod tests {
    use super::json;
    use super::*;

    #[test]
    fn means_use_only_seeds_every_member_has() {
        let a: Seeds = [(0, 0.8), (1, 0.9)].into();
        let b: Seeds = [(0, 1.0)].into();
        assert_eq!(mean_over(&[a, b]), [(0, 0.9)].into());
        assert!(mean_over(&[]).is_empty());
    }

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
                entries: vec![crate::sweep::Entry {
                    dataset: "synthetic/weave".into(),
                    known_classes: Vec::new(),
                    dir: Some("/d/weave".into()),
                }],
                shots: vec![10, 1],
                runs: 2,
                losses: vec![dra_model::LossKind::Deviation],
                methods: vec!["dra".into()],
                fine_tune_epochs: None,
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
