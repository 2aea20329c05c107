//! `dra predict`: a trained model scores new images with fixed references, and draws each
//! one's anomaly map over it.

use std::path::{Path, PathBuf};

use candle_core::Device;
use dra_data::{Label, Sample};
use dra_model::Detector;

use super::saved::LoadedModel;
use crate::engine::maps::{colour_scale, overlay_png, upsample};
use crate::engine::scoring::{score_with_maps, References};
use crate::error::TrainError;
use crate::record::{claim_dir, write_atomic, ScoreRow};

/// What `dra predict` writes besides the scores.
#[derive(Clone, Copy, Debug, Default)]
pub struct PredictOutputs<'a> {
    /// A heat-map overlay PNG per image (`<stem>_heatmap.png`), drawn over the image as the
    /// model saw it.
    pub heatmaps: Option<&'a Path>,
    /// Each image's anomaly map at the model's size as float32 `.npy` (`<stem>.npy`): the
    /// values `dra eval --save-maps` writes, and an exported model's `anomaly_map`.
    pub maps: Option<&'a Path>,
    /// Replace files of the same names that those folders hold already; without it such a
    /// folder is refused before any scoring.
    pub overwrite: bool,
}

/// Scores images with fixed references, and writes the overlays and maps `outputs` asks for.
/// Each folder is locked while they are written, and one that holds files of the same names
/// already is refused before any scoring unless `outputs.overwrite`.
pub fn predict(
    loaded: &LoadedModel,
    images: &[PathBuf],
    references: &mut References,
    outputs: PredictOutputs,
    device: &Device,
) -> Result<Vec<ScoreRow>, TrainError> {
    let cfg = &loaded.config;
    if !matches!(loaded.model, Detector::Dra(_)) {
        for (flag, dir) in [("--out", outputs.heatmaps), ("--save-maps", outputs.maps)] {
            if dir.is_some() {
                return Err(TrainError::InvalidOption {
                    flag,
                    message: format!(
                        "anomaly maps come from DRA's heads only; this model is {} (score without {flag})",
                        loaded.model.method()
                    ),
                });
            }
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
    let heatmap_names = file_names(images, "_heatmap.png");
    let map_names = file_names(images, ".npy");
    // Replaced in place (each atomically), so nothing is removed first.
    let claim = |dir: Option<&Path>, flag, names: &[String]| {
        dir.map(|dir| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            claim_dir(dir, flag, &names, &[], outputs.overwrite)
        })
        .transpose()
    };
    let _heatmaps_lock = claim(outputs.heatmaps, "--out", &heatmap_names)?;
    let _maps_lock = match outputs.maps {
        // One folder for both: it is locked once.
        Some(dir) if outputs.heatmaps == Some(dir) => None,
        dir => claim(dir, "--save-maps", &map_names)?,
    };
    let scored = score_with_maps(
        &loaded.model,
        &samples,
        references,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let Some(maps) = &scored.maps else {
        return Ok(scored.rows);
    };
    if let Some(dir) = outputs.heatmaps {
        // One colour scale for every image, so that overlays compare across images.
        let max = colour_scale(maps);
        for ((path, map), name) in images.iter().zip(maps).zip(&heatmap_names) {
            let img = dra_data::load_rgb(path)?;
            let out = dir.join(name);
            let mut png = std::io::Cursor::new(Vec::new());
            overlay_png(&img, map, cfg.image_size, max)
                .write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| TrainError::io(&out, std::io::Error::other(e.to_string())))?;
            write_atomic(&out, png.get_ref())?;
        }
    }
    if let Some(dir) = outputs.maps {
        let s = cfg.image_size as usize;
        for (map, name) in maps.iter().zip(&map_names) {
            let npy = dra_data::npy_f32_bytes(&[s, s], &upsample(map, cfg.image_size));
            write_atomic(&dir.join(name), &npy)?;
        }
    }
    Ok(scored.rows)
}

/// The file name of each image's overlay or map: `<stem><suffix>` (`x_heatmap.png`,
/// `x.npy`), and for a stem that an earlier image already used (`a/x.png`, `b/x.png`, `x.jpg`)
/// `<stem>_<k><suffix>`, k = 2, 3, … in input order, so that no file overwrites another.
fn file_names(images: &[PathBuf], suffix: &str) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut name = format!("{stem}{suffix}");
            let mut k = 2;
            while !taken.insert(name.clone()) {
                name = format!("{stem}_{k}{suffix}");
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
            file_names(&images, "_heatmap.png"),
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
