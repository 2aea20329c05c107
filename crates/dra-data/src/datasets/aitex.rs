//! AITEX fabric defects (aitex.es): 4096 × 256 greyscale images of fabric,
//! `NODefect_images/<fabric>/*.png` without defects, `Defect_images/Defect_images/NNNN_CCC_NN.png`
//! with one, whose class is the code `CCC`, and the defect's mask
//! `Mask_images/Mask_images/NNNN_CCC_NN_mask.png`.
//!
//! The official converter (`data/convert_AITEX.py`) cuts the images into tiles of 256 px; the
//! tiles here are rectangles of the original files, cut in memory when the images are read:
//! - a defect-free image gives its first 16 tiles, `x = 256·i`, the full height; anything right
//!   of 4096 px is not used (and recorded as ignored);
//! - a defect image of width W and height H gives ⌈W / H⌉ tiles of 256 px (the converter counts
//!   by the height but cuts by 256; the last tile is narrower when W is not a multiple of 256);
//!   a tile is an anomaly when its part of the mask has a non-zero pixel, and is dropped
//!   otherwise (recorded as ignored).
//!
//! Deviations, where the converter would stop with an exception: an image narrower than its
//! tile count needs gives fewer tiles here; a missing mask, a mask whose size differs from its
//! image's, or a file name without one of the twelve codes is an error naming the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::category::Category;
use super::common::{
    any_nonzero, classes_in, decoded_label, from_named, missing, stem_before_first_dot,
    unused_entries, Named,
};
use super::decode::dimensions;
use super::listing::{file_name, list_images, sorted_entries, LeftOut, HIDDEN};
use crate::error::{DataError, Result};
use crate::sample::{Crop, ImageRef};

pub(crate) const LAYOUT: &str = "NODefect_images/<fabric>/*.png, Defect_images/[Defect_images/]NNNN_CCC_NN.png and Mask_images/[Mask_images/]NNNN_CCC_NN_mask.png";

/// Side of a tile, in pixels.
const TILE: u32 = 256;
/// Tiles the converter cuts from every defect-free image.
const NORMAL_TILES: u32 = 16;

/// The defect codes of the file names and the class names the converter gives them.
pub const DEFECT_CLASSES: [(&str, &str); 12] = [
    ("002", "Broken_end"),
    ("006", "Broken_yarn"),
    ("010", "Broken_pick"),
    ("016", "Weft_curling"),
    ("019", "Fuzzyball"),
    ("022", "Cut_selvage"),
    ("023", "Crease"),
    ("025", "Warp_ball"),
    ("027", "Knots"),
    ("029", "Contamination"),
    ("030", "Nep"),
    ("036", "Weft_crack"),
];

const EMPTY_TILE: &str =
    "tile of a defect image whose mask is empty there (dropped, as by the official converter)";
const RIGHT_OF_NORMAL_TILES: &str =
    "right of the 16 tiles of 256 px the official converter cuts from a defect-free image";
const RIGHT_OF_DEFECT_TILES: &str =
    "right of the ⌈width / height⌉ tiles the official converter cuts from a defect image";
const UNUSED_MASK: &str = "mask of no defect image (masks are read as <image name>_mask.png)";

pub fn load(dir: &Path) -> Result<Category> {
    let mut left = LeftOut::default();
    unused_entries(
        dir,
        &["NODefect_images", "Defect_images", "Mask_images"],
        "not part of the layout (NODefect_images/, Defect_images/, Mask_images/)",
        &mut left,
    )?;
    let normals = normal_tiles(dir, &mut left)?;
    let defect_dir = nested(dir, "Defect_images")?;
    let mask_dir = nested(dir, "Mask_images")?;
    let mut defects: BTreeMap<String, Vec<Named>> = BTreeMap::new();
    let mut masks_used = HashSet::new();
    for image in list_images(&defect_dir, &mut left)? {
        let path = image.path;
        let stem = stem_before_first_dot(&path);
        let class = class_of(&stem).ok_or_else(|| DataError::BadImage {
            path: path.clone(),
            reason: format!(
                "the file name has no AITEX defect code (NNNN_CCC_NN.png, CCC one of {})",
                DEFECT_CLASSES.map(|(code, _)| code).join(", ")
            ),
        })?;
        let mask_path = mask_dir.join(format!("{stem}_mask.png"));
        if !mask_path.is_file() {
            return Err(missing(&mask_path, LAYOUT));
        }
        let (width, height) = dimensions(&path)?;
        // A mask that does not decode is unreadable, like an image: its defect image goes
        // with it (as if both were deleted), and `--skip-unreadable` decides whether to stop.
        let Some(mask) = decoded_label(&mask_path, &mut left)? else {
            masks_used.insert(mask_path);
            continue;
        };
        if (mask.width(), mask.height()) != (width, height) {
            return Err(DataError::BadImage {
                path: mask_path,
                reason: format!(
                    "the mask is {}×{} but its image is {width}×{height}",
                    mask.width(),
                    mask.height()
                ),
            });
        }
        masks_used.insert(mask_path);
        let count = width.div_ceil(height);
        for (i, crop) in tiles(width, height, count).into_iter().enumerate() {
            if any_nonzero(&mask, crop) {
                defects.entry(class.to_string()).or_default().push(Named {
                    converted_name: format!("{stem}_{i}.png"),
                    image: ImageRef::tile(&path, crop),
                });
            } else {
                left.ignore(ImageRef::tile(&path, crop), EMPTY_TILE);
            }
        }
        if let Some(rest) = right_of(width, height, count) {
            left.ignore(ImageRef::tile(&path, rest), RIGHT_OF_DEFECT_TILES);
        }
    }
    for entry in sorted_entries(&mask_dir)? {
        if file_name(&entry).starts_with('.') {
            left.ignore(entry, HIDDEN);
        } else if !masks_used.contains(&entry) {
            left.ignore(entry, UNUSED_MASK);
        }
    }
    from_named(dir, normals, defects, left)
}

/// The tiles of every defect-free image, in the converter's order: fabric folders, then files,
/// then tiles left to right (sorted listings for `os.listdir`).
fn normal_tiles(dir: &Path, left: &mut LeftOut) -> Result<Vec<Named>> {
    let root = dir.join("NODefect_images");
    let mut normals = Vec::new();
    for (fabric, images) in classes_in(&root, LAYOUT, &[], left)? {
        for image in images {
            let path = image.path;
            let stem = stem_before_first_dot(&path);
            let (width, height) = dimensions(&path)?;
            for (i, crop) in tiles(width, height, NORMAL_TILES).into_iter().enumerate() {
                normals.push(Named {
                    converted_name: format!("{fabric}_{stem}_{i}.png"),
                    image: ImageRef::tile(&path, crop),
                });
            }
            if let Some(rest) = right_of(width, height, NORMAL_TILES) {
                left.ignore(ImageRef::tile(&path, rest), RIGHT_OF_NORMAL_TILES);
            }
        }
    }
    Ok(normals)
}

/// The converter's `image[:, 256·i : 256·(i+1)]` for `i < count`: full height, the last tiles
/// narrower or absent where the image ends.
fn tiles(width: u32, height: u32, count: u32) -> Vec<Crop> {
    (0..count)
        .map(|i| i * TILE)
        .take_while(|&x| x < width)
        .map(|x| Crop {
            x,
            y: 0,
            width: TILE.min(width - x),
            height,
        })
        .collect()
}

/// The part of the image right of its `count` tiles, if any.
fn right_of(width: u32, height: u32, count: u32) -> Option<Crop> {
    let end = count.saturating_mul(TILE);
    (end < width).then(|| Crop {
        x: end,
        y: 0,
        width: width - end,
        height,
    })
}

/// The class of a defect image: the code after its first `_` (the converter's
/// `name.split('_')[1]`).
fn class_of(stem: &str) -> Option<&'static str> {
    let code = stem.split('_').nth(1)?;
    DEFECT_CLASSES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, class)| *class)
}

/// `dir/name/name` as the archives unpack (and the converter reads), else `dir/name`.
fn nested(dir: &Path, name: &str) -> Result<PathBuf> {
    let twice = dir.join(name).join(name);
    if twice.is_dir() {
        return Ok(twice);
    }
    let once = dir.join(name);
    if once.is_dir() {
        Ok(once)
    } else {
        Err(missing(&twice, LAYOUT))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{mask, sized_png};
    use super::*;

    /// Two fabric folders with three defect-free images (one 100 px too wide), two defect
    /// images with masks, and a mask without an image.
    fn fixture(root: &Path) {
        sized_png(&root.join("NODefect_images/fab-b/0001.png"), 4096, 256);
        sized_png(&root.join("NODefect_images/fab-b/0002.png"), 4096, 256);
        sized_png(&root.join("NODefect_images/fab-a/0009.png"), 4196, 256);
        let defects = root.join("Defect_images/Defect_images");
        let masks = root.join("Mask_images/Mask_images");
        // 1024 px: 4 tiles; defects in tiles 1 and 3.
        sized_png(&defects.join("0001_002_00.png"), 1024, 256);
        mask(
            &masks.join("0001_002_00_mask.png"),
            1024,
            256,
            &[(300, 10, 5, 5), (1000, 250, 2, 2)],
        );
        // 600 px: ⌈600/256⌉ = 3 tiles, the last 88 px wide; the defect in it.
        sized_png(&defects.join("0002_030_01.png"), 600, 256);
        mask(
            &masks.join("0002_030_01_mask.png"),
            600,
            256,
            &[(550, 0, 1, 1)],
        );
        mask(&masks.join("0003_010_00_mask.png"), 8, 8, &[]);
    }

    #[test]
    fn tiles_classes_and_split() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let cat = load(dir.path()).unwrap();
        // 3 × 16 normal tiles, split 36 / 12.
        assert_eq!((cat.train_good.len(), cat.test_good.len()), (36, 12));
        assert_eq!(cat.defect_classes(), ["Broken_end", "Nep"]);
        let xs: Vec<u32> = cat.defects["Broken_end"]
            .iter()
            .map(|t| t.crop.unwrap().x)
            .collect();
        assert_eq!(xs, [256, 768]);
        let nep = cat.defects["Nep"][0].crop.unwrap();
        assert_eq!((nep.x, nep.width, nep.height), (512, 88, 256));
        // Every normal tile is 256 × 256, the 100 px right of 4096 are left out.
        assert!(cat
            .train_good
            .iter()
            .chain(&cat.test_good)
            .all(|t| t.crop.is_some_and(|c| c.width == 256 && c.height == 256)));
        let reasons: Vec<&str> = cat.ignored.iter().map(|i| i.reason).collect();
        assert_eq!(reasons.iter().filter(|r| **r == EMPTY_TILE).count(), 2 + 2);
        assert_eq!(reasons.iter().filter(|r| **r == UNUSED_MASK).count(), 1);
        let wide: Vec<_> = cat
            .ignored
            .iter()
            .filter(|i| i.reason == RIGHT_OF_NORMAL_TILES)
            .collect();
        assert_eq!(wide.len(), 1);
        assert!(wide[0]
            .image
            .to_string()
            .ends_with("0009.png#4096,0,100,256"));
        // A tile is read in memory from its file.
        let img = cat.defects["Nep"][0].load_rgb().unwrap();
        assert_eq!(img.dimensions(), (88, 256));
    }

    #[test]
    fn lists_are_in_the_converted_folders_order() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let cat = load(dir.path()).unwrap();
        // The converter names tiles <fabric>_<image>_<i>.png; its folder lists them sorted by
        // that name (…_1, …_10, …_11, …, …_2), which is the order the category keeps.
        let name = |t: &ImageRef| {
            let fabric = t.path.parent().unwrap().file_name().unwrap();
            let i = t.crop.unwrap().x / TILE;
            format!(
                "{}_{}_{i}.png",
                fabric.to_string_lossy(),
                stem_before_first_dot(&t.path)
            )
        };
        for list in [&cat.train_good, &cat.test_good] {
            let names: Vec<String> = list.iter().map(name).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
        }
        // The split itself follows the converter's listing order: fab-a's tiles come first.
        let (train, test) =
            super::super::common::train_test_split(&(0..48).collect::<Vec<_>>(), 42);
        let in_test = |i: usize| -> String {
            let (fabric, image) = if i < 16 {
                ("fab-a", "0009")
            } else if i < 32 {
                ("fab-b", "0001")
            } else {
                ("fab-b", "0002")
            };
            format!("{fabric}_{image}_{}.png", i % 16)
        };
        let mut expected: Vec<String> = test.into_iter().map(in_test).collect();
        expected.sort();
        let got: Vec<String> = cat.test_good.iter().map(name).collect();
        assert_eq!(got, expected);
        assert_eq!(train.len(), cat.train_good.len());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("NODefect_images") && err.contains("expected the layout"),
            "{err}"
        );
        fixture(dir.path());
        let defects = dir.path().join("Defect_images/Defect_images");
        sized_png(&defects.join("0004_099_00.png"), 512, 256);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("0004_099_00.png") && err.contains("defect code"),
            "{err}"
        );
        std::fs::remove_file(defects.join("0004_099_00.png")).unwrap();
        sized_png(&defects.join("0005_019_00.png"), 512, 256);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("0005_019_00_mask.png"), "{err}");
        mask(
            &dir.path()
                .join("Mask_images/Mask_images/0005_019_00_mask.png"),
            256,
            256,
            &[],
        );
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("0005_019_00_mask.png") && err.contains("256×256"),
            "{err}"
        );
        std::fs::write(defects.join("0005_019_00.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
        let err = load(dir.path())
            .and_then(|cat| cat.require(crate::sample::OnUnreadable::Error))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0005_019_00.png"), "{err}");
        // Skipped, the corrupt image is listed and its tiles are gone; its mask is unused.
        let cat = load(dir.path()).unwrap();
        assert_eq!(cat.unreadable.len(), 1);
        assert!(cat.unreadable[0].path.ends_with("0005_019_00.png"));
        assert!(cat
            .defects
            .values()
            .flatten()
            .all(|t| !t.path.ends_with("0005_019_00.png")));
    }
}
