//! `bench-ablation`: paper Table 3. A row group per head subset (DRA1A … DRA): one row per data
//! set, then the mean over each group of categories (the paper prints MVTec AD's mean only).

use super::general::GROUPS;
use super::rows::{mean_over, Column, Row, Seeds, SeedsOf};
use crate::grid::variant_name;
use crate::spec::SweepSpec;

/// The table's rows, each with the per-seed results of every column.
pub fn rows(spec: &SweepSpec, columns: &[Column], seeds_of: SeedsOf) -> Vec<(Row, Vec<Seeds>)> {
    let mut table_rows = Vec::new();
    for &heads in &spec.heads {
        let name = variant_name(heads);
        let title = format!("{name} ({heads})");
        for e in &spec.entries {
            let cells = columns
                .iter()
                .map(|c| seeds_of(&e.dataset, &name, c))
                .collect();
            table_rows.push((
                Row::new(
                    format!("{title} · {}", e.dataset),
                    (e.dataset.clone(), name.clone()),
                    e.dir.is_none(),
                ),
                cells,
            ));
        }
        for (prefix, key, group) in GROUPS {
            let members: Vec<_> = spec
                .entries
                .iter()
                .filter(|e| e.dataset.starts_with(prefix))
                .collect();
            let present: Vec<_> = members.iter().filter(|e| e.dir.is_some()).collect();
            if members.len() < 2 {
                continue;
            }
            let cells = columns
                .iter()
                .map(|c| {
                    let per: Vec<Seeds> = present
                        .iter()
                        .map(|m| seeds_of(&m.dataset, &name, c))
                        .collect();
                    mean_over(&per)
                })
                .collect();
            table_rows.push((
                Row {
                    // The paper's MVTec AD number beside other data, for reference.
                    reference: if key == "mvtec" {
                        Vec::new()
                    } else {
                        vec![("mvtec".to_string(), name.clone())]
                    },
                    ..Row::new(
                        format!("{title} · {group} (mean of {})", present.len()),
                        (key.into(), name.clone()),
                        present.is_empty(),
                    )
                },
                cells,
            ));
        }
    }
    table_rows
}
