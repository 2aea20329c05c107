//! The embedded default data set: small synthetic categories in the MVTec AD layout, drawn
//! deterministically from a seed, so that every command works on a fresh clone with no download.
//!
//! Two textures and one object, each with several defect classes that differ in shape and
//! colour, so that the general and the hard setting are both meaningful. Every defect image has
//! its pixel mask (`ground_truth/<class>/<name>_mask.png`, 0 or 255: the pixels the defect
//! changed), so that localisation metrics can be computed on the default data too.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{DataError, Result};

/// The categories and their defect classes.
pub const CATEGORIES: &[(&str, &[&str])] = &[
    ("weave", &["hole", "scratch", "stain"]),
    ("granite", &["crack", "spot", "scratch"]),
    ("washer", &["dent", "stain", "scratch"]),
];

/// How much to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Side of the square images, in pixels.
    pub image_size: u32,
    /// Normal training images per category (`train/good`).
    pub n_train: usize,
    /// Normal test images per category (`test/good`).
    pub n_test_good: usize,
    /// Test images per defect class (`test/<defect>`).
    pub n_per_defect: usize,
    /// Seed of every image drawn; the same seed writes the same files.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            image_size: 96,
            n_train: 80,
            n_test_good: 20,
            n_per_defect: 12,
            seed: 0,
        }
    }
}

/// The names of the categories, for command-line help and sweeps.
pub fn category_names() -> Vec<&'static str> {
    CATEGORIES.iter().map(|(n, _)| *n).collect()
}

/// Generates the categories under `root` unless each is already there. A category is written to
/// a temporary folder and renamed into place, so an interrupted run never leaves half of one.
pub fn ensure(root: &Path, spec: &SyntheticSpec) -> Result<Vec<PathBuf>> {
    CATEGORIES
        .iter()
        .map(|(name, _)| ensure_category(root, name, spec))
        .collect()
}

/// [`ensure`] for one category (`name`, one of [`category_names`]): for data sets of one large
/// category (the memory benchmark's 50,000 training images).
pub fn ensure_category(root: &Path, name: &str, spec: &SyntheticSpec) -> Result<PathBuf> {
    let Some(index) = CATEGORIES.iter().position(|(n, _)| *n == name) else {
        return Err(DataError::InvalidOption {
            flag: "--dataset",
            message: format!(
                "unknown synthetic category `{name}`; valid: {}",
                category_names().join(", ")
            ),
        });
    };
    let defects = CATEGORIES[index].1;
    fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
    let dir = root.join(name);
    if !dir.is_dir() {
        // A folder of this writer's own (process and thread), so that concurrent writers
        // (parallel tests, two sweeps) never touch each other's half-written category.
        static WRITER: AtomicU64 = AtomicU64::new(0);
        let tmp = root.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            WRITER.fetch_add(1, Ordering::Relaxed)
        ));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        }
        write_category(&tmp, index as u64, defects, spec)?;
        if let Err(e) = fs::rename(&tmp, &dir) {
            // Another writer got there first: its category is the same, keep it.
            let _ = fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(DataError::io(&dir, e));
            }
        }
    } else if !dir.join(MASKS).is_dir() {
        // A category written before the masks existed: the images are the same (same
        // seeds), so only the masks are added, through a temporary folder as above.
        add_masks(&dir, index as u64, defects, spec)?;
    }
    Ok(dir)
}

/// The masks' folder in a category, as in MVTec AD.
const MASKS: &str = "ground_truth";

/// Writes `ground_truth/` into an existing category `dir` atomically (renamed into place).
fn add_masks(dir: &Path, index: u64, defects: &[&str], spec: &SyntheticSpec) -> Result<()> {
    static WRITER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{MASKS}.tmp-{}-{}",
        std::process::id(),
        WRITER.fetch_add(1, Ordering::Relaxed)
    ));
    for (d, defect) in defects.iter().enumerate() {
        for i in 0..spec.n_per_defect {
            let (_, mask) = defect_image(index, d, defect, i, spec);
            save_png(&tmp.join(defect), &format!("{i:03}_mask.png"), &mask)?;
        }
    }
    let target = dir.join(MASKS);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_dir_all(&tmp);
        if !target.is_dir() {
            return Err(DataError::io(&target, e));
        }
    }
    Ok(())
}

/// Saves `img` as `folder/name` (PNG), creating the folder.
fn save_png<P, C>(folder: &Path, name: &str, img: &image::ImageBuffer<P, C>) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    fs::create_dir_all(folder).map_err(|e| DataError::io(folder, e))?;
    let path = folder.join(name);
    img.save_with_format(&path, image::ImageFormat::Png)
        .map_err(|e| DataError::BadImage {
            path: path.clone(),
            reason: e.to_string(),
        })
}

/// The seed of image `i` of part `part` (0 train, 1 test/good, 2 + d defect class d) of
/// category `index`.
fn rng_for(spec: &SyntheticSpec, index: u64, part: u64, i: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        spec.seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index * 7_919 + part * 104_729 + i as u64),
    )
}

/// Defect image `i` of class `defect` (the `d`-th) and its mask: 255 where the drawing
/// changed the normal image it was drawn on.
fn defect_image(
    index: u64,
    d: usize,
    defect: &str,
    i: usize,
    spec: &SyntheticSpec,
) -> (RgbImage, GrayImage) {
    let mut rng = rng_for(spec, index, 2 + d as u64, i);
    let normal = base(index, spec.image_size, &mut rng);
    let mut img = normal.clone();
    draw_defect(&mut img, index, defect, &mut rng);
    let mask = GrayImage::from_fn(img.width(), img.height(), |x, y| {
        Luma([if img.get_pixel(x, y) == normal.get_pixel(x, y) {
            0
        } else {
            255
        }])
    });
    (img, mask)
}

fn write_category(dir: &Path, index: u64, defects: &[&str], spec: &SyntheticSpec) -> Result<()> {
    let name = |i: usize| format!("{i:03}.png");
    let size = spec.image_size;
    // In parallel: each image is drawn from its own seed, so the files are the same.
    (0..spec.n_train).into_par_iter().try_for_each(|i| {
        let img = base(index, size, &mut rng_for(spec, index, 0, i));
        save_png(&dir.join("train/good"), &name(i), &img)
    })?;
    for i in 0..spec.n_test_good {
        let img = base(index, size, &mut rng_for(spec, index, 1, i));
        save_png(&dir.join("test/good"), &name(i), &img)?;
    }
    for (d, defect) in defects.iter().enumerate() {
        for i in 0..spec.n_per_defect {
            let (img, mask) = defect_image(index, d, defect, i, spec);
            save_png(&dir.join("test").join(defect), &name(i), &img)?;
            let masks = dir.join(MASKS).join(defect);
            save_png(&masks, &format!("{i:03}_mask.png"), &mask)?;
        }
    }
    Ok(())
}

/// A normal image of category `index`.
fn base(index: u64, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    match index {
        0 => weave(size, rng),
        1 => granite(size, rng),
        _ => washer(size, rng),
    }
}

fn jitter(rng: &mut ChaCha8Rng, amount: f32) -> f32 {
    rng.random_range(-amount..=amount)
}

/// Smooth value noise in [0, 1] on a `cells × cells` grid, bilinearly interpolated.
fn value_noise(size: u32, cells: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let grid: Vec<f32> = (0..(cells + 1) * (cells + 1))
        .map(|_| rng.random())
        .collect();
    let mut out = Vec::with_capacity((size * size) as usize);
    for y in 0..size {
        for x in 0..size {
            let gx = x as f32 / size as f32 * cells as f32;
            let gy = y as f32 / size as f32 * cells as f32;
            let (ix, iy) = (gx as usize, gy as usize);
            let (fx, fy) = (gx - ix as f32, gy - iy as f32);
            let at = |i: usize, j: usize| grid[j * (cells + 1) + i];
            let top = at(ix, iy) * (1.0 - fx) + at(ix + 1, iy) * fx;
            let bottom = at(ix, iy + 1) * (1.0 - fx) + at(ix + 1, iy + 1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// A woven fabric: two crossing sinusoidal thread patterns in beige, with fibre noise.
fn weave(size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let period = 6.0 + jitter(rng, 0.6);
    let phase = rng.random_range(0.0..std::f32::consts::TAU);
    let tint = jitter(rng, 8.0);
    let noise = value_noise(size, 24, rng);
    RgbImage::from_fn(size, size, |x, y| {
        let t = std::f32::consts::TAU / period;
        let warp = (x as f32 * t + phase).sin();
        let weft = (y as f32 * t + phase).sin();
        let v = 0.5 + 0.25 * warp.max(weft) + 0.25 * noise[(y * size + x) as usize];
        Rgb([
            to_u8(190.0 * v + tint + 30.0),
            to_u8(165.0 * v + tint + 25.0),
            to_u8(120.0 * v + tint + 20.0),
        ])
    })
}

/// A speckled grey stone surface.
fn granite(size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let coarse = value_noise(size, 6, rng);
    let fine = value_noise(size, 32, rng);
    let tint = jitter(rng, 6.0);
    RgbImage::from_fn(size, size, |x, y| {
        let i = (y * size + x) as usize;
        let v = 90.0 + 60.0 * coarse[i] + 50.0 * fine[i] + tint;
        Rgb([to_u8(v + 6.0), to_u8(v), to_u8(v - 4.0)])
    })
}

/// A metal washer: a bright ring on a dark background, slightly off centre.
fn washer(size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let s = size as f32;
    let (cx, cy) = (
        s / 2.0 + jitter(rng, s * 0.04),
        s / 2.0 + jitter(rng, s * 0.04),
    );
    let outer = s * (0.36 + jitter(rng, 0.01));
    let inner = outer * 0.45;
    let noise = value_noise(size, 16, rng);
    RgbImage::from_fn(size, size, |x, y| {
        let r = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        let n = noise[(y * size + x) as usize];
        if r > inner && r < outer {
            let shade = 170.0 + 50.0 * n - 30.0 * ((r - inner) / (outer - inner));
            Rgb([to_u8(shade), to_u8(shade + 4.0), to_u8(shade + 10.0)])
        } else {
            let v = 30.0 + 20.0 * n;
            Rgb([to_u8(v), to_u8(v), to_u8(v + 5.0)])
        }
    })
}

fn blend_px(img: &mut RgbImage, x: i64, y: i64, colour: [f32; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let px = img.get_pixel_mut(x as u32, y as u32);
    for c in 0..3 {
        px[c] = to_u8(px[c] as f32 * (1.0 - alpha) + colour[c] * alpha);
    }
}

fn disc(img: &mut RgbImage, cx: f32, cy: f32, r: f32, colour: [f32; 3], alpha: f32) {
    let r2 = r * r;
    for y in (cy - r).floor() as i64..=(cy + r).ceil() as i64 {
        for x in (cx - r).floor() as i64..=(cx + r).ceil() as i64 {
            let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
            if d2 <= r2 {
                blend_px(img, x, y, colour, alpha * (1.0 - 0.3 * d2 / r2));
            }
        }
    }
}

/// A thick line segment from `(x0, y0)` in direction `angle`.
#[allow(clippy::too_many_arguments)]
fn line(img: &mut RgbImage, x0: f32, y0: f32, angle: f32, len: f32, width: f32, colour: [f32; 3]) {
    let steps = (len * 2.0) as usize;
    for i in 0..=steps {
        let t = i as f32 / 2.0;
        disc(
            img,
            x0 + t * angle.cos(),
            y0 + t * angle.sin(),
            width / 2.0,
            colour,
            0.9,
        );
    }
}

/// Draws one defect of the given class at a random place.
fn draw_defect(img: &mut RgbImage, index: u64, defect: &str, rng: &mut ChaCha8Rng) {
    let s = img.width() as f32;
    // Objects keep their defects on the part; textures anywhere away from the border.
    let (cx, cy) = if index == 2 {
        let a = rng.random_range(0.0..std::f32::consts::TAU);
        let r = s * rng.random_range(0.2..0.3);
        (s / 2.0 + r * a.cos(), s / 2.0 + r * a.sin())
    } else {
        (
            s * rng.random_range(0.25..0.75),
            s * rng.random_range(0.25..0.75),
        )
    };
    let angle = rng.random_range(0.0..std::f32::consts::PI);
    match defect {
        "hole" => disc(
            img,
            cx,
            cy,
            s * rng.random_range(0.06..0.09),
            [15.0, 12.0, 10.0],
            1.0,
        ),
        "dent" => disc(
            img,
            cx,
            cy,
            s * rng.random_range(0.07..0.1),
            [30.0, 30.0, 35.0],
            1.0,
        ),
        "stain" | "spot" => {
            let colour = [
                rng.random_range(120.0..200.0),
                rng.random_range(20.0..80.0),
                rng.random_range(20.0..60.0),
            ];
            let r = s * rng.random_range(0.06..0.1);
            for _ in 0..4 {
                let (dx, dy) = (jitter(rng, r * 0.6), jitter(rng, r * 0.6));
                disc(img, cx + dx, cy + dy, r * 0.7, colour, 0.8);
            }
        }
        "scratch" => {
            let len = s * rng.random_range(0.3..0.45);
            let (x0, y0) = (cx - len / 2.0 * angle.cos(), cy - len / 2.0 * angle.sin());
            line(img, x0, y0, angle, len, s * 0.045, [245.0, 245.0, 240.0]);
        }
        "crack" => {
            let (mut x, mut y, mut a) = (cx, cy, angle);
            for _ in 0..5 {
                let len = s * rng.random_range(0.06..0.1);
                line(img, x, y, a, len, s * 0.03, [20.0, 18.0, 16.0]);
                x += len * a.cos();
                y += len * a.sin();
                a += jitter(rng, 0.7);
            }
        }
        other => unreachable!("no drawing for defect class {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Category;

    #[test]
    fn generates_mvtec_layout_deterministically() {
        let spec = SyntheticSpec {
            image_size: 32,
            n_train: 3,
            n_test_good: 2,
            n_per_defect: 2,
            seed: 5,
        };
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = ensure(a.path(), &spec).unwrap();
        ensure(b.path(), &spec).unwrap();
        assert_eq!(dirs.len(), CATEGORIES.len());
        for (name, defects) in CATEGORIES {
            let cat = Category::open(a.path().join(name), crate::OnUnreadable::Error).unwrap();
            assert_eq!(cat.train_good.len(), 3);
            assert_eq!(cat.test_good.len(), 2);
            assert_eq!(cat.defect_classes(), {
                let mut d = defects.to_vec();
                d.sort();
                d
            });
            let rel = Path::new("test").join(defects[0]).join("001.png");
            let x = fs::read(a.path().join(name).join(&rel)).unwrap();
            let y = fs::read(b.path().join(name).join(&rel)).unwrap();
            assert_eq!(x, y, "same seed must give the same files");
        }
        // Existing categories are kept as they are.
        ensure(a.path(), &spec).unwrap();
    }

    #[test]
    fn every_defect_image_has_a_mask_of_what_changed() {
        let spec = SyntheticSpec {
            image_size: 32,
            n_train: 1,
            n_test_good: 1,
            n_per_defect: 2,
            seed: 1,
        };
        let root = tempfile::tempdir().unwrap();
        ensure(root.path(), &spec).unwrap();
        for (index, (name, defects)) in CATEGORIES.iter().enumerate() {
            for (d, defect) in defects.iter().enumerate() {
                let path = root
                    .path()
                    .join(name)
                    .join("ground_truth")
                    .join(defect)
                    .join("001_mask.png");
                let mask = image::open(&path).unwrap().to_luma8();
                let on = mask.pixels().filter(|p| p[0] == 255).count();
                assert!(
                    on > 0 && on < 32 * 32 / 2,
                    "{}: {on} pixels",
                    path.display()
                );
                assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
                // Outside the mask the defect image is the normal image it was drawn on.
                let img = image::open(
                    root.path()
                        .join(name)
                        .join("test")
                        .join(defect)
                        .join("001.png"),
                )
                .unwrap()
                .to_rgb8();
                let normal = base(
                    index as u64,
                    32,
                    &mut rng_for(&spec, index as u64, 2 + d as u64, 1),
                );
                for (x, y, m) in mask.enumerate_pixels() {
                    assert_eq!(m[0] == 0, img.get_pixel(x, y) == normal.get_pixel(x, y));
                }
            }
        }
        // A category written before masks existed gets them, the same files.
        let weave = root.path().join("weave");
        let mask = weave.join("ground_truth/hole/000_mask.png");
        let before = fs::read(&mask).unwrap();
        fs::remove_dir_all(weave.join("ground_truth")).unwrap();
        ensure(root.path(), &spec).unwrap();
        assert_eq!(fs::read(&mask).unwrap(), before);
        assert!(fs::read_dir(&weave).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.')));
    }

    #[test]
    fn concurrent_writers_all_see_whole_categories() {
        let spec = SyntheticSpec {
            image_size: 16,
            n_train: 4,
            n_test_good: 2,
            n_per_defect: 1,
            seed: 1,
        };
        let root = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| ensure(root.path(), &spec).unwrap());
            }
        });
        for (name, _) in CATEGORIES {
            assert_eq!(
                Category::open(root.path().join(name), crate::OnUnreadable::Error)
                    .unwrap()
                    .train_good
                    .len(),
                4
            );
        }
        let leftovers: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn defects_change_the_image() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (index, (_, defects)) in CATEGORIES.iter().enumerate() {
            for defect in *defects {
                let img = base(index as u64, 64, &mut rng);
                let mut bad = img.clone();
                draw_defect(&mut bad, index as u64, defect, &mut rng);
                let changed = img
                    .pixels()
                    .zip(bad.pixels())
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(changed > 40, "{defect} changed only {changed} pixels");
            }
        }
    }
}
