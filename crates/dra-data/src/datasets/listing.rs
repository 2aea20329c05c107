//! The one listing of a data folder, used by every loader and by `dra predict`: what each file
//! is, and whether the images decode.
//!
//! Every file of a listed folder ends up in exactly one of three places:
//! - an **image**: its first bytes start an image format we decode (so odd extensions still
//!   work), and it decodes;
//! - **left out** ([`Ignored`]): hidden files, folders, known non-images (`README*`, `*.txt`,
//!   `*.csv`, `Thumbs.db`, …) and other files that neither their name nor their content says are
//!   images;
//! - **unreadable** ([`Unreadable`]): a file whose name (`png`, `jpg`, `jpeg`, `bmp`, `tif`,
//!   `tiff`, `npy`, any case) or first bytes say image, but which does not decode. These are an
//!   error unless the caller asks to skip them ([`OnUnreadable`]): a corrupt file must never
//!   silently shrink a training or test set.
//!
//! Decoding is checked here, before any split is made, so that a skipped file changes the data
//! exactly as deleting it would.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::decode::load_rgb;
use crate::error::{DataError, Result};
use crate::sample::{Ignored, ImageRef, OnUnreadable, Unreadable, MVTEC_LAYOUT};

/// The images of some folders or files, and what was not used, with the reasons.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// The images that decode, sorted within each folder, folders in the order given.
    pub images: Vec<ImageRef>,
    /// What was left out as not an image, with the reason.
    pub ignored: Vec<Ignored>,
    /// Files that claim to be images but do not decode; the caller decides whether to stop.
    pub unreadable: Vec<Unreadable>,
}

impl Listing {
    /// Lists images named on a command line: folders are listed (their own files, sorted),
    /// files are taken as given. A named file that is not an image, or does not decode, is
    /// unreadable: the user asked for it by name. A path that does not exist is an error.
    pub fn of_inputs(inputs: &[PathBuf]) -> Result<Self> {
        let mut listing = Self::default();
        let mut left = LeftOut::default();
        for input in inputs {
            if input.is_dir() {
                let images = list_images(input, &mut left)?;
                if images.is_empty() && !left.unreadable.iter().any(|u| u.path.starts_with(input)) {
                    return Err(DataError::EmptyFolder {
                        path: input.clone(),
                    });
                }
                listing.images.extend(images);
            } else if input.is_file() {
                let candidates = match classify_file(input) {
                    Kind::Image => vec![ImageRef::file(input)],
                    Kind::Unreadable(reason) => {
                        left.unreadable.push(Unreadable::new(input, reason));
                        Vec::new()
                    }
                    Kind::Left(reason) => {
                        left.unreadable.push(Unreadable::new(input, reason));
                        Vec::new()
                    }
                };
                listing.images.extend(keep_readable(candidates, &mut left));
            } else if input.exists() {
                left.unreadable.push(Unreadable::new(input, NOT_A_FILE));
            } else {
                return Err(DataError::MissingFile {
                    path: input.clone(),
                });
            }
        }
        listing.ignored = left.ignored;
        listing.unreadable = left.unreadable;
        Ok(listing)
    }

    /// The files of the images, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.images.iter().map(|i| i.path.clone()).collect()
    }

    /// Applies the policy: with [`OnUnreadable::Error`], any unreadable file is an error naming
    /// them all; with [`OnUnreadable::Skip`] the listing is returned as it is.
    pub fn require(self, on_unreadable: OnUnreadable) -> Result<Self> {
        check_policy(&self.unreadable, on_unreadable)?;
        Ok(self)
    }
}

/// The error for `unreadable` under `on_unreadable`, if it is one.
pub(crate) fn check_policy(unreadable: &[Unreadable], on_unreadable: OnUnreadable) -> Result<()> {
    if on_unreadable == OnUnreadable::Error && !unreadable.is_empty() {
        let mut files = unreadable.to_vec();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        return Err(DataError::Unreadable { files });
    }
    Ok(())
}

/// What a loader found and did not use, while it lists a data set.
#[derive(Debug, Default)]
pub(crate) struct LeftOut {
    pub ignored: Vec<Ignored>,
    pub unreadable: Vec<Unreadable>,
}

impl LeftOut {
    pub fn ignore(&mut self, image: impl Into<ImageRef>, reason: &'static str) {
        self.ignored.push(Ignored::new(image, reason));
    }
}

/// Reason for a hidden file or folder (`.DS_Store` and the like).
pub(crate) const HIDDEN: &str = "hidden file or folder";
/// Reason for a file that neither its name nor its content says is an image.
pub(crate) const NOT_AN_IMAGE: &str = "not an image file (neither its name nor its content)";
/// Reason for files that data sets ship beside their images.
pub(crate) const KNOWN_NON_IMAGE: &str =
    "not an image (README, notes, labels or a file manager's index)";
/// Reason for a folder where image files are expected.
pub(crate) const NOT_A_FILE: &str = "not a regular file (a pipe, socket or device; not read)";
pub(crate) const FOLDER_IN_IMAGES: &str = "folder inside an image folder (not read)";

/// File extensions that say "image": such a file must decode, whatever its content.
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "npy"];

/// Whether the file's extension says it is an image (any case).
pub(crate) fn named_as_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|i| e.eq_ignore_ascii_case(i)))
}

/// Files that data sets and file managers put beside images: never images, never reported as
/// unreadable.
fn known_non_image(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("readme")
        || lower.ends_with(".txt")
        || lower.ends_with(".csv")
        || lower == "thumbs.db"
        || lower == "desktop.ini"
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entries of a folder, sorted by path, so that seeded selections do not depend on the
/// order in which a file system lists it.
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

/// The sub-folders of `dir` that are not hidden, sorted; everything else there is recorded in
/// `left` with `file_reason` (files) or [`HIDDEN`].
pub(crate) fn sub_folders(
    dir: &Path,
    file_reason: &'static str,
    left: &mut LeftOut,
) -> Result<Vec<(String, PathBuf)>> {
    let mut folders = Vec::new();
    for entry in sorted_entries(dir)? {
        let name = file_name(&entry);
        if name.starts_with('.') {
            left.ignore(entry, HIDDEN);
        } else if !entry.is_dir() {
            left.ignore(entry, file_reason);
        } else {
            folders.push((name, entry));
        }
    }
    Ok(folders)
}

/// What one entry of an image folder is, before decoding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Its first bytes start a format we decode; whether it decodes is checked by
    /// [`keep_readable`].
    Image,
    /// Not an image, with the reason.
    Left(&'static str),
    /// Says it is an image but cannot be one, with the reason.
    Unreadable(String),
}

/// Classifies one entry by its name and first bytes (no decoding).
pub(crate) fn classify(path: &Path) -> Kind {
    if file_name(path).starts_with('.') {
        return Kind::Left(HIDDEN);
    }
    classify_file(path)
}

/// [`classify`] without the rule for hidden files: for a file the user named, who wants it
/// read whatever its name.
fn classify_file(path: &Path) -> Kind {
    let name = file_name(path);
    // Only a regular file (or a link to one) is opened: reading a pipe would wait forever.
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Kind::Left(FOLDER_IN_IMAGES),
        Ok(meta) if !meta.is_file() => return Kind::Left(NOT_A_FILE),
        _ => {}
    }
    let by_name = named_as_image(path);
    if !by_name && known_non_image(&name) {
        return Kind::Left(KNOWN_NON_IMAGE);
    }
    // A file we cannot open (a broken link, no permission) may be an image: unreadable.
    let (head, len) = match first_bytes(path) {
        Ok(read) => read,
        Err(e) => return Kind::Unreadable(format!("cannot read the file: {e}")),
    };
    match sniff(&head[..len]) {
        Sniffed::Image => Kind::Image,
        Sniffed::Unsupported(format) => Kind::Unreadable(format!(
            "{} images cannot be read (PNG, JPEG, BMP, TIFF and NumPy .npy are)",
            format
                .extensions_str()
                .first()
                .map_or("these", |e| e)
                .to_uppercase()
        )),
        Sniffed::NotAnImage if by_name && len == 0 => Kind::Unreadable("empty file (0 bytes)".into()),
        Sniffed::NotAnImage if by_name => Kind::Unreadable(
            "its name says image but its first bytes start no image format (PNG, JPEG, BMP, TIFF, .npy)"
                .into(),
        ),
        Sniffed::NotAnImage => Kind::Left(NOT_AN_IMAGE),
    }
}

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sniffed {
    /// A format we decode (including NumPy `.npy` arrays).
    Image,
    /// An image format this build cannot decode (GIF, WebP, …).
    Unsupported(image::ImageFormat),
    NotAnImage,
}

/// Tells from a file's first bytes whether they start an image we decode.
pub(crate) fn sniff(head: &[u8]) -> Sniffed {
    if crate::npy::is_npy(head) {
        return Sniffed::Image;
    }
    match image::guess_format(head) {
        Ok(format) if format.reading_enabled() => Sniffed::Image,
        Ok(format) => Sniffed::Unsupported(format),
        Err(_) => Sniffed::NotAnImage,
    }
}

fn first_bytes(path: &Path) -> std::io::Result<([u8; 32], usize)> {
    let mut head = [0u8; 32];
    let mut file = fs::File::open(path)?;
    let mut len = 0;
    // `read` may return fewer bytes than asked before the end of the file.
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((head, len))
}

/// The image files of a folder, sorted, each checked to decode. Hidden files, sub-folders and
/// non-images go to `left.ignored`, files that claim to be images but do not decode to
/// `left.unreadable`.
pub(crate) fn list_images(dir: &Path, left: &mut LeftOut) -> Result<Vec<ImageRef>> {
    let mut candidates = Vec::new();
    for path in sorted_entries(dir)? {
        match classify(&path) {
            Kind::Image => candidates.push(ImageRef::file(path)),
            Kind::Left(reason) => left.ignore(path, reason),
            Kind::Unreadable(reason) => left.unreadable.push(Unreadable::new(path, reason)),
        }
    }
    Ok(keep_readable(candidates, left))
}

/// Decodes every distinct file of `images` (in parallel) and keeps, in order, the images whose
/// file decodes; the files that do not are recorded in `left.unreadable` once each.
pub(crate) fn keep_readable(images: Vec<ImageRef>, left: &mut LeftOut) -> Vec<ImageRef> {
    let bad = unreadable_among(images.iter().map(|i| i.path.as_path()), left);
    if bad.is_empty() {
        return images;
    }
    images
        .into_iter()
        .filter(|i| !bad.contains(&i.path))
        .collect()
}

/// Decodes each distinct file of `paths` (in parallel); records those that do not decode in
/// `left.unreadable` and returns them.
pub(crate) fn unreadable_among<'a>(
    paths: impl Iterator<Item = &'a Path>,
    left: &mut LeftOut,
) -> HashSet<PathBuf> {
    let mut seen = HashSet::new();
    let files: Vec<&Path> = paths.filter(|p| seen.insert(*p)).collect();
    let failures: Vec<Unreadable> = files
        .par_iter()
        .filter_map(|path| decode_error(path).map(|reason| Unreadable::new(*path, reason)))
        .collect();
    let bad = failures.iter().map(|u| u.path.clone()).collect();
    left.unreadable.extend(failures);
    bad
}

/// Why the file does not decode, or `None` when it does.
fn decode_error(path: &Path) -> Option<String> {
    match load_rgb(path) {
        Ok(_) => None,
        Err(DataError::BadImage { reason, .. }) => Some(reason),
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn every_file_is_an_image_a_non_image_or_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let png = png_bytes();
        fs::write(d.join("a.png"), &png).unwrap();
        fs::write(d.join("odd.extension"), &png).unwrap();
        fs::write(d.join("empty.png"), b"").unwrap();
        fs::write(d.join("cut.png"), &png[..png.len() / 2]).unwrap();
        fs::write(d.join("garbage.JPG"), b"this is not a jpeg at all").unwrap();
        fs::write(d.join("garbage.npy"), b"\x93NUMPY\x01\x00junk").unwrap();
        fs::write(d.join("anim.gif"), b"GIF89a\x01\x00\x01\x00").unwrap();
        fs::write(d.join("README"), &png).unwrap();
        fs::write(d.join("notes.txt"), b"hello").unwrap();
        fs::write(d.join("labels.csv"), b"a,b").unwrap();
        fs::write(d.join("Thumbs.db"), b"\xd0\xcf\x11\xe0").unwrap();
        fs::write(d.join("other.json"), b"{}").unwrap();
        fs::write(d.join(".DS_Store"), b"junk").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("gone.png"), d.join("link.png")).unwrap();
        let mut left = LeftOut::default();
        let images = list_images(d, &mut left).unwrap();
        let names = |paths: Vec<&Path>| paths.into_iter().map(file_name).collect::<Vec<_>>();
        assert_eq!(
            names(images.iter().map(|i| i.path.as_path()).collect()),
            ["a.png", "odd.extension"]
        );
        let mut unreadable = left.unreadable.clone();
        unreadable.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            names(unreadable.iter().map(|u| u.path.as_path()).collect()),
            [
                "anim.gif",
                "cut.png",
                "empty.png",
                "garbage.JPG",
                "garbage.npy",
                "link.png"
            ]
        );
        let reason = |name: &str| {
            &unreadable
                .iter()
                .find(|u| u.path.ends_with(name))
                .unwrap()
                .reason
        };
        assert!(reason("anim.gif").contains("GIF"), "{}", reason("anim.gif"));
        assert_eq!(reason("empty.png"), "empty file (0 bytes)");
        assert!(reason("garbage.JPG").contains("name says image"));
        assert!(
            reason("garbage.npy").contains(".npy"),
            "{}",
            reason("garbage.npy")
        );
        assert!(!reason("cut.png").contains('\n'));
        assert!(
            reason("link.png").starts_with("cannot read the file"),
            "{}",
            reason("link.png")
        );
        let ignored: Vec<(String, &str)> = left
            .ignored
            .iter()
            .map(|i| (file_name(&i.image.path), i.reason))
            .collect();
        assert_eq!(
            ignored,
            [
                (".DS_Store".to_string(), HIDDEN),
                ("README".to_string(), KNOWN_NON_IMAGE),
                ("Thumbs.db".to_string(), KNOWN_NON_IMAGE),
                ("labels.csv".to_string(), KNOWN_NON_IMAGE),
                ("notes.txt".to_string(), KNOWN_NON_IMAGE),
                ("other.json".to_string(), NOT_AN_IMAGE),
                ("sub".to_string(), FOLDER_IN_IMAGES),
            ]
        );
    }

    #[test]
    fn inputs_named_by_hand_must_be_images() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("imgs")).unwrap();
        fs::write(d.join("imgs/b.png"), png_bytes()).unwrap();
        fs::write(d.join("imgs/a.png"), png_bytes()).unwrap();
        fs::write(d.join("notes.txt"), b"hello").unwrap();
        let listing =
            Listing::of_inputs(&[d.join("imgs"), d.join("notes.txt"), d.join("imgs/a.png")])
                .unwrap();
        assert_eq!(listing.images.len(), 3);
        assert!(listing.images[0].path.ends_with("imgs/a.png"));
        assert_eq!(listing.unreadable.len(), 1);
        let err = listing
            .require(OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notes.txt") && err.contains("--skip-unreadable"),
            "{err}"
        );
        let err = Listing::of_inputs(&[d.join("nope.png")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.png") && err.contains("no such file"),
            "{err}"
        );
        fs::create_dir(d.join("empty")).unwrap();
        let err = Listing::of_inputs(&[d.join("empty")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no image files"), "{err}");
    }

    #[test]
    fn a_hidden_file_named_by_hand_is_read_and_a_pipe_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(".hidden.png"), png_bytes()).unwrap();
        let listing = Listing::of_inputs(&[d.join(".hidden.png")]).unwrap();
        assert_eq!(listing.images.len(), 1);
        // A named pipe in an image folder: opening it to sniff would wait for a writer forever.
        fs::write(d.join("a.png"), png_bytes()).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(d.join("pipe.png"))
            .status()
            .unwrap();
        assert!(status.success());
        let listing = Listing::of_inputs(&[d.to_path_buf()]).unwrap();
        assert_eq!(listing.images.len(), 1);
        assert!(listing
            .ignored
            .iter()
            .any(|i| i.image.path.ends_with("pipe.png") && i.reason == NOT_A_FILE));
        let listing = Listing::of_inputs(&[d.join("pipe.png")]).unwrap();
        assert_eq!(listing.unreadable[0].reason, NOT_A_FILE);
    }

    #[test]
    fn the_error_names_ten_files_then_counts() {
        let files: Vec<Unreadable> = (0..13)
            .map(|i| Unreadable::new(format!("/d/{i:02}.png"), "bad\nthing"))
            .collect();
        let err = check_policy(&files, OnUnreadable::Error)
            .unwrap_err()
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("cannot decode 13 image files"), "{err}");
        assert!(
            err.contains("/d/09.png: bad thing") && !err.contains("/d/10.png"),
            "{err}"
        );
        assert!(err.ends_with("and 3 more"), "{err}");
        assert!(check_policy(&files, OnUnreadable::Skip).is_ok());
    }
}
