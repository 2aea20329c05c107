//! The official image pipeline, written to match PIL and torchvision:
//! `Resize` (PIL bilinear with antialiasing), `RandomRotation(180)` (PIL nearest, fill 0),
//! CutMix with `ColorJitter(0.1, 0.1, 0.1, 0.1)`, `ToTensor` and ImageNet `Normalize`.

use image::{Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;

/// ImageNet statistics used by the official `Normalize`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// The matching per-channel standard deviations (RGB, on the `[0, 1]` scale of `ToTensor`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Fixed-point precision of PIL's 8-bit resampling (`PRECISION_BITS` in Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: the first input pixel, and the fixed-point weights of the input run.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
    kernel: usize,
}

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter, then `normalize_coeffs_8bpc`.
fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // The triangle filter's support is 1.
    let kernel = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * kernel];
    let mut k = vec![0f64; kernel];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates towards zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut sum = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(xmax) {
            let t = ((x + xmin) as f64 - center + 0.5) * ss;
            *w = (1.0 - t.abs()).max(0.0);
            sum += *w;
        }
        for (x, w) in k.iter().enumerate().take(xmax) {
            let w = if sum != 0.0 { w / sum } else { 0.0 };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * kernel + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        bounds,
        weights,
        kernel,
    }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes like PIL's `Image.resize((w, h), BILINEAR)`: a horizontal then a vertical pass of
/// antialiased triangle filtering in 8-bit fixed point, bit for bit.
pub fn resize_bilinear(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (sw, sh) = src.dimensions();
    if (sw, sh) == (width, height) {
        return src.clone();
    }
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass.
    let horizontal = if sw != width {
        let c = coefficients(sw as usize, width as usize);
        let mut out = RgbImage::new(width, sh);
        let src_raw = src.as_raw();
        let row_len = sw as usize * 3;
        for (y, row) in out.chunks_exact_mut(width as usize * 3).enumerate() {
            let src_row = &src_raw[y * row_len..(y + 1) * row_len];
            for (xx, px) in row.chunks_exact_mut(3).enumerate() {
                let (xmin, n) = c.bounds[xx];
                let w = &c.weights[xx * c.kernel..xx * c.kernel + n];
                for ch in 0..3 {
                    let mut acc = half;
                    for (i, &wi) in w.iter().enumerate() {
                        acc += src_row[(xmin + i) * 3 + ch] as i64 * wi as i64;
                    }
                    px[ch] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.clone()
    };
    if sh == height {
        return horizontal;
    }
    // Vertical pass.
    let c = coefficients(sh as usize, height as usize);
    let mut out = RgbImage::new(width, height);
    let raw = horizontal.as_raw();
    let row_len = width as usize * 3;
    for (yy, row) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, n) = c.bounds[yy];
        let w = &c.weights[yy * c.kernel..yy * c.kernel + n];
        for (i, v) in row.iter_mut().enumerate() {
            let mut acc = half;
            for (j, &wj) in w.iter().enumerate() {
                acc += raw[(ymin + j) * row_len + i] as i64 * wj as i64;
            }
            *v = clip8(acc);
        }
    }
    out
}

/// PIL's `Image.rotate(angle, NEAREST, expand=False, fillcolor=0)`: counter-clockwise for a
/// positive angle, about the image centre, corners filled with black.
pub fn rotate_nearest(src: &RgbImage, angle_deg: f64) -> RgbImage {
    let (w, h) = src.dimensions();
    let angle = angle_deg.rem_euclid(360.0);
    if angle == 0.0 {
        return src.clone();
    }
    let theta = -angle.to_radians();
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (a, b) = (round15(theta.cos()), round15(theta.sin()));
    let (d, e) = (round15(-theta.sin()), round15(theta.cos()));
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let c = a * -cx + b * -cy + cx;
    let f = d * -cx + e * -cy + cy;
    let mut out = RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
        let xin = a * xf + b * yf + c;
        let yin = d * xf + e * yf + f;
        if xin >= 0.0 && yin >= 0.0 && (xin as u32) < w && (yin as u32) < h {
            *px = *src.get_pixel(xin as u32, yin as u32);
        }
    }
    out
}

/// torchvision's `RandomRotation(degrees)` on a PIL image: an angle uniform in ±degrees.
pub fn random_rotation<R: Rng>(src: &RgbImage, degrees: f64, rng: &mut R) -> RgbImage {
    let angle = rng.random_range(-degrees..=degrees);
    rotate_nearest(src, angle)
}

/// PIL's `Image.blend(degenerate, img, factor)` for 8 bits: truncation, clamping outside [0, 1].
fn blend(img: &mut RgbImage, degenerate: impl Fn(usize) -> [u8; 3], factor: f32) {
    for (i, px) in img.pixels_mut().enumerate() {
        let d = degenerate(i);
        for ch in 0..3 {
            let v = d[ch] as f32 + factor * (px[ch] as f32 - d[ch] as f32);
            px[ch] = v.clamp(0.0, 255.0) as u8;
        }
    }
}

/// PIL's "L" conversion (ITU-R 601-2 luma, fixed point as in Convert.c).
fn luma(p: &Rgb<u8>) -> u8 {
    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)` on a PIL image: each
/// factor drawn uniformly, the four adjustments applied in a random order.
#[derive(Clone, Copy, Debug)]
pub struct ColorJitter {
    /// Brightness factor drawn in `[max(0, 1 − b), 1 + b]`.
    pub brightness: f32,
    /// Contrast factor drawn in `[max(0, 1 − c), 1 + c]`.
    pub contrast: f32,
    /// Saturation factor drawn in `[max(0, 1 − s), 1 + s]`.
    pub saturation: f32,
    /// Hue shift drawn in `[−h, h]`, as a fraction of the hue circle (at most 0.5).
    pub hue: f32,
}

impl ColorJitter {
    /// The same amount for all four adjustments, as the official `ColorJitter(a, a, a, a)`.
    pub fn uniform(amount: f32) -> Self {
        Self {
            brightness: amount,
            contrast: amount,
            saturation: amount,
            hue: amount,
        }
    }

    /// Jitters `img` in place, drawing the factors and their order from `rng`.
    pub fn apply<R: Rng>(&self, img: &mut RgbImage, rng: &mut R) {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let factor = |rng: &mut R, a: f32| rng.random_range((1.0 - a).max(0.0)..=1.0 + a);
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = rng.random_range(-self.hue..=self.hue);
        for op in order {
            match op {
                0 => blend(img, |_| [0, 0, 0], b),
                1 => {
                    let n = (img.width() * img.height()).max(1) as f64;
                    let mean = img.pixels().map(|p| luma(p) as f64).sum::<f64>() / n;
                    let m = (mean + 0.5) as u8;
                    blend(img, |_| [m, m, m], c)
                }
                2 => {
                    let grey: Vec<u8> = img.pixels().map(luma).collect();
                    blend(img, |i| [grey[i]; 3], s)
                }
                _ => adjust_hue(img, h),
            }
        }
    }
}

/// torchvision's PIL `adjust_hue`: shift the 8-bit HSV hue channel by `factor · 255`, wrapping.
fn adjust_hue(img: &mut RgbImage, factor: f32) {
    let shift = (factor * 255.0) as i32;
    for px in img.pixels_mut() {
        let [r, g, b] = px.0;
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let h = (h as i32 + shift).rem_euclid(256) as u8;
        px.0 = hsv_to_rgb(h, s, v);
    }
}

/// PIL's 8-bit RGB → HSV (Convert.c `rgb2hsv_row`).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    let v = maxc;
    if minc == maxc {
        return (0, 0, v);
    }
    let (rf, gf, bf, maxf, minf) = (r as f32, g as f32, b as f32, maxc as f32, minc as f32);
    let cr = maxf - minf;
    let s = cr / maxf;
    let rc = (maxf - rf) / cr;
    let gc = (maxf - gf) / cr;
    let bc = (maxf - bf) / cr;
    let mut h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    h = (h / 6.0).rem_euclid(1.0);
    ((h * 255.0) as u8, (s * 255.0).clamp(0.0, 255.0) as u8, v)
}

/// PIL's 8-bit HSV → RGB (Convert.c `hsv2rgb`).
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = h as f32 * 6.0 / 255.0;
    let sf = s as f32 / 255.0;
    let i = hf.floor() as i32;
    let f = hf - i as f32;
    let vf = v as f32;
    let p = (vf * (1.0 - sf)).round().clamp(0.0, 255.0) as u8;
    let q = (vf * (1.0 - sf * f)).round().clamp(0.0, 255.0) as u8;
    let t = (vf * (1.0 - sf * (1.0 - f))).round().clamp(0.0, 255.0) as u8;
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

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

/// `ToTensor` + `Normalize(IMAGENET_MEAN, IMAGENET_STD)` into `out`, channels first.
pub fn normalize_into(img: &RgbImage, out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer must hold 3×H×W values");
    for (i, px) in img.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * plane + i] = (px[ch] as f32 / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A deterministic test picture: p(x, y, c) = (37x + 91y + 53c + 11xy) mod 256.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((37 * x + 91 * y + 53 * c + 11 * x * y) % 256) as u8;
            Rgb([v(0), v(1), v(2)])
        })
    }

    fn hex(img: &RgbImage) -> String {
        img.as_raw().iter().map(|b| format!("{b:02x}")).collect()
    }

    // Expected bytes from Pillow 13: Image.fromarray(pattern).resize((w, h), Image.BILINEAR).
    #[test]
    fn resize_matches_pil_downscale() {
        let out = resize_bilinear(&pattern(13, 11), 5, 4);
        assert_eq!(
            hex(&out),
            include_str!("../tests/fixtures/pil_resize_13x11_to_5x4.hex").trim()
        );
    }

    #[test]
    fn resize_matches_pil_upscale() {
        let out = resize_bilinear(&pattern(6, 5), 9, 8);
        assert_eq!(
            hex(&out),
            include_str!("../tests/fixtures/pil_resize_6x5_to_9x8.hex").trim()
        );
    }

    // Expected bytes from Pillow 13: Image.fromarray(pattern(9, 7)).rotate(30, Image.NEAREST).
    #[test]
    fn rotation_matches_pil() {
        let out = rotate_nearest(&pattern(9, 7), 30.0);
        assert_eq!(
            hex(&out),
            include_str!("../tests/fixtures/pil_rotate_9x7_30.hex").trim()
        );
    }

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

    #[test]
    fn hsv_round_trip_is_close() {
        for (r, g, b) in [
            (10u8, 200u8, 30u8),
            (255, 0, 0),
            (12, 12, 12),
            (90, 60, 250),
        ] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let back = hsv_to_rgb(h, s, v);
            for (x, y) in back.iter().zip([r, g, b]) {
                assert!(
                    (*x as i32 - y as i32).abs() <= 3,
                    "{:?} vs {:?}",
                    back,
                    (r, g, b)
                );
            }
        }
    }

    #[test]
    fn normalisation_is_imagenet() {
        let img = RgbImage::from_pixel(1, 1, Rgb([255, 0, 128]));
        let mut out = [0f32; 3];
        normalize_into(&img, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out[1] + 0.456 / 0.224).abs() < 1e-6);
    }
}
