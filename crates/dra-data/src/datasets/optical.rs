//! Optical inspection, DAGM 2007 (hci.iwr.uni-heidelberg.de): folders `Class1` … `Class10`,
//! each with `Train/` and `Test/` images and `Label/Labels.txt` listing them. The archives unpack
//! as `ClassN/ClassN/…`, which the official converter (`data/convert_optical.py`) reads; a
//! single `ClassN/…` level is accepted too.
//!
//! `Labels.txt` starts with a line `1`, then one row per image, tab-separated: index, label
//! (0 defect-free, 1 defective), file name, and for defects the label image's fields. As in the
//! converter, defect-free images of every class and both splits are pooled and split 75/25, and
//! the defects of `ClassN` become class `Class{N−1}` (`Class0` … `Class9`, the converter's
//! names). The pooled order is the converter's (classes by number, `Train` before `Test`, rows in
//! file order), which comes from the files rather than a directory listing, so the split is the
//! converter's exactly.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::category::Category;
use super::common::{from_named, missing, read_labels, Named};
use super::listing::{file_name, sorted_entries, unreadable_among, LeftOut, HIDDEN};
use crate::error::{DataError, Result};
use crate::sample::ImageRef;

pub(crate) const LAYOUT: &str =
    "Class<N>/[Class<N>/]{Train,Test}/Label/Labels.txt, with the images in {Train,Test}/";

pub fn load(dir: &Path) -> Result<Category> {
    if !dir.is_dir() {
        return Err(missing(dir, LAYOUT));
    }
    let mut left = LeftOut::default();
    let mut classes: Vec<(u32, String, PathBuf)> = Vec::new();
    for entry in sorted_entries(dir)? {
        let name = file_name(&entry);
        let number = name
            .strip_prefix("Class")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n >= 1 && n.to_string() == name["Class".len()..]);
        match number {
            _ if name.starts_with('.') => left.ignore(entry, HIDDEN),
            Some(n) if entry.is_dir() => classes.push((n, name, entry)),
            _ => left.ignore(
                entry,
                "not a Class<N> folder (e.g. the development set's Class<N>_def)",
            ),
        }
    }
    if classes.is_empty() {
        return Err(missing(&dir.join("Class1"), LAYOUT));
    }
    classes.sort_by_key(|(n, _, _)| *n);
    let mut normals = Vec::new();
    let mut defects: BTreeMap<String, Vec<Named>> = BTreeMap::new();
    for (n, name, folder) in classes {
        let root = if folder.join(&name).is_dir() {
            folder.join(&name)
        } else {
            folder
        };
        let class = defects.entry(format!("Class{}", n - 1)).or_default();
        for split in ["Train", "Test"] {
            for (is_defect, item) in read_split(&root, &name, split, &mut left)? {
                if is_defect {
                    class.push(item);
                } else {
                    normals.push(item);
                }
            }
        }
    }
    let bad = unreadable_among(
        normals
            .iter()
            .chain(defects.values().flatten())
            .map(|n| n.image.path.as_path()),
        &mut left,
    );
    normals.retain(|n| !bad.contains(&n.image.path));
    for list in defects.values_mut() {
        list.retain(|n| !bad.contains(&n.image.path));
    }
    from_named(dir, normals, defects, left)
}

/// The rows of `<root>/<split>/Label/Labels.txt` in file order, as (defective, image); images of
/// the split's folder that no row lists go to `ignored`.
fn read_split(
    root: &Path,
    class: &str,
    split: &str,
    left: &mut LeftOut,
) -> Result<Vec<(bool, Named)>> {
    let split_dir = root.join(split);
    let labels = split_dir.join("Label").join("Labels.txt");
    let text = read_labels(&labels, LAYOUT)?;
    let mut rows = Vec::new();
    let mut listed = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Blank lines, and the `1` that opens the file (the converter skips every such line).
        if fields.is_empty() || fields == ["1"] {
            continue;
        }
        let bad = |reason: String| DataError::BadLabels {
            path: labels.clone(),
            line: i + 1,
            reason,
        };
        let [_, label, file, ..] = fields[..] else {
            return Err(bad(
                "expected tab-separated fields: index, label (0 or 1), file name".into(),
            ));
        };
        let path = split_dir.join(file);
        if !path.is_file() {
            return Err(bad(format!("{} does not exist", path.display())));
        }
        let is_defect = match label {
            "0" => false,
            "1" => true,
            other => return Err(bad(format!("label `{other}` is neither 0 nor 1"))),
        };
        listed.insert(file.to_string());
        rows.push((
            is_defect,
            Named {
                converted_name: format!("{class}_{split}_{file}"),
                image: ImageRef::file(path),
            },
        ));
    }
    for entry in sorted_entries(&split_dir)? {
        let name = file_name(&entry);
        if name.starts_with('.') {
            left.ignore(entry, HIDDEN);
        } else if entry.is_dir() {
            if name != "Label" {
                left.ignore(entry, "folder inside Train/ or Test/");
            }
        } else if !listed.contains(&name) {
            left.ignore(entry, "not listed in Label/Labels.txt");
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::png;
    use super::*;

    /// `ClassN/ClassN/{Train,Test}` with `normal` defect-free and `defective` defective images.
    fn class(root: &Path, n: u32, normal: usize, defective: usize, nested: bool) {
        let base = if nested {
            root.join(format!("Class{n}/Class{n}"))
        } else {
            root.join(format!("Class{n}"))
        };
        for split in ["Train", "Test"] {
            let mut labels = String::from("1\n");
            for i in 0..normal + defective {
                let file = format!("{:04}.PNG", i + 1);
                png(&base.join(split).join(&file));
                if i < normal {
                    labels += &format!("{}\t0\t{file}\t0\t\n", i + 1);
                } else {
                    labels += &format!("{}\t1\t{file}\t0\t{:04}_label.PNG\n", i + 1, i + 1);
                    png(&base
                        .join(split)
                        .join(format!("Label/{:04}_label.PNG", i + 1)));
                }
            }
            std::fs::create_dir_all(base.join(split).join("Label")).unwrap();
            std::fs::write(base.join(split).join("Label/Labels.txt"), labels).unwrap();
        }
    }

    #[test]
    fn normals_pooled_defects_per_class() {
        let dir = tempfile::tempdir().unwrap();
        class(dir.path(), 1, 3, 1, true);
        class(dir.path(), 2, 2, 2, false);
        class(dir.path(), 10, 1, 0, true);
        std::fs::create_dir_all(dir.path().join("Class1_def")).unwrap();
        png(&dir.path().join("Class2/Test/extra.PNG"));
        let cat = load(dir.path()).unwrap();
        // (3 + 2 + 1) × 2 = 12 normals, split 9 / 3.
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (9, 3));
        assert_eq!(cat.defect_classes(), ["Class0", "Class1", "Class9"]);
        assert_eq!(cat.defects["Class0"].len(), 2);
        assert_eq!(cat.defects["Class1"].len(), 4);
        assert!(cat.defects["Class9"].is_empty());
        let ignored: Vec<(String, &str)> = cat
            .ignored
            .iter()
            .map(|i| (file_name(&i.image.path), i.reason))
            .collect();
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert_eq!(ignored[0].0, "Class1_def");
        assert_eq!(
            ignored[1],
            ("extra.PNG".to_string(), "not listed in Label/Labels.txt")
        );
        // Converted names sort Test before Train within a class.
        let first = &cat.defects["Class1"][0].path;
        assert!(first.ends_with("Class2/Test/0003.PNG"), "{first:?}");
    }

    #[test]
    fn split_follows_the_labels_files_order() {
        let dir = tempfile::tempdir().unwrap();
        class(dir.path(), 1, 4, 0, true);
        class(dir.path(), 2, 4, 0, true);
        let cat = load(dir.path()).unwrap();
        // Pooled order: Class1 Train 1–4, Class1 Test 1–4, Class2 Train 1–4, Class2 Test 1–4.
        let (_, test) = super::super::common::train_test_split(&(0..16).collect::<Vec<_>>(), 42);
        let describe = |i: usize| {
            let class = 1 + i / 8;
            let split = if i % 8 < 4 { "Train" } else { "Test" };
            format!("Class{class}/{split}/{:04}.PNG", i % 4 + 1)
        };
        let mut expected: Vec<String> = test.into_iter().map(describe).collect();
        expected.sort_by_key(|s| s.replace('/', "_"));
        let got: Vec<String> = cat
            .test_good
            .iter()
            .map(|t| {
                let p: Vec<_> = t.path.components().rev().take(4).collect();
                format!(
                    "{}/{}/{}",
                    p[3].as_os_str().to_string_lossy(),
                    p[1].as_os_str().to_string_lossy(),
                    p[0].as_os_str().to_string_lossy()
                )
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_bad_row_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        class(dir.path(), 1, 2, 1, true);
        let labels = dir.path().join("Class1/Class1/Test/Label/Labels.txt");
        let mut text = std::fs::read_to_string(&labels).unwrap();
        text += "4\t2\t0001.PNG\t0\n";
        std::fs::write(&labels, &text).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("Labels.txt") && err.contains("line 5") && err.contains("`2`"),
            "{err}"
        );
        std::fs::write(&labels, "1\n1\t0\tmissing.PNG\t0\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("missing.PNG"),
            "{err}"
        );
        let err = load(&dir.path().join("Class1/Class1/Train"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Class1") && err.contains("Labels.txt"),
            "{err}"
        );
    }
}
