//! The first phase of a run: the output folder made ready, the data folder read and split,
//! `config.json` written, and the training images decoded into balanced batches.

use std::path::Path;

use dra_data::{BatchSource, Category, ImageCache, ImageRef, Sample, Split, Unreadable};

use super::request::RunRequest;
use crate::engine::maps::check_maps_dir;
use crate::error::TrainError;
use crate::record::{
    claim_dir, lock_dir, write_json, ArithmeticRecord, Checkpoint, OutputLock, RunRecord,
    TrainConfig, CONFIG_FILE, RESULT_FILES, RUN_FILES,
};

/// What the data folder gave the run.
pub(super) struct Loaded {
    /// The data as the loader read it (for the masks and the report).
    pub category: Category,
    /// Which files train and which test.
    pub split: Split,
    /// The training normals held out to calibrate the threshold (`--calibration-fraction`).
    pub calibration: Vec<ImageRef>,
    /// Every file left out for not decoding, the outlier images' too.
    pub unreadable: Vec<Unreadable>,
    /// The run folder's lock, held until the run ends.
    pub _lock: OutputLock,
}

/// The training images, decoded and resized once.
pub(super) struct Batches {
    /// The balanced, augmented batches of the training loop.
    pub source: BatchSource,
    /// For AHL, which trains its heads on features of the same resized images after the base
    /// training: the normals and the labelled anomalies.
    pub ahl_images: Option<(ImageCache, ImageCache)>,
}

/// Reads and splits the data, writes `config.json` and decodes the training images; a bad
/// option, folder or image stops the run here, before any training.
pub(super) fn load(req: &RunRequest) -> Result<(Loaded, Batches), TrainError> {
    let cfg = &req.config;
    cfg.validate()?;
    let lock = if req.control.resume {
        resumable(&req.out_dir)?
    } else {
        claim_dir(
            &req.out_dir,
            "--out",
            &RESULT_FILES,
            &RUN_FILES,
            req.control.overwrite,
        )?
    };
    if let Some(dir) = &req.save_maps {
        check_maps_dir(dir, cfg.method)?;
    }
    let category = req.family.load(&req.category_dir, req.on_unreadable)?;
    let mut split = Split::new(&category, &cfg.split_config())?;
    let calibration = split.hold_out_normals(cfg.calibration_fraction, cfg.seed)?;
    let outliers = cfg
        .outlier_root
        .as_ref()
        .map(|root| dra_data::datasets::outlier_images(root, &category.name(), req.on_unreadable))
        .transpose()?;
    // Every file left out for not decoding, the outlier images' too.
    let mut unreadable = category.unreadable.clone();
    if let Some(outliers) = &outliers {
        unreadable.extend(outliers.unreadable.iter().cloned());
    }
    let record = RunRecord {
        dataset: req.dataset.clone(),
        dataset_dir: req.category_dir.clone(),
        config: TrainConfig {
            // AHL's settings in full, whether given or the profile's.
            ahl: cfg.method.is_ahl().then(|| cfg.ahl_config()),
            ..cfg.clone()
        },
        train_anomalies: split.train_anomaly.clone(),
        contaminants: split.contaminants.clone(),
        ignored: category
            .ignored
            .iter()
            .fold(Default::default(), |mut m, i| {
                *m.entry(i.reason.to_string()).or_insert(0) += 1;
                m
            }),
        unreadable: unreadable.clone(),
        n_train_normal: split.train_normal.len(),
        calibration_normals: calibration.clone(),
        dra_rs_version: env!("CARGO_PKG_VERSION").into(),
        arithmetic: Some(ArithmeticRecord::of(cfg, &req.device)),
    };
    if req.control.resume {
        same_run(&req.out_dir, &record)?;
    } else {
        write_json(&req.out_dir.join(CONFIG_FILE), &record)?;
    }

    // Decode and resize every training image once, in parallel; a bad file stops us here. The
    // normals (and outlier images) stay in memory up to the budget, the few labelled
    // anomalies all.
    let budget = req.control.cache_budget(cfg.image_size);
    let normals = ImageCache::load_within(&split.train_normal, cfg.image_size, budget)?;
    let anomaly_images: Vec<ImageRef> = split.train_anomaly.iter().map(Sample::image).collect();
    let anomalies = ImageCache::load(&anomaly_images, cfg.image_size)?;
    let ahl_images = cfg
        .method
        .is_ahl()
        .then(|| (normals.clone(), anomalies.clone()));
    let mut source = BatchSource::new(cfg.batch_config(), normals, anomalies, cfg.seed)?;
    if let Some(outliers) = &outliers {
        source = source.with_outliers(ImageCache::load_within(
            &outliers.images,
            cfg.image_size,
            budget,
        )?);
    }
    Ok((
        Loaded {
            category,
            split,
            calibration,
            unreadable,
            _lock: lock,
        },
        Batches { source, ahl_images },
    ))
}

/// Locks the folder of a run to resume, which must hold a checkpoint and no finished run.
fn resumable(dir: &Path) -> Result<OutputLock, TrainError> {
    let lock = lock_dir(dir)?;
    Checkpoint::resumable(dir)?;
    Ok(lock)
}

/// Checks that a resumed run is the run its folder started: the `config.json` it wrote then is
/// what the settings and the data folder give now (the split's files, what was left out). Not
/// the arithmetic: a run resumed on another CPU goes on, its last bits those of that CPU.
fn same_run(dir: &Path, now: &RunRecord) -> Result<(), TrainError> {
    let then = RunRecord::read(dir, "--resume")?;
    let value = |r: &RunRecord| -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.remove("arithmetic");
                fields
            }
            _ => Default::default(),
        }
    };
    let (then, now) = (value(&then), value(now));
    let differ: Vec<&str> = then
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .chain(
            now.keys()
                .filter(|k| !then.contains_key(*k))
                .map(String::as_str),
        )
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(TrainError::InvalidOption {
        flag: "--resume",
        message: format!(
            "{}: the run started with other settings or data than it would resume with ({} \
             differ); the data folder or dra changed since: train it again (--overwrite)",
            dir.join(CONFIG_FILE).display(),
            differ.join(", ")
        ),
    })
}
