//! ELPV solar cells (`zae-bayern/elpv-dataset`): `labels.csv` with whitespace-separated rows
//! `images/cellNNNN.png  probability  type`. Probability 0 is normal, 1 an anomaly of class
//! `mono` or `poly` (the cell type); 1/3 and 2/3 are not used, as in the official converter.

use std::collections::BTreeMap;
use std::path::Path;

use super::category::Category;
use super::common::{from_normals, read_labels, unlisted};
use super::listing::{unreadable_among, LeftOut};
use crate::error::{DataError, Result};
use crate::sample::ImageRef;

pub(crate) const LAYOUT: &str = "labels.csv (path probability type) and images/";

pub fn load(dir: &Path) -> Result<Category> {
    let labels = dir.join("labels.csv");
    let text = read_labels(&labels, LAYOUT)?;
    let mut normals = Vec::new();
    let mut defects: BTreeMap<String, Vec<ImageRef>> = BTreeMap::new();
    let mut left = LeftOut::default();
    let mut listed = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| DataError::BadLabels {
            path: labels.clone(),
            line: i + 1,
            reason: why,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [file, probability, kind] = fields[..] else {
            return Err(bad("expected three fields: path probability type".into()));
        };
        let p: f64 = probability
            .parse()
            .map_err(|_| bad(format!("`{probability}` is not a probability")))?;
        if kind != "mono" && kind != "poly" {
            return Err(bad(format!("type `{kind}` is neither mono nor poly")));
        }
        if !(0.0..=1.0).contains(&p) {
            return Err(bad(format!("probability {probability} is not in [0, 1]")));
        }
        let path = dir.join(file);
        if !path.is_file() {
            return Err(bad(format!("{} does not exist", path.display())));
        }
        listed.insert(path.clone());
        if p == 0.0 {
            normals.push(ImageRef::file(path));
        } else if p == 1.0 {
            defects
                .entry(kind.to_string())
                .or_default()
                .push(ImageRef::file(path));
        } else {
            left.ignore(
                path,
                "defect probability strictly between 0 and 1 (unused, as in the official converter)",
            );
        }
    }
    let images = dir.join("images");
    if images.is_dir() {
        unlisted(&images, &listed, "not listed in labels.csv", &mut left)?;
    }
    let bad = unreadable_among(
        normals
            .iter()
            .chain(defects.values().flatten())
            .map(|i| i.path.as_path()),
        &mut left,
    );
    normals.retain(|i| !bad.contains(&i.path));
    for list in defects.values_mut() {
        list.retain(|i| !bad.contains(&i.path));
    }
    from_normals(dir, &normals, defects, left)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    #[test]
    fn classes_by_cell_type_and_uncertain_rows_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            ("0.0", "mono"),
            ("0.0", "poly"),
            ("0.0", "mono"),
            ("0.0", "poly"),
            ("1.0", "mono"),
            ("1.0", "poly"),
            ("0.3333333333333333", "poly"),
            ("1.0", "poly"),
        ];
        let mut csv = String::new();
        for (i, (p, t)) in rows.iter().enumerate() {
            png(&dir.path().join(format!("images/cell{i:04}.png")));
            csv += &format!("images/cell{i:04}.png  {p}  {t}\n");
        }
        std::fs::write(dir.path().join("labels.csv"), csv).unwrap();
        png(&dir.path().join("images/cell9999.png"));
        let cat = load(dir.path()).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (3, 1));
        assert_eq!(cat.defects["mono"].len(), 1);
        assert_eq!(cat.defects["poly"].len(), 2);
        assert_eq!(cat.ignored.len(), 2);
        assert!(cat.ignored[0].image.path.ends_with("cell0006.png"));
        assert!(cat.ignored[0].reason.contains("between 0 and 1"));
        assert!(cat.ignored[1].image.path.ends_with("cell9999.png"));
        assert_eq!(cat.ignored[1].reason, "not listed in labels.csv");
    }
}
