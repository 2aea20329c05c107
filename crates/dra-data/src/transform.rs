//! The official image pipeline, written to match PIL and torchvision:
//! `Resize` (PIL bilinear with antialiasing), `RandomRotation(180)` (PIL nearest, fill 0),
//! `ColorJitter(0.1, 0.1, 0.1, 0.1)` (of CutMix's patch), `ToTensor` and ImageNet `Normalize`.
//! The pseudo-anomaly generators built on them are in `pseudo`.

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
/// antialiased triangle filtering in 8-bit fixed point, bit for bit. Always width first, as
/// Pillow did when the official code was written; Pillow 13 goes height first when the height
/// shrinks more than twice as much as the width, which moves some pixels by one level
/// (`img.resize((w, img.height)).resize((w, h))` is this function in any Pillow).
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
pub(crate) mod tests {
    use super::*;

    /// A deterministic test picture: p(x, y, c) = (37x + 91y + 53c + 11xy) mod 256.
    pub(crate) fn pattern(w: u32, h: u32) -> RgbImage {
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

    // Pillow 13 resizes an image whose height shrinks more than twice as much as its width
    // height first, which moves some pixels by one level; dra-rs resizes width first, as
    // Pillow always did before (and as the official code ran). Expected bytes from Pillow 13
    // made to go width first: Image.fromarray(pattern(7, 20)).resize((5, 20), Image.BILINEAR)
    // .resize((5, 5), Image.BILINEAR), the two steps docs/deploy.md gives Python users.
    #[test]
    fn resize_goes_width_first_as_the_two_step_pil_resize() {
        let out = resize_bilinear(&pattern(7, 20), 5, 5);
        assert_eq!(
            hex(&out),
            include_str!("../tests/fixtures/pil_resize_7x20_to_5x5_width_first.hex").trim()
        );
        let two_step = resize_bilinear(&resize_bilinear(&pattern(7, 20), 5, 20), 5, 5);
        assert_eq!(out, two_step);
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
