//! Hyper-Kvasir (labelled images): `upper-gi-tract/anatomical-landmarks/<class>/` are normal,
//! `upper-gi-tract/pathological-findings/<class>/` the anomalies, one class per folder.

use std::path::Path;

use super::{classes_in, from_normals};
use crate::dataset::Category;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "upper-gi-tract/anatomical-landmarks/<class>/ and upper-gi-tract/pathological-findings/<class>/";

pub fn load(dir: &Path) -> Result<Category> {
    let gi = dir.join("upper-gi-tract");
    let mut ignored = Vec::new();
    let normals: Vec<_> = classes_in(&gi.join("anatomical-landmarks"), LAYOUT, &mut ignored)?
        .into_iter()
        .flat_map(|(_, files)| files)
        .collect();
    let findings = classes_in(&gi.join("pathological-findings"), LAYOUT, &mut ignored)?;
    from_normals(dir, &normals, findings, ignored)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    #[test]
    fn landmarks_are_normal_findings_are_classes() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..4 {
            png(&dir.path().join(format!(
                "upper-gi-tract/anatomical-landmarks/z-line/{i}.jpg"
            )));
            png(&dir.path().join(format!(
                "upper-gi-tract/anatomical-landmarks/pylorus/{i}.jpg"
            )));
        }
        png(&dir
            .path()
            .join("upper-gi-tract/pathological-findings/barretts/x.jpg"));
        png(&dir
            .path()
            .join("upper-gi-tract/pathological-findings/esophagitis-a/y.jpg"));
        let cat = load(dir.path()).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (6, 2));
        assert_eq!(cat.defect_classes(), ["barretts", "esophagitis-a"]);
    }
}
