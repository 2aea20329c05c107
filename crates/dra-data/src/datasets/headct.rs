//! Head CT haemorrhage (Kaggle "Head CT - hemorrhage"): `labels.csv` with rows `id,hemorrhage`
//! and the scans `head_ct/NNN.png` (the archive nests them as `head_ct/head_ct/`). Label 0 is
//! normal, 1 the anomaly class `defect`.

use std::path::{Path, PathBuf};

use super::category::Category;
use super::common::{from_normals, missing, read_labels, unlisted};
use super::listing::{keep_readable, LeftOut};
use crate::error::{DataError, Result};
use crate::sample::ImageRef;

pub(crate) const LAYOUT: &str =
    "labels.csv (id,hemorrhage) and head_ct/<NNN>.png (or head_ct/head_ct/)";

pub fn load(dir: &Path) -> Result<Category> {
    let labels = dir.join("labels.csv");
    let text = read_labels(&labels, LAYOUT)?;
    let images = [dir.join("head_ct").join("head_ct"), dir.join("head_ct")]
        .into_iter()
        .find(|d| d.is_dir())
        .ok_or_else(|| missing(&dir.join("head_ct"), LAYOUT))?;
    let (mut normals, mut anomalies) = (Vec::new(), Vec::new());
    let mut listed = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| DataError::BadLabels {
            path: labels.clone(),
            line: i + 1,
            reason: why.to_string(),
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [id, label] = fields[..] else {
            return Err(bad("expected two fields: id,hemorrhage"));
        };
        let id: u32 = id.parse().map_err(|_| bad("the id is not a number"))?;
        let path: PathBuf = images.join(format!("{id:03}.png"));
        if !path.is_file() {
            return Err(bad(&format!("{} does not exist", path.display())));
        }
        listed.insert(path.clone());
        match label {
            "0" => normals.push(ImageRef::file(path)),
            "1" => anomalies.push(ImageRef::file(path)),
            other => return Err(bad(&format!("label `{other}` is neither 0 nor 1"))),
        }
    }
    let mut left = LeftOut::default();
    unlisted(&images, &listed, "not listed in labels.csv", &mut left)?;
    let normals = keep_readable(normals, &mut left);
    let anomalies = keep_readable(anomalies, &mut left);
    from_normals(dir, &normals, [("defect".to_string(), anomalies)], left)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    #[test]
    fn reads_labels_and_nested_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("id, hemorrhage\n");
        for i in 0..6 {
            png(&dir.path().join(format!("head_ct/head_ct/{i:03}.png")));
            csv += &format!("{i},{}\n", (i >= 4) as u8);
        }
        std::fs::write(dir.path().join("labels.csv"), &csv).unwrap();
        png(&dir.path().join("head_ct/head_ct/199.png"));
        let cat = load(dir.path()).unwrap();
        assert_eq!(cat.ignored.len(), 1);
        assert!(cat.ignored[0].image.path.ends_with("199.png"));
        assert_eq!(cat.train_good.len() + cat.test_good.len(), 4);
        assert_eq!(cat.test_good.len(), 1);
        assert_eq!(cat.defects["defect"].len(), 2);
        std::fs::write(dir.path().join("labels.csv"), csv + "7,2\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("labels.csv") && err.contains("line 8"),
            "{err}"
        );
    }
}
