//! `bench-hard` and `bench-loss`: a row per known-class subset and a mean row per data set
//! (paper Table 2); for the loss study also seed Fig. 5's chart of the data sets' means.

use std::path::Path;

use anyhow::Result;
use dra_eval::MeanStd;

use super::rows::{mean_over, Column, Row, Seeds, SeedsOf};
use crate::spec::SweepSpec;

/// The table's rows, each with the per-seed results of every column.
pub fn rows(spec: &SweepSpec, columns: &[Column], seeds_of: SeedsOf) -> Vec<(Row, Vec<Seeds>)> {
    let mut table_rows = Vec::new();
    for e in &spec.entries {
        for class in &e.known_classes {
            let cells = columns
                .iter()
                .map(|c| seeds_of(&e.dataset, class, c))
                .collect();
            table_rows.push((
                Row::new(
                    format!("{} / {class}", e.dataset),
                    (e.dataset.clone(), class.clone()),
                    e.dir.is_none(),
                ),
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
            Row::new(
                format!("{} / Mean", e.dataset),
                (e.dataset.clone(), "mean".into()),
                e.dir.is_none(),
            ),
            cells,
        ));
    }
    table_rows
}

/// Seed Fig. 5: the data sets' mean rows, one bar per column (loss and shots), written to
/// `OUT/chart.png`. Returns the note for the table, or nothing when no data set is present.
pub fn loss_chart(
    table_rows: &[(Row, Vec<Seeds>)],
    titles: &[String],
    out: &Path,
) -> Result<Option<&'static str>> {
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
    if groups.is_empty() {
        return Ok(None);
    }
    crate::chart::BarChart {
        title: "Hard setting, mean over known-class subsets",
        y_label: "AUC-ROC",
        groups: &groups,
        series: titles,
        values: &values,
    }
    .write_png(&out.join("chart.png"))?;
    Ok(Some("\nChart: chart.png.\n"))
}
