//! The paper's benchmark data sets, read from the files as their publishers ship them, or from
//! the MVTec-layout folders the official conversion scripts write. Each family has a module;
//! every loader returns a [`Category`], the MVTec-layout view the rest of the pipeline uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Category, ImageRef};
use crate::error::{DataError, Result};
use crate::listing::{
    file_name, list_images, sorted_entries, sub_folders, LeftOut, OnUnreadable, HIDDEN,
};
use crate::mt19937::NumpyRandomState;

mod aitex;
mod brainmri;
mod elpv;
mod headct;
mod hyperkvasir;
mod mastcam;
mod optical;
mod sdd;

/// A data set family (`--dataset NAME`; MVTec AD and the synthetic set are `CATEGORY`-named).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// MVTec AD: industrial objects and textures, already in the layout every loader returns.
    Mvtec,
    /// ELPV: electroluminescence images of solar cells, anomaly classes `mono` and `poly`.
    Elpv,
    /// Mastcam: Mars rover images, typical frames normal and novel ones by class.
    Mastcam,
    /// Brain MRI: scans without and with a tumour.
    BrainMri,
    /// Head CT: scans without and with a haemorrhage.
    HeadCt,
    /// Hyper-Kvasir: upper-GI endoscopy, anatomical landmarks normal, pathological findings not.
    HyperKvasir,
    /// AITEX: fabric images cut into 256-pixel tiles, anomalies by defect code.
    Aitex,
    /// KolektorSDD: commutator surfaces cut into thirds, one anomaly class `defect`.
    Sdd,
    /// DAGM 2007 optical inspection: ten synthetic textures with labelled defects.
    Optical,
}

impl Family {
    /// Every family, in the order `--help` lists them.
    pub const ALL: [Family; 9] = [
        Family::Mvtec,
        Family::Elpv,
        Family::Mastcam,
        Family::BrainMri,
        Family::HeadCt,
        Family::HyperKvasir,
        Family::Aitex,
        Family::Sdd,
        Family::Optical,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mvtec => "mvtec",
            Self::Elpv => "elpv",
            Self::Mastcam => "mastcam",
            Self::BrainMri => "brainmri",
            Self::HeadCt => "headct",
            Self::HyperKvasir => "hyperkvasir",
            Self::Aitex => "aitex",
            Self::Sdd => "sdd",
            Self::Optical => "optical",
        }
    }

    /// The family whose command-line name is `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The folder under `--data-root` that holds this data set.
    pub fn default_folder(self) -> &'static str {
        match self {
            Self::Mvtec => "mvtec_anomaly_detection",
            Self::Elpv => "elpv-dataset",
            Self::Mastcam => "mastcam",
            Self::BrainMri => "brain_tumor_dataset",
            Self::HeadCt => "head_ct",
            Self::HyperKvasir => "hyper-kvasir",
            Self::Aitex => "AITEX",
            Self::Sdd => "KolektorSDD",
            Self::Optical => "DAGM2007",
        }
    }

    /// The raw layout the loader expects, for error messages and `--help`.
    pub fn layout(self) -> &'static str {
        match self {
            Self::Mvtec => "<category>/{train/good, test/good, test/<defect>}",
            Self::Elpv => elpv::LAYOUT,
            Self::Mastcam => mastcam::LAYOUT,
            Self::BrainMri => brainmri::LAYOUT,
            Self::HeadCt => headct::LAYOUT,
            Self::HyperKvasir => hyperkvasir::LAYOUT,
            Self::Aitex => aitex::LAYOUT,
            Self::Sdd => sdd::LAYOUT,
            Self::Optical => optical::LAYOUT,
        }
    }

    /// Loads the data set in `dir`: the raw layout, or the converted MVTec layout when `dir`
    /// holds `train/good`. Image files that do not decode are an error naming them, or with
    /// [`OnUnreadable::Skip`] left out before any split is made (as if they had been deleted)
    /// and listed in [`Category::unreadable`].
    pub fn load(self, dir: &Path, on_unreadable: OnUnreadable) -> Result<Category> {
        if self == Self::Mvtec || dir.join("train").join("good").is_dir() {
            return Category::open(dir, on_unreadable);
        }
        if !dir.is_dir() {
            return Err(missing(dir, self.layout()));
        }
        let category = match self {
            Self::Mvtec => unreachable!("handled above"),
            Self::Elpv => elpv::load(dir),
            Self::Mastcam => mastcam::load(dir),
            Self::BrainMri => brainmri::load(dir),
            Self::HeadCt => headct::load(dir),
            Self::HyperKvasir => hyperkvasir::load(dir),
            Self::Aitex => aitex::load(dir),
            Self::Sdd => sdd::load(dir),
            Self::Optical => optical::load(dir),
        }?;
        category.require(on_unreadable)
    }
}

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

/// The paper's hard-setting subsets (Table 2, §5.3 of the protocol): for each data set, the
/// known anomaly classes, named by their folder; one subset per known class.
pub const HARD_SUBSETS: &[(&str, &[&str])] = &[
    (
        "mvtec/carpet",
        &["color", "cut", "hole", "metal_contamination", "thread"],
    ),
    ("mvtec/metal_nut", &["bent", "color", "flip", "scratch"]),
    (
        "aitex",
        &[
            "Broken_end",
            "Broken_pick",
            "Cut_selvage",
            "Fuzzyball",
            "Nep",
            "Weft_crack",
        ],
    ),
    ("elpv", &["mono", "poly"]),
    (
        "mastcam",
        &[
            "bedrock",
            "broken-rock",
            "drill-hole",
            "drt",
            "dump-pile",
            "float",
            "meteorite",
            "scuff",
            "veins",
        ],
    ),
    (
        "hyperkvasir",
        &[
            "barretts",
            "barretts-short-segment",
            "esophagitis-a",
            "esophagitis-b-d",
        ],
    ),
];

/// The known classes of `dataset`'s hard-setting subsets, if the paper has any.
pub fn hard_subsets(dataset: &str) -> Option<&'static [&'static str]> {
    HARD_SUBSETS
        .iter()
        .find(|(d, _)| *d == dataset)
        .map(|(_, c)| *c)
}

/// Outlier-exposure images (`--outlier-root`, official `get_ood_data`): `train/good/` of every
/// category folder under `root` except `exclude` (the category being trained). Outlier folders
/// are not inspected, so an image there that does not decode is always an error.
pub fn outlier_images(root: &Path, exclude: &str) -> Result<Vec<ImageRef>> {
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
    crate::listing::check_policy(&left.unreadable, OnUnreadable::Error)?;
    if images.is_empty() {
        return Err(DataError::EmptyFolder {
            path: root.to_path_buf(),
        });
    }
    Ok(images)
}

/// The category folders of a data set in the MVTec AD layout (`mvtec_anomaly_detection/`),
/// sorted, and what else the folder holds (MVTec ships `license.txt` and `readme.txt` there).
pub fn category_folders(root: &Path) -> Result<(Vec<PathBuf>, Vec<crate::Ignored>)> {
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
        return Err(DataError::EmptyFolder {
            path: root.to_path_buf(),
        });
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
        return Err(DataError::EmptyFolder {
            path: root.to_path_buf(),
        });
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
pub(crate) fn any_nonzero(mask: &image::DynamicImage, crop: crate::Crop) -> bool {
    let mask = mask.to_rgb16();
    (crop.y..crop.y + crop.height)
        .any(|y| (crop.x..crop.x + crop.width).any(|x| mask.get_pixel(x, y).0 != [0, 0, 0]))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::Path;

    /// Writes a small PNG (its content is irrelevant to the loaders).
    pub fn png(path: &Path) {
        sized_png(path, 4, 4);
    }

    /// Writes a grey `width × height` image (the format follows the extension).
    pub fn sized_png(path: &Path, width: u32, height: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_pixel(width, height, image::Luma([9]))
            .save(path)
            .unwrap();
    }

    /// Writes a black `width × height` mask with the given rectangles (x, y, w, h) set to 255.
    pub fn mask(path: &Path, width: u32, height: u32, marks: &[(u32, u32, u32, u32)]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut img = image::GrayImage::new(width, height);
        for &(x0, y0, w, h) in marks {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    img.put_pixel(x, y, image::Luma([255]));
                }
            }
        }
        img.save(path).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_hard_subsets_as_in_the_paper() {
        let n: usize = HARD_SUBSETS.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(n, 30);
        assert_eq!(hard_subsets("elpv"), Some(&["mono", "poly"][..]));
        assert_eq!(hard_subsets("sdd"), None);
    }

    #[test]
    fn outliers_come_from_the_other_categories() {
        let dir = tempfile::tempdir().unwrap();
        fixtures::png(&dir.path().join("carpet/train/good/a.png"));
        fixtures::png(&dir.path().join("grid/train/good/b.png"));
        fixtures::png(&dir.path().join("grid/train/good/c.png"));
        let images = outlier_images(dir.path(), "carpet").unwrap();
        assert_eq!(images.len(), 2);
        assert!(images
            .iter()
            .all(|p| p.path.to_string_lossy().contains("grid")));
        std::fs::create_dir_all(dir.path().join("tile")).unwrap();
        let err = outlier_images(dir.path(), "carpet")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tile") && err.contains("train/good"), "{err}");
    }

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
