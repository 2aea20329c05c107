//! `bench-pseudo`: paper Table 4. A row group per pseudo-anomaly source (CP-Scar, CP-Mix,
//! CutMix, outlier exposure): one row per data set, the mean over its known-class subsets, as
//! the paper prints them.

use super::rows::{mean_over, Column, Row, Seeds, SeedsOf};
use crate::paper::PSEUDO_DATASETS;
use crate::spec::SweepSpec;

/// The table's rows, each with the per-seed results of every column.
pub fn rows(spec: &SweepSpec, columns: &[Column], seeds_of: SeedsOf) -> Vec<(Row, Vec<Seeds>)> {
    let mut table_rows = Vec::new();
    for source in &spec.pseudo {
        let name = source.name();
        for e in &spec.entries {
            let cells = columns
                .iter()
                .map(|c| {
                    let per: Vec<Seeds> = e
                        .known_classes
                        .iter()
                        .map(|class| seeds_of(&e.dataset, &format!("{class}+{name}"), c))
                        .collect();
                    mean_over(&per)
                })
                .collect();
            let paper_name = source.paper_name().unwrap_or_default().to_string();
            let row = Row::new(
                format!(
                    "{name} · {} (mean of {} known-class subsets)",
                    e.dataset,
                    e.known_classes.len()
                ),
                (e.dataset.clone(), paper_name.clone()),
                e.dir.is_none(),
            );
            // Beside data the paper did not use, its mean over Table 4's data sets.
            let reference = if PSEUDO_DATASETS.contains(&e.dataset.as_str()) {
                Vec::new()
            } else {
                PSEUDO_DATASETS
                    .iter()
                    .map(|d| (d.to_string(), paper_name.clone()))
                    .collect()
            };
            table_rows.push((Row { reference, ..row }, cells));
        }
    }
    table_rows
}
