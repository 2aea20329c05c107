//! A category in the MVTec AD folder layout, listed in a stable (sorted) order, and the image
//! references every loader returns: a file, or a rectangle of one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::listing::{
    check_policy, file_name, list_images, sub_folders, LeftOut, OnUnreadable, Unreadable,
};

/// The layout every category folder must have; quoted in error messages.
pub(crate) const MVTEC_LAYOUT: &str =
    "of MVTec AD, <category>/{train/good, test/good, test/<defect class>}/<images>";

/// What a training or test sample is. The numbers are the official code's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// A normal (defect-free) image.
    Normal = 0,
    /// A real, labelled anomaly.
    Anomaly = 1,
    /// A pseudo anomaly made by CutMix (or taken from an outlier set).
    Pseudo = 2,
}

impl Label {
    /// The official code's number for the label: 0 normal, 1 anomaly, 2 pseudo anomaly.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
    /// The evaluation label: 1 for any anomaly, 0 for normal.
    pub fn is_anomalous(self) -> bool {
        self != Label::Normal
    }
}

/// A rectangle of an image in pixels, `x, y` its top-left corner.
///
/// Data sets whose samples are parts of larger images (AITEX's 256-pixel tiles, SDD's thirds)
/// name each part by its file and this rectangle; the part is cut in memory when the image is
/// read, so nothing is ever written next to the user's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Crop {
    /// Column of the left edge, in pixels from the image's left.
    pub x: u32,
    /// Row of the top edge, in pixels from the image's top.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl fmt::Display for Crop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.width, self.height)
    }
}

/// An image to read: a whole file, or a rectangle of one.
///
/// Shown as the path, with `#x,y,w,h` appended for a rectangle (`scores.csv`, `dra data
/// inspect`). In JSON the rectangle is a `crop` field, left out for whole files, so records
/// written before crops existed still read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image file.
    pub path: PathBuf,
    /// The rectangle of `path` to read; `None` for the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
}

impl ImageRef {
    /// A whole file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            crop: None,
        }
    }

    /// A rectangle of a file.
    pub fn tile(path: impl Into<PathBuf>, crop: Crop) -> Self {
        Self {
            path: path.into(),
            crop: Some(crop),
        }
    }

    /// The path as reports show it: the file's path, or `path#x,y,w,h` for a rectangle.
    pub fn display_path(&self) -> PathBuf {
        match self.crop {
            None => self.path.clone(),
            Some(c) => PathBuf::from(format!("{}#{c}", self.path.display())),
        }
    }

    /// Decodes the file into 8-bit RGB ([`load_rgb`]) and cuts out the rectangle.
    pub fn load_rgb(&self) -> Result<RgbImage> {
        let image = load_rgb(&self.path)?;
        match self.crop {
            None => Ok(image),
            Some(_) => self.cut(&image),
        }
    }

    /// Cuts this reference's rectangle out of its decoded file (`image` is the whole file).
    pub fn cut(&self, image: &RgbImage) -> Result<RgbImage> {
        let Some(c) = self.crop else {
            return Ok(image.clone());
        };
        let (w, h) = image.dimensions();
        let inside = c.width > 0
            && c.height > 0
            && c.x.checked_add(c.width).is_some_and(|r| r <= w)
            && c.y.checked_add(c.height).is_some_and(|b| b <= h);
        if !inside {
            return Err(DataError::BadImage {
                path: self.path.clone(),
                reason: format!("the rectangle {c} does not lie inside the {w}×{h} image"),
            });
        }
        Ok(image::imageops::crop_imm(image, c.x, c.y, c.width, c.height).to_image())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display_path().display())
    }
}

impl From<PathBuf> for ImageRef {
    fn from(path: PathBuf) -> Self {
        Self::file(path)
    }
}

impl From<&Path> for ImageRef {
    fn from(path: &Path) -> Self {
        Self::file(path)
    }
}

/// One image (a file or a rectangle of one) with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// The rectangle of `path` that is the sample; `None` for the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    /// The ground truth: [`Label::Normal`] or [`Label::Anomaly`], never a pseudo anomaly.
    pub label: Label,
    /// `good` for normal images, the defect folder's name for anomalies.
    pub class: String,
}

impl Sample {
    /// A sample of `image` with its ground truth.
    pub fn new(image: ImageRef, label: Label, class: impl Into<String>) -> Self {
        Self {
            path: image.path,
            crop: image.crop,
            label,
            class: class.into(),
        }
    }

    /// The image to read.
    pub fn image(&self) -> ImageRef {
        ImageRef {
            path: self.path.clone(),
            crop: self.crop,
        }
    }
}

/// Something a loader found in the data folder and left out, with the reason: a non-image file,
/// a tile of a defect image without defect pixels, a row the official converter drops. `dra
/// data inspect` lists them, so that nothing is skipped in silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The file, folder or rectangle left out.
    pub image: ImageRef,
    /// Why; one fixed sentence per kind, so that reports can group by it.
    pub reason: &'static str,
}

impl Ignored {
    pub(crate) fn new(image: impl Into<ImageRef>, reason: &'static str) -> Self {
        Self {
            image: image.into(),
            reason,
        }
    }
}

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
        crate::datasets::unused_entries(
            &root,
            &["train", "test", "ground_truth"],
            "not part of the MVTec AD layout (train/good, test/good, test/<class>, ground_truth)",
            &mut left,
        )?;
        if root.join("train").is_dir() {
            crate::datasets::unused_entries(
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
            return Err(crate::datasets::no_normals(path, in_folder));
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

/// Decodes any supported image (8 or 16 bit; grey, RGB or RGBA) into 8-bit RGB, as PIL's
/// `convert('RGB')` does. NumPy `.npy` arrays (Mastcam) are read as the official `load_image`
/// reads them: cast to `uint8`, first three channels kept (see `docs/datasets.md`).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let image = if is_npy_file(path)? {
        crate::npy::read_rgb(path)?
    } else {
        let image = decode(path)?;
        // The 8-bit RGB copy is held to the same limit as the decoding (a grey image has a
        // third of its bytes).
        let rgb_bytes = u64::from(image.width()) * u64::from(image.height()) * 3;
        if rgb_bytes > MAX_DECODED_BYTES {
            return Err(DataError::BadImage {
                path: path.to_path_buf(),
                reason: format!(
                    "{}×{} pixels take {} MiB as RGB; dra decodes images of at most {} MiB",
                    image.width(),
                    image.height(),
                    rgb_bytes >> 20,
                    MAX_DECODED_BYTES >> 20
                ),
            });
        }
        image.to_rgb8()
    };
    if image.width() == 0 || image.height() == 0 {
        return Err(DataError::BadImage {
            path: path.to_path_buf(),
            reason: format!(
                "the image has no pixels ({}×{})",
                image.width(),
                image.height()
            ),
        });
    }
    Ok(image)
}

/// A pixel mask (any non-zero pixel is a defect) resized to `size × size` with nearest-
/// neighbour sampling as PIL's `NEAREST` does it (output pixel x reads input pixel
/// ⌊(x + ½) · in / out⌋), row-major. Decoded under the same limits as images; a mask that does
/// not decode is an error naming it.
pub fn load_mask(path: &Path, size: u32) -> Result<Vec<bool>> {
    let mask = decode(path)?.to_luma8();
    let (w, h) = mask.dimensions();
    if w == 0 || h == 0 {
        return Err(DataError::BadImage {
            path: path.to_path_buf(),
            reason: "the mask has no pixels".into(),
        });
    }
    let pick = |out: u32, n: u32| -> u32 {
        ((((out as f64 + 0.5) * n as f64) / size as f64) as u32).min(n - 1)
    };
    let columns: Vec<u32> = (0..size).map(|x| pick(x, w)).collect();
    let mut out = Vec::with_capacity((size as usize).pow(2));
    for y in 0..size {
        let row = pick(y, h);
        out.extend(columns.iter().map(|&x| mask.get_pixel(x, row)[0] != 0));
    }
    Ok(out)
}

/// The longest side, in pixels, of an image we decode. The largest images of the paper's data
/// sets are AITEX's 4096 × 256 fabric rolls; this leaves room for a user's scans.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most memory, in bytes, that decoding one image may take. An image file's header states
/// its size, and the decoder allocates that much before it reads a pixel: a damaged or hostile
/// 50-byte header could otherwise ask for gigabytes. 16-bit RGBA at 4096 × 4096 is 128 MiB.
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

/// A reader of `path` that guesses the format from the content and obeys our limits.
fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<fs::File>>> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    Ok(reader)
}

/// The decoder's error as a reason, saying what our limits are when one was hit.
fn bad_image(path: &Path, e: image::ImageError) -> DataError {
    let reason = match e {
        image::ImageError::Limits(_) => format!(
            "{e} (dra decodes images of at most {MAX_IMAGE_SIDE} pixels a side and {} MiB)",
            MAX_DECODED_BYTES >> 20
        ),
        e => e.to_string(),
    };
    DataError::BadImage {
        path: path.to_path_buf(),
        reason,
    }
}

/// Decodes an image file as it is stored (bit depth and channels kept).
pub(crate) fn decode(path: &Path) -> Result<image::DynamicImage> {
    reader(path)?.decode().map_err(|e| bad_image(path, e))
}

/// Width and height from the file's header, without decoding the pixels (`.npy` arrays too).
pub(crate) fn dimensions(path: &Path) -> Result<(u32, u32)> {
    if is_npy_file(path)? {
        let image = crate::npy::read_rgb(path)?;
        return Ok(image.dimensions());
    }
    reader(path)?
        .into_dimensions()
        .map_err(|e| bad_image(path, e))
}

fn is_npy_file(path: &Path) -> Result<bool> {
    let mut head = [0u8; 6];
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| DataError::io(path, e))?;
    Ok(crate::npy::is_npy(&head[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cat.ignored[0].reason, crate::listing::HIDDEN);
        assert!(cat.ignored[0].image.path.ends_with(".DS_Store"));
    }

    #[test]
    fn masks_are_found_beside_the_layout_and_resized_as_pil_nearest() {
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

        // A 4 × 2 mask with one lit column (x = 1), read at 6 px: PIL's NEAREST reads input
        // column ⌊(x + ½) · 4 / 6⌋ = 0, 1, 1, 2, 3, 3 and row ⌊(y + ½) · 2 / 6⌋ = 0, 0, 0, 1, 1, 1.
        let path = dir.path().join("m.png");
        let mut mask = image::GrayImage::new(4, 2);
        mask.put_pixel(1, 0, image::Luma([255]));
        mask.put_pixel(1, 1, image::Luma([3]));
        mask.save(&path).unwrap();
        let got = load_mask(&path, 6).unwrap();
        for y in 0..6 {
            let row: Vec<bool> = got[y * 6..(y + 1) * 6].to_vec();
            assert_eq!(row, [false, true, true, false, false, false], "row {y}");
        }
        fs::write(&path, b"not a png").unwrap();
        assert!(load_mask(&path, 6)
            .unwrap_err()
            .to_string()
            .contains("m.png"));
    }

    #[test]
    fn images_past_the_decoding_limits_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let wide = dir.path().join("wide.png");
        image::GrayImage::new(MAX_IMAGE_SIDE + 1, 1)
            .save(&wide)
            .unwrap();
        let err = load_rgb(&wide).unwrap_err().to_string();
        assert!(err.contains("wide.png") && err.contains("16384"), "{err}");
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
            ("notes.txt".to_string(), crate::listing::KNOWN_NON_IMAGE)
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
    fn a_crop_cuts_the_rectangle_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8, y as u8, 0]))
            .save(&path)
            .unwrap();
        let crop = Crop {
            x: 4,
            y: 1,
            width: 4,
            height: 2,
        };
        let tile = ImageRef::tile(&path, crop);
        let img = tile.load_rgb().unwrap();
        assert_eq!(img.dimensions(), (4, 2));
        assert_eq!(img.get_pixel(0, 0).0, [4, 1, 0]);
        assert_eq!(img.get_pixel(3, 1).0, [7, 2, 0]);
        assert!(tile.to_string().ends_with("wide.png#4,1,4,2"));
        let outside = ImageRef::tile(&path, Crop { x: 6, ..crop });
        let err = outside.load_rgb().unwrap_err().to_string();
        assert!(err.contains("wide.png") && err.contains("8×4"), "{err}");
        // A record without the field (written before crops existed) still reads.
        let old: Sample =
            serde_json::from_str(r#"{"path":"/a.png","label":"anomaly","class":"hole"}"#).unwrap();
        assert_eq!(old.crop, None);
        let s = Sample::new(tile.clone(), Label::Anomaly, "hole");
        let back: Sample = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.image(), tile);
    }

    #[test]
    fn corrupt_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        let mut bytes = Vec::new();
        RgbImage::new(8, 8)
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&path, bytes).unwrap();
        let err = load_rgb(&path).unwrap_err().to_string();
        assert!(
            err.contains("broken.png") && err.contains("cannot decode"),
            "{err}"
        );
    }
}
