//! Pseudo anomalies, made from a normal image: the official CutMix (`datasets/cutmix.py`),
//! CutPaste's scar, and the choice between them that `--pseudo` makes ([`PseudoKind`]). The
//! geometry and colour jitter they use are the pipeline's, in `transform`.

use image::{Rgb, RgbImage};
use rand::Rng;

use crate::transform::ColorJitter;

/// The official pseudo-anomaly generator (`datasets/cutmix.py`): a rectangle of random area and
/// aspect is cut from the image, colour-jittered, and pasted back at a random place.
#[derive(Clone, Copy, Debug)]
pub struct CutMix {
    /// Patch area as a fraction of the image, drawn uniformly in this range.
    pub area_ratio: (f64, f64),
    /// Patch aspect ratio drawn log-uniformly in `[aspect, 1 / aspect]`.
    pub aspect_ratio: f64,
    /// Colour jitter applied to the patch before it is pasted (official: 0.1 for all four).
    pub jitter: ColorJitter,
}

impl Default for CutMix {
    fn default() -> Self {
        Self {
            area_ratio: (0.02, 0.15),
            aspect_ratio: 0.3,
            jitter: ColorJitter::uniform(0.1),
        }
    }
}

impl CutMix {
    /// A pseudo anomaly: a copy of `img` with a jittered patch of itself pasted in, drawn from
    /// `rng`.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.paste(img, rng).0
    }

    /// [`CutMix::apply`], and the rectangle `(x, y, w, h)` the patch was pasted into.
    pub fn paste<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> (RgbImage, (u32, u32, u32, u32)) {
        self.paste_from(img, img, rng)
    }

    /// [`CutMix::paste`] with the patch cut from `source` (an image of `img`'s size) rather
    /// than from `img` itself: the cross-image CutMix that AHL uses as one of its generators.
    /// With `source` = `img` it is `paste`, draw for draw.
    pub fn paste_from<R: Rng>(
        &self,
        img: &RgbImage,
        source: &RgbImage,
        rng: &mut R,
    ) -> (RgbImage, (u32, u32, u32, u32)) {
        assert_eq!(
            img.dimensions(),
            source.dimensions(),
            "CutMix cuts its patch from an image of the same size"
        );
        let (w, h) = (img.width() as f64, img.height() as f64);
        let area = rng.random_range(self.area_ratio.0..=self.area_ratio.1) * w * h;
        let (lo, hi) = (self.aspect_ratio.ln(), (1.0 / self.aspect_ratio).ln());
        let aspect = rng.random_range(lo..=hi).exp();
        // Python's round() rounds half to even.
        let cut_w = ((area * aspect).sqrt().round_ties_even() as u32).clamp(1, img.width());
        let cut_h = ((area / aspect).sqrt().round_ties_even() as u32).clamp(1, img.height());
        let mut pick = |limit: u32, size: u32| rng.random_range(0.0..=(limit - size) as f64) as u32;
        let (from_x, from_y) = (pick(img.width(), cut_w), pick(img.height(), cut_h));
        let mut patch = image::imageops::crop_imm(source, from_x, from_y, cut_w, cut_h).to_image();
        self.jitter.apply(&mut patch, rng);
        let (to_x, to_y) = (
            rng.random_range(0.0..=(img.width() - cut_w) as f64) as u32,
            rng.random_range(0.0..=(img.height() - cut_h) as f64) as u32,
        );
        let mut out = img.clone();
        image::imageops::replace(&mut out, &patch, to_x as i64, to_y as i64);
        (out, (to_x, to_y, cut_w, cut_h))
    }
}

/// CutPaste-Scar (Li et al., "CutPaste", CVPR 2021, §3.1): a thin rectangle (`width` × `height`
/// pixels, drawn uniformly) is cut from a random place, colour-jittered, rotated by an angle
/// drawn uniformly in `rotation` degrees (the canvas grown to hold it, nearest sampling, the
/// corners outside the rotated patch left transparent) and pasted at a random place. Sizes
/// are in pixels of the image as given, as CutPaste defines them; a patch larger than the
/// image is clipped to it.
#[derive(Clone, Copy, Debug)]
pub struct CutPasteScar {
    /// Patch width range in pixels (CutPaste: 2 to 16).
    pub width: (f64, f64),
    /// Patch height range in pixels (CutPaste: 10 to 25).
    pub height: (f64, f64),
    /// Rotation range in degrees (CutPaste: −45 to 45).
    pub rotation: (f64, f64),
    /// Colour jitter of the patch (CutPaste: 0.1 for all four).
    pub jitter: ColorJitter,
}

impl Default for CutPasteScar {
    fn default() -> Self {
        Self {
            width: (2.0, 16.0),
            height: (10.0, 25.0),
            rotation: (-45.0, 45.0),
            jitter: ColorJitter::uniform(0.1),
        }
    }
}

impl CutPasteScar {
    /// A pseudo anomaly: a copy of `img` with a rotated, jittered scar of itself pasted in.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.paste(img, rng).0
    }

    /// [`CutPasteScar::apply`], and the bounding box `(x, y, w, h)` of the pasted scar: no
    /// pixel outside it changes.
    pub fn paste<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> (RgbImage, (u32, u32, u32, u32)) {
        let (w, h) = img.dimensions();
        let cut_w = (rng.random_range(self.width.0..=self.width.1) as u32).clamp(1, w);
        let cut_h = (rng.random_range(self.height.0..=self.height.1) as u32).clamp(1, h);
        let from_x = rng.random_range(0.0..=(w - cut_w) as f64) as u32;
        let from_y = rng.random_range(0.0..=(h - cut_h) as f64) as u32;
        let mut patch = image::imageops::crop_imm(img, from_x, from_y, cut_w, cut_h).to_image();
        self.jitter.apply(&mut patch, rng);
        let angle = rng.random_range(self.rotation.0..=self.rotation.1);
        let (rotated, inside) = rotate_expand(&patch, angle);
        let (rw, rh) = (rotated.width().min(w), rotated.height().min(h));
        let to_x = rng.random_range(0.0..=(w - rw) as f64) as u32;
        let to_y = rng.random_range(0.0..=(h - rh) as f64) as u32;
        let mut out = img.clone();
        for y in 0..rh {
            for x in 0..rw {
                if inside[(y * rotated.width() + x) as usize] {
                    out.put_pixel(to_x + x, to_y + y, *rotated.get_pixel(x, y));
                }
            }
        }
        (out, (to_x, to_y, rw, rh))
    }
}

/// `img` rotated counter-clockwise by `degrees` about its centre onto a canvas that holds all
/// of it (PIL's `rotate(expand=True)`, nearest sampling), and which canvas pixels the image
/// covers.
fn rotate_expand(img: &RgbImage, degrees: f64) -> (RgbImage, Vec<bool>) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (sin, cos) = degrees.to_radians().sin_cos();
    // Less a hair, so that cos 90° ≈ 6e-17 does not add a column.
    let out_w = (w * cos.abs() + h * sin.abs() - 1e-9).ceil().max(1.0) as u32;
    let out_h = (w * sin.abs() + h * cos.abs() - 1e-9).ceil().max(1.0) as u32;
    let mut inside = vec![false; (out_w * out_h) as usize];
    let out = RgbImage::from_fn(out_w, out_h, |x, y| {
        // The output pixel's centre relative to the canvas centre, turned back by the angle
        // (image y points down, so a counter-clockwise turn on screen is clockwise in maths).
        let dx = x as f64 + 0.5 - out_w as f64 / 2.0;
        let dy = y as f64 + 0.5 - out_h as f64 / 2.0;
        let sx = cos * dx - sin * dy + w / 2.0;
        let sy = sin * dx + cos * dy + h / 2.0;
        if sx >= 0.0 && sy >= 0.0 && sx < w && sy < h {
            inside[(y * out_w + x) as usize] = true;
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            Rgb([0, 0, 0])
        }
    });
    (out, inside)
}

/// Where pseudo anomalies come from (`--pseudo`): the paper's Table 4 compares them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PseudoKind {
    /// The official generator ([`CutMix`], CutPaste's "normal" variant): the default.
    #[default]
    Cutmix,
    /// [`CutPasteScar`].
    CpScar,
    /// CutPaste's union of the two: a fair coin picks [`CutMix`] or [`CutPasteScar`] for each
    /// pseudo anomaly.
    CpMix,
}

impl PseudoKind {
    /// Every kind, in `--help` order.
    pub const ALL: [Self; 3] = [Self::Cutmix, Self::CpScar, Self::CpMix];

    /// The name `--pseudo` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cutmix => "cutmix",
            Self::CpScar => "cp-scar",
            Self::CpMix => "cp-mix",
        }
    }

    /// Whether this is the official generator (left out of records at its default).
    pub fn is_default(&self) -> bool {
        *self == Self::Cutmix
    }

    /// A pseudo anomaly made from `img`.
    pub fn apply<R: Rng>(self, img: &RgbImage, rng: &mut R) -> RgbImage {
        match self {
            Self::Cutmix => CutMix::default().apply(img, rng),
            Self::CpScar => CutPasteScar::default().apply(img, rng),
            Self::CpMix => {
                if rng.random_bool(0.5) {
                    CutMix::default().apply(img, rng)
                } else {
                    CutPasteScar::default().apply(img, rng)
                }
            }
        }
    }
}

impl std::fmt::Display for PseudoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PseudoKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown pseudo-anomaly source `{s}`; valid: cutmix, cp-scar, cp-mix")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tests::pattern;
    use rand::SeedableRng;

    /// The pixels of `out` that differ from `img`.
    fn changed(img: &RgbImage, out: &RgbImage) -> Vec<(u32, u32)> {
        img.enumerate_pixels()
            .filter(|(x, y, p)| out.get_pixel(*x, *y) != *p)
            .map(|(x, y, _)| (x, y))
            .collect()
    }

    fn within((x, y): (u32, u32), (rx, ry, rw, rh): (u32, u32, u32, u32)) -> bool {
        x >= rx && y >= ry && x < rx + rw && y < ry + rh
    }

    #[test]
    fn cutpaste_variants_change_only_the_pasted_patch() {
        let img = pattern(64, 64);
        for seed in 0..40 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (out, rect) = CutMix::default().paste(&img, &mut rng);
            assert!(rect.0 + rect.2 <= 64 && rect.1 + rect.3 <= 64, "{rect:?}");
            assert!(changed(&img, &out).iter().all(|&p| within(p, rect)));
            // The scar: at most 16 × 25 before its turn of at most 45°, inside the image.
            let (out, rect) = CutPasteScar::default().paste(&img, &mut rng);
            assert!(rect.0 + rect.2 <= 64 && rect.1 + rect.3 <= 64, "{rect:?}");
            let bound = ((16.0 + 25.0) * std::f64::consts::FRAC_1_SQRT_2).ceil() as u32;
            assert!(rect.2 <= bound && rect.3 <= bound, "{rect:?}");
            let diff = changed(&img, &out);
            assert!(!diff.is_empty(), "seed {seed}: the scar changed nothing");
            assert!(diff.iter().all(|&p| within(p, rect)), "seed {seed}");
            assert!(diff.len() <= (rect.2 * rect.3) as usize);
        }
        // A patch larger than the image is clipped to it, never out of bounds.
        let tiny = pattern(8, 8);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (_, rect) = CutPasteScar::default().paste(&tiny, &mut rng);
        assert!(rect.0 + rect.2 <= 8 && rect.1 + rect.3 <= 8, "{rect:?}");
    }

    #[test]
    fn cp_mix_is_a_fair_coin_between_the_two() {
        let img = pattern(48, 48);
        let mut kinds = [0; 2];
        for seed in 0..40 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let out = PseudoKind::CpMix.apply(&img, &mut rng);
            let mut replay = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let cutmix = replay.random_bool(0.5);
            let want = if cutmix {
                CutMix::default().apply(&img, &mut replay)
            } else {
                CutPasteScar::default().apply(&img, &mut replay)
            };
            assert_eq!(out, want);
            kinds[cutmix as usize] += 1;
        }
        assert!(kinds[0] > 5 && kinds[1] > 5, "{kinds:?}");
        // cutmix is the official generator, draw for draw.
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        assert_eq!(
            PseudoKind::Cutmix.apply(&img, &mut a),
            CutMix::default().apply(&img, &mut b)
        );
        assert_eq!("cp-scar".parse::<PseudoKind>(), Ok(PseudoKind::CpScar));
        assert!("scar".parse::<PseudoKind>().unwrap_err().contains("cp-mix"));
    }

    #[test]
    fn rotation_with_expansion_keeps_every_pixel() {
        let img = pattern(6, 10);
        let (same, inside) = rotate_expand(&img, 0.0);
        assert_eq!(same, img);
        assert!(inside.iter().all(|i| *i));
        let (turned, inside) = rotate_expand(&img, 90.0);
        assert_eq!(turned.dimensions(), (10, 6));
        assert!(inside.iter().all(|i| *i));
        // Counter-clockwise: the top-right corner goes to the top-left.
        assert_eq!(turned.get_pixel(0, 0), img.get_pixel(5, 0));
        let (_, inside) = rotate_expand(&img, 45.0);
        let covered = inside.iter().filter(|i| **i).count();
        assert!(
            (50..=70).contains(&covered),
            "{covered} pixels for a 60-pixel patch"
        );
    }

    /// Cross-image CutMix pastes a patch of the other image, inside its rectangle only; from
    /// the image itself it is `paste`, draw for draw.
    #[test]
    fn cutmix_from_another_image_pastes_that_image_inside_the_patch() {
        let img = pattern(48, 40);
        // A flat source: every pasted pixel is a jittered copy of this one colour.
        let source = RgbImage::from_pixel(48, 40, Rgb([200, 20, 20]));
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (out, rect) = CutMix::default().paste_from(&img, &source, &mut rng);
            assert!(rect.0 + rect.2 <= 48 && rect.1 + rect.3 <= 40, "{rect:?}");
            assert!(changed(&img, &out).iter().all(|&p| within(p, rect)));
            let first = *out.get_pixel(rect.0, rect.1);
            for y in rect.1..rect.1 + rect.3 {
                for x in rect.0..rect.0 + rect.2 {
                    assert_eq!(*out.get_pixel(x, y), first, "seed {seed}: ({x}, {y})");
                }
            }
            let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            assert_eq!(
                CutMix::default().paste(&img, &mut a),
                CutMix::default().paste_from(&img, &img, &mut b)
            );
        }
    }

    #[test]
    fn cutmix_changes_one_rectangle_only() {
        let img = pattern(32, 32);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let out = CutMix::default().apply(&img, &mut rng);
        let changed: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(x, y, p)| out.get_pixel(*x, *y) != *p)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!changed.is_empty());
        let (x0, x1) = (
            changed.iter().map(|c| c.0).min().unwrap(),
            changed.iter().map(|c| c.0).max().unwrap(),
        );
        let (y0, y1) = (
            changed.iter().map(|c| c.1).min().unwrap(),
            changed.iter().map(|c| c.1).max().unwrap(),
        );
        let area = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64 / (32.0 * 32.0);
        assert!(area <= 0.2, "patch area {area}");
    }
}
