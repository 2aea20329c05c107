//! `dra eval` and `dra predict`: a trained model (a run directory, or a bare weights file such
//! as the official code's `model.pkl`) scores a test set or new images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use dra_data::datasets::Family;
use dra_data::{transform, BatchSource, ImageCache, Label, OnUnreadable, Sample, Split};
use dra_model::{load_into, Detector, ImageBatch, Scope};
use image::{Rgb, RgbImage};

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::files::{prepare_out_dir, writable_dir, write_json};
use crate::model::detached_model;
use crate::run::{Metrics, RunRecord};
use crate::scoring::{
    load_normalized, score_samples, write_scores, References, ScoreRow, REFERENCES_FILE,
};

/// A trained model and the settings it was trained with.
pub struct LoadedModel {
    /// The detector, over detached tensors: scoring records no autograd graph.
    pub model: Detector,
    /// The run's `config.json` settings, or for a bare weights file the caller's fallback.
    pub config: TrainConfig,
    /// The run directory, when the model came from one.
    pub run_dir: Option<PathBuf>,
}

impl LoadedModel {
    /// Loads a run directory (its `config.json` and `model.safetensors`) or a weights file with
    /// DRA's names (safetensors, or a PyTorch state dict such as the official `model.pkl`).
    /// For a bare file, `fallback` supplies what the file cannot carry (image size, …).
    pub fn load(path: &Path, fallback: &TrainConfig, device: &Device) -> Result<Self, TrainError> {
        let (config, weights, run_dir) = if path.is_dir() {
            let record_path = path.join("config.json");
            let text = std::fs::read_to_string(&record_path)
                .map_err(|e| TrainError::io(&record_path, e))?;
            let record: RunRecord =
                serde_json::from_str(&text).map_err(|e| TrainError::InvalidOption {
                    flag: "--model",
                    message: format!("{}: not a dra run record: {e}", record_path.display()),
                })?;
            (
                record.config,
                path.join("model.safetensors"),
                Some(path.to_path_buf()),
            )
        } else if path.is_file() {
            (fallback.clone(), path.to_path_buf(), None)
        } else {
            return Err(TrainError::InvalidOption {
                flag: "--model",
                message: format!("{}: no such run directory or weights file", path.display()),
            });
        };
        config.validate().map_err(|e| match (e, &run_dir) {
            // A bad value read from a run's config.json is the file's fault, not a flag's.
            (TrainError::InvalidOption { flag, message }, Some(dir)) => TrainError::InvalidOption {
                flag: "--model",
                message: format!("{}: {flag}: {message}", dir.join("config.json").display()),
            },
            (e, _) => e,
        })?;
        let varmap = VarMap::new();
        Detector::new(
            config.method,
            &config.model_config(),
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        load_into(&varmap, &weights, Scope::Full)?;
        let model = detached_model(&varmap, &config, device)?;
        Ok(Self {
            model,
            config,
            run_dir,
        })
    }

    /// The fixed reference set saved with a run (none for a method without references).
    pub fn stored_references(&self) -> Result<References, TrainError> {
        if !self.config.method.uses_references() {
            return Ok(References::none());
        }
        match &self.run_dir {
            Some(dir) => References::load(&dir.join(REFERENCES_FILE), self.config.image_size),
            None => Err(TrainError::InvalidOption {
                flag: "--reference-images",
                message: "a bare weights file has no stored references; give --reference-images"
                    .into(),
            }),
        }
    }
}

/// Which references `dra eval` uses.
#[derive(Clone, Debug, PartialEq)]
pub enum ReferenceChoice {
    /// Fresh random draws per test batch from the training normals (official, the default).
    Random {
        /// Seed of the draws.
        seed: u64,
    },
    /// The run's stored fixed set.
    Stored,
    /// These images, through the test transform.
    Paths(Vec<PathBuf>),
}

/// Re-scores the test split of `category_dir` and writes `scores.csv` and `metrics.json`
/// (last, so that its presence marks a finished evaluation).
pub fn evaluate(
    loaded: &LoadedModel,
    family: Family,
    category_dir: &Path,
    on_unreadable: OnUnreadable,
    references: &ReferenceChoice,
    out_dir: &Path,
    device: &Device,
) -> Result<Metrics, TrainError> {
    let start = Instant::now();
    let cfg = &loaded.config;
    if let Some(run_dir) = &loaded.run_dir {
        if same_folder(run_dir, out_dir) {
            return Err(TrainError::InvalidOption {
                flag: "--out",
                message: format!(
                    "{}: is the model's run directory; its scores.csv and metrics.json are the \
                     training run's results (give another folder)",
                    out_dir.display()
                ),
            });
        }
    }
    prepare_out_dir(out_dir)?;
    let category = family.load(category_dir, on_unreadable)?;
    let split = Split::new(&category, &cfg.split_config())?;
    let mut refs = match references {
        _ if !cfg.method.uses_references() => References::none(),
        ReferenceChoice::Random { seed } => {
            let normals = ImageCache::load(&split.train_normal, cfg.image_size)?;
            let empty = ImageCache { images: Vec::new() };
            References::Random(Box::new(BatchSource::new(
                cfg.batch_config(),
                normals,
                empty,
                *seed,
            )?))
        }
        ReferenceChoice::Stored => loaded.stored_references()?,
        ReferenceChoice::Paths(paths) => References::from_paths(paths, cfg.image_size)?,
    };
    let rows = score_samples(
        &loaded.model,
        &split.test,
        &mut refs,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let metrics = Metrics {
        eval_seconds: seconds,
        total_seconds: seconds,
        ignored: category.ignored.len(),
        unreadable: category.unreadable.clone(),
        ..Metrics::of(&rows, &split)?
    };
    write_scores(&out_dir.join("scores.csv"), &rows)?;
    write_json(&out_dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// Scores images with fixed references; with `heatmap_dir`, writes an overlay PNG per image.
pub fn predict(
    loaded: &LoadedModel,
    images: &[PathBuf],
    references: &mut References,
    heatmap_dir: Option<&Path>,
    device: &Device,
) -> Result<Vec<ScoreRow>, TrainError> {
    let cfg = &loaded.config;
    let dra = match (&loaded.model, heatmap_dir) {
        (Detector::Dra(dra), _) => Some(dra),
        (_, None) => None,
        (other, Some(_)) => {
            return Err(TrainError::InvalidOption {
                flag: "--out",
                message: format!(
                "heat maps are drawn from DRA's heads only; this model is {} (score without --out)",
                other.method()
            ),
            })
        }
    };
    let samples: Vec<Sample> = images
        .iter()
        .map(|p| Sample {
            path: p.clone(),
            crop: None,
            label: Label::Normal,
            class: String::new(),
        })
        .collect();
    if let Some(dir) = heatmap_dir {
        writable_dir(dir, "--out")?;
    }
    let rows = score_samples(
        &loaded.model,
        &samples,
        references,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    if let (Some(dir), Some(dra)) = (heatmap_dir, dra) {
        let s = cfg.image_size as usize;
        // One colour scale for every image, so that overlays compare across images.
        let mut maps = Vec::new();
        for chunk in images.chunks(cfg.eval_batch_size.max(1)) {
            let n_ref = references.n_ref();
            let mut buffer = match references {
                References::Fixed { images, .. } => images.clone(),
                References::Random(source) => source.next_references(),
            };
            buffer.extend(load_normalized(chunk, cfg.image_size)?);
            let batch = ImageBatch::from_values(buffer, n_ref, s, device)?;
            let m = dra.anomaly_maps(batch.images())?;
            let (_, h, w) = m.dims3()?;
            for v in m.to_vec3::<f32>()? {
                maps.push((v.into_iter().flatten().collect::<Vec<f32>>(), h, w));
            }
        }
        let max = maps
            .iter()
            .flat_map(|m| m.0.iter())
            .fold(f32::MIN_POSITIVE, |a, b| a.max(*b));
        for ((path, (map, h, w)), name) in images.iter().zip(&maps).zip(heatmap_names(images)) {
            let img = transform::resize_bilinear(
                &dra_data::load_rgb(path)?,
                cfg.image_size,
                cfg.image_size,
            );
            let overlay = overlay(&img, map, *h, *w, max);
            let out = dir.join(name);
            overlay
                .save(&out)
                .map_err(|e| TrainError::io(&out, std::io::Error::other(e.to_string())))?;
        }
    }
    Ok(rows)
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

/// Whether `a` and `b` name the same existing folder (through links and `..` too).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The CSV that `dra predict` prints: `path,score,g_n,g_s,g_p,g_r`.
pub fn predictions_csv(rows: &[ScoreRow]) -> String {
    let mut out = String::from("path,score,g_n,g_s,g_p,g_r\n");
    for r in rows {
        let [n, s, p, g] = r.heads;
        out += &format!(
            "{},{},{n},{s},{p},{g}\n",
            crate::csv::field(&r.path.to_string_lossy()),
            r.score
        );
    }
    out
}

/// Blends a jet-coloured, bilinearly upsampled `h × w` map over the image (half opacity).
fn overlay(img: &RgbImage, map: &[f32], h: usize, w: usize, max: f32) -> RgbImage {
    let (iw, ih) = img.dimensions();
    let sample = |x: f32, y: f32| -> f32 {
        // Cell centres at ((i + 0.5) · size / n); clamp at the borders.
        let fx = (x * w as f32 / iw as f32 - 0.5).clamp(0.0, (w - 1) as f32);
        let fy = (y * h as f32 / ih as f32 - 0.5).clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let at = |x: usize, y: usize| map[y * w + x];
        let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
        let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
        top * (1.0 - ty) + bottom * ty
    };
    RgbImage::from_fn(iw, ih, |x, y| {
        let v = (sample(x as f32 + 0.5, y as f32 + 0.5) / max).clamp(0.0, 1.0);
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
        let out = overlay(&img, &[0.0, 0.0, 0.0, 1.0], 2, 2, 1.0);
        // Bottom-right is hot (dark red over black: 127.5 / 2), top-left cold (dark blue).
        assert!(out.get_pixel(7, 7)[0] > 50 && out.get_pixel(7, 7)[2] < 20);
        assert!(out.get_pixel(0, 0)[2] > 50 && out.get_pixel(0, 0)[0] < 20);
    }
}
