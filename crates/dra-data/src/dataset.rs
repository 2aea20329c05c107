//! A category in the MVTec AD folder layout, listed in a stable (sorted) order.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The layout every category folder must have; quoted in error messages.
pub(crate) const MVTEC_LAYOUT: &str =
    "<category>/{train/good, test/good, test/<defect class>}/<images>";

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

/// One image file with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub path: PathBuf,
    pub label: Label,
    /// `good` for normal images, the defect folder's name for anomalies.
    pub class: String,
}

/// One category (`<root>/<category>`) of a data set in the MVTec AD layout.
///
/// Every list is sorted by file name, so that seeded selections do not depend on the order in
/// which a file system happens to list a folder (the official code used `os.listdir` order).
#[derive(Clone, Debug)]
pub struct Category {
    pub root: PathBuf,
    pub train_good: Vec<PathBuf>,
    pub test_good: Vec<PathBuf>,
    /// Defect class name → its test images, classes in sorted order.
    pub defects: BTreeMap<String, Vec<PathBuf>>,
}

impl Category {
    /// Lists a category folder. Fails with the path it expected when a required folder is
    /// missing, and with the file's name when a file in it is not an image.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if !root.is_dir() {
            return Err(DataError::MissingFolder {
                path: root,
                layout: MVTEC_LAYOUT,
            });
        }
        let train_good = list_images(&root.join("train").join("good"))?;
        let test_dir = root.join("test");
        let test_good = list_images(&test_dir.join("good"))?;
        let mut defects = BTreeMap::new();
        for entry in sorted_entries(&test_dir)? {
            let name = file_name(&entry);
            if name == "good" || name.starts_with('.') || !entry.is_dir() {
                continue;
            }
            defects.insert(name, list_images(&entry)?);
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

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
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
/// extension; hidden files (`.DS_Store` and the like) are ignored, anything else that is not an
/// image is an error naming it.
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for path in sorted_entries(dir)? {
        if file_name(&path).starts_with('.') || path.is_dir() {
            continue;
        }
        sniff_format(&path)?;
        images.push(path);
    }
    Ok(images)
}

/// Reads the first bytes of a file and checks that they start an image format we decode.
fn sniff_format(path: &Path) -> Result<image::ImageFormat> {
    let mut head = [0u8; 32];
    let mut file = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let n = file.read(&mut head).map_err(|e| DataError::io(path, e))?;
    image::guess_format(&head[..n]).map_err(|_| DataError::BadImage {
        path: path.to_path_buf(),
        reason: "not an image file (unrecognised format)".into(),
    })
}

/// Decodes any supported image (8 or 16 bit; grey, RGB or RGBA) into 8-bit RGB, as PIL's
/// `convert('RGB')` does.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let decoded = reader.decode().map_err(|e| DataError::BadImage {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(decoded.to_rgb8())
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
        let names: Vec<_> = cat.train_good.iter().map(|p| file_name(p)).collect();
        assert_eq!(names, ["a.jpeg_but_png", "b.png"]);
        assert_eq!(cat.defect_classes(), ["hole", "scratch"]);
        assert_eq!(file_name(&cat.defects["scratch"][0]), "1.png");
        assert_eq!(cat.n_anomalies(), 3);
    }

    #[test]
    fn missing_folder_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        let err = Category::open(&root).unwrap_err().to_string();
        assert!(
            err.contains("test") && err.contains("folder not found"),
            "{err}"
        );
    }

    #[test]
    fn non_image_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        write_png(&root.join("train/good/a.png"));
        write_png(&root.join("test/good/a.png"));
        fs::write(root.join("test/good/notes.txt"), b"hello").unwrap();
        let err = Category::open(&root).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
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
