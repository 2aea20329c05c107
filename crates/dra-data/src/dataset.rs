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

/// The layout every category folder must have; quoted in error messages.
pub(crate) const MVTEC_LAYOUT: &str =
    "of MVTec AD, <category>/{train/good, test/good, test/<defect class>}/<images>";

/// What a training or test sample is. The numbers are the official code's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Normal = 0,
    /// A real, labelled anomaly.
    Anomaly = 1,
    /// A pseudo anomaly made by CutMix (or taken from an outlier set).
    Pseudo = 2,
}

impl Label {
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
    pub x: u32,
    pub y: u32,
    pub width: u32,
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
    pub path: PathBuf,
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
    pub path: PathBuf,
    /// The rectangle of `path` that is the sample; `None` for the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    pub label: Label,
    /// `good` for normal images, the defect folder's name for anomalies.
    pub class: String,
}

impl Sample {
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
    pub root: PathBuf,
    pub train_good: Vec<ImageRef>,
    pub test_good: Vec<ImageRef>,
    /// Defect class name → its test images, classes in sorted order.
    pub defects: BTreeMap<String, Vec<ImageRef>>,
    /// What the loader left out, and why.
    pub ignored: Vec<Ignored>,
}

impl Category {
    /// Lists a category folder. Fails with the path it expected when a required folder is
    /// missing; files that are not images are left out and recorded in `ignored`.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(DataError::MissingFolder {
                path: root,
                layout: MVTEC_LAYOUT,
            });
        }
        let mut ignored = Vec::new();
        let train_good = list_images(&root.join("train").join("good"), &mut ignored)?;
        let test_dir = root.join("test");
        let test_good = list_images(&test_dir.join("good"), &mut ignored)?;
        let mut defects = BTreeMap::new();
        for entry in sorted_entries(&test_dir)? {
            let name = file_name(&entry);
            if name == "good" {
                continue;
            }
            if name.starts_with('.') {
                ignored.push(Ignored::new(entry, HIDDEN));
            } else if !entry.is_dir() {
                ignored.push(Ignored::new(
                    entry,
                    "file directly in test/ (anomalies are read from test/<class>/)",
                ));
            } else {
                defects.insert(name, list_images(&entry, &mut ignored)?);
            }
        }
        if train_good.is_empty() {
            return Err(DataError::EmptyFolder {
                path: root.join("train").join("good"),
            });
        }
        Ok(Self {
            root,
            train_good,
            test_good,
            defects,
            ignored,
        })
    }

    /// The folder's name, e.g. `carpet`.
    pub fn name(&self) -> String {
        file_name(&self.root)
    }

    pub fn defect_classes(&self) -> Vec<&str> {
        self.defects.keys().map(String::as_str).collect()
    }

    pub fn n_anomalies(&self) -> usize {
        self.defects.values().map(Vec::len).sum()
    }
}

/// Reason for a hidden file or folder (`.DS_Store` and the like).
pub(crate) const HIDDEN: &str = "hidden file or folder";

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(DataError::MissingFolder {
            path: dir.to_path_buf(),
            layout: MVTEC_LAYOUT,
        });
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        entries.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

/// The image files of a folder, sorted. Files are recognised by their content, not by their
/// extension. Hidden files, sub-folders and files that are not images we can decode are left
/// out and recorded in `ignored`.
pub(crate) fn list_images(dir: &Path, ignored: &mut Vec<Ignored>) -> Result<Vec<ImageRef>> {
    let mut images = Vec::new();
    for path in sorted_entries(dir)? {
        if file_name(&path).starts_with('.') {
            ignored.push(Ignored::new(path, HIDDEN));
        } else if path.is_dir() {
            ignored.push(Ignored::new(
                path,
                "folder inside an image folder (not read)",
            ));
        } else {
            match sniff(&path)? {
                Sniffed::Image => images.push(ImageRef::file(path)),
                Sniffed::Unsupported => ignored.push(Ignored::new(
                    path,
                    "image format not supported (PNG, JPEG, BMP, TIFF and .npy are read)",
                )),
                Sniffed::NotAnImage => ignored.push(Ignored::new(path, NOT_AN_IMAGE)),
            }
        }
    }
    Ok(images)
}

/// Reason for a file whose content is no image format.
pub(crate) const NOT_AN_IMAGE: &str = "not an image file (unrecognised content)";

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A format we decode (including NumPy `.npy` arrays).
    Image,
    /// An image format this build cannot decode (GIF, WebP, …).
    Unsupported,
    NotAnImage,
}

/// Reads the first bytes of a file and tells whether they start an image we decode.
pub(crate) fn sniff(path: &Path) -> Result<Sniffed> {
    let mut head = [0u8; 32];
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| DataError::io(path, e))?;
    if crate::npy::is_npy(&head[..n]) {
        return Ok(Sniffed::Image);
    }
    Ok(match image::guess_format(&head[..n]) {
        Ok(format) if format.reading_enabled() => Sniffed::Image,
        Ok(_) => Sniffed::Unsupported,
        Err(_) => Sniffed::NotAnImage,
    })
}

/// Decodes any supported image (8 or 16 bit; grey, RGB or RGBA) into 8-bit RGB, as PIL's
/// `convert('RGB')` does. NumPy `.npy` arrays (Mastcam) are read as the official `load_image`
/// reads them: cast to `uint8`, first three channels kept ([`crate::npy`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    if is_npy_file(path)? {
        return crate::npy::read_rgb(path);
    }
    let decoded = decode(path)?;
    Ok(decoded.to_rgb8())
}

/// Decodes an image file as it is stored (bit depth and channels kept).
pub(crate) fn decode(path: &Path) -> Result<image::DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    reader.decode().map_err(|e| DataError::BadImage {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Width and height from the file's header, without decoding the pixels.
pub(crate) fn dimensions(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .into_dimensions()
        .map_err(|e| DataError::BadImage {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
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
        let cat = Category::open(&root).unwrap();
        assert_eq!(cat.name(), "cat");
        let names: Vec<_> = cat.train_good.iter().map(|p| file_name(&p.path)).collect();
        assert_eq!(names, ["a.jpeg_but_png", "b.png"]);
        assert_eq!(cat.defect_classes(), ["hole", "scratch"]);
        assert_eq!(file_name(&cat.defects["scratch"][0].path), "1.png");
        assert_eq!(cat.n_anomalies(), 3);
        assert_eq!(cat.ignored.len(), 1);
        assert_eq!(cat.ignored[0].reason, HIDDEN);
        assert!(cat.ignored[0].image.path.ends_with(".DS_Store"));
    }

    #[test]
    fn missing_folder_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        let err = Category::open(&root).unwrap_err().to_string();
        assert!(
            err.contains("test") && err.contains("not found") && err.contains("MVTec AD"),
            "{err}"
        );
    }

    #[test]
    fn non_images_are_left_out_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        write_png(&root.join("test/good/a.png"));
        fs::write(root.join("test/good/notes.txt"), b"hello").unwrap();
        fs::write(root.join("test/readme.md"), b"hello").unwrap();
        fs::write(root.join("test/good/anim.gif"), b"GIF89a\x01\x00\x01\x00").unwrap();
        let cat = Category::open(&root).unwrap();
        assert_eq!(cat.test_good.len(), 1);
        let ignored: Vec<(String, &str)> = cat
            .ignored
            .iter()
            .map(|i| (file_name(&i.image.path), i.reason))
            .collect();
        assert_eq!(ignored.len(), 3, "{ignored:?}");
        assert_eq!(ignored[0].0, "anim.gif");
        assert!(ignored[0].1.contains("not supported"));
        assert_eq!(ignored[1], ("notes.txt".to_string(), NOT_AN_IMAGE));
        assert_eq!(ignored[2].0, "readme.md");
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
