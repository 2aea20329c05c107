//! Pixel-level metrics of anomaly maps against ground-truth masks: pixel AUROC and the MVTec AD
//! benchmark's AUPRO, for data sets of tens of millions of pixels.

use serde::{Deserialize, Serialize};

use crate::metrics::MetricError;

/// The false-positive rate up to which the PRO curve is integrated, as in the MVTec AD
/// benchmark: beyond it a map flags so much of the defect-free surface that it is useless.
pub const AUPRO_FPR_LIMIT: f64 = 0.3;

/// Pixel-level localisation quality of a set of anomaly maps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelMetrics {
    /// AUROC over every pixel of every image (mask `true` = positive), ties counting one half,
    /// as [`auc_roc`](crate::auc_roc) would give on the flattened pixels.
    pub auroc: f64,
    /// Area under the per-region-overlap curve up to a false-positive rate of
    /// [`AUPRO_FPR_LIMIT`], divided by that limit (so 1 is perfect); see
    /// [`PixelMetrics::compute`].
    pub aupro: f64,
}

impl PixelMetrics {
    /// Both metrics of `maps` (anomaly scores) against `masks` (`true` = defect), one pair per
    /// image, each row-major `height × width`.
    ///
    /// The AUPRO follows the MVTec AD evaluation code (`compute_pro` and `trapezoid`):
    /// - the regions are the 8-connected components of each image's mask;
    /// - all pixels of all images are sorted by descending score; each normal pixel adds
    ///   `1 / N` to the false-positive rate (`N` normal pixels over all images, defect-free
    ///   images included), each pixel of a region `r` adds `1 / (|r| · R)` to the PRO (`R`
    ///   regions over all images), so every region weighs the same whatever its size;
    /// - of each run of tied scores only the point after the run is kept (one threshold,
    ///   "anomalous when score ≥ threshold"), `(0, 0)` is put in front and the values are
    ///   clipped to at most 1 (the reference also appends `(1, 1)`, which lies past the limit
    ///   and adds no area);
    /// - the area under the (FPR, PRO) points up to FPR [`AUPRO_FPR_LIMIT`] by the trapezoid
    ///   rule, the PRO interpolated linearly at the limit when it falls between two points,
    ///   is divided by the limit.
    ///
    /// One departure, in the last bits: the false-positive rate is the exact count over `N`
    /// in `f64`, where the reference divides a `float32` cumulative sum.
    ///
    /// Errors: `maps` and `masks` of different counts, an image whose map or mask does not
    /// have `width × height` pixels (or more than `u32::MAX`), a NaN score, or masks without
    /// any defect pixel (no region: the PRO is undefined) or without any normal pixel.
    pub fn compute(
        maps: &[&[f32]],
        masks: &[&[bool]],
        width: usize,
        height: usize,
    ) -> Result<Self, MetricError> {
        if maps.len() != masks.len() {
            return Err(MetricError::ImageCount {
                maps: maps.len(),
                masks: masks.len(),
            });
        }
        let pixels = width
            .checked_mul(height)
            .filter(|p| u32::try_from(*p).is_ok())
            .ok_or(MetricError::ImageTooLarge { width, height })?;
        for (image, (map, mask)) in maps.iter().zip(masks).enumerate() {
            if map.len() != pixels || mask.len() != pixels {
                return Err(MetricError::ImageSize {
                    image,
                    expected: pixels,
                    map: map.len(),
                    mask: mask.len(),
                });
            }
            if map.iter().any(|v| v.is_nan()) {
                return Err(MetricError::NaN);
            }
        }
        let total = pixels * maps.len();
        let anomalous: usize = masks.iter().map(|m| m.iter().filter(|p| **p).count()).sum();
        if anomalous == 0 || anomalous == total {
            return Err(MetricError::PixelClasses { anomalous, total });
        }

        // Normal pixels need only their score; defect pixels also their region's size (all a
        // pixel's PRO step depends on). Two sorts of packed integers keep the memory at 4 and
        // 8 bytes a pixel, and the walk below merges them from the top.
        let mut normal: Vec<u32> = Vec::with_capacity(total - anomalous);
        let mut defect: Vec<u64> = Vec::with_capacity(anomalous);
        let mut regions = 0usize;
        let mut labels = Vec::new();
        let mut stack = Vec::new();
        let mut sizes = Vec::new();
        for (map, mask) in maps.iter().zip(masks) {
            let n = label_into(mask, width, height, &mut labels, &mut stack);
            regions += n;
            sizes.clear();
            sizes.resize(n + 1, 0u32);
            for &l in &labels {
                sizes[l as usize] += 1;
            }
            for ((&v, &l), &d) in map.iter().zip(&labels).zip(mask.iter()) {
                if d {
                    defect.push((u64::from(order_key(v)) << 32) | u64::from(sizes[l as usize]));
                } else {
                    normal.push(order_key(v));
                }
            }
        }
        normal.sort_unstable();
        defect.sort_unstable();

        let n_normal = normal.len();
        let n_defect = defect.len();
        let mut normal_left = normal.len();
        let mut defect_left = defect.len();
        // Twice the Mann–Whitney count, so that ties (one half) stay integers.
        let mut twice_wins: u128 = 0;
        let mut pro_sum = 0.0f64;
        let mut area = Trapezoid::new(AUPRO_FPR_LIMIT);
        // One step per distinct score, from the highest: every pixel at that score joins.
        loop {
            let top_normal = normal_left.checked_sub(1).map(|i| normal[i]);
            let top_defect = defect_left.checked_sub(1).map(|i| (defect[i] >> 32) as u32);
            let Some(key) = top_normal.max(top_defect) else {
                break;
            };
            let mut neg = 0usize;
            while normal_left > 0 && normal[normal_left - 1] == key {
                normal_left -= 1;
                neg += 1;
            }
            let mut pos = 0usize;
            while defect_left > 0 && (defect[defect_left - 1] >> 32) as u32 == key {
                defect_left -= 1;
                pos += 1;
                pro_sum += 1.0 / (defect[defect_left] as u32) as f64;
            }
            // Each defect pixel of the run beats the normals below it and ties with the run's.
            twice_wins += pos as u128 * (2 * normal_left + neg) as u128;
            if !area.done() {
                let fpr = ((n_normal - normal_left) as f64 / n_normal as f64).min(1.0);
                let pro = (pro_sum / regions as f64).min(1.0);
                area.push(fpr, pro);
            }
        }
        Ok(Self {
            auroc: twice_wins as f64 / (2.0 * n_defect as f64 * n_normal as f64),
            aupro: area.total() / AUPRO_FPR_LIMIT,
        })
    }
}

/// A key whose unsigned order is the order of the scores, with `-0.0` and `0.0` one key (they
/// are equal scores, so one threshold); the score must not be NaN.
fn order_key(v: f32) -> u32 {
    // Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
    let bits = (v + 0.0).to_bits();
    if bits >> 31 == 1 {
        // Negative: a larger magnitude is a smaller score.
        !bits
    } else {
        bits | (1 << 31)
    }
}

/// The trapezoid rule over points fed in order of non-decreasing x, from `(0, 0)`, stopping at
/// `limit`, where the curve is interpolated linearly if no point falls exactly on it.
struct Trapezoid {
    limit: f64,
    last: (f64, f64),
    area: f64,
    done: bool,
}

impl Trapezoid {
    fn new(limit: f64) -> Self {
        Self {
            limit,
            last: (0.0, 0.0),
            area: 0.0,
            done: false,
        }
    }

    fn done(&self) -> bool {
        self.done
    }

    fn push(&mut self, x: f64, y: f64) {
        let (x0, y0) = self.last;
        if x <= self.limit {
            self.area += 0.5 * (y + y0) * (x - x0);
            self.last = (x, y);
        } else {
            if x0 < self.limit {
                let y_limit = y0 + (y - y0) * (self.limit - x0) / (x - x0);
                self.area += 0.5 * (y_limit + y0) * (self.limit - x0);
            }
            self.done = true;
        }
    }

    fn total(&self) -> f64 {
        self.area
    }
}

/// The 8-connected components of a row-major `height × width` mask: a label per pixel (0 off
/// the mask, regions numbered from 1 in the order their first pixel is met row by row) and the
/// number of regions. Diagonal neighbours join, as in the MVTec AD evaluation (a 3 × 3
/// structuring element, which [`PixelMetrics::compute`] uses for its regions).
///
/// # Panics
///
/// If the mask does not have `width × height` pixels, or has more than `u32::MAX` (the labels
/// are `u32`).
pub fn connected_components_8(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, usize) {
    let mut labels = Vec::new();
    let n = label_into(mask, width, height, &mut labels, &mut Vec::new());
    (labels, n)
}

/// [`connected_components_8`] into reused buffers: a flood fill from each unlabelled mask pixel
/// with an explicit stack, so a region as large as the image cannot overflow the call stack.
fn label_into(
    mask: &[bool],
    width: usize,
    height: usize,
    labels: &mut Vec<u32>,
    stack: &mut Vec<usize>,
) -> usize {
    assert_eq!(mask.len(), width * height, "mask size");
    assert!(
        u32::try_from(mask.len()).is_ok(),
        "more pixels than u32 labels"
    );
    labels.clear();
    labels.resize(mask.len(), 0);
    let mut n = 0u32;
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        n += 1;
        labels[start] = n;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (x, y) = (p % width, p / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let q = ny * width + nx;
                    if mask[q] && labels[q] == 0 {
                        labels[q] = n;
                        stack.push(q);
                    }
                }
            }
        }
    }
    n as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    /// A mask from rows of `#` (defect) and `.` (normal).
    fn mask(rows: &[&str]) -> Vec<bool> {
        rows.iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect()
    }

    fn metrics(maps: &[Vec<f32>], masks: &[Vec<bool>], w: usize, h: usize) -> PixelMetrics {
        let maps: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
        let masks: Vec<&[bool]> = masks.iter().map(|m| m.as_slice()).collect();
        PixelMetrics::compute(&maps, &masks, w, h).unwrap()
    }

    #[test]
    fn components_join_diagonals() {
        // The two `#` touch only at a corner: one region with 8-connectivity (two with 4).
        let (labels, n) = connected_components_8(&mask(&["#.", ".#"]), 2, 2);
        assert_eq!(n, 1);
        assert_eq!(labels, vec![1, 0, 0, 1]);
        // An anti-diagonal too, and separate blobs are numbered in raster order.
        let m = mask(&["..#..#", ".#...#", "#.....", "....##"]);
        let (labels, n) = connected_components_8(&m, 6, 4);
        assert_eq!(n, 3);
        assert_eq!(
            labels,
            vec![0, 0, 1, 0, 0, 2, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3]
        );
        // A U shape whose arms meet only at the bottom row is one region; empty masks none.
        let (_, n) = connected_components_8(&mask(&["#.#", "#.#", "###"]), 3, 3);
        assert_eq!(n, 1);
        assert_eq!(connected_components_8(&mask(&["...", "..."]), 3, 2).1, 0);
        assert_eq!(connected_components_8(&[], 0, 0).1, 0);
    }

    #[test]
    fn components_of_a_large_region_need_no_recursion() {
        let (w, h) = (1000, 1000);
        let (labels, n) = connected_components_8(&vec![true; w * h], w, h);
        assert_eq!(n, 1);
        assert!(labels.iter().all(|l| *l == 1));
    }

    #[test]
    fn a_single_region() {
        // 1 × 4 image, mask .##. , scores [0.1, 0.8, 0.4, 0.6].
        // Descending: 0.8 (defect) → (fpr 0, pro 1/2); 0.6 (normal) → (1/2, 1/2);
        //             0.4 (defect) → (1/2, 1);           0.1 (normal) → (1, 1).
        // AUROC: defect 0.8 beats both normals, 0.4 beats one → 3/4.
        // Up to fpr 0.3: the segment (0, 1/2)–(1/2, 1/2) is flat at 1/2 → area 0.15, / 0.3 = 1/2.
        let m = metrics(&[vec![0.1, 0.8, 0.4, 0.6]], &[mask(&[".##."])], 4, 1);
        close(m.auroc, 0.75);
        close(m.aupro, 0.5);
    }

    #[test]
    fn regions_weigh_the_same_whatever_their_size() {
        // 1 × 10 image, mask #.###....., so regions A = {0} (1 pixel), B = {2, 3, 4} (3 pixels).
        // Scores: A 0.9; B 0.95, 0.2, 0.2; normals 1 → 0.5, 5–9 → 0.1, 0.1, 0.1, 0.1, 0.1.
        // Descending with PRO = mean over the two regions of their covered fraction:
        //   0.95: B 1/3        → (0, 1/6)
        //   0.9 : A 1          → (0, 2/3)
        //   0.5 : a normal     → (1/6, 2/3)
        //   0.2 : B 3/3        → (1/6, 1)
        //   0.1 : five normals → (1, 1)
        // Area to 0.3: 1/6 · 2/3 = 1/9; then from 1/6 to 0.3 at PRO 1, interpolated between
        // (1/6, 1) and (1, 1): 0.3 − 1/6 = 2/15. Total 1/9 + 2/15 = 11/45, / 0.3 = 22/27.
        // (Averaging pixels instead would count B three times as much as A.)
        // AUROC: 0.95 and 0.9 beat all 6 normals, each 0.2 beats the five 0.1 → 22 / 24.
        let scores = vec![0.9, 0.5, 0.95, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1];
        let m = metrics(&[scores], &[mask(&["#.###....."])], 10, 1);
        close(m.aupro, 22.0 / 27.0);
        close(m.auroc, 22.0 / 24.0);
    }

    #[test]
    fn regions_and_normals_across_images() {
        // Three 2 × 2 images: one with a 1-pixel region, one with a 2-pixel region, one without
        // defects, which adds only normal pixels (N = 3 + 2 + 4 = 9 normals, R = 2 regions).
        //   image 0: mask #... scores [0.9, 0.3, 0.3, 0.3]
        //   image 1: mask ##.. scores [0.8, 0.2, 0.3, 0.3]
        //   image 2: no mask   scores [0.6, 0.3, 0.3, 0.3]
        // Descending: 0.9 → (0, 1/2); 0.8 → (0, 1/2 + 1/4 = 3/4); 0.6 → (1/9, 3/4);
        //   0.3 (the other 8 normals) → (1, 3/4); 0.2 → (1, 1).
        // Area to 0.3: 3/4 · 0.3 (flat from 0 to 1/9 and on to 1 at 3/4) → AUPRO 3/4.
        // AUROC: 0.9 and 0.8 beat all 9 normals; 0.2 beats none → 18 / 27 = 2/3.
        let maps = vec![
            vec![0.9, 0.3, 0.3, 0.3],
            vec![0.8, 0.2, 0.3, 0.3],
            vec![0.6, 0.3, 0.3, 0.3],
        ];
        let masks = vec![
            mask(&["#.", ".."]),
            mask(&["##", ".."]),
            mask(&["..", ".."]),
        ];
        let m = metrics(&maps, &masks, 2, 2);
        close(m.aupro, 0.75);
        close(m.auroc, 2.0 / 3.0);
        // Without the defect-free image: N = 5; 0.3 → (1, 3/4), still 3/4; AUROC 10/15.
        let m = metrics(&maps[..2], &masks[..2], 2, 2);
        close(m.aupro, 0.75);
        close(m.auroc, 2.0 / 3.0);
    }

    #[test]
    fn ties_across_defect_and_normal_pixels_are_one_threshold() {
        // 1 × 4, mask ##.. , all four scores 0.5: one threshold, from (0, 0) straight to (1, 1).
        // Area to 0.3 under y = x: 0.045, / 0.3 = 0.15. AUROC: all ties → 1/2.
        let m = metrics(&[vec![0.5; 4]], &[mask(&["##.."])], 4, 1);
        close(m.aupro, 0.15);
        close(m.auroc, 0.5);
        // 1 × 4, mask #.#. (two regions), scores [0.7, 0.7, 0.2, 0.1]: the tie at 0.7 takes
        // region 1 and a normal together → (1/2, 1/2); 0.2 → (1/2, 1); 0.1 → (1, 1).
        // Area to 0.3 under the segment (0, 0)–(1/2, 1/2), i.e. y = x: 0.045 → 0.15.
        // AUROC: 0.7 ties one normal, beats one (1.5); 0.2 beats one (1) → 2.5 / 4.
        let m = metrics(&[vec![0.7, 0.7, 0.2, 0.1]], &[mask(&["#.#."])], 4, 1);
        close(m.aupro, 0.15);
        close(m.auroc, 0.625);
        // -0.0 and 0.0 are the same score.
        let m = metrics(&[vec![-0.0, 0.0]], &[mask(&["#."])], 2, 1);
        close(m.auroc, 0.5);
    }

    #[test]
    fn diagonal_pixels_are_one_region() {
        // 3 × 3, mask ##. / ..# / ... : pixels (0,0), (1,0) and (2,1), the last touching (1,0)
        // only at a corner. 8-connectivity: one region of 3; 4-connectivity would make two,
        // {(0,0),(1,0)} and {(2,1)}.
        // Scores: (2,1) 0.9, (0,0) and (1,0) 0.2, the six normals 0.5.
        //   one region:  0.9 → (0, 1/3); 0.5 → (1, 1/3); 0.2 → (1, 1).
        //                Area to 0.3 = 0.3 · 1/3 → AUPRO 1/3.
        //   two regions: 0.9 → (0, 1/2) (one region of two found whole) → AUPRO 1/2.
        let m = metrics(
            &[vec![0.2, 0.2, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5]],
            &[mask(&["##.", "..#", "..."])],
            3,
            3,
        );
        close(m.aupro, 1.0 / 3.0);
        // AUROC: 0.9 beats 6 normals, the two 0.2 none → 6 / 18.
        close(m.auroc, 1.0 / 3.0);
    }

    #[test]
    fn a_perfect_map_scores_one() {
        let masks = vec![mask(&["#..", ".##", "..."]), mask(&["...", "...", "..."])];
        let maps: Vec<Vec<f32>> = masks
            .iter()
            .map(|m| m.iter().map(|d| if *d { 1.0 } else { 0.0 }).collect())
            .collect();
        let m = metrics(&maps, &masks, 3, 3);
        assert_eq!(m.auroc, 1.0);
        close(m.aupro, 1.0);
    }

    #[test]
    fn the_limit_is_interpolated_between_points() {
        // 1 × 6, mask #..... (one region of 1, N = 5 normals).
        // Scores: normals 0.9, 0.8, then the defect 0.7, then the other normals 0.1.
        //   0.9 → (1/5, 0); 0.8 → (2/5, 0); 0.7 → (2/5, 1); 0.1 → (1, 1).
        // The limit 0.3 falls between (1/5, 0) and (2/5, 0): PRO 0 there, area 0 → AUPRO 0.
        // With the defect at 0.85 instead: 0.9 → (1/5, 0); 0.85 → (1/5, 1); 0.8 → (2/5, 1).
        // Between (1/5, 1) and (2/5, 1) the PRO is 1 at 0.3: area 0.1 · 1 → AUPRO 1/3.
        // A sloped crossing: 1 × 4, mask ##.. (one region of 2, N = 2), scores
        // [0.9, 0.5, 0.5, 0.1], the 0.5 tying a defect and a normal pixel:
        //   0.9 → (0, 1/2); 0.5 → (1/2, 1); 0.1 → (1, 1).
        // At 0.3 the PRO is 1/2 + (1 − 1/2) · 0.3 / 0.5 = 0.8; area 0.3 · (1/2 + 0.8) / 2 =
        // 0.195 → AUPRO 0.65.
        let m = metrics(
            &[vec![0.7, 0.9, 0.8, 0.1, 0.1, 0.1]],
            &[mask(&["#....."])],
            6,
            1,
        );
        close(m.aupro, 0.0);
        let m = metrics(
            &[vec![0.85, 0.9, 0.8, 0.1, 0.1, 0.1]],
            &[mask(&["#....."])],
            6,
            1,
        );
        close(m.aupro, 1.0 / 3.0);
        let m = metrics(&[vec![0.9, 0.5, 0.5, 0.1]], &[mask(&["##.."])], 4, 1);
        close(m.aupro, 0.65);
        // A point exactly on the limit: 1 × 11, mask #.........., N = 10; normals 0.9, 0.8,
        // 0.7 then the defect 0.6 → (3/10, 0) then (3/10, 1); area 0 → AUPRO 0.
        let mut scores = vec![0.6, 0.9, 0.8, 0.7];
        scores.extend([0.1; 7]);
        let m = metrics(&[scores], &[mask(&["#.........."])], 11, 1);
        close(m.aupro, 0.0);
    }

    #[test]
    fn undefined_cases_are_errors() {
        let map = [0.5f32; 4];
        let none = [false; 4];
        let all = [true; 4];
        assert_eq!(
            PixelMetrics::compute(&[&map], &[&none], 2, 2),
            Err(MetricError::PixelClasses {
                anomalous: 0,
                total: 4
            })
        );
        assert_eq!(
            PixelMetrics::compute(&[&map], &[&all], 2, 2),
            Err(MetricError::PixelClasses {
                anomalous: 4,
                total: 4
            })
        );
        assert_eq!(
            PixelMetrics::compute(&[], &[], 2, 2),
            Err(MetricError::PixelClasses {
                anomalous: 0,
                total: 0
            })
        );
        assert_eq!(
            PixelMetrics::compute(&[&map, &map], &[&all], 2, 2),
            Err(MetricError::ImageCount { maps: 2, masks: 1 })
        );
        assert_eq!(
            PixelMetrics::compute(&[&map[..3]], &[&all], 2, 2),
            Err(MetricError::ImageSize {
                image: 0,
                expected: 4,
                map: 3,
                mask: 4
            })
        );
        let nan = [0.5, f32::NAN, 0.1, 0.2];
        assert_eq!(
            PixelMetrics::compute(&[&nan], &[&[true, false, false, false]], 2, 2),
            Err(MetricError::NaN)
        );
        assert_eq!(
            PixelMetrics::compute(&[], &[], 1 << 20, 1 << 20),
            Err(MetricError::ImageTooLarge {
                width: 1 << 20,
                height: 1 << 20
            })
        );
    }

    /// A tiny linear congruential generator: enough randomness for small cases, no crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: u32) -> u32 {
            self.next() % n
        }
    }

    /// Regions by union–find over 8-neighbour pairs, written apart from the flood fill.
    fn reference_regions(mask: &[bool], w: usize, h: usize) -> Vec<Vec<usize>> {
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                i = parent[i];
            }
            i
        }
        let mut parent: Vec<usize> = (0..mask.len()).collect();
        for y in 0..h {
            for x in 0..w {
                for (dx, dy) in [(1i64, 0i64), (-1, 1), (0, 1), (1, 1)] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let (p, q) = (y * w + x, ny as usize * w + nx as usize);
                    if mask[p] && mask[q] {
                        let (a, b) = (find(&mut parent, p), find(&mut parent, q));
                        parent[a] = b;
                    }
                }
            }
        }
        let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for p in (0..mask.len()).filter(|p| mask[*p]) {
            by_root.entry(find(&mut parent, p)).or_default().push(p);
        }
        by_root.into_values().collect()
    }

    /// AUROC over every (defect, normal) pixel pair; AUPRO threshold by threshold, integrated as
    /// the MVTec code's `trapezoid` does (the whole curve, then a correction at the limit).
    fn reference(maps: &[Vec<f32>], masks: &[Vec<bool>], w: usize, h: usize) -> (f64, f64) {
        let pixels: Vec<(f32, bool)> = maps
            .iter()
            .zip(masks)
            .flat_map(|(m, k)| m.iter().copied().zip(k.iter().copied()))
            .collect();
        let (pos, neg): (Vec<(f32, bool)>, Vec<_>) = pixels.iter().partition(|p| p.1);
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += if p.0 > n.0 {
                    1.0
                } else if p.0 == n.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let auroc = wins / (pos.len() * neg.len()) as f64;

        let regions: Vec<(usize, Vec<usize>)> = masks
            .iter()
            .enumerate()
            .flat_map(|(i, m)| reference_regions(m, w, h).into_iter().map(move |r| (i, r)))
            .collect();
        let mut thresholds: Vec<f32> = pixels.iter().map(|p| p.0).collect();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup_by(|a, b| a == b);
        let mut xs = vec![0.0];
        let mut ys = vec![0.0];
        for t in thresholds {
            let fp = neg.iter().filter(|n| n.0 >= t).count();
            xs.push(fp as f64 / neg.len() as f64);
            let pro: f64 = regions
                .iter()
                .map(|(i, r)| {
                    r.iter().filter(|p| maps[*i][**p] >= t).count() as f64 / r.len() as f64
                })
                .sum::<f64>()
                / regions.len() as f64;
            ys.push(pro);
        }
        let limit = AUPRO_FPR_LIMIT;
        let mut correction = 0.0;
        if !xs.contains(&limit) {
            let ins = xs.partition_point(|x| *x <= limit);
            let y = ys[ins - 1]
                + (ys[ins] - ys[ins - 1]) * (limit - xs[ins - 1]) / (xs[ins] - xs[ins - 1]);
            correction = 0.5 * (y + ys[ins - 1]) * (limit - xs[ins - 1]);
        }
        let kept = xs.partition_point(|x| *x <= limit);
        let area: f64 = (1..kept)
            .map(|i| 0.5 * (ys[i] + ys[i - 1]) * (xs[i] - xs[i - 1]))
            .sum();
        (auroc, (area + correction) / limit)
    }

    #[test]
    fn matches_brute_force_on_random_cases() {
        let mut rng = Lcg(0x5eed);
        let mut checked = 0;
        for case in 0..200 {
            let (w, h) = (1 + rng.below(6) as usize, 1 + rng.below(5) as usize);
            let images = 1 + rng.below(3) as usize;
            // Few distinct levels, so that ties across classes are common.
            let levels = 2 + rng.below(12);
            let density = 1 + rng.below(3);
            let maps: Vec<Vec<f32>> = (0..images)
                .map(|_| {
                    (0..w * h)
                        .map(|_| rng.below(levels) as f32 / levels as f32)
                        .collect()
                })
                .collect();
            let masks: Vec<Vec<bool>> = (0..images)
                .map(|_| (0..w * h).map(|_| rng.below(4) < density).collect())
                .collect();
            let anomalous = masks.iter().flatten().filter(|d| **d).count();
            if anomalous == 0 || anomalous == images * w * h {
                continue;
            }
            let m = metrics(&maps, &masks, w, h);
            let (auroc, aupro) = reference(&maps, &masks, w, h);
            assert!(
                (m.auroc - auroc).abs() < 1e-12,
                "case {case}: AUROC {m:?} vs {auroc}"
            );
            assert!(
                (m.aupro - aupro).abs() < 1e-9,
                "case {case}: AUPRO {m:?} vs {aupro}"
            );
            // And the pixel AUROC is `auc_roc` of the flattened pixels.
            let scores: Vec<f64> = maps.iter().flatten().map(|v| f64::from(*v)).collect();
            let labels: Vec<bool> = masks.iter().flatten().copied().collect();
            close(m.auroc, crate::auc_roc(&scores, &labels).unwrap());
            checked += 1;
        }
        // The draws leave out only the rare all-one-class cases.
        assert!(checked > 150, "{checked} cases");
    }

    #[test]
    fn components_match_the_union_find_reference() {
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let (w, h) = (1 + rng.below(8) as usize, 1 + rng.below(8) as usize);
            let m: Vec<bool> = (0..w * h).map(|_| rng.below(5) < 2).collect();
            let (labels, n) = connected_components_8(&m, w, h);
            let regions = reference_regions(&m, w, h);
            assert_eq!(n, regions.len());
            for r in regions {
                let l = labels[r[0]];
                assert!(l != 0 && r.iter().all(|p| labels[*p] == l));
                assert_eq!(labels.iter().filter(|x| **x == l).count(), r.len());
            }
            assert!(m.iter().zip(&labels).all(|(d, l)| *d == (*l != 0)));
        }
    }
}
