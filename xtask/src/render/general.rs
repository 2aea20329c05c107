//! `bench-general`: a row per data set, and after each group of categories (MVTec AD, the
//! synthetic data) the row of their mean, as the paper's "MVTec AD" row (Table 1).

use super::rows::{mean_over, Column, Row, Seeds, SeedsOf};
use crate::spec::SweepSpec;

/// Groups of categories whose mean is a row of its own: (name prefix, paper key, title).
pub(super) const GROUPS: [(&str, &str, &str); 2] = [
    ("mvtec/", "mvtec", "MVTec AD"),
    ("synthetic/", "synthetic", "Synthetic"),
];

/// The table's rows, each with the per-seed results of every column.
pub fn rows(spec: &SweepSpec, columns: &[Column], seeds_of: SeedsOf) -> Vec<(Row, Vec<Seeds>)> {
    let mut table_rows = Vec::new();
    let entries = &spec.entries;
    for (i, e) in entries.iter().enumerate() {
        let cells = columns
            .iter()
            .map(|c| seeds_of(&e.dataset, "", c))
            .collect();
        table_rows.push((
            Row::new(
                e.dataset.clone(),
                (e.dataset.clone(), String::new()),
                e.dir.is_none(),
            ),
            cells,
        ));
        // After the group's last member: its mean row, as the paper's "MVTec AD".
        let Some(&(prefix, key, title)) = GROUPS.iter().find(|g| e.dataset.starts_with(g.0)) else {
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
            Row::new(label, (key.into(), String::new()), present.is_empty()),
            cells,
        ));
    }
    table_rows
}
