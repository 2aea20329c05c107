//! `bench-cross-domain`: seed Table 9's matrix of targets × sources.

use std::collections::BTreeMap;

use dra_eval::table::TableBuilder;
use dra_eval::MeanStd;

use crate::paper::{PaperResults, PaperTable};
use crate::runs::run_key;
use crate::spec::SweepSpec;

/// What the table's marks mean.
pub const NOTES: &str =
    "\nRows: the target; columns: the source model, fine-tuned on the target's \
    normal images only; `(paper …)`: seed Table 9; `*`: no fine-tuning, the source \
    model on its own test set.\n";

/// Seed Table 9's layout: a row per target, a column per source (and number of shots).
pub fn table(
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
