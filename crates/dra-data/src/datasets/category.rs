//! A data set as the rest of the pipeline sees it: a [`Category`], the lists of the MVTec AD
//! layout (normal training images, normal test images, anomalies by class) whatever layout it
//! was read from, with what was left out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::listing::{check_policy, file_name, LeftOut};
use crate::error::{DataError, Result};
use crate::sample::{Ignored, ImageRef, Label, OnUnreadable, Sample, Unreadable};

/// One category (`<root>/<category>`) of a data set in the MVTec AD layout.
///
/// Every list is sorted by file name, so that seeded selections do not depend on the order in
/// which a file system happens to list a folder (the official code used `os.listdir` order).
#[derive(Clone, Debug)]
pub struct Category {
    /// The folder the category was read from: its MVTec-layout folder, or a raw data set's.
    pub root: PathBuf,
    /// Normal training images (`train/good`).
    pub train_good: Vec<ImageRef>,
    /// Normal test images (`test/good`).
    pub test_good: Vec<ImageRef>,
    /// Defect class name → its test images, classes in sorted order.
    pub defects: BTreeMap<String, Vec<ImageRef>>,
    /// What the loader left out, and why.
    pub ignored: Vec<Ignored>,
    /// Files that claim to be images but do not decode, left out of every list above (only
    /// with [`OnUnreadable::Skip`]: otherwise loading fails), sorted by path.
    pub unreadable: Vec<Unreadable>,
}

impl Category {
    /// A category from its lists and what was left out; the unreadable files are sorted.
    pub(crate) fn from_lists(
        root: PathBuf,
        train_good: Vec<ImageRef>,
        test_good: Vec<ImageRef>,
        defects: BTreeMap<String, Vec<ImageRef>>,
        left: LeftOut,
    ) -> Self {
        let mut unreadable = left.unreadable;
        unreadable.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            root,
            train_good,
            test_good,
            defects,
            ignored: left.ignored,
            unreadable,
        }
    }

    /// Applies the policy for unreadable files (an error naming them, or the category as it
    /// is), then checks that there is something to train on.
    pub(crate) fn require(self, on_unreadable: OnUnreadable) -> Result<Self> {
        check_policy(&self.unreadable, on_unreadable)?;
        if self.train_good.is_empty() {
            let path = if self.root.join("train").join("good").is_dir() {
                self.root.join("train").join("good")
            } else {
                self.root.clone()
            };
            let in_folder = self
                .unreadable
                .iter()
                .filter(|u| u.path.starts_with(&path))
                .cloned()
                .collect();
            return Err(no_normals(path, in_folder));
        }
        Ok(self)
    }

    /// Where the pixel mask of a test sample lies in the MVTec AD layout:
    /// `ground_truth/<class>/<stem>_mask.png` for a whole image `test/<class>/<stem>.<ext>` of
    /// this category, whether or not the file exists. `None` for a normal image, a tile, or a
    /// sample that is not in `test/<class>/` (the raw layouts have no such masks).
    pub fn mask_path(&self, sample: &Sample) -> Option<PathBuf> {
        if sample.label != Label::Anomaly || sample.crop.is_some() {
            return None;
        }
        let class_dir = self.root.join("test").join(&sample.class);
        if sample.path.parent()? != class_dir {
            return None;
        }
        let stem = sample.path.file_stem()?.to_str()?;
        Some(
            self.root
                .join("ground_truth")
                .join(&sample.class)
                .join(format!("{stem}_mask.png")),
        )
    }

    /// The folder's name, e.g. `carpet`.
    pub fn name(&self) -> String {
        file_name(&self.root)
    }

    /// The defect class names, sorted.
    pub fn defect_classes(&self) -> Vec<&str> {
        self.defects.keys().map(String::as_str).collect()
    }

    /// Number of anomalous images over all defect classes.
    pub fn n_anomalies(&self) -> usize {
        self.defects.values().map(Vec::len).sum()
    }
}

/// The error for a data set without normal images: the unreadable files, if it is their
/// fault, else an empty folder.
pub(crate) fn no_normals(path: PathBuf, mut unreadable: Vec<Unreadable>) -> DataError {
    if unreadable.is_empty() {
        DataError::EmptyFolder { path }
    } else {
        unreadable.sort_by(|a, b| a.path.cmp(&b.path));
        DataError::NothingDecodes {
            path,
            files: unreadable,
        }
    }
}
