//! Hyper-Kvasir (labelled images): `upper-gi-tract/anatomical-landmarks/<class>/` are normal,
//! `upper-gi-tract/pathological-findings/<class>/` the anomalies, one class per folder.

use std::path::Path;

use super::category::Category;
use super::common::{classes_in, from_normals, unused_entries};
use super::listing::LeftOut;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "upper-gi-tract/anatomical-landmarks/<class>/ and upper-gi-tract/pathological-findings/<class>/";

/// The publisher's `labeled-images/` also holds the lower GI tract and an `image-labels.csv`;
/// the paper reads the upper GI tract's two folders only.
const NOT_READ: &str =
    "not read: the paper uses upper-gi-tract/{anatomical-landmarks, pathological-findings} only";

pub fn load(dir: &Path) -> Result<Category> {
    let gi = dir.join("upper-gi-tract");
    let mut left = LeftOut::default();
    let normals: Vec<_> = classes_in(&gi.join("anatomical-landmarks"), LAYOUT, &[], &mut left)?
        .into_iter()
        .flat_map(|(_, files)| files)
        .collect();
    let findings = classes_in(&gi.join("pathological-findings"), LAYOUT, &[], &mut left)?;
    unused_entries(dir, &["upper-gi-tract"], NOT_READ, &mut left)?;
    unused_entries(
        &gi,
        &["anatomical-landmarks", "pathological-findings"],
        NOT_READ,
        &mut left,
    )?;
    from_normals(dir, &normals, findings, left)
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
        png(&dir
            .path()
            .join("lower-gi-tract/pathological-findings/polyps/p.jpg"));
        let cat = load(dir.path()).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (6, 2));
        assert_eq!(cat.defect_classes(), ["barretts", "esophagitis-a"]);
        assert_eq!(cat.ignored.len(), 1);
        assert!(cat.ignored[0].image.path.ends_with("lower-gi-tract"));
    }
}
