//! The feature cache AHL trains on: the trained base model's backbone run once, in eval mode,
//! over the training normals, the labelled anomalies and one pseudo anomaly of every normal per
//! generator, at every pyramid level.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use dra_data::pseudo::{CutMix, CutPasteScar};
use dra_data::transform::normalize_into;
use dra_data::ImageCache;
use dra_model::{Detector, ImageBatch};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::TrainError;

/// AHL's pseudo-anomaly generators, one per episode set. The code's three are CutPaste (a
/// patch of the image itself), CutMix (a patch of another normal) and DRAEM (Perlin-masked
/// texture from DTD); DTD cannot be had here, so CutPaste's scar stands in for DRAEM
/// (docs/methods.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// A jittered patch of the image pasted elsewhere in it: DRA's own CutMix, which the AHL
    /// code calls CutPaste.
    CutPaste,
    /// A jittered patch of another training normal pasted in (the AHL code's CutMix).
    CutMix,
    /// CutPaste's thin rotated scar, in place of DRAEM.
    Scar,
}

impl Generator {
    /// The three, in the order episodes index them.
    pub const ALL: [Generator; 3] = [Self::CutPaste, Self::CutMix, Self::Scar];

    /// A pseudo anomaly of `normals[i]`.
    fn make(self, normals: &[Arc<RgbImage>], i: usize, rng: &mut ChaCha8Rng) -> RgbImage {
        let img = &normals[i];
        match self {
            Self::CutPaste => CutMix::default().apply(img, rng),
            Self::CutMix => {
                // Another normal when there is one.
                let mut j = rng.random_range(0..normals.len());
                if j == i && normals.len() > 1 {
                    j = (j + 1) % normals.len();
                }
                CutMix::default().paste_from(img, &normals[j], rng).0
            }
            Self::Scar => CutPasteScar::default().apply(img, rng),
        }
    }
}

/// Feature maps of every training item at every pyramid level, one `(N, C, h, w)` tensor per
/// level. Rows: the normals, then the labelled anomalies, then for each [`Generator`] in order
/// one pseudo anomaly of each normal.
#[derive(Clone, Debug)]
pub struct FeatureCache {
    levels: Vec<Tensor>,
    n_normal: usize,
    n_anomaly: usize,
}

impl FeatureCache {
    /// Runs `model`'s backbone over the items in batches of `batch` images. Pseudo anomalies
    /// are made from the resized normals with generators seeded from `seed`, so the cache is
    /// the same for the same inputs.
    pub fn extract(
        model: &Detector,
        normals: &ImageCache,
        anomalies: &ImageCache,
        n_levels: usize,
        batch: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TrainError> {
        // AHL's phase needs every image at once (its pseudo anomalies mix normals, and every
        // feature is cached): the sets are decoded whole here, whatever the image cache holds.
        let normal_images = &normals.all()?;
        let anomaly_images = anomalies.all()?;
        // One generator stream per (generator, normal): the cache does not depend on the
        // order rayon runs them in.
        let pseudo: Vec<RgbImage> = Generator::ALL
            .iter()
            .enumerate()
            .flat_map(|(g, &generator)| (0..normal_images.len()).map(move |i| (g, generator, i)))
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|(g, generator, i)| {
                let stream = (g * normal_images.len() + i) as u64;
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA41_0000_0000 ^ stream);
                generator.make(normal_images, i, &mut rng)
            })
            .collect();
        let items: Vec<&RgbImage> = normal_images
            .iter()
            .chain(&anomaly_images)
            .map(|img| &**img)
            .chain(&pseudo)
            .collect();
        let Some(first) = items.first() else {
            return Err(TrainError::InvalidOption {
                flag: "--method",
                message: "AHL needs training normals to extract features from".into(),
            });
        };
        let size = first.width() as usize;
        let per_image = 3 * size * size;
        let mut levels: Vec<Vec<Tensor>> = vec![Vec::new(); n_levels];
        for chunk in items.chunks(batch.max(1)) {
            let mut values = vec![0f32; chunk.len() * per_image];
            values
                .par_chunks_mut(per_image)
                .zip(chunk.par_iter())
                .for_each(|(out, img)| normalize_into(img, out));
            let images = ImageBatch::from_values(values, 0, size, device)?;
            for (s, level) in levels.iter_mut().enumerate() {
                level.push(model.level_features(images.images(), s)?.detach());
            }
        }
        let levels = levels
            .iter()
            .map(|parts| Tensor::cat(parts, 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            levels,
            n_normal: normal_images.len(),
            n_anomaly: anomaly_images.len(),
        })
    }

    /// The cache's row of normal `i`.
    pub fn normal(&self, i: usize) -> u32 {
        i as u32
    }

    /// The cache's row of labelled anomaly `j`.
    pub fn anomaly(&self, j: usize) -> u32 {
        (self.n_normal + j) as u32
    }

    /// The cache's row of generator `g`'s pseudo anomaly of normal `i`.
    pub fn pseudo(&self, g: usize, i: usize) -> u32 {
        (self.n_normal + self.n_anomaly + g * self.n_normal + i) as u32
    }

    /// Training normals in the cache.
    pub fn n_normal(&self) -> usize {
        self.n_normal
    }

    /// The feature maps of `rows`, one `(rows.len(), C, h, w)` tensor per level.
    pub fn gather(&self, rows: &[u32]) -> candle_core::Result<Vec<Tensor>> {
        let device = self.levels[0].device();
        let index = Tensor::new(rows, device)?;
        self.levels
            .iter()
            .map(|level| level.index_select(&index, 0))
            .collect()
    }

    /// The normals' level-0 feature maps, flattened, one row per normal: what k-means
    /// clusters (the code clusters the full-size level only).
    pub fn normal_points(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        self.levels[0]
            .narrow(0, 0, self.n_normal)?
            .flatten_from(1)?
            .to_vec2::<f32>()
    }
}
