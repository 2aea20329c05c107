//! Gathers what a run or an evaluation produced into the [`dra_eval::report::Report`] that
//! `report.html` shows: curves, per-class results, the decision, the loss, and a gallery of the
//! images that matter (worst false positives, worst false negatives, best detections).

use std::io::Cursor;
use std::path::Path;

use dra_data::{Category, Label, Sample};
use image::{GrayImage, Luma};

use dra_eval::report::{
    ClassAuc, Decision, GalleryItem, GallerySection, LossPoint, Report, ScoredImage,
};

use crate::engine::maps::{colour_scale, overlay_png};
use crate::engine::scoring::Scored;
use crate::error::TrainError;
use crate::record::{write_atomic, LogRow, Metrics, ScoreRow, Threshold, TrainConfig, REPORT_FILE};

/// Images per gallery section.
const GALLERY_SIZE: usize = 4;

/// Everything a report is made of.
pub(crate) struct RunView<'a> {
    pub title: String,
    pub config: &'a TrainConfig,
    pub data_dir: &'a Path,
    pub category: &'a Category,
    /// The test samples, in the order of `scored`.
    pub test: &'a [Sample],
    pub scored: &'a Scored,
    pub metrics: &'a Metrics,
    pub threshold: Option<&'a Threshold>,
    /// How the test set was scored for the decisions (`metrics.threshold`), in words.
    pub decided_as: &'a str,
    /// The training log (empty for an evaluation).
    pub log: &'a [LogRow],
    pub out_dir: &'a Path,
}

/// Builds the report and writes `report.html` into the view's folder (atomically).
pub(crate) fn write(view: &RunView) -> Result<(), TrainError> {
    let report = build(view)?;
    write_atomic(
        &view.out_dir.join(REPORT_FILE),
        dra_eval::report::render(&report).as_bytes(),
    )
}

fn build(view: &RunView) -> Result<Report, TrainError> {
    let rows = &view.scored.rows;
    let m = view.metrics;
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let labels: Vec<bool> = rows.iter().map(|r| r.label == 1).collect();
    let decision = match (view.threshold, &m.threshold) {
        (Some(t), Some(at)) => Some(Decision {
            threshold: at.threshold,
            target_fpr: at.target_fpr,
            source: format!("{}; the test set scored {}", t.source, view.decided_as),
            counts: at.counts,
        }),
        _ => None,
    };
    Ok(Report {
        title: view.title.clone(),
        facts: facts(view),
        notes: m.notes.clone(),
        auc_roc: m.auc_roc,
        auc_pr: m.auc_pr,
        pixel: m.pixel_auroc.zip(m.aupro),
        roc: dra_eval::roc_curve(&scores, &labels).unwrap_or_default(),
        pr: dra_eval::pr_curve(&scores, &labels).unwrap_or_default(),
        scores: rows
            .iter()
            .map(|r| ScoredImage {
                path: r.path.display().to_string(),
                class: r.class.clone(),
                anomalous: r.label == 1,
                score: r.score,
            })
            .collect(),
        per_class: per_class(rows),
        decision,
        loss: view
            .log
            .iter()
            .map(|r| LossPoint {
                step: r.step,
                epoch: r.epoch,
                total: r.loss,
                heads: r.heads,
                lr: r.lr,
            })
            .collect(),
        gallery: gallery(view)?,
    })
}

/// The settings and counts a reader needs to know what the numbers mean.
fn facts(view: &RunView) -> Vec<(String, String)> {
    let cfg = view.config;
    let m = view.metrics;
    let weights = match (&cfg.weights, &cfg.init_model) {
        (_, Some(model)) => format!("fine-tuned from {}", model.display()),
        (Some(w), None) => format!("backbone from {}", w.display()),
        (None, None) => "random (no --weights)".into(),
    };
    let mut facts = vec![
        ("method".to_string(), cfg.method.to_string()),
        (
            "backbone".into(),
            format!("{:?}", cfg.backbone).to_lowercase(),
        ),
        ("profile".into(), cfg.profile.to_string()),
        ("image size".into(), format!("{} px", cfg.image_size)),
        ("initial weights".into(), weights),
        (
            "data".into(),
            view.data_dir
                .canonicalize()
                .unwrap_or_else(|_| view.data_dir.to_path_buf())
                .display()
                .to_string(),
        ),
        (
            "training images".into(),
            format!(
                "{} normal + {} labelled anomalies",
                m.n_train_normal, m.n_train_anomaly
            ),
        ),
        (
            "test images".into(),
            format!(
                "{} normal + {} anomalous",
                m.n_test_normal, m.n_test_anomaly
            ),
        ),
    ];
    if !view.log.is_empty() {
        facts.push((
            "training".into(),
            format!(
                "{} epochs × {} steps of {} images, lr {}, seed {}, {:.0} s",
                cfg.epochs, cfg.steps_per_epoch, cfg.batch_size, cfg.lr, cfg.seed, m.train_seconds
            ),
        ));
    }
    facts.push(("dra-rs".into(), env!("CARGO_PKG_VERSION").into()));
    facts
}

/// AUC-ROC and AUC-PR of the normal test images against each defect class alone.
fn per_class(rows: &[ScoreRow]) -> Vec<ClassAuc> {
    let mut classes: Vec<&str> = rows
        .iter()
        .filter(|r| r.label == 1)
        .map(|r| r.class.as_str())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .filter_map(|class| {
            let (scores, labels): (Vec<f64>, Vec<bool>) = rows
                .iter()
                .filter(|r| r.label == 0 || r.class == class)
                .map(|r| (r.score, r.label == 1))
                .unzip();
            Some(ClassAuc {
                class: class.to_string(),
                n: labels.iter().filter(|l| **l).count(),
                auc_roc: dra_eval::auc_roc(&scores, &labels).ok()?,
                auc_pr: dra_eval::auc_pr(&scores, &labels).ok()?,
            })
        })
        .collect()
}

/// The images a person should look at, with their heat maps and masks.
fn gallery(view: &RunView) -> Result<Vec<GallerySection>, TrainError> {
    let rows = &view.scored.rows;
    let by_score = |label: u8, descending: bool| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].label == label)
            .collect();
        idx.sort_by(|&a, &b| {
            let o = rows[a].score.total_cmp(&rows[b].score);
            if descending {
                o.reverse()
            } else {
                o
            }
        });
        idx
    };
    let threshold = view.threshold;
    let above = |i: &usize| threshold.is_none_or(|t| t.is_anomalous(rows[*i].score));
    let normals: Vec<usize> = by_score(0, true).into_iter().filter(above).collect();
    let missed: Vec<usize> = by_score(1, false)
        .into_iter()
        .filter(|i| threshold.is_none() || !above(i))
        .collect();
    let best = by_score(1, true);
    let (fp_title, fp_text, fn_title, fn_text) = match threshold {
        Some(t) => (
            "Worst false positives",
            format!("Normal test images scored above the threshold {:.4}, highest first.", t.value),
            "Worst false negatives",
            format!("Anomalies scored at or below the threshold {:.4}, lowest first: defects that would pass.", t.value),
        ),
        None => (
            "Highest-scored normal images",
            "No threshold: the normal test images the model finds most anomalous.".to_string(),
            "Lowest-scored anomalies",
            "No threshold: the anomalies the model finds least anomalous.".to_string(),
        ),
    };
    let scale = view.scored.maps.as_deref().map(colour_scale);
    let section =
        |title: &str, text: String, picks: &[usize]| -> Result<GallerySection, TrainError> {
            let items = picks
                .iter()
                .take(GALLERY_SIZE)
                .map(|&i| item(view, i, scale))
                .collect::<Result<_, _>>()?;
            Ok(GallerySection {
                title: title.into(),
                explanation: text,
                items,
            })
        };
    Ok(vec![
        section(fp_title, fp_text, &normals)?,
        section(fn_title, fn_text, &missed)?,
        section(
            "Best detections",
            "Anomalies with the highest scores.".into(),
            &best,
        )?,
    ])
}

/// One test image as the model saw it, its heat map and its mask.
fn item(view: &RunView, i: usize, scale: Option<f32>) -> Result<GalleryItem, TrainError> {
    let sample = &view.test[i];
    let row = &view.scored.rows[i];
    let size = view.config.image_size;
    let original = sample.image().load_rgb()?;
    let image = dra_data::transform::resize_bilinear(&original, size, size);
    let overlay = match (view.scored.maps.as_deref(), scale) {
        (Some(maps), Some(max)) => Some(png(&overlay_png(&original, &maps[i], size, max))?),
        _ => None,
    };
    let mask = match view.category.mask_path(sample) {
        Some(path) if path.is_file() => {
            let mask = dra_data::load_mask(&path, size)?;
            let img = GrayImage::from_fn(size, size, |x, y| {
                Luma([if mask[(y * size + x) as usize] {
                    255
                } else {
                    0
                }])
            });
            Some(png(&img)?)
        }
        _ => None,
    };
    let name = row
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| row.path.display().to_string());
    let class = if sample.label == Label::Normal {
        "normal".to_string()
    } else {
        sample.class.clone()
    };
    Ok(GalleryItem {
        caption: format!("{name} · {class} · score {:.4}", row.score),
        image_png: png(&image)?,
        overlay_png: overlay,
        mask_png: mask,
    })
}

/// PNG bytes of an image.
fn png<P, C>(img: &image::ImageBuffer<P, C>) -> Result<Vec<u8>, TrainError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::InvalidOption {
            flag: "report.html",
            message: format!("cannot encode a gallery image: {e}"),
        })?;
    Ok(bytes.into_inner())
}
