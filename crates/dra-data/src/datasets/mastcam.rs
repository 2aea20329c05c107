//! Mastcam novelty detection (Kerner et al.): `train_typical/`, `test_typical/` and
//! `test_novel/<class>/`, copied as they are by the official converter. Files are images or
//! NumPy `.npy` arrays (`H × W × C`, C ≥ 3), of which the official loader keeps the first
//! three channels; both are recognised by content ([`crate::load_rgb`]).
//!
//! The publisher's release (Kerner et al., zenodo) also has `validation_typical/`, which the
//! paper does not use, and `test_novel/all/`, which holds copies of the class folders' frames:
//! counting it would double the anomalies and add a twelfth "class". Both are reported as left
//! out, and the counts follow the paper's Table 5 (9,302 / 426 / 451, 11 classes).

use std::path::Path;

use super::category::Category;
use super::common::{classes_in, images_in, unused_entries};
use super::listing::LeftOut;
use crate::error::Result;

pub(crate) const LAYOUT: &str = "train_typical/, test_typical/, test_novel/<class>/";

/// Why `test_novel/all/` is not a class.
pub(crate) const ALL_FOLDER: &str =
    "test_novel/all/ repeats the class folders' frames (not counted, as in the paper's Table 5)";
const NOT_IN_LAYOUT: &str =
    "not part of the layout the paper reads (e.g. validation_typical/, unused by the paper)";

pub fn load(dir: &Path) -> Result<Category> {
    let mut left = LeftOut::default();
    let train_good = images_in(&dir.join("train_typical"), LAYOUT, &mut left)?;
    let test_good = images_in(&dir.join("test_typical"), LAYOUT, &mut left)?;
    let defects = classes_in(
        &dir.join("test_novel"),
        LAYOUT,
        &[("all", ALL_FOLDER)],
        &mut left,
    )?;
    unused_entries(
        dir,
        &["train_typical", "test_typical", "test_novel"],
        NOT_IN_LAYOUT,
        &mut left,
    )?;
    Ok(Category::from_lists(
        dir.to_path_buf(),
        train_good,
        test_good,
        defects.into_iter().collect(),
        left,
    ))
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
    fn the_publishers_all_folder_and_validation_split_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        png(&d.join("train_typical/t1.png"));
        png(&d.join("train_typical/t2.png"));
        png(&d.join("validation_typical/v1.png"));
        png(&d.join("test_typical/n1.png"));
        for (class, n) in [("veins", 2), ("drill-hole", 1)] {
            for i in 0..n {
                png(&d.join(format!("test_novel/{class}/{i}.png")));
                // The release's aggregate folder holds a copy of every novel frame.
                png(&d.join(format!("test_novel/all/{class}-{i}.png")));
            }
        }
        let cat = load(d).unwrap();
        assert_eq!(cat.defect_classes(), ["drill-hole", "veins"]);
        assert_eq!(
            (cat.train_good.len(), cat.test_good.len(), cat.n_anomalies()),
            (2, 1, 3)
        );
        let ignored: Vec<(String, &str)> = cat
            .ignored
            .iter()
            .map(|i| (crate::datasets::listing::file_name(&i.image.path), i.reason))
            .collect();
        assert_eq!(
            ignored,
            [
                ("all".to_string(), ALL_FOLDER),
                ("validation_typical".to_string(), NOT_IN_LAYOUT),
            ]
        );
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
