//! KolektorSDD surface defects (vicos.si): one folder per commutator (`kos01` … `kos50`), each
//! with images `PartN.jpg` and their labels `PartN_label.bmp` (non-zero where the defect is).
//!
//! As the official converter (`data/convert_SDD.py`) does, every image is cut along its height
//! into three parts, rows `[0, H/3)`, `[H/3, 2H/3)` and `[2H/3, H)` with integer division; a part
//! whose label has a non-zero pixel is an anomaly of class `defect`, the others are normal and
//! split 75/25. The parts are rectangles of the original files, cut in memory when read.
//!
//! Only `*.jpg` files are images, as in the converter; other files are recorded as ignored. A
//! missing label, or one whose size differs from its image's, is an error naming the file (the
//! converter stops there too).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::category::Category;
use super::common::{
    any_nonzero, decoded_label, from_named, missing, stem_before_first_dot, Named,
};
use super::decode::dimensions;
use super::listing::{
    classify, file_name, sorted_entries, unreadable_among, Kind, LeftOut, HIDDEN,
};
use crate::error::{DataError, Result};
use crate::sample::{Crop, ImageRef, Unreadable};
use image::DynamicImage;

pub(crate) const LAYOUT: &str =
    "<sample folder>/<name>.jpg with its label <sample folder>/<name>_label.bmp";

const NOT_JPG: &str =
    "neither a .jpg image nor a _label.bmp label (the official converter reads *.jpg only)";
const UNUSED_LABEL: &str = "label of no .jpg image";

pub fn load(dir: &Path) -> Result<Category> {
    if !dir.is_dir() {
        return Err(missing(dir, LAYOUT));
    }
    let mut left = LeftOut::default();
    let mut normals = Vec::new();
    let mut anomalies = Vec::new();
    for folder in sorted_entries(dir)? {
        let name = file_name(&folder);
        if name.starts_with('.') {
            left.ignore(folder, HIDDEN);
            continue;
        }
        if !folder.is_dir() {
            left.ignore(
                folder,
                "file outside the sample folders (images are read from <folder>/*.jpg)",
            );
            continue;
        }
        let entries = sorted_entries(&folder)?;
        let mut images = Vec::new();
        for path in &entries {
            let file = file_name(path);
            if file.starts_with('.') {
                left.ignore(path.as_path(), HIDDEN);
            } else if path.is_dir() {
                left.ignore(path.as_path(), "folder inside a sample folder");
            } else if file.ends_with("jpg") {
                match classify(path) {
                    Kind::Image => images.push(path.as_path()),
                    Kind::Unreadable(reason) => left
                        .unreadable
                        .push(Unreadable::new(path.as_path(), reason)),
                    Kind::Left(reason) => left.ignore(path.as_path(), reason),
                }
            } else if !file.ends_with("_label.bmp") {
                left.ignore(path.as_path(), NOT_JPG);
            }
        }
        let bad = unreadable_among(images.iter().copied(), &mut left);
        let mut labels_used = HashSet::new();
        for path in images.into_iter().filter(|p| !bad.contains(*p)) {
            let stem = stem_before_first_dot(path);
            let label = folder.join(format!("{stem}_label.bmp"));
            if !label.is_file() {
                return Err(missing(&label, LAYOUT));
            }
            // A label that does not decode is unreadable, like an image: its image goes with
            // it (as if both were deleted), and `--skip-unreadable` decides whether to stop.
            let Some(mask) = decoded_label(&label, &mut left)? else {
                labels_used.insert(label);
                continue;
            };
            for (i, (crop, is_defect)) in thirds(path, &label, &mask)?.into_iter().enumerate() {
                let part = Named {
                    converted_name: format!("{name}_{stem}_{i}.png"),
                    image: ImageRef::tile(path, crop),
                };
                if is_defect {
                    anomalies.push(part);
                } else {
                    normals.push(part);
                }
            }
            labels_used.insert(label);
        }
        for path in entries {
            if file_name(&path).ends_with("_label.bmp") && !labels_used.contains(&path) {
                left.ignore(path, UNUSED_LABEL);
            }
        }
    }
    let mut defects = BTreeMap::new();
    defects.insert("defect".to_string(), anomalies);
    from_named(dir, normals, defects, left)
}

/// The three parts of an image, top to bottom, each with whether its label marks a defect.
fn thirds(image: &Path, label: &Path, mask: &DynamicImage) -> Result<Vec<(Crop, bool)>> {
    let (width, height) = dimensions(image)?;
    if (mask.width(), mask.height()) != (width, height) {
        return Err(DataError::BadImage {
            path: label.to_path_buf(),
            reason: format!(
                "the label is {}×{} but its image is {width}×{height}",
                mask.width(),
                mask.height()
            ),
        });
    }
    if height < 3 {
        return Err(DataError::BadImage {
            path: image.to_path_buf(),
            reason: format!("{height} rows cannot be cut into thirds"),
        });
    }
    let bounds = [0, height / 3, height * 2 / 3, height];
    Ok(bounds
        .windows(2)
        .map(|rows| {
            let crop = Crop {
                x: 0,
                y: rows[0],
                width,
                height: rows[1] - rows[0],
            };
            (crop, any_nonzero(mask, crop))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{mask, sized_png};
    use super::*;

    #[test]
    fn thirds_with_label_pixels_are_anomalies() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 10 rows: thirds [0, 3), [3, 6), [6, 10).
        for part in 0..3 {
            sized_png(&root.join(format!("kos01/Part{part}.jpg")), 4, 10);
            sized_png(&root.join(format!("kos02/Part{part}.jpg")), 4, 10);
            mask(
                &root.join(format!("kos02/Part{part}_label.bmp")),
                4,
                10,
                &[],
            );
        }
        mask(&root.join("kos01/Part0_label.bmp"), 4, 10, &[]);
        // Row 9 is in the last third (the one that takes the remainder).
        mask(&root.join("kos01/Part1_label.bmp"), 4, 10, &[(3, 9, 1, 1)]);
        // Row 3 starts the middle third; rows 5 and 6 straddle middle and last.
        mask(&root.join("kos01/Part2_label.bmp"), 4, 10, &[(0, 5, 1, 2)]);
        std::fs::write(root.join("kos01/Thumbs.db"), b"junk").unwrap();
        mask(&root.join("kos01/Part9_label.bmp"), 4, 10, &[]);
        let cat = load(root).unwrap();
        let parts: Vec<(String, u32, u32)> = cat.defects["defect"]
            .iter()
            .map(|t| {
                let c = t.crop.unwrap();
                (file_name(&t.path), c.y, c.height)
            })
            .collect();
        assert_eq!(
            parts,
            [
                ("Part1.jpg".to_string(), 6, 4),
                ("Part2.jpg".to_string(), 3, 3),
                ("Part2.jpg".to_string(), 6, 4),
            ]
        );
        // 18 parts, 3 anomalies, 15 normals split 11 / 4.
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (11, 4));
        let reasons: Vec<&str> = cat.ignored.iter().map(|i| i.reason).collect();
        assert_eq!(reasons, [NOT_JPG, UNUSED_LABEL]);
        let img = cat.defects["defect"][0].load_rgb().unwrap();
        assert_eq!(img.dimensions(), (4, 4));
    }

    #[test]
    fn missing_or_mismatched_label_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        sized_png(&dir.path().join("kos01/Part0.jpg"), 4, 9);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("Part0_label.bmp") && err.contains("expected the layout"),
            "{err}"
        );
        mask(&dir.path().join("kos01/Part0_label.bmp"), 4, 8, &[]);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("Part0_label.bmp") && err.contains("4×8"),
            "{err}"
        );
        let err = load(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(
            err.contains("absent") && err.contains("_label.bmp"),
            "{err}"
        );
    }
}
