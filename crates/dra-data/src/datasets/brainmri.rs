//! Brain MRI tumour detection (Kaggle "Brain MRI Images for Brain Tumor Detection"): `no/` holds
//! normal scans, `yes/` tumours (one anomaly class, `defect`). Its files mix `.jpg`, `.JPG`,
//! `.jpeg` and `.png`, which the official loader partly skips; here all are read.

use std::path::Path;

use super::{from_normals, images_in};
use crate::dataset::Category;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "no/ and yes/";

pub fn load(dir: &Path) -> Result<Category> {
    let mut ignored = Vec::new();
    let normals = images_in(&dir.join("no"), LAYOUT, &mut ignored)?;
    let tumours = images_in(&dir.join("yes"), LAYOUT, &mut ignored)?;
    from_normals(dir, &normals, [("defect".to_string(), tumours)], ignored)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    #[test]
    fn splits_normals_and_reads_every_extension() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..8 {
            png(&dir.path().join(format!("no/N{i}.jpg")));
        }
        png(&dir.path().join("yes/Y1.JPG"));
        png(&dir.path().join("yes/Y2.jpeg"));
        let cat = load(dir.path()).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (6, 2));
        assert_eq!(cat.defects["defect"].len(), 2);
        let err = load(&dir.path().join("nothing")).unwrap_err().to_string();
        assert!(err.contains("no/ and yes/"), "{err}");
    }
}
