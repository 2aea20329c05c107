//! `dra predict`: a trained model scores new images with fixed references, and draws each
//! one's anomaly map over it.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dra_data::{Label, Sample};
use dra_model::Detector;

use super::saved::LoadedModel;
use crate::engine::maps::{colour_scale, overlay_png};
use crate::engine::scoring::{score_with_maps, References};
use crate::error::TrainError;
use crate::record::{claim_dir, write_atomic, ScoreRow};

/// Scores images with fixed references; with `heatmap_dir`, writes an overlay PNG per image
/// (`<stem>_heatmap.png`). The folder is locked while they are written, and one that holds
/// overlays of the same names already is refused before any scoring unless `overwrite`.
pub fn predict(
    loaded: &LoadedModel,
    images: &[PathBuf],
    references: &mut References,
    heatmap_dir: Option<&Path>,
    overwrite: bool,
    device: &Device,
) -> Result<Vec<ScoreRow>, TrainError> {
    let cfg = &loaded.config;
    match (&loaded.model, heatmap_dir) {
        (Detector::Dra(_), _) | (_, None) => {}
        (other, Some(_)) => {
            return Err(TrainError::InvalidOption {
                flag: "--out",
                message: format!(
                "heat maps are drawn from DRA's heads only; this model is {} (score without --out)",
                other.method()
            ),
            })
        }
    }
    let samples: Vec<Sample> = images
        .iter()
        .map(|p| Sample {
            path: p.clone(),
            crop: None,
            label: Label::Normal,
            class: String::new(),
        })
        .collect();
    let names = heatmap_names(images);
    let _lock = match heatmap_dir {
        Some(dir) => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            // Replaced in place (each atomically), so nothing is removed first.
            Some(claim_dir(dir, "--out", &names, &[], overwrite)?)
        }
        None => None,
    };
    let scored = score_with_maps(
        &loaded.model,
        &samples,
        references,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    if let (Some(dir), Some(maps)) = (heatmap_dir, &scored.maps) {
        // One colour scale for every image, so that overlays compare across images.
        let max = colour_scale(maps);
        for ((path, map), name) in images.iter().zip(maps).zip(&names) {
            let img = dra_data::load_rgb(path)?;
            let out = dir.join(name);
            let mut png = std::io::Cursor::new(Vec::new());
            overlay_png(&img, map, cfg.image_size, max)
                .write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| TrainError::io(&out, std::io::Error::other(e.to_string())))?;
            write_atomic(&out, png.get_ref())?;
        }
    }
    Ok(scored.rows)
}

/// The heat map's file name for each image: `<stem>_heatmap.png`, and for a stem that an
/// earlier image already used (`a/x.png`, `b/x.png`, `x.jpg`) `<stem>_<k>_heatmap.png`, k = 2,
/// 3, … in input order, so that no overlay overwrites another.
fn heatmap_names(images: &[PathBuf]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut name = format!("{stem}_heatmap.png");
            let mut k = 2;
            while !taken.insert(name.clone()) {
                name = format!("{stem}_{k}_heatmap.png");
                k += 1;
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_maps_of_images_with_the_same_stem_get_their_own_files() {
        let images: Vec<PathBuf> = ["a/x.png", "b/x.png", "x.jpg", "y.png", "x_2.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            heatmap_names(&images),
            [
                "x_heatmap.png",
                "x_2_heatmap.png",
                "x_3_heatmap.png",
                "y_heatmap.png",
                "x_2_2_heatmap.png"
            ]
        );
    }
}
