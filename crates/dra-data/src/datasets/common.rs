//! What the raw loaders share: the folders and labels files a layout requires, what a layout
//! does not read, label images, and a [`Category`] built from normal images split as the
//! official converters split them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::category::{no_normals, Category};
use super::decode::decode;
use super::listing::{file_name, list_images, sorted_entries, sub_folders, LeftOut, HIDDEN};
use crate::error::{DataError, Result};
use crate::mt19937::NumpyRandomState;
use crate::sample::{Crop, ImageRef, Unreadable};

pub(crate) fn missing(path: &Path, layout: &'static str) -> DataError {
    DataError::MissingFolder {
        path: path.to_path_buf(),
        layout,
    }
}

/// The images of a required folder; a missing folder names the layout. What is not an image
/// goes to `left`.
pub(crate) fn images_in(
    dir: &Path,
    layout: &'static str,
    left: &mut LeftOut,
) -> Result<Vec<ImageRef>> {
    if !dir.is_dir() {
        return Err(missing(dir, layout));
    }
    list_images(dir, left)
}

/// Images of every class folder under `dir`, as `(class, files)`, classes sorted. Files
/// directly in `dir` go to `left`, with what is not an image in the class folders. Folders
/// named in `aggregates` (a publisher's folder that repeats the class folders' files) are not
/// read and are recorded with the reason given.
pub(crate) fn classes_in(
    dir: &Path,
    layout: &'static str,
    aggregates: &[(&str, &'static str)],
    left: &mut LeftOut,
) -> Result<Vec<(String, Vec<ImageRef>)>> {
    if !dir.is_dir() {
        return Err(missing(dir, layout));
    }
    let mut classes = Vec::new();
    for (name, folder) in sub_folders(
        dir,
        "file outside the sub-folders that hold the images",
        left,
    )? {
        match aggregates.iter().find(|(a, _)| *a == name) {
            Some((_, reason)) => left.ignore(folder, reason),
            None => classes.push((name, list_images(&folder, left)?)),
        }
    }
    Ok(classes)
}

/// Records the entries of a raw data set's top folder that its layout does not read (`used`
/// names the ones it does), so that a publisher's extra folders are reported, not skipped in
/// silence.
pub(crate) fn unused_entries(
    dir: &Path,
    used: &[&str],
    reason: &'static str,
    left: &mut LeftOut,
) -> Result<()> {
    for entry in sorted_entries(dir)? {
        let name = file_name(&entry);
        if name.starts_with('.') {
            left.ignore(entry, HIDDEN);
        } else if !used.contains(&name.as_str()) {
            left.ignore(entry, reason);
        }
    }
    Ok(())
}

/// A label or mask image, decoded; `None` when it does not decode, recorded as unreadable.
pub(crate) fn decoded_label(
    path: &Path,
    left: &mut LeftOut,
) -> Result<Option<image::DynamicImage>> {
    match decode(path) {
        Ok(mask) => Ok(Some(mask)),
        Err(DataError::BadImage { reason, .. }) => {
            left.unreadable.push(Unreadable::new(path, reason));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// sklearn's `train_test_split(items, test_size=0.25, random_state=seed)`: a NumPy
/// `RandomState(seed).permutation`, the first ⌈n/4⌉ for test, the rest for training, each in
/// permutation order. Returns `(train, test)`.
pub fn train_test_split<T: Clone>(items: &[T], seed: u32) -> (Vec<T>, Vec<T>) {
    let n = items.len();
    let n_test = (0.25 * n as f64).ceil() as usize;
    let perm = NumpyRandomState::new(seed).permutation(n);
    let test = perm[..n_test].iter().map(|&i| items[i].clone()).collect();
    let train = perm[n_test..].iter().map(|&i| items[i].clone()).collect();
    (train, test)
}

/// A category from normal images without a given split: 75 % train, 25 % test (official
/// converters: sklearn with `random_state=42`), and the anomalies by class.
pub(crate) fn from_normals(
    root: &Path,
    normals: &[ImageRef],
    defects: impl IntoIterator<Item = (String, Vec<ImageRef>)>,
    left: LeftOut,
) -> Result<Category> {
    if normals.is_empty() {
        return Err(no_normals(root.to_path_buf(), left.unreadable));
    }
    let (train_good, test_good) = train_test_split(normals, 42);
    Ok(Category::from_lists(
        root.to_path_buf(),
        train_good,
        test_good,
        defects.into_iter().collect(),
        left,
    ))
}

/// An image with the file name the official converter gives it in its MVTec-layout output.
#[derive(Clone, Debug)]
pub(crate) struct Named {
    pub converted_name: String,
    pub image: ImageRef,
}

/// Like [`from_normals`] for data sets the official converters cut into tiles or copy under new
/// names. The normals are split in the order the converter lists them (the caller's order);
/// every list of the category is then sorted by the converted file name, which is the order
/// [`Category::open`] lists the converted folder in. Reading the raw files or the converted
/// folder thus gives the same category, list for list, and the same seeded selections.
pub(crate) fn from_named(
    root: &Path,
    normals: Vec<Named>,
    defects: BTreeMap<String, Vec<Named>>,
    left: LeftOut,
) -> Result<Category> {
    if normals.is_empty() {
        return Err(no_normals(root.to_path_buf(), left.unreadable));
    }
    let sorted = |mut list: Vec<Named>| -> Vec<ImageRef> {
        list.sort_by(|a, b| a.converted_name.cmp(&b.converted_name));
        list.into_iter().map(|n| n.image).collect()
    };
    let (train, test) = train_test_split(&normals, 42);
    Ok(Category::from_lists(
        root.to_path_buf(),
        sorted(train),
        sorted(test),
        defects
            .into_iter()
            .map(|(class, list)| (class, sorted(list)))
            .collect(),
        left,
    ))
}

/// Records the files of `dir` that a labels file did not list (`listed` holds their paths), so
/// that images without a label are not skipped in silence. Sub-folders are not looked into.
pub(crate) fn unlisted(
    dir: &Path,
    listed: &std::collections::HashSet<PathBuf>,
    reason: &'static str,
    left: &mut LeftOut,
) -> Result<()> {
    for entry in sorted_entries(dir)? {
        if file_name(&entry).starts_with('.') {
            left.ignore(entry, HIDDEN);
        } else if !entry.is_dir() && !listed.contains(&entry) {
            left.ignore(entry, reason);
        }
    }
    Ok(())
}

/// The text of a labels file that the layout requires: missing, it names the layout; unreadable
/// or not UTF-8 text, it names the file and the reason.
pub(crate) fn read_labels(path: &Path, layout: &'static str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing(path, layout),
        _ => DataError::io(path, e),
    })
}

/// The part of a file name before its first `.`, as the converters' `name.split('.')[0]`.
pub(crate) fn stem_before_first_dot(path: &Path) -> String {
    let name = file_name(path);
    name.split('.').next().unwrap_or_default().to_string()
}

/// The rows of `mask` inside `crop`: whether any sample of any channel is non-zero (NumPy's
/// `np.max(mask_part) != 0` on the array OpenCV reads).
pub(crate) fn any_nonzero(mask: &image::DynamicImage, crop: Crop) -> bool {
    let mask = mask.to_rgb16();
    (crop.y..crop.y + crop.height)
        .any(|y| (crop.x..crop.x + crop.width).any(|x| mask.get_pixel(x, y).0 != [0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_sklearn() {
        // sklearn: train_test_split(list(range(10)), test_size=0.25, random_state=42)
        // → train [0, 7, 2, 9, 4, 3, 6], test [8, 1, 5]
        let items: Vec<usize> = (0..10).collect();
        let (train, test) = train_test_split(&items, 42);
        assert_eq!(test, [8, 1, 5]);
        assert_eq!(train, [0, 7, 2, 9, 4, 3, 6]);
    }
}
