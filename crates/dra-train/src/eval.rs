//! `dra eval` and `dra predict`: a trained model (a run directory, or a bare weights file such
//! as the official code's `model.pkl`) scores a test set or new images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use dra_data::datasets::Family;
use dra_data::{transform, BatchSource, ImageCache, Label, OnUnreadable, Sample, Split};
use dra_model::{load_into, Detector, Scope};
use image::{Rgb, RgbImage};

use crate::config::TrainConfig;
use crate::decision::{AtThreshold, Threshold};
use crate::error::TrainError;
use crate::files::{prepare_out_dir, writable_dir, write_json};
use crate::localization::{pixel_metrics, upsample, Localization};
use crate::model::detached_model;
use crate::run::{Metrics, RunRecord};
use crate::scoring::{
    score_with_maps, write_scores, CellMap, References, ScoreRow, REFERENCES_FILE,
};

/// A trained model and the settings it was trained with.
pub struct LoadedModel {
    /// The detector, over detached tensors: scoring records no autograd graph.
    pub model: Detector,
    /// The run's `config.json` settings, or for a bare weights file the caller's fallback.
    pub config: TrainConfig,
    /// The run directory, when the model came from one.
    pub run_dir: Option<PathBuf>,
    /// The decision threshold: the run's `threshold.json`, or one the caller sets
    /// (`--threshold`); `None` when the run has none.
    pub threshold: Option<Threshold>,
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
        let threshold = match &run_dir {
            Some(dir) => Threshold::load(dir)?,
            None => None,
        };
        Ok(Self {
            model,
            config,
            run_dir,
            threshold,
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

/// Re-scores the test split of `category_dir` and writes `scores.csv`, `report.html` and
/// `metrics.json` (last, so that its presence marks a finished evaluation); with `save_maps`,
/// each test image's anomaly map too.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    loaded: &LoadedModel,
    family: Family,
    category_dir: &Path,
    on_unreadable: OnUnreadable,
    references: &ReferenceChoice,
    out_dir: &Path,
    save_maps: Option<&Path>,
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
    if let Some(dir) = save_maps {
        crate::run::check_maps_dir(dir, cfg.method)?;
    }
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
    let scored = score_with_maps(
        &loaded.model,
        &split.test,
        &mut refs,
        cfg.image_size,
        cfg.eval_batch_size,
        device,
    )?;
    let rows = &scored.rows;
    let seconds = start.elapsed().as_secs_f64();
    let localization = match &scored.maps {
        Some(maps) => pixel_metrics(&category, &split.test, maps, cfg.image_size),
        None => Localization::default(),
    };
    let base = Metrics::of(rows, &split)?;
    let mut notes: Vec<String> = localization.note.clone().into_iter().collect();
    if base.auc_roc < 0.5 {
        notes.push(format!(
            "AUC-ROC {:.3} is below chance (0.5): this model ranks anomalies below normals",
            base.auc_roc
        ));
    }
    let mut metrics = Metrics {
        eval_seconds: seconds,
        total_seconds: seconds,
        ignored: category.ignored.len(),
        unreadable: category.unreadable.clone(),
        pixel_auroc: localization.pixel_auroc,
        aupro: localization.aupro,
        threshold: loaded
            .threshold
            .as_ref()
            .map(|t| AtThreshold::of(rows, t))
            .transpose()?,
        notes,
        ..base
    };
    if let (Some(dir), Some(maps)) = (save_maps, &scored.maps) {
        crate::localization::save_maps(dir, &split.test, maps, cfg.image_size)?;
    }
    write_scores(&out_dir.join("scores.csv"), rows)?;
    let report = crate::run_report::write(&crate::run_report::RunView {
        title: format!("{} on {} (evaluation)", cfg.method, category_dir.display()),
        config: cfg,
        data_dir: category_dir,
        category: &category,
        test: &split.test,
        scored: &scored,
        metrics: &metrics,
        threshold: loaded.threshold.as_ref(),
        decided_as: match references {
            ReferenceChoice::Random { .. } => {
                "with random references (--fixed-references decides as dra predict does)"
            }
            _ => "with fixed references",
        },
        log: &[],
        out_dir,
    });
    // The report is for looking at; a failure to write it (an image gone since scoring) must
    // not cost the run its metrics.
    if let Err(e) = report {
        metrics.notes.push(format!(
            "{} not written: {e}",
            crate::run_report::REPORT_FILE
        ));
    }
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
    if let Some(dir) = heatmap_dir {
        writable_dir(dir, "--out")?;
    }
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
        for ((path, map), name) in images.iter().zip(maps).zip(heatmap_names(images)) {
            let img = dra_data::load_rgb(path)?;
            let out = dir.join(name);
            overlay_png(&img, map, cfg.image_size, max)
                .save(&out)
                .map_err(|e| TrainError::io(&out, std::io::Error::other(e.to_string())))?;
        }
    }
    Ok(scored.rows)
}

/// The largest cell value over `maps`: the top of a colour scale shared by their overlays.
pub(crate) fn colour_scale(maps: &[CellMap]) -> f32 {
    maps.iter()
        .flat_map(|m| m.values.iter())
        .fold(f32::MIN_POSITIVE, |a, b| a.max(*b))
}

/// `img` resized to the model's `size` (as the model saw it) with `map` laid over it in the
/// jet colours, `max` being the top of the scale.
pub(crate) fn overlay_png(img: &RgbImage, map: &CellMap, size: u32, max: f32) -> RgbImage {
    let img = transform::resize_bilinear(img, size, size);
    overlay(&img, &upsample(map, size), max)
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

/// The CSV that `dra predict` prints: `path,score,decision,g_n,g_s,g_p,g_r`. The decision is
/// `anomaly` when the score is above the threshold, `normal` otherwise, and empty without a
/// threshold.
pub fn predictions_csv(rows: &[ScoreRow], threshold: Option<&Threshold>) -> String {
    let mut out = String::from("path,score,decision,g_n,g_s,g_p,g_r\n");
    for r in rows {
        let [n, s, p, g] = r.heads;
        let decision = match threshold {
            Some(t) if t.is_anomalous(r.score) => "anomaly",
            Some(_) => "normal",
            None => "",
        };
        out += &format!(
            "{},{},{decision},{n},{s},{p},{g}\n",
            crate::csv::field(&r.path.to_string_lossy()),
            r.score
        );
    }
    out
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
