//! Where the model sees the defect: DRA's anomaly maps brought to the image's size, saved as
//! `.npy` for anyone to recompute the metrics, and scored against MVTec-layout ground-truth
//! masks (pixel AUROC and AUPRO).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use dra_data::{transform, Category, Label, Sample};
use dra_model::Method;
use image::{Rgb, RgbImage};

use super::scoring::CellMap;
use crate::error::TrainError;
use crate::record::writable_dir;

/// A cell map brought to `size × size` pixels by bilinear upsampling, cell centres at
/// `(i + ½) · size / n`, borders clamped: PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)`, as dra-model's [`dra_model::dra::upsample_bilinear`] (the one
/// definition, which the exported model's `anomaly_map` follows too).
pub fn upsample(map: &CellMap, size: u32) -> Vec<f32> {
    dra_model::dra::upsample_bilinear(&map.values, (map.h, map.w), size as usize)
}

/// Pixel-level results of a test set, or why there are none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Localization {
    /// AUROC over every pixel of the test set.
    pub pixel_auroc: Option<f64>,
    /// Area under the per-region-overlap curve up to a false-positive rate of 0.3, over 0.3.
    pub aupro: Option<f64>,
    /// Why the metrics are missing although the data has masks (partial masks, a mask
    /// without defect pixels), to print and to show in the report.
    pub note: Option<String>,
}

/// Pixel AUROC and AUPRO of `maps` (one per sample, in order) against the samples' masks
/// (`ground_truth/<class>/<name>_mask.png`, resized to the map's size with PIL's nearest
/// sampling; a normal image's mask is empty). No metrics when the data has no masks (every
/// raw layout); when only some anomalies have one, or a mask does not decode, no metrics and a
/// note naming the file: the pixel metrics are never worth a finished run's other results.
pub fn pixel_metrics(
    category: &Category,
    samples: &[Sample],
    maps: &[CellMap],
    size: u32,
) -> Localization {
    let anomalies: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.label == Label::Anomaly)
        .collect();
    // The mask each anomaly lacks: its expected file, or the image when the layout has none.
    let missing: Vec<PathBuf> = anomalies
        .iter()
        .filter_map(|s| match category.mask_path(s) {
            Some(mask) if mask.is_file() => None,
            Some(mask) => Some(mask),
            None => Some(s.path.clone()),
        })
        .collect();
    if anomalies.is_empty() || missing.len() == anomalies.len() {
        return Localization::default();
    }
    if !missing.is_empty() {
        return Localization {
            note: Some(format!(
                "no pixel metrics: {} of {} anomalous test images have no mask (e.g. {})",
                missing.len(),
                anomalies.len(),
                missing[0].display()
            )),
            ..Default::default()
        };
    }
    let side = size as usize;
    let mut pixel_maps = Vec::with_capacity(samples.len());
    let mut masks = Vec::with_capacity(samples.len());
    for (sample, map) in samples.iter().zip(maps) {
        pixel_maps.push(upsample(map, size));
        masks.push(match category.mask_path(sample) {
            Some(path) => match dra_data::load_mask(&path, size) {
                Ok(mask) => mask,
                Err(e) => {
                    return Localization {
                        note: Some(format!("no pixel metrics: {e}")),
                        ..Default::default()
                    }
                }
            },
            None => vec![false; side * side],
        });
    }
    let maps: Vec<&[f32]> = pixel_maps.iter().map(Vec::as_slice).collect();
    let masks: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
    match dra_eval::PixelMetrics::compute(&maps, &masks, side, side) {
        Ok(m) => Localization {
            pixel_auroc: Some(m.auroc),
            aupro: Some(m.aupro),
            note: None,
        },
        Err(e) => Localization {
            note: Some(format!("no pixel metrics: {e}")),
            ..Default::default()
        },
    }
}

/// Writes each sample's map, upsampled to `size × size`, as `<dir>/test/<class>/<name>.npy`
/// (float32, C order): the test image's path below the data folder when it lies in
/// `test/<class>/`, else `test/<class>/<stem>.npy` (a tile adds `_x_y`), a repeated name
/// getting `_2`, `_3`, …. Returns the files written, in sample order.
pub fn save_maps(
    dir: &Path,
    samples: &[Sample],
    maps: &[CellMap],
    size: u32,
) -> Result<Vec<PathBuf>, TrainError> {
    let mut taken = HashSet::new();
    let mut written = Vec::with_capacity(samples.len());
    for (sample, map) in samples.iter().zip(maps) {
        let class_dir = dir.join("test").join(&sample.class);
        let stem = sample
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = match &sample.crop {
            Some(c) => format!("{stem}_{}_{}", c.x, c.y),
            None => stem,
        };
        let mut path = class_dir.join(format!("{stem}.npy"));
        let mut k = 2;
        while !taken.insert(path.clone()) {
            path = class_dir.join(format!("{stem}_{k}.npy"));
            k += 1;
        }
        std::fs::create_dir_all(&class_dir).map_err(|e| TrainError::io(&class_dir, e))?;
        let s = size as usize;
        dra_data::write_npy_f32(&path, &[s, s], &upsample(map, size))?;
        written.push(path);
    }
    Ok(written)
}

/// The largest cell value over `maps`: the top of a colour scale shared by their overlays.
pub fn colour_scale(maps: &[CellMap]) -> f32 {
    maps.iter()
        .flat_map(|m| m.values.iter())
        .fold(f32::MIN_POSITIVE, |a, b| a.max(*b))
}

/// `img` resized to the model's `size` (as the model saw it) with `map` laid over it in the
/// jet colours, `max` being the top of the scale.
pub fn overlay_png(img: &RgbImage, map: &CellMap, size: u32, max: f32) -> RgbImage {
    let img = transform::resize_bilinear(img, size, size);
    overlay(&img, &upsample(map, size), max)
}

/// Blends a jet-coloured map of the image's size (row-major) over the image (half opacity).
fn overlay(img: &RgbImage, map: &[f32], max: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let v = (map[(y * w + x) as usize] / max).clamp(0.0, 1.0);
        let c = jet(v);
        let p = img.get_pixel(x, y);
        Rgb([0, 1, 2].map(|i| ((p[i] as f32 + c[i]) / 2.0).round() as u8))
    })
}

/// The "jet" colour map: blue → cyan → yellow → red.
fn jet(v: f32) -> [f32; 3] {
    let channel = |offset: f32| (1.5 - (4.0 * v - offset).abs()).clamp(0.0, 1.0) * 255.0;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// `--save-maps DIR`: a method with maps, and a folder that can be written.
pub fn check_maps_dir(dir: &Path, method: Method) -> Result<(), TrainError> {
    if method.base() != Method::Dra {
        return Err(TrainError::InvalidOption {
            flag: "--save-maps",
            message: format!("anomaly maps come from DRA's heads; {method} has none"),
        });
    }
    writable_dir(dir, "--save-maps")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_matches_bilinear_with_cell_centres() {
        // A 2 × 2 map to 4 × 4: pixel centres at 0.5, 1.5, … map to cell coordinates
        // (x + 0.5) / 2 − 0.5 = −0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        let map = CellMap {
            h: 2,
            w: 2,
            values: vec![0.0, 4.0, 8.0, 12.0],
        };
        let up = upsample(&map, 4);
        assert_eq!(&up[..4], &[0.0, 1.0, 3.0, 4.0]);
        assert_eq!(&up[4..8], &[2.0, 3.0, 5.0, 6.0]);
        assert_eq!(&up[12..], &[8.0, 9.0, 11.0, 12.0]);
        // One cell covers the whole image.
        let one = CellMap {
            h: 1,
            w: 1,
            values: vec![7.0],
        };
        assert!(upsample(&one, 3).iter().all(|v| *v == 7.0));
    }

    #[test]
    fn missing_or_damaged_masks_give_a_note_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cat");
        let png = |rel: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image::RgbImage::new(4, 4).save(&path).unwrap();
        };
        for rel in [
            "train/good/a.png",
            "test/good/b.png",
            "test/hole/c.png",
            "test/hole/d.png",
        ] {
            png(rel);
        }
        std::fs::create_dir_all(root.join("ground_truth/hole")).unwrap();
        std::fs::write(root.join("ground_truth/hole/c_mask.png"), b"not a png").unwrap();
        let category = Category::open(&root, dra_data::OnUnreadable::Error).unwrap();
        let sample = |rel: &str, label, class: &str| Sample {
            path: root.join(rel),
            crop: None,
            label,
            class: class.into(),
        };
        let map = CellMap {
            h: 1,
            w: 1,
            values: vec![1.0],
        };
        let samples = [
            sample("test/good/b.png", Label::Normal, "good"),
            sample("test/hole/c.png", Label::Anomaly, "hole"),
            sample("test/hole/d.png", Label::Anomaly, "hole"),
        ];
        let partial = pixel_metrics(&category, &samples, &vec![map.clone(); 3], 4);
        assert_eq!(partial.pixel_auroc, None);
        let note = partial.note.unwrap();
        assert!(
            note.contains("1 of 2") && note.contains("d_mask.png"),
            "{note}"
        );
        let damaged = pixel_metrics(&category, &samples[..2], &vec![map; 2], 4);
        assert_eq!(damaged.aupro, None);
        let note = damaged.note.unwrap();
        assert!(note.contains("c_mask.png"), "{note}");
    }

    #[test]
    fn map_files_mirror_the_test_images_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |path: &str, class: &str| Sample {
            path: path.into(),
            crop: None,
            label: Label::Anomaly,
            class: class.into(),
        };
        let samples = [
            sample("/d/test/hole/000.png", "hole"),
            sample("/d/other/hole/000.png", "hole"),
            sample("/d/test/good/000.png", "good"),
        ];
        let map = CellMap {
            h: 1,
            w: 1,
            values: vec![1.0],
        };
        let files = save_maps(dir.path(), &samples, &vec![map; 3], 4).unwrap();
        let rel: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            rel,
            [
                PathBuf::from("test/hole/000.npy"),
                PathBuf::from("test/hole/000_2.npy"),
                PathBuf::from("test/good/000.npy"),
            ]
        );
        assert_eq!(std::fs::read(&files[0]).unwrap().len(), 128 + 4 * 16);
    }

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0.0, 0.0, 127.5]);
        assert_eq!(jet(1.0), [127.5, 0.0, 0.0]);
        let mid = jet(0.5);
        assert!(mid[1] > 200.0);
    }

    #[test]
    fn overlay_marks_the_hot_cell() {
        let img = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let map = CellMap {
            h: 2,
            w: 2,
            values: vec![0.0, 0.0, 0.0, 1.0],
        };
        let out = overlay_png(&img, &map, 8, 1.0);
        // Bottom-right is hot (dark red over black: 127.5 / 2), top-left cold (dark blue).
        assert!(out.get_pixel(7, 7)[0] > 50 && out.get_pixel(7, 7)[2] < 20);
        assert!(out.get_pixel(0, 0)[2] > 50 && out.get_pixel(0, 0)[0] < 20);
    }
}
