//! Mastcam novelty detection (Kerner et al.): `train_typical/`, `test_typical/` and
//! `test_novel/<class>/`, copied as they are by the official converter. Files are images or
//! NumPy `.npy` arrays (`H × W × C`, C ≥ 3), of which the official loader keeps the first
//! three channels; both are recognised by content ([`crate::load_rgb`]).

use std::path::Path;

use super::{classes_in, images_in};
use crate::dataset::Category;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "train_typical/, test_typical/, test_novel/<class>/";

pub fn load(dir: &Path) -> Result<Category> {
    let mut ignored = Vec::new();
    Ok(Category {
        root: dir.to_path_buf(),
        train_good: images_in(&dir.join("train_typical"), LAYOUT, &mut ignored)?,
        test_good: images_in(&dir.join("test_typical"), LAYOUT, &mut ignored)?,
        defects: classes_in(&dir.join("test_novel"), LAYOUT, &mut ignored)?
            .into_iter()
            .collect(),
        ignored,
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

    #[test]
    fn npy_arrays_are_images() {
        let dir = tempfile::tempdir().unwrap();
        // Mastcam-style 2 × 2 × 6 uint8 arrays: the first three channels are the image.
        let data: Vec<u8> = (0..24).collect();
        let npy = crate::npy::tests::npy_bytes("|u1", false, &[2, 2, 6], &data);
        for rel in [
            "train_typical/a.npy",
            "test_typical/b.npy",
            "test_novel/veins/c.npy",
        ] {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &npy).unwrap();
        }
        std::fs::write(dir.path().join("train_typical/notes.txt"), "x").unwrap();
        let cat = load(dir.path()).unwrap();
        assert_eq!(cat.train_good.len(), 1);
        assert_eq!(cat.ignored.len(), 1);
        let img = cat.defects["veins"][0].load_rgb().unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert_eq!(img.get_pixel(1, 0).0, [6, 7, 8]);
        assert_eq!(img.get_pixel(0, 1).0, [12, 13, 14]);
    }
}
