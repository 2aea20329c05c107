//! Mastcam novelty detection (Kerner et al.): `train_typical/`, `test_typical/` and
//! `test_novel/<class>/`, copied as they are by the official converter.

use std::path::Path;

use super::{classes_in, images_in};
use crate::dataset::Category;
use crate::error::Result;

const LAYOUT: &str = "train_typical/, test_typical/, test_novel/<class>/";

pub fn load(dir: &Path) -> Result<Category> {
    Ok(Category {
        root: dir.to_path_buf(),
        train_good: images_in(&dir.join("train_typical"), LAYOUT)?,
        test_good: images_in(&dir.join("test_typical"), LAYOUT)?,
        defects: classes_in(&dir.join("test_novel"), LAYOUT)?
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    #[test]
    fn reads_the_given_split() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("train_typical/a.png"));
        png(&dir.path().join("test_typical/b.png"));
        png(&dir.path().join("test_novel/veins/c.png"));
        png(&dir.path().join("test_novel/drill-hole/d.png"));
        let cat = load(dir.path()).unwrap();
        assert_eq!(cat.defect_classes(), ["drill-hole", "veins"]);
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (1, 1));
    }
}
