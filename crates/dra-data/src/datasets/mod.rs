//! The paper's benchmark data sets, read from the files as their publishers ship them, or from
//! the MVTec-layout folders the official conversion scripts write. Each family has a module;
//! every loader returns a [`Category`], the MVTec-layout view the rest of the pipeline uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Category, ImageRef};
use crate::error::{DataError, Result};
use crate::listing::{
    file_name, list_images, sorted_entries, sub_folders, LeftOut, Listing, OnUnreadable, HIDDEN,
};
use crate::mt19937::NumpyRandomState;

mod aitex;
mod brainmri;
mod elpv;
mod headct;
mod hyperkvasir;
mod mastcam;
mod name;
mod optical;
mod sdd;

pub use name::{default_data_root, names_help, DatasetName};

/// The folder under `--data-root` that holds MVTec AD's categories (MVTec's own archive name).
pub const MVTEC_FOLDER: &str = "mvtec_anomaly_detection";
/// The folder under `--data-root` that holds the embedded synthetic categories.
pub const SYNTHETIC_FOLDER: &str = "synthetic";

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
            Self::Mvtec => MVTEC_FOLDER,
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
    crate::listing::check_policy(&left.unreadable, on_unreadable)?;
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
pub(crate) fn category_folders(root: &Path) -> Result<(Vec<PathBuf>, Vec<crate::Ignored>)> {
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

/// The error for a data set without normal images: the unreadable files, if it is their
/// fault, else an empty folder.
pub(crate) fn no_normals(path: PathBuf, mut unreadable: Vec<crate::Unreadable>) -> DataError {
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

/// A label or mask image, decoded; `None` when it does not decode, recorded as unreadable.
pub(crate) fn decoded_label(
    path: &Path,
    left: &mut LeftOut,
) -> Result<Option<image::DynamicImage>> {
    match crate::dataset::decode(path) {
        Ok(mask) => Ok(Some(mask)),
        Err(DataError::BadImage { reason, .. }) => {
            left.unreadable
                .push(crate::listing::Unreadable::new(path, reason));
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

    /// A named list of images: (path relative to the root, crop).
    type List = (String, Vec<(PathBuf, Option<crate::Crop>)>);

    /// The category's lists, paths relative to `root`, for comparing two copies of a folder.
    fn lists(cat: &Category, root: &Path) -> Vec<List> {
        let rel = |list: &[ImageRef]| {
            list.iter()
                .map(|i| (i.path.strip_prefix(root).unwrap().to_path_buf(), i.crop))
                .collect::<Vec<_>>()
        };
        let mut out = vec![
            ("train/good".to_string(), rel(&cat.train_good)),
            ("test/good".to_string(), rel(&cat.test_good)),
        ];
        out.extend(cat.defects.iter().map(|(c, l)| (c.clone(), rel(l))));
        out
    }

    /// For every loader that splits the normals itself (75 % / 25 %), a normal image that
    /// does not decode, skipped, gives the category of the same folder with that file
    /// deleted (and for label files, its row): the split is drawn over what is left.
    #[test]
    fn skipping_an_unreadable_normal_is_deleting_it() {
        use fixtures::{mask, png, sized_png};
        type Build = fn(&Path, bool);
        let cases: [(Family, &str, Build); 6] = [
            (Family::BrainMri, "no/N3.jpg", |root, keep| {
                for i in 0..9 {
                    if keep || i != 3 {
                        png(&root.join(format!("no/N{i}.jpg")));
                    }
                }
                png(&root.join("yes/Y1.jpg"));
            }),
            (
                Family::HyperKvasir,
                "upper-gi-tract/anatomical-landmarks/z-line/2.jpg",
                |root, keep| {
                    for i in 0..9 {
                        if keep || i != 2 {
                            png(&root.join(format!(
                                "upper-gi-tract/anatomical-landmarks/z-line/{i}.jpg"
                            )));
                        }
                    }
                    png(&root.join("upper-gi-tract/pathological-findings/barretts/x.jpg"));
                },
            ),
            (Family::HeadCt, "head_ct/head_ct/002.png", |root, keep| {
                let mut csv = String::from("id, hemorrhage\n");
                for i in 0..10 {
                    if keep || i != 2 {
                        png(&root.join(format!("head_ct/head_ct/{i:03}.png")));
                        csv += &format!("{i},{}\n", (i >= 8) as u8);
                    }
                }
                std::fs::write(root.join("labels.csv"), csv).unwrap();
            }),
            (Family::Elpv, "images/cell0004.png", |root, keep| {
                let mut csv = String::new();
                for i in 0..10 {
                    if keep || i != 4 {
                        png(&root.join(format!("images/cell{i:04}.png")));
                        let p = if i >= 8 { "1.0" } else { "0.0" };
                        csv += &format!("images/cell{i:04}.png  {p}  mono\n");
                    }
                }
                std::fs::write(root.join("labels.csv"), csv).unwrap();
            }),
            (Family::Sdd, "kos03/Part0.jpg", |root, keep| {
                for k in 1..5 {
                    if keep || k != 3 {
                        sized_png(&root.join(format!("kos0{k}/Part0.jpg")), 4, 9);
                    }
                    let marks: &[(u32, u32, u32, u32)] = if k == 1 { &[(0, 0, 1, 1)] } else { &[] };
                    mask(&root.join(format!("kos0{k}/Part0_label.bmp")), 4, 9, marks);
                }
            }),
            (
                Family::Aitex,
                "NODefect_images/fab/0002.png",
                |root, keep| {
                    for i in 1..4 {
                        if keep || i != 2 {
                            sized_png(
                                &root.join(format!("NODefect_images/fab/000{i}.png")),
                                512,
                                16,
                            );
                        }
                    }
                    sized_png(&root.join("Defect_images/0001_002_00.png"), 32, 16);
                    mask(
                        &root.join("Mask_images/0001_002_00_mask.png"),
                        32,
                        16,
                        &[(1, 1, 1, 1)],
                    );
                },
            ),
        ];
        for (family, victim, build) in cases {
            let skipped = tempfile::tempdir().unwrap();
            build(skipped.path(), true);
            std::fs::write(skipped.path().join(victim), b"not an image at all").unwrap();
            let deleted = tempfile::tempdir().unwrap();
            build(deleted.path(), false);

            let err = family
                .load(skipped.path(), OnUnreadable::Error)
                .unwrap_err()
                .to_string();
            assert!(err.contains(victim), "{family:?}: {err}");
            let cat = family.load(skipped.path(), OnUnreadable::Skip).unwrap();
            assert_eq!(cat.unreadable.len(), 1, "{family:?}");
            assert!(cat.unreadable[0].path.ends_with(victim), "{family:?}");
            let reference = family.load(deleted.path(), OnUnreadable::Error).unwrap();
            assert_eq!(
                lists(&cat, skipped.path()),
                lists(&reference, deleted.path()),
                "{family:?}"
            );
        }
    }

    /// A label or mask that does not decode is unreadable: its image goes with it.
    #[test]
    fn an_unreadable_label_takes_its_image_with_it() {
        use fixtures::{mask, sized_png};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for k in 1..5 {
            sized_png(&root.join(format!("kos0{k}/Part0.jpg")), 4, 9);
            mask(&root.join(format!("kos0{k}/Part0_label.bmp")), 4, 9, &[]);
        }
        std::fs::write(root.join("kos02/Part0_label.bmp"), b"BM garbage").unwrap();
        let err = Family::Sdd
            .load(root, OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kos02/Part0_label.bmp"), "{err}");
        let cat = Family::Sdd.load(root, OnUnreadable::Skip).unwrap();
        assert_eq!(cat.train_good.len() + cat.test_good.len(), 9);
        assert!(cat.unreadable[0].path.ends_with("kos02/Part0_label.bmp"));
        assert!(!cat
            .ignored
            .iter()
            .any(|i| i.image.path.ends_with("Part0_label.bmp")));
    }

    /// When every normal image is unreadable, the error names them, under either policy.
    #[test]
    fn no_decodable_normal_names_the_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::create_dir_all(dir.path().join("no")).unwrap();
            std::fs::write(dir.path().join(format!("no/N{i}.jpg")), b"").unwrap();
        }
        fixtures::png(&dir.path().join("yes/Y.jpg"));
        for policy in [OnUnreadable::Error, OnUnreadable::Skip] {
            let err = Family::BrainMri
                .load(dir.path(), policy)
                .unwrap_err()
                .to_string();
            assert!(err.contains("N0.jpg") && err.contains("N2.jpg"), "{err}");
        }
        let mvtec = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(mvtec.path().join("train/good")).unwrap();
        std::fs::write(mvtec.path().join("train/good/a.png"), b"").unwrap();
        fixtures::png(&mvtec.path().join("test/good/b.png"));
        let err = Category::open(mvtec.path(), OnUnreadable::Skip)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no image files that decode") && err.contains("a.png"),
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
