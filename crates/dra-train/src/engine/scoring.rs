//! Scoring test images with a trained model: the reference sets (random as the official
//! evaluation, or fixed so that a saved model always scores an image the same way), batches
//! through the test transform, and the rows of `scores.csv`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dra_data::{load_images, transform, BatchSource, ImageRef, Label, Sample};
use dra_model::{Detector, DetectorScores, ImageBatch};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::TrainError;
use crate::record::{save_safetensors, ScoreRow, TrainConfig};

/// A copy of the model over detached tensors: scoring then records no autograd graph and
/// frees each activation as soon as it is used.
pub fn detached_model(
    varmap: &VarMap,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<Detector, TrainError> {
    let data = varmap
        .data()
        .lock()
        .expect("the var map lock is not poisoned");
    let tensors = data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    Ok(Detector::new(cfg.method, &cfg.model_config(), vb)?)
}

/// Normal images as samples to score (class `good`).
pub fn normal_samples(images: &[ImageRef]) -> Vec<Sample> {
    images
        .iter()
        .map(|image| Sample::new(image.clone(), Label::Normal, "good"))
        .collect()
}

/// Where the reference images of each test batch come from.
pub enum References {
    /// Fresh references per batch through the training transform (rotation, 50 % CutMix), as
    /// the official evaluation draws them: the benchmark default, with random g_r scores.
    Random(Box<BatchSource>),
    /// The same normalised images (`n_ref × 3 × H × W` values) for every batch: deterministic.
    Fixed {
        /// The images' values, one after another, normalised by the test transform.
        images: Vec<f32>,
        /// Number of images in `images`.
        n_ref: usize,
    },
}

impl References {
    fn next(&mut self) -> Result<Vec<f32>, TrainError> {
        Ok(match self {
            Self::Random(source) => source.next_references()?,
            Self::Fixed { images, .. } => images.clone(),
        })
    }

    /// No references: for the methods that do not use them.
    pub fn none() -> Self {
        Self::Fixed {
            images: Vec::new(),
            n_ref: 0,
        }
    }

    /// References per batch (0 for none).
    pub fn n_ref(&self) -> usize {
        match self {
            Self::Random(source) => source.config().n_ref,
            Self::Fixed { n_ref, .. } => *n_ref,
        }
    }

    /// A fixed set from image files, through the test transform (no augmentation).
    pub fn from_paths(paths: &[PathBuf], image_size: u32) -> Result<Self, TrainError> {
        // Listed as `predict` lists its inputs: folders are read, and a reference that does
        // not decode is an error naming it (references are never skipped).
        let listing =
            dra_data::Listing::of_inputs(paths)?.require(dra_data::OnUnreadable::Error)?;
        Self::from_images(&listing.images, image_size)
    }

    /// A fixed set from images (files or rectangles of them), through the test transform.
    pub fn from_images(images: &[ImageRef], image_size: u32) -> Result<Self, TrainError> {
        if images.is_empty() {
            return Err(TrainError::InvalidOption {
                flag: "--reference-images",
                message: "give at least one image".into(),
            });
        }
        Ok(Self::Fixed {
            images: load_normalized_images(images, image_size)?,
            n_ref: images.len(),
        })
    }

    /// A fixed, seeded draw of `n_ref` distinct images from `pool` (the training normals).
    pub fn seeded_draw(
        pool: &[ImageRef],
        n_ref: usize,
        seed: u64,
        image_size: u32,
    ) -> Result<Self, TrainError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00FF_F00D);
        let chosen: Vec<ImageRef> = sample(&mut rng, pool.len(), n_ref.min(pool.len()))
            .into_iter()
            .map(|i| pool[i].clone())
            .collect();
        Self::from_images(&chosen, image_size)
    }

    /// Writes a fixed set to `path` (safetensors, tensor `references`, N×3×H×W).
    pub fn save(&self, path: &Path, image_size: u32) -> Result<(), TrainError> {
        let Self::Fixed { images, n_ref } = self else {
            return Err(TrainError::InvalidOption {
                flag: "--fixed-references",
                message: "only a fixed reference set can be saved".into(),
            });
        };
        let s = image_size as usize;
        let t = Tensor::from_vec(images.clone(), (*n_ref, 3, s, s), &Device::Cpu)?;
        save_safetensors(path, |tmp| t.save_safetensors("references", tmp))
    }

    /// Reads a set written by [`References::save`]; its image size must be `image_size`.
    pub fn load(path: &Path, image_size: u32) -> Result<Self, TrainError> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let bad = |message: String| TrainError::InvalidOption {
            flag: "--model",
            message: format!("{}: {message}", path.display()),
        };
        let t = tensors
            .get("references")
            .ok_or_else(|| bad("no `references` tensor".into()))?;
        let (n, c, h, w) = t.dims4()?;
        if c != 3 || h != image_size as usize || w != image_size as usize {
            return Err(bad(format!(
                "references are {n}×{c}×{h}×{w}, the model expects {image_size} px"
            )));
        }
        Ok(Self::Fixed {
            images: t.flatten_all()?.to_vec1()?,
            n_ref: n,
        })
    }
}

/// Decodes, resizes (PIL bilinear) and normalises images (files or rectangles of them, the
/// rectangles of one file cut from a single decode) in parallel, one after another in a single
/// `N × 3 × H × W` buffer.
pub fn load_normalized_images(
    images: &[ImageRef],
    image_size: u32,
) -> Result<Vec<f32>, TrainError> {
    let per_image = 3 * (image_size as usize).pow(2);
    let resized = load_images(images, |img| {
        transform::resize_bilinear(&img, image_size, image_size)
    })?;
    let mut buffer = vec![0f32; images.len() * per_image];
    buffer
        .par_chunks_mut(per_image)
        .zip(resized.par_iter())
        .for_each(|(out, img)| transform::normalize_into(img, out));
    Ok(buffer)
}

/// Scores samples in batches of `batch_size`, each batch preceded by the references when the
/// method uses them, with the model in eval mode.
pub fn score_samples(
    model: &Detector,
    samples: &[Sample],
    references: &mut References,
    image_size: u32,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<ScoreRow>, TrainError> {
    Ok(score_with_maps(model, samples, references, image_size, batch_size, device)?.rows)
}

/// An anomaly map of one image at the backbone's resolution (`h × w` cells, row-major), from
/// DRA's seen, pseudo and residual heads: [`crate::engine::maps::upsample`] brings it to the
/// image.
#[derive(Clone, Debug, PartialEq)]
pub struct CellMap {
    /// Rows of cells.
    pub h: usize,
    /// Columns of cells.
    pub w: usize,
    /// The cells' anomaly evidence, row-major.
    pub values: Vec<f32>,
}

/// The scores of a set of images and, for DRA, their anomaly maps.
#[derive(Clone, Debug)]
pub struct Scored {
    /// One row per image, in order.
    pub rows: Vec<ScoreRow>,
    /// One map per image, in order; `None` for a method without maps (the baselines).
    pub maps: Option<Vec<CellMap>>,
}

/// [`score_samples`] that also keeps DRA's anomaly maps, from the same forward passes: the
/// scores are the same bit for bit, and random references are drawn exactly as without maps.
pub fn score_with_maps(
    model: &Detector,
    samples: &[Sample],
    references: &mut References,
    image_size: u32,
    batch_size: usize,
    device: &Device,
) -> Result<Scored, TrainError> {
    let s = image_size as usize;
    let mut rows = Vec::with_capacity(samples.len());
    let mut maps = matches!(model, Detector::Dra(_)).then(Vec::new);
    for chunk in samples.chunks(batch_size.max(1)) {
        let (n_ref, mut buffer) = if model.uses_references() {
            (references.n_ref(), references.next()?)
        } else {
            (0, Vec::new())
        };
        let images: Vec<ImageRef> = chunk.iter().map(Sample::image).collect();
        buffer.extend(load_normalized_images(&images, image_size)?);
        let batch = ImageBatch::from_values(buffer, n_ref, s, device)?;
        let (scores, batch_maps) = model.scores_with_maps(&batch)?;
        rows.extend(to_rows(chunk, &scores)?);
        if let (Some(maps), Some(batch_maps)) = (maps.as_mut(), batch_maps) {
            let (_, h, w) = batch_maps.dims3()?;
            for m in batch_maps.to_vec3::<f32>()? {
                maps.push(CellMap {
                    h,
                    w,
                    values: m.into_iter().flatten().collect(),
                });
            }
        }
    }
    Ok(Scored { rows, maps })
}

fn to_rows(samples: &[Sample], scores: &DetectorScores) -> Result<Vec<ScoreRow>, TrainError> {
    let get = |t: &Tensor| -> Result<Vec<f64>, TrainError> {
        Ok(t.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
    };
    let heads = scores
        .heads
        .iter()
        .map(|h| h.as_ref().map(get).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let score = get(&scores.score)?;
    Ok(samples
        .iter()
        .enumerate()
        .map(|(i, sample)| {
            let h: [Option<f64>; 4] = [0, 1, 2, 3].map(|k| heads[k].as_ref().map(|v| v[i]));
            // DRA: the sum in f64 of the heads as written, so that scores.csv adds up.
            let score = match h {
                [Some(n), Some(s), Some(p), Some(r)] => -n + s + p + r,
                _ => score[i],
            };
            ScoreRow {
                path: sample.image().display_path(),
                label: (sample.label != Label::Normal) as u8,
                class: sample.class.clone(),
                score,
                heads: h.map(|v| v.unwrap_or(f64::NAN)),
            }
        })
        .collect())
}
