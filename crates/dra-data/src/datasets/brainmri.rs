//! Brain MRI tumour detection (Kaggle "Brain MRI Images for Brain Tumor Detection"): `no/` holds
//! normal scans, `yes/` tumours (one anomaly class, `defect`). Its files mix `.jpg`, `.JPG`,
//! `.jpeg` and `.png`, which the official loader partly skips; here all are read.

use std::path::Path;

use super::category::Category;
use super::common::{from_normals, images_in, unused_entries};
use super::listing::LeftOut;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "no/ and yes/";

/// The Kaggle archive holds `no/` and `yes/` twice: at its top and again in
/// `brain_tumor_dataset/`. Whichever level is read, the other copy is reported, not counted.
const NOT_IN_LAYOUT: &str =
    "not part of the layout (no/ and yes/); the Kaggle archive's brain_tumor_dataset/ is a second copy of them";

pub fn load(dir: &Path) -> Result<Category> {
    let mut left = LeftOut::default();
    let normals = images_in(&dir.join("no"), LAYOUT, &mut left)?;
    let tumours = images_in(&dir.join("yes"), LAYOUT, &mut left)?;
    unused_entries(dir, &["no", "yes"], NOT_IN_LAYOUT, &mut left)?;
    from_normals(dir, &normals, [("defect".to_string(), tumours)], left)
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
        // The archive's second copy is reported, not counted.
        png(&dir.path().join("brain_tumor_dataset/no/N0.jpg"));
        let cat = load(dir.path()).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (6, 2));
        assert_eq!(cat.defects["defect"].len(), 2);
        assert_eq!(cat.ignored.len(), 1);
        assert!(cat.ignored[0].image.path.ends_with("brain_tumor_dataset"));
        assert_eq!(cat.ignored[0].reason, NOT_IN_LAYOUT);
        let err = load(&dir.path().join("nothing")).unwrap_err().to_string();
        assert!(err.contains("no/ and yes/"), "{err}");
    }
}
