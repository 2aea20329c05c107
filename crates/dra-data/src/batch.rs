//! Balanced training batches (§4 of the protocol), built in parallel and ahead of the model.
//!
//! Every random choice of a step is drawn from generators derived from `(seed, step, slot)`, so a
//! batch does not depend on how many threads built it: the same seed gives the same batches.

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::image_cache::ImageCache;
use crate::pseudo::PseudoKind;
use crate::sample::Label;
use crate::transform::{normalize_into, random_rotation};

/// The sampling constants of a training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// Square side the images are resized to.
    pub image_size: u32,
    /// Samples per step, references not counted (official: 48).
    pub batch_size: usize,
    /// Reference normals drawn per step and per test batch (official: 5).
    pub n_ref: usize,
    /// Chance that a normal slot becomes a CutMix pseudo anomaly (official: 0.5).
    pub pseudo_prob: f64,
    /// Rotation range in degrees of `RandomRotation` (official: 180).
    pub rotation_degrees: f64,
    /// How pseudo anomalies are made (official: CutMix).
    pub pseudo: PseudoKind,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            image_size: 448,
            batch_size: 48,
            n_ref: 5,
            pseudo_prob: 0.5,
            rotation_degrees: 180.0,
            pseudo: PseudoKind::Cutmix,
        }
    }
}

/// One training step's input: `n_ref` references followed by the batch, as one NCHW buffer
/// (the official code concatenates them in this order), and the batch's labels.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The normalised images in NCHW order, references first: `len() × 3 × image_size²` values.
    pub images: Vec<f32>,
    /// One label per batch image, references not included.
    pub labels: Vec<Label>,
    /// Number of reference normals at the start of `images`.
    pub n_ref: usize,
    /// Side of every (square) image, in pixels.
    pub image_size: u32,
}

impl Batch {
    /// Number of images in `images`, references included.
    pub fn len(&self) -> usize {
        self.n_ref + self.labels.len()
    }
    /// Whether the batch holds no image at all, references included.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An endless stream of fresh random permutations of `0..n`, as the official sampler.
struct PermutationStream {
    rng: ChaCha8Rng,
    order: Vec<usize>,
    pos: usize,
}

impl PermutationStream {
    fn new(n: usize, seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            order: (0..n).collect(),
            pos: n,
        }
    }
    fn next(&mut self) -> usize {
        if self.pos == self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        self.pos += 1;
        self.order[self.pos - 1]
    }
}

/// What one slot of a step asks for, before augmentation.
#[derive(Clone, Copy)]
enum Slot {
    Normal(usize),
    Anomaly(usize),
}

/// Produces the training batches and reference sets of a run.
pub struct BatchSource {
    config: BatchConfig,
    normals: ImageCache,
    anomalies: ImageCache,
    /// Outlier-exposure images that replace CutMix as the pseudo-anomaly source.
    outliers: Option<ImageCache>,
    seed: u64,
    normal_stream: PermutationStream,
    anomaly_stream: PermutationStream,
    reference_stream: PermutationStream,
    reference_draws: u64,
}

/// Distinct streams of randomness within one seed.
const STREAM_NORMAL: u64 = 1;
const STREAM_ANOMALY: u64 = 2;
const STREAM_REFERENCE: u64 = 3;
const STREAM_AUGMENT: u64 = 4;
const STREAM_REFERENCE_AUGMENT: u64 = 5;

fn derive_seed(seed: u64, stream: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the packed inputs: cheap, and well mixed for nearby inputs.
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(a.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(b.wrapping_mul(0x94D0_49BB_1331_11EB));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BatchSource {
    /// A source for training on `normals` and the labelled `anomalies`, its randomness drawn
    /// from `seed`. Fails when there are no normals or `batch_size` cannot hold the slots.
    pub fn new(
        config: BatchConfig,
        normals: ImageCache,
        anomalies: ImageCache,
        seed: u64,
    ) -> Result<Self> {
        if normals.is_empty() {
            return Err(DataError::InvalidOption {
                flag: "--dataset",
                message: "the training set has no normal images".into(),
            });
        }
        if config.batch_size == 0 {
            return Err(DataError::InvalidOption {
                flag: "--batch-size",
                message: "must be at least 1".into(),
            });
        }
        if !anomalies.is_empty() && config.batch_size < 3 {
            return Err(DataError::InvalidOption {
                flag: "--batch-size",
                message: "must be at least 3 to hold normal and anomaly slots".into(),
            });
        }
        Ok(Self {
            normal_stream: PermutationStream::new(
                normals.len(),
                derive_seed(seed, STREAM_NORMAL, 0, 0),
            ),
            anomaly_stream: PermutationStream::new(
                anomalies.len(),
                derive_seed(seed, STREAM_ANOMALY, 0, 0),
            ),
            reference_stream: PermutationStream::new(
                normals.len(),
                derive_seed(seed, STREAM_REFERENCE, 0, 0),
            ),
            reference_draws: 0,
            config,
            normals,
            anomalies,
            outliers: None,
            seed,
        })
    }

    /// Pseudo anomalies from these images (through the plain training transform) instead of
    /// CutMix: the official `--outlier_root` outlier exposure. An empty set keeps CutMix.
    pub fn with_outliers(mut self, outliers: ImageCache) -> Self {
        self.outliers = (!outliers.is_empty()).then_some(outliers);
        self
    }

    /// The sampling constants the batches are built with.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Normal and anomaly slots of a batch: ⌊2B/3⌋ normals and the rest anomalies when labelled
    /// anomalies exist (official `BalancedBatchSampler`), else all normals.
    pub fn slot_counts(&self) -> (usize, usize) {
        let b = self.config.batch_size;
        if self.anomalies.is_empty() {
            (b, 0)
        } else {
            let n = 2 * b / 3;
            (n, b - n)
        }
    }

    /// The next training step: references first, then the balanced batch. Fails only where
    /// an image file not held in memory no longer decodes (changed since it was loaded).
    pub fn next_batch(&mut self, step: u64) -> Result<Batch> {
        let slots = self.next_slots();
        let (images, labels) = self.render(&slots, STREAM_AUGMENT, step)?;
        Ok(Batch {
            images,
            labels: labels[self.config.n_ref..].to_vec(),
            n_ref: self.config.n_ref,
            image_size: self.config.image_size,
        })
    }

    /// Moves past `steps` training steps without building their batches: the source is then
    /// where it would be after as many [`BatchSource::next_batch`] calls, which is all a
    /// resumed run needs (each batch's augmentation is drawn from its step alone). Cheap: only
    /// the sampling order is drawn.
    pub fn skip(&mut self, steps: u64) {
        for _ in 0..steps {
            self.next_slots();
        }
    }

    /// Which images the next step takes: references, then normals, then anomalies.
    fn next_slots(&mut self) -> Vec<Slot> {
        let (n_normal, n_anomaly) = self.slot_counts();
        let mut slots = Vec::with_capacity(self.config.n_ref + n_normal + n_anomaly);
        for _ in 0..self.config.n_ref {
            slots.push(Slot::Normal(self.reference_stream.next()));
        }
        for _ in 0..n_normal {
            slots.push(Slot::Normal(self.normal_stream.next()));
        }
        for _ in 0..n_anomaly {
            slots.push(Slot::Anomaly(self.anomaly_stream.next()));
        }
        slots
    }

    /// A fresh reference set (training transform, as the official reference loader), for a test
    /// batch. Returns the `n_ref × 3 × H × W` buffer.
    pub fn next_references(&mut self) -> Result<Vec<f32>> {
        let slots: Vec<Slot> = (0..self.config.n_ref)
            .map(|_| Slot::Normal(self.reference_stream.next()))
            .collect();
        self.reference_draws += 1;
        Ok(self
            .render(&slots, STREAM_REFERENCE_AUGMENT, self.reference_draws)?
            .0)
    }

    /// Augments and normalises the slots in parallel.
    fn render(&self, slots: &[Slot], stream: u64, step: u64) -> Result<(Vec<f32>, Vec<Label>)> {
        let size = self.config.image_size as usize;
        let per_image = 3 * size * size;
        let mut images = vec![0f32; slots.len() * per_image];
        let labels: Vec<Label> = images
            .par_chunks_mut(per_image)
            .zip(slots.par_iter())
            .enumerate()
            .map(|(i, (out, slot))| {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(derive_seed(self.seed, stream, step, i as u64));
                let (img, label) = self.augment(*slot, &mut rng)?;
                normalize_into(&img, out);
                Ok(label)
            })
            .collect::<Result<_>>()?;
        Ok((images, labels))
    }

    /// The official `__getitem__`: a normal slot becomes, with probability `pseudo_prob`, a
    /// pseudo anomaly (CutMix, or the `pseudo` generator chosen) made from a uniformly drawn
    /// normal image; every training image is then randomly rotated.
    fn augment(&self, slot: Slot, rng: &mut ChaCha8Rng) -> Result<(RgbImage, Label)> {
        let degrees = self.config.rotation_degrees;
        Ok(match slot {
            Slot::Normal(i) => {
                if rng.random_bool(self.config.pseudo_prob) {
                    let pseudo = match &self.outliers {
                        Some(outliers) => {
                            let j = rng.random_range(0..outliers.len());
                            outliers.get(j)?.as_ref().clone()
                        }
                        None => {
                            let j = rng.random_range(0..self.normals.len());
                            self.config.pseudo.apply(&*self.normals.get(j)?, rng)
                        }
                    };
                    (random_rotation(&pseudo, degrees, rng), Label::Pseudo)
                } else {
                    (
                        random_rotation(&*self.normals.get(i)?, degrees, rng),
                        Label::Normal,
                    )
                }
            }
            Slot::Anomaly(i) => (
                random_rotation(&*self.anomalies.get(i)?, degrees, rng),
                Label::Anomaly,
            ),
        })
    }
}

/// Builds batches on a background thread, `depth` steps ahead of the consumer, so that data
/// preparation overlaps the model's work.
pub struct Prefetcher {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<BatchSource>>,
    waited: Duration,
}

impl Prefetcher {
    /// Starts a thread that builds the batches of `steps` from `source`, at most `depth` (at
    /// least 1) ahead of [`Prefetcher::recv`].
    pub fn spawn(mut source: BatchSource, steps: std::ops::Range<u64>, depth: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("dra-batches".into())
            .spawn(move || {
                for step in steps {
                    let batch = source.next_batch(step);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
                source
            })
            .expect("spawning the batch thread");
        Self {
            rx,
            handle: Some(handle),
            waited: Duration::ZERO,
        }
    }

    /// The next batch, or `None` when the range of steps is exhausted (or an error ended it).
    pub fn recv(&mut self) -> Option<Result<Batch>> {
        let start = Instant::now();
        let batch = self.rx.recv().ok();
        self.waited += start.elapsed();
        batch
    }

    /// Total time the consumer spent waiting for data.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Stops the thread and returns the source, whose reference stream continues from here.
    pub fn finish(mut self) -> BatchSource {
        drop(std::mem::replace(&mut self.rx, mpsc::sync_channel(1).1));
        self.handle
            .take()
            .expect("finish is called once")
            .join()
            .expect("the batch thread does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(n: usize, size: u32, base: u8) -> ImageCache {
        ImageCache::from_images(
            (0..n)
                .map(|i| RgbImage::from_pixel(size, size, image::Rgb([base, i as u8 * 10, 7])))
                .collect(),
        )
    }

    fn source(seed: u64) -> BatchSource {
        let config = BatchConfig {
            image_size: 16,
            batch_size: 12,
            n_ref: 2,
            ..Default::default()
        };
        BatchSource::new(config, cache(9, 16, 50), cache(3, 16, 200), seed).unwrap()
    }

    #[test]
    fn cutpaste_pseudo_anomalies_are_labelled_pseudo_and_change_the_image() {
        for pseudo in [PseudoKind::CpScar, PseudoKind::CpMix] {
            let config = BatchConfig {
                image_size: 32,
                batch_size: 12,
                n_ref: 2,
                rotation_degrees: 0.0,
                pseudo,
                ..Default::default()
            };
            let normals = ImageCache::from_images(
                (0..6)
                    .map(|i| {
                        RgbImage::from_fn(32, 32, |x, y| {
                            image::Rgb([(x * 8) as u8, (y * 8) as u8, i as u8 * 40])
                        })
                    })
                    .collect(),
            );
            let mut s = BatchSource::new(config, normals.clone(), cache(3, 32, 200), 4).unwrap();
            let b = s.next_batch(0).unwrap();
            let per = 3 * 32 * 32;
            let pseudo: Vec<usize> = (0..b.labels.len())
                .filter(|&i| b.labels[i] == Label::Pseudo)
                .collect();
            assert!(!pseudo.is_empty(), "{pseudo:?}");
            // A pseudo anomaly is no training normal as it is (the patch changed it).
            let plain: Vec<Vec<f32>> = normals
                .all()
                .unwrap()
                .iter()
                .map(|img| {
                    let mut v = vec![0f32; per];
                    normalize_into(img, &mut v);
                    v
                })
                .collect();
            for &i in &pseudo {
                let at = (b.n_ref + i) * per;
                let values = &b.images[at..at + per];
                assert!(
                    plain.iter().all(|p| p.as_slice() != values),
                    "{pseudo:?} slot {i}"
                );
            }
        }
    }

    #[test]
    fn balanced_layout_and_labels() {
        let mut s = source(1);
        assert_eq!(s.slot_counts(), (8, 4));
        let b = s.next_batch(0).unwrap();
        assert_eq!(b.len(), 14);
        assert_eq!(b.images.len(), 14 * 3 * 16 * 16);
        assert!(b.labels[..8].iter().all(|l| *l != Label::Anomaly));
        assert!(b.labels[8..].iter().all(|l| *l == Label::Anomaly));
    }

    #[test]
    fn pseudo_anomalies_appear_at_about_half_rate() {
        let mut s = source(2);
        let (mut pseudo, mut normal) = (0, 0);
        for step in 0..50 {
            for l in s.next_batch(step).unwrap().labels {
                match l {
                    Label::Pseudo => pseudo += 1,
                    Label::Normal => normal += 1,
                    Label::Anomaly => {}
                }
            }
        }
        let rate = pseudo as f64 / (pseudo + normal) as f64;
        assert!((0.4..0.6).contains(&rate), "pseudo rate {rate}");
    }

    #[test]
    fn outlier_exposure_replaces_cutmix() {
        // Outliers are a distinct colour: every pseudo anomaly must be one of them.
        let mut s = source(4).with_outliers(cache(2, 16, 123));
        let b = s.next_batch(0).unwrap();
        let plane = 3 * 16 * 16;
        let red = (123.0 / 255.0 - crate::transform::IMAGENET_MEAN[0])
            / crate::transform::IMAGENET_STD[0];
        let mut seen = 0;
        for (i, l) in b.labels.iter().enumerate() {
            if *l == Label::Pseudo {
                let img = &b.images[(b.n_ref + i) * plane..(b.n_ref + i + 1) * plane];
                // The centre pixel survives any rotation.
                let centre = img[8 * 16 + 8];
                assert!(
                    (centre - red).abs() < 1e-5,
                    "pseudo slot {i} is not an outlier"
                );
                seen += 1;
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn same_seed_same_batches_whatever_the_threads() {
        let a = source(7).next_batch(3).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| source(7).next_batch(3).unwrap());
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        let c = source(8).next_batch(3).unwrap();
        assert_ne!(a.images, c.images);
    }

    #[test]
    fn prefetcher_yields_every_step_in_order() {
        let mut direct = source(5);
        let expected: Vec<_> = (0..4)
            .map(|s| direct.next_batch(s).unwrap().images)
            .collect();
        let mut p = Prefetcher::spawn(source(5), 0..4, 2);
        for e in &expected {
            assert_eq!(&p.recv().unwrap().unwrap().images, e);
        }
        assert!(p.recv().is_none());
        p.finish();
    }

    #[test]
    fn a_source_that_skips_steps_goes_on_as_one_that_built_them() {
        // Over several passes of the sampling orders (9 normals: 2 references and 8 normal
        // slots a step; 3 anomalies: 4 slots a step).
        let mut built = source(9);
        for step in 0..7 {
            built.next_batch(step).unwrap();
        }
        let mut skipped = source(9);
        skipped.skip(7);
        let (a, b) = (built.next_batch(7).unwrap(), skipped.next_batch(7).unwrap());
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_eq!(
            built.next_references().unwrap(),
            skipped.next_references().unwrap()
        );
        // A source that skips too few is elsewhere.
        let mut short = source(9);
        short.skip(6);
        assert_ne!(short.next_batch(7).unwrap().images, a.images);
    }

    #[test]
    fn the_batches_do_not_depend_on_the_image_cache_budget() {
        // 12 normals of 40 px read at 16 px, in a cache of all of them and in one of 2.
        let dir = tempfile::tempdir().unwrap();
        let refs: Vec<crate::ImageRef> = (0..12)
            .map(|i| {
                let path = dir.path().join(format!("{i:02}.png"));
                RgbImage::from_fn(40, 40, |x, y| {
                    image::Rgb([(x * 6) as u8, (y * 6) as u8, i as u8 * 20])
                })
                .save(&path)
                .unwrap();
                crate::ImageRef::file(path)
            })
            .collect();
        let config = BatchConfig {
            image_size: 16,
            batch_size: 12,
            n_ref: 2,
            ..Default::default()
        };
        let make = |budget: usize| {
            let normals = ImageCache::load_within(&refs, 16, budget).unwrap();
            BatchSource::new(config.clone(), normals, cache(3, 16, 200), 4).unwrap()
        };
        let (mut all, mut two) = (make(usize::MAX), make(2 * crate::image_bytes(16)));
        for step in 0..6 {
            let (a, b) = (all.next_batch(step).unwrap(), two.next_batch(step).unwrap());
            assert_eq!(a.images, b.images, "step {step}");
            assert_eq!(a.labels, b.labels, "step {step}");
        }
        assert_eq!(
            all.next_references().unwrap(),
            two.next_references().unwrap()
        );
        assert_eq!(two.normals.capacity(), 2);
        assert!(two.normals.misses() > 0);
    }
}
