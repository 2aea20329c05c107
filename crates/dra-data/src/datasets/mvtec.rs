//! The MVTec AD folder layout: one category folder ([`Category::open`]), the category folders
//! of a data set's root, and the outlier-exposure images read from them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::category::{no_normals, Category};
use super::common::{images_in, missing, unused_entries};
use super::listing::{check_policy, list_images, sub_folders, LeftOut, Listing};
use crate::error::{DataError, Result};
use crate::sample::{Ignored, OnUnreadable, MVTEC_LAYOUT};

impl Category {
    /// Lists a category folder. Fails with the path it expected when a required folder is
    /// missing; files that are not images are left out and recorded in `ignored`; image files
    /// that do not decode are an error, or with [`OnUnreadable::Skip`] left out and recorded in
    /// `unreadable`.
    pub fn open(root: impl AsRef<Path>, on_unreadable: OnUnreadable) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(DataError::MissingFolder {
                path: root,
                layout: MVTEC_LAYOUT,
            });
        }
        let mut left = LeftOut::default();
        // What the layout does not read is reported, not passed over: anything beside train/,
        // test/ and MVTec's pixel masks (ground_truth/, for localisation metrics), and any
        // entry of train/ but good/ (training reads normal images only).
        unused_entries(
            &root,
            &["train", "test", "ground_truth"],
            "not part of the MVTec AD layout (train/good, test/good, test/<class>, ground_truth)",
            &mut left,
        )?;
        if root.join("train").is_dir() {
            unused_entries(
                &root.join("train"),
                &["good"],
                "in train/ but not train/good/ (training reads train/good only)",
                &mut left,
            )?;
        }
        let train_good = list_images(&root.join("train").join("good"), &mut left)?;
        let test_dir = root.join("test");
        let test_good = list_images(&test_dir.join("good"), &mut left)?;
        let mut defects = BTreeMap::new();
        for (name, dir) in sub_folders(
            &test_dir,
            "file directly in test/ (anomalies are read from test/<class>/)",
            &mut left,
        )? {
            if name != "good" {
                defects.insert(name, list_images(&dir, &mut left)?);
            }
        }
        let category = Self::from_lists(root, train_good, test_good, defects, left);
        category.require(on_unreadable)
    }
}

/// Outlier-exposure images (`--outlier-root`, official `get_ood_data`): `train/good/` of every
/// category folder under `root` except `exclude` (the category being trained). Images that do
/// not decode are an error, or with [`OnUnreadable::Skip`] left out and listed, as in the
/// data set itself.
pub fn outlier_images(root: &Path, exclude: &str, on_unreadable: OnUnreadable) -> Result<Listing> {
    const LAYOUT: &str = "<outlier root>/<category>/train/good/";
    if !root.is_dir() {
        return Err(missing(root, LAYOUT));
    }
    let mut images = Vec::new();
    let mut left = LeftOut::default();
    for (name, folder) in sub_folders(root, "file beside the category folders", &mut left)? {
        if name != exclude {
            images.extend(images_in(
                &folder.join("train").join("good"),
                LAYOUT,
                &mut left,
            )?);
        }
    }
    check_policy(&left.unreadable, on_unreadable)?;
    if images.is_empty() {
        return Err(no_normals(root.to_path_buf(), left.unreadable));
    }
    Ok(Listing {
        images,
        ignored: left.ignored,
        unreadable: left.unreadable,
    })
}

/// The category folders of a data set in the MVTec AD layout (`mvtec_anomaly_detection/`),
/// sorted, and what else the folder holds (MVTec ships `license.txt` and `readme.txt` there).
pub(crate) fn category_folders(root: &Path) -> Result<(Vec<PathBuf>, Vec<Ignored>)> {
    const LAYOUT: &str = "<mvtec root>/<category>/{train/good, test/good, test/<defect>}";
    if !root.is_dir() {
        return Err(missing(root, LAYOUT));
    }
    let mut left = LeftOut::default();
    let folders = sub_folders(root, "file beside the category folders", &mut left)?
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    Ok((folders, left.ignored))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use image::RgbImage;

    use super::*;
    use crate::datasets::fixtures;
    use crate::datasets::listing::file_name;
    use crate::sample::{Label, Sample};

    fn write_png(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
            .save_with_format(path, image::ImageFormat::Png)
            .unwrap();
    }

    #[test]
    fn lists_sorted_and_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/b.png"));
        write_png(&root.join("train/good/a.jpeg_but_png"));
        write_png(&root.join("test/good/x.PNG"));
        write_png(&root.join("test/scratch/2.png"));
        write_png(&root.join("test/scratch/1.png"));
        write_png(&root.join("test/hole/1.png"));
        fs::write(root.join("train/good/.DS_Store"), b"junk").unwrap();
        let cat = Category::open(&root, OnUnreadable::Error).unwrap();
        assert_eq!(cat.name(), "cat");
        let names: Vec<_> = cat.train_good.iter().map(|p| file_name(&p.path)).collect();
        assert_eq!(names, ["a.jpeg_but_png", "b.png"]);
        assert_eq!(cat.defect_classes(), ["hole", "scratch"]);
        assert_eq!(file_name(&cat.defects["scratch"][0].path), "1.png");
        assert_eq!(cat.n_anomalies(), 3);
        assert_eq!(cat.ignored.len(), 1);
        assert_eq!(cat.ignored[0].reason, crate::datasets::listing::HIDDEN);
        assert!(cat.ignored[0].image.path.ends_with(".DS_Store"));
    }

    #[test]
    fn masks_are_found_beside_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        for f in ["train/good/a.png", "test/good/b.png", "test/hole/c.png"] {
            write_png(&root.join(f));
        }
        let cat = Category::open(&root, OnUnreadable::Error).unwrap();
        let sample = |path: &str, label, class: &str| Sample {
            path: root.join(path),
            crop: None,
            label,
            class: class.into(),
        };
        assert_eq!(
            cat.mask_path(&sample("test/hole/c.png", Label::Anomaly, "hole")),
            Some(root.join("ground_truth/hole/c_mask.png"))
        );
        assert_eq!(
            cat.mask_path(&sample("test/good/b.png", Label::Normal, "good")),
            None
        );
        assert_eq!(
            cat.mask_path(&sample("elsewhere/c.png", Label::Anomaly, "hole")),
            None
        );
    }

    #[test]
    fn what_the_layout_does_not_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["train/good/a.png", "test/good/b.png", "test/hole/c.png"] {
            write_png(&root.join(f));
        }
        write_png(&root.join("train/defect/d.png"));
        write_png(&root.join("ground_truth/hole/c_mask.png"));
        fs::create_dir_all(root.join("validation")).unwrap();
        let cat = Category::open(root, OnUnreadable::Error).unwrap();
        let ignored: Vec<String> = cat
            .ignored
            .iter()
            .map(|i| file_name(&i.image.path))
            .collect();
        assert_eq!(ignored, ["validation", "defect"]);
        assert!(cat.ignored[1].reason.contains("train/good only"));
    }

    #[test]
    fn missing_folder_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        let err = Category::open(&root, OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test") && err.contains("not found") && err.contains("MVTec AD"),
            "{err}"
        );
    }

    #[test]
    fn non_images_are_left_out_and_unreadable_images_stop_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        write_png(&root.join("test/good/a.png"));
        write_png(&root.join("test/hole/a.png"));
        fs::write(root.join("test/good/notes.txt"), b"hello").unwrap();
        fs::write(root.join("test/readme.md"), b"hello").unwrap();
        fs::write(root.join("test/hole/anim.gif"), b"GIF89a\x01\x00\x01\x00").unwrap();
        fs::write(root.join("train/good/zero.png"), b"").unwrap();
        let err = Category::open(&root, OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot decode 2 image files")
                && err.contains("test/hole/anim.gif: GIF")
                && err.contains("train/good/zero.png: empty file"),
            "{err}"
        );
        let cat = Category::open(&root, OnUnreadable::Skip).unwrap();
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (1, 1));
        assert_eq!(cat.defects["hole"].len(), 1);
        let unreadable: Vec<String> = cat.unreadable.iter().map(|u| file_name(&u.path)).collect();
        assert_eq!(unreadable, ["anim.gif", "zero.png"]);
        let ignored: Vec<(String, &str)> = cat
            .ignored
            .iter()
            .map(|i| (file_name(&i.image.path), i.reason))
            .collect();
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert_eq!(
            ignored[0],
            (
                "notes.txt".to_string(),
                crate::datasets::listing::KNOWN_NON_IMAGE
            )
        );
        assert_eq!(ignored[1].0, "readme.md");
        // Nothing readable left to train on is still an error, naming the folder.
        fs::remove_file(root.join("train/good/a.png")).unwrap();
        let err = Category::open(&root, OnUnreadable::Skip)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train/good") && err.contains("no image files"),
            "{err}"
        );
    }

    #[test]
    fn outliers_come_from_the_other_categories() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::png(&dir.path().join("carpet/train/good/a.png"));
        fixtures::png(&dir.path().join("grid/train/good/b.png"));
        fixtures::png(&dir.path().join("grid/train/good/c.png"));
        let images = outlier_images(dir.path(), "carpet", OnUnreadable::Error)
            .unwrap()
            .images;
        assert_eq!(images.len(), 2);
        assert!(images
            .iter()
            .all(|p| p.path.to_string_lossy().contains("grid")));
        std::fs::create_dir_all(dir.path().join("tile")).unwrap();
        let err = outlier_images(dir.path(), "carpet", OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile") && err.contains("train/good"), "{err}");
    }
}
