//! The training images at the training size, decoded and resized once, and kept in memory up to
//! a budget. The official pipeline resizes first and augments after, so a cached resized image
//! changes nothing; and since decoding and resizing are deterministic, an image decoded again
//! because it was not held is the same bytes: the batches, and so the results, do not depend
//! on the budget. Only the time does, where the data does not fit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use image::RgbImage;
use rayon::prelude::*;

use crate::datasets::decode::load_rgb;
use crate::error::Result;
use crate::sample::ImageRef;
use crate::transform::resize_bilinear;

/// Images of one set (the training normals, the labelled anomalies, outlier images) at the
/// training size: every one held in memory when they fit the budget, else as many as fit (the
/// first ones), the others decoded again each time they are used. Cheap to clone (shared).
///
/// Not a least-recently-used cache: training visits the images in fresh random permutations,
/// under which an LRU cache smaller than the set keeps almost nothing it is asked for again,
/// while a fixed share of the set is hit in that share of the visits.
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where each image is read from (empty for images given in memory).
    images: Vec<ImageRef>,
    /// The side the images are resized to.
    size: u32,
    /// The images held: all of them, or the first ones.
    held: Vec<Arc<RgbImage>>,
    /// Images decoded again because they were not held.
    misses: AtomicU64,
}

/// Bytes an image of side `size` takes in memory (8-bit RGB).
pub fn image_bytes(size: u32) -> usize {
    3 * size as usize * size as usize
}

/// Files checked (decoded) per parallel wave, and dropped, while loading the part of a set that
/// is not held.
const WAVE: usize = 256;

impl ImageCache {
    /// Decodes, cuts and resizes `images` in parallel and holds them all; the first unreadable
    /// file is the error.
    pub fn load(images: &[ImageRef], size: u32) -> Result<Self> {
        Self::load_within(images, size, usize::MAX)
    }

    /// As [`ImageCache::load`] within `budget` bytes: where the images do not fit, each one is
    /// still decoded now (so that an unreadable file stops the run here, before training, as
    /// when all are held), but only the first that fit stay (at least one); the others are
    /// decoded again when used.
    pub fn load_within(images: &[ImageRef], size: u32, budget: usize) -> Result<Self> {
        let capacity = (budget / image_bytes(size).max(1)).max(1);
        let resize = |img: RgbImage| Arc::new(resize_bilinear(&img, size, size));
        let held = if images.len() <= capacity {
            load_images(images, resize)?
        } else {
            let mut held = load_images(&images[..capacity], resize)?;
            // The rest a wave at a time, checked and dropped.
            for wave in images[capacity..].chunks(WAVE) {
                load_images(wave, |_| ())?;
            }
            held.shrink_to_fit();
            held
        };
        Ok(Self {
            inner: Arc::new(Inner {
                images: images.to_vec(),
                size,
                held,
                misses: AtomicU64::new(0),
            }),
        })
    }

    /// Images already decoded at their size, all held (tests, and callers that made them).
    pub fn from_images(images: Vec<RgbImage>) -> Self {
        let size = images.first().map_or(0, RgbImage::width);
        Self {
            inner: Arc::new(Inner {
                images: Vec::new(),
                size,
                held: images.into_iter().map(Arc::new).collect(),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// How many images the set has.
    pub fn len(&self) -> usize {
        self.inner.images.len().max(self.inner.held.len())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i`, from memory or decoded again. Fails only where a file that decoded when the
    /// set was loaded no longer does (changed or removed since), naming it.
    pub fn get(&self, i: usize) -> Result<Arc<RgbImage>> {
        if let Some(img) = self.inner.held.get(i) {
            return Ok(Arc::clone(img));
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let size = self.inner.size;
        let img = self.inner.images[i].load_rgb()?;
        Ok(Arc::new(resize_bilinear(&img, size, size)))
    }

    /// Every image, in order (decoding those not held): for a method that needs the whole set
    /// at once (AHL's feature cache).
    pub fn all(&self) -> Result<Vec<Arc<RgbImage>>> {
        (0..self.len())
            .into_par_iter()
            .map(|i| self.get(i))
            .collect()
    }

    /// How many images stay in memory: the whole set, or the budget's worth.
    pub fn capacity(&self) -> usize {
        self.inner.held.len()
    }

    /// Images decoded again since loading because they were not held.
    pub fn misses(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("len", &self.len())
            .field("size", &self.inner.size)
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// Reads `images` in parallel and maps each through `f`, in order. The rectangles of one file
/// (AITEX's sixteen tiles, SDD's thirds) are cut from a single decode of it; only `f`'s results
/// are kept, so whole files never pile up in memory.
pub fn load_images<T, F>(images: &[ImageRef], f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(RgbImage) -> T + Sync,
{
    // Group positions by file, in order of first appearance.
    let mut groups: Vec<(&Path, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<&Path, usize> = HashMap::new();
    for (i, image) in images.iter().enumerate() {
        let g = *group_of.entry(&image.path).or_insert_with(|| {
            groups.push((&image.path, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    let done = groups
        .par_iter()
        .map(|(path, positions)| -> Result<Vec<(usize, T)>> {
            if let [i] = positions[..] {
                return Ok(vec![(i, f(images[i].load_rgb()?))]);
            }
            let whole = load_rgb(path)?;
            positions
                .iter()
                .map(|&i| Ok((i, f(images[i].cut(&whole)?))))
                .collect()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out: Vec<Option<T>> = (0..images.len()).map(|_| None).collect();
    for (i, value) in done.into_iter().flatten() {
        out[i] = Some(value);
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every position belongs to one group"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::ImageRef;

    /// `n` distinct 20×20 PNGs in `dir`.
    fn files(dir: &Path, n: usize) -> Vec<ImageRef> {
        (0..n)
            .map(|i| {
                let path = dir.join(format!("{i:02}.png"));
                RgbImage::from_fn(20, 20, |x, y| image::Rgb([i as u8 * 9, x as u8, y as u8]))
                    .save(&path)
                    .unwrap();
                ImageRef::file(path)
            })
            .collect()
    }

    #[test]
    fn a_bounded_cache_gives_the_images_a_full_one_gives() {
        let dir = tempfile::tempdir().unwrap();
        let refs = files(dir.path(), 10);
        let all = ImageCache::load(&refs, 12).unwrap();
        assert_eq!((all.capacity(), all.len()), (10, 10));
        // Room for three images of 12×12.
        let some = ImageCache::load_within(&refs, 12, 3 * image_bytes(12) + 5).unwrap();
        assert_eq!((some.capacity(), some.len()), (3, 10));
        for pass in 0..2 {
            for i in (0..10).rev() {
                assert_eq!(*some.get(i).unwrap(), *all.get(i).unwrap(), "{pass} {i}");
            }
        }
        // Seven not held, each read twice.
        assert_eq!(some.misses(), 14);
        assert_eq!(all.misses(), 0);
        let every = some.all().unwrap();
        assert_eq!(every.len(), 10);
        assert!(every
            .iter()
            .zip(0..)
            .all(|(a, i)| **a == *all.get(i).unwrap()));
        // A budget below one image still holds one.
        assert_eq!(ImageCache::load_within(&refs, 12, 1).unwrap().capacity(), 1);
    }

    #[test]
    fn a_bad_file_stops_the_load_whatever_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut refs = files(dir.path(), 5);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"not a png").unwrap();
        refs.push(ImageRef::file(bad.clone()));
        for budget in [usize::MAX, image_bytes(12)] {
            let err = ImageCache::load_within(&refs, 12, budget)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("bad.png"), "{err}");
        }
        // A file that changes after loading is named when it is read again.
        let refs = files(dir.path(), 4);
        let some = ImageCache::load_within(&refs, 12, image_bytes(12)).unwrap();
        std::fs::write(&refs[3].path, b"gone bad").unwrap();
        let err = some.get(3).err().unwrap().to_string();
        assert!(err.contains("03.png"), "{err}");
    }
}
