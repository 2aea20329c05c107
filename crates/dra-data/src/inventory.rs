//! What a data folder holds, as `dra data inspect` reports it: the images per split and class
//! (the layout of the paper's Table 5), everything a loader left out with the reason, and the
//! files that do not decode. Nothing is skipped in silence, so every file is in one of them.

use std::path::Path;

use serde::Serialize;

use crate::datasets::category::Category;
use crate::error::Result;
use crate::sample::{Ignored, OnUnreadable};

/// One or more loaded categories (subsets) of a data set and what lay beside them.
#[derive(Debug)]
pub struct Inventory {
    /// Each subset's name (an MVTec category, or the data set's family) and its category.
    pub subsets: Vec<(String, Category)>,
    /// Files beside the category folders of an MVTec root (MVTec ships `license.txt`).
    pub beside: Vec<Ignored>,
}

/// The number of images of a split and class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The data set's name as the user gave it.
    pub dataset: String,
    /// The subset (category) the images belong to.
    pub subset: String,
    /// `train` or `test`.
    pub split: &'static str,
    /// `good`, or the defect class.
    pub class: String,
    /// How many images (or tiles).
    pub count: usize,
}

/// A file, folder or rectangle that was left out, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeftOutItem {
    /// The subset it was found in (`mvtec` for files beside the categories).
    pub subset: String,
    /// The path, with `#x,y,w,h` for a rectangle of an image.
    pub path: String,
    /// Why it was left out (for unreadable files, the decoder's reason).
    pub reason: String,
}

/// Left-out items of one subset and reason: how many, and the first one's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOutGroup<'a> {
    /// The subset.
    pub subset: &'a str,
    /// The reason all of them share.
    pub reason: &'a str,
    /// How many items.
    pub count: usize,
    /// The first item's path.
    pub first: &'a str,
}

impl Inventory {
    /// Every category folder of an MVTec AD root (`mvtec_anomaly_detection/`), each a subset.
    pub fn of_mvtec_root(root: &Path, on_unreadable: OnUnreadable) -> Result<Self> {
        let (folders, beside) = crate::datasets::mvtec::category_folders(root)?;
        let subsets = folders
            .into_iter()
            .map(|dir| {
                let name = crate::datasets::listing::file_name(&dir);
                Ok((name, Category::open(&dir, on_unreadable)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { subsets, beside })
    }

    /// One loaded category, under the subset name `subset`.
    pub fn of_category(subset: String, category: Category) -> Self {
        Self {
            subsets: vec![(subset, category)],
            beside: Vec::new(),
        }
    }

    /// The images per subset, split and class: train good, test good, then each defect class.
    pub fn counts(&self, dataset: &str) -> Vec<Count> {
        let mut counts = Vec::new();
        for (subset, cat) in &self.subsets {
            let row = |split, class: &str, count| Count {
                dataset: dataset.to_string(),
                subset: subset.clone(),
                split,
                class: class.to_string(),
                count,
            };
            counts.push(row("train", "good", cat.train_good.len()));
            counts.push(row("test", "good", cat.test_good.len()));
            for (class, files) in &cat.defects {
                counts.push(row("test", class, files.len()));
            }
        }
        counts
    }

    /// Everything the loaders found and did not use, with the reason: the files beside the
    /// categories first, then each subset's in listing order.
    pub fn ignored(&self) -> Vec<LeftOutItem> {
        let item = |subset: &str, i: &Ignored| LeftOutItem {
            subset: subset.to_string(),
            path: i.image.to_string(),
            reason: i.reason.into(),
        };
        let mut items: Vec<LeftOutItem> = self.beside.iter().map(|i| item("mvtec", i)).collect();
        for (subset, cat) in &self.subsets {
            items.extend(cat.ignored.iter().map(|i| item(subset, i)));
        }
        items
    }

    /// The image files that do not decode (left out under [`OnUnreadable::Skip`]).
    pub fn unreadable(&self) -> Vec<LeftOutItem> {
        self.subsets
            .iter()
            .flat_map(|(subset, cat)| {
                cat.unreadable.iter().map(|u| LeftOutItem {
                    subset: subset.clone(),
                    path: u.path.display().to_string(),
                    reason: u.reason.clone(),
                })
            })
            .collect()
    }
}

/// `items` grouped by subset and reason, in order of first appearance.
pub fn group(items: &[LeftOutItem]) -> Vec<LeftOutGroup<'_>> {
    let mut groups: Vec<LeftOutGroup> = Vec::new();
    for item in items {
        match groups
            .iter_mut()
            .find(|g| g.subset == item.subset && g.reason == item.reason)
        {
            Some(g) => g.count += 1,
            None => groups.push(LeftOutGroup {
                subset: &item.subset,
                reason: &item.reason,
                count: 1,
                first: &item.path,
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::fixtures::png;

    #[test]
    fn counts_and_left_out_items_of_an_mvtec_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for cat in ["carpet", "grid"] {
            png(&root.join(format!("{cat}/train/good/a.png")));
            png(&root.join(format!("{cat}/test/good/b.png")));
            png(&root.join(format!("{cat}/test/hole/c.png")));
            std::fs::write(root.join(format!("{cat}/train/good/notes.txt")), "x").unwrap();
        }
        std::fs::write(root.join("license.txt"), "x").unwrap();
        std::fs::write(root.join("carpet/test/hole/bad.png"), b"").unwrap();
        let inv = Inventory::of_mvtec_root(root, OnUnreadable::Skip).unwrap();
        let counts = inv.counts("mvtec");
        assert_eq!(counts.len(), 6);
        assert_eq!(
            (
                counts[2].subset.as_str(),
                counts[2].class.as_str(),
                counts[2].count
            ),
            ("carpet", "hole", 1)
        );
        let ignored = inv.ignored();
        assert_eq!(ignored.len(), 3);
        assert!(ignored[0].subset == "mvtec" && ignored[0].path.ends_with("license.txt"));
        let groups = group(&ignored);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[1].count, 1);
        let unreadable = inv.unreadable();
        assert_eq!(unreadable.len(), 1);
        assert!(unreadable[0].path.ends_with("bad.png") && unreadable[0].subset == "carpet");
        assert!(Inventory::of_mvtec_root(root, OnUnreadable::Error).is_err());
    }
}
