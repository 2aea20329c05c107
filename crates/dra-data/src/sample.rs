//! The types every part of the crate shares: what a sample is ([`Label`], [`Sample`]), the image
//! references every loader returns (a file, or a rectangle of one: [`ImageRef`], [`Crop`]), and
//! what a loader found but did not use ([`Ignored`], [`Unreadable`], and the policy for the
//! latter, [`OnUnreadable`]).
//!
//! This module imports nothing else of the crate: every other module may import it. Reading an
//! `ImageRef` (`ImageRef::load_rgb`, `ImageRef::cut`) is in `datasets::decode`, beside the
//! decoder.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// What to do with image files that do not decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnUnreadable {
    /// Stop with an error naming them (the default: nothing is dropped in silence).
    #[default]
    Error,
    /// Leave them out; the caller reports them (`--skip-unreadable`).
    Skip,
}

/// A file that claims to be an image, by its name or its first bytes, but does not decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file that does not decode.
    pub path: PathBuf,
    /// The decoder's reason, on one line.
    pub reason: String,
}

impl Unreadable {
    pub(crate) fn new(path: impl Into<PathBuf>, reason: impl AsRef<str>) -> Self {
        Self {
            path: path.into(),
            reason: one_line(reason.as_ref()),
        }
    }
}

/// `text` on one line: error reports and `scores.csv` rows must not be broken by a decoder's
/// multi-line message.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
