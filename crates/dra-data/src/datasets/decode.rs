//! Image decoding under our limits: any supported file (and NumPy `.npy` arrays) into 8-bit RGB,
//! pixel masks at a map's size, and an image's size from its header; and reading an
//! [`ImageRef`], a file or a rectangle of one.

use std::fs;
use std::io::Read;
use std::path::Path;

use image::RgbImage;

use crate::error::{DataError, Result};
use crate::sample::ImageRef;

impl ImageRef {
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
    use crate::sample::{Crop, Label, Sample};

    #[test]
    fn masks_are_resized_as_pil_nearest() {
        let dir = tempfile::tempdir().unwrap();
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
