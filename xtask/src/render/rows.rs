//! What every sweep kind's table is made of: rows (a data set, its paper key), columns (a
//! method, loss and shots) and per-seed cells, and the mean over a group's members.

use std::collections::BTreeMap;

use dra_model::LossKind;

/// AUC-ROC per seed of one table cell.
pub(super) type Seeds = BTreeMap<u64, f64>;

/// The per-seed results of a (data set, subset) in a column.
pub(super) type SeedsOf<'a> = &'a dyn Fn(&str, &str, &Column) -> Seeds;

/// One row of a table: its label, its paper key, and the per-seed results of each column.
pub(super) struct Row {
    pub(super) label: String,
    /// (`dataset`, `subset`) in `data/paper/results.csv`.
    pub(super) paper_key: (String, String),
    /// No data: the folder was missing.
    pub(super) absent: bool,
    /// For a row of other data than the paper's (the embedded synthetic sets): the paper keys
    /// whose mean is printed beside it for reference, with no difference taken.
    pub(super) reference: Vec<(String, String)>,
}

impl Row {
    /// A row whose paper number, if any, is under `paper_key`.
    pub(super) fn new(label: String, paper_key: (String, String), absent: bool) -> Self {
        Self {
            label,
            paper_key,
            absent,
            reference: Vec::new(),
        }
    }
}

/// The cells of a table column: (method, loss, shots).
pub(super) struct Column {
    pub(super) method: String,
    pub(super) loss: LossKind,
    pub(super) shots: usize,
}

/// Per-seed means over members, over the seeds every member has.
pub(super) fn mean_over(members: &[Seeds]) -> Seeds {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_use_only_seeds_every_member_has() {
        let a: Seeds = [(0, 0.8), (1, 0.9)].into();
        let b: Seeds = [(0, 1.0)].into();
        assert_eq!(mean_over(&[a, b]), [(0, 0.9)].into());
        assert!(mean_over(&[]).is_empty());
    }
}
