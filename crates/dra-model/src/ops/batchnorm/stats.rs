//! The sums of BatchNorm's kernels: the batch statistics (the [`Stats`] op) and the
//! per-channel sums of the gradient, in blocks of f32 lanes carried in f64, with an AVX2
//! version for f32.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;

use super::{nchw, relu6_gated, relu_gated, Act};
use crate::ops::cpu::{dispatch, slice};
use crate::ops::Element;

/// Batch mean and biased variance per channel, as a `(2, C)` tensor (no gradient).
pub(super) struct Stats;

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "dra-bn-stats"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(s, self.name(), T => stats::<T>(s, l))
    }
}

fn stats<T: Element>(s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s, l, "dra-bn-stats")?;
    let (_, c, _) = nchw(l)?;
    let out = batch_stats(x, nchw(l)?);
    Ok((T::to_cpu_storage_owned(out), Shape::from((2, c))))
}

/// `[mean; biased variance]` per channel (`2·C` values) of `x`, laid out `(n, c, plane)`.
pub(crate) fn batch_stats<T: Element>(x: &[T], (n, c, plane): (usize, usize, usize)) -> Vec<T> {
    let m = (n * plane) as f64;
    let per_channel: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|i| &x[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
            let mean = planes.clone().map(plane_sum).sum::<f64>() / m;
            // Centred on the mean rounded to `T`, δ away: Σ (v − mean)² = Σ (v − centre)² − m·δ².
            let centre = T::from_f64(mean);
            let ss: f64 = planes.map(|p| plane_squares(p, centre)).sum();
            let shift = mean - centre.to_f64();
            // Rounding can take the difference below zero; NaN (a NaN input) stays NaN, as in
            // PyTorch (`f64::max` would turn it into 0).
            let var = ss / m - shift * shift;
            (mean, if var < 0.0 { 0.0 } else { var })
        })
        .collect();
    let mut out: Vec<T> = per_channel.iter().map(|s| T::from_f64(s.0)).collect();
    out.extend(per_channel.iter().map(|s| T::from_f64(s.1)));
    out
}

/// Elements per block of [`blocked_sums`]: 16 terms per lane.
const BLOCK: usize = 16 * LANES;
/// Independent partial sums, so that the loops vectorise (eight f32 lanes).
const LANES: usize = 8;

/// `(Σ a, Σ b)` of the terms `(a, b) = term(p, q)` over the element pairs of `ps` and `qs`:
/// eight lanes of partial sums in `T` over blocks of [`BLOCK`] elements, each block's added
/// into f64, so that in f32 the rounding error grows over 16 terms per lane only. The portable
/// version of the sums; f32 on AVX2 takes [`avx2`].
#[inline(always)]
fn blocked_sums<T: Element>(ps: &[T], qs: &[T], term: impl Fn(T, T) -> (T, T)) -> (f64, f64) {
    let (mut sa, mut sb) = (0.0f64, 0.0f64);
    for (pb, qb) in ps.chunks(BLOCK).zip(qs.chunks(BLOCK)) {
        let (mut a, mut b) = ([T::zero(); LANES], [T::zero(); LANES]);
        let (pc, qc) = (pb.chunks_exact(LANES), qb.chunks_exact(LANES));
        let (pr, qr) = (pc.remainder(), qc.remainder());
        for (p, q) in pc.zip(qc) {
            for l in 0..LANES {
                let (ta, tb) = term(p[l], q[l]);
                a[l] += ta;
                b[l] += tb;
            }
        }
        for (&p, &q) in pr.iter().zip(qr) {
            let (ta, tb) = term(p, q);
            a[0] += ta;
            b[0] += tb;
        }
        sa += a.iter().map(|v| v.to_f64()).sum::<f64>();
        sb += b.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    (sa, sb)
}

/// `xs` as f32, when `T` is f32 and the CPU has AVX2 and FMA (and `DRA_KERNEL_TIER` allows them): the sums then take the
/// [`avx2`] kernels, as LLVM compiled the masked sums of [`blocked_sums`] to a branch per
/// lane (6 % of a DRA step at 128 px).
fn avx2_f32<T: Element>(xs: &[T]) -> Option<&[f32]> {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && crate::ops::KernelTier::allowed() >= crate::ops::KernelTier::Avx2Fma
    {
        // SAFETY: `T` is `f32`: same layout and length.
        return Some(unsafe { std::slice::from_raw_parts(xs.as_ptr().cast(), xs.len()) });
    }
    None
}

/// Σ v over one plane.
fn plane_sum<T: Element>(x: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = avx2_f32(x) {
        // SAFETY: `avx2_f32` checked the CPU's features.
        return unsafe { avx2::sums(x, x, avx2::Term::Sum) }.0;
    }
    blocked_sums(x, x, |v, _| (v, T::zero())).0
}

/// Σ (v − centre)² over one plane.
fn plane_squares<T: Element>(x: &[T], centre: T) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = avx2_f32(x) {
        let term = avx2::Term::Squares(centre.to_f64() as f32);
        // SAFETY: `avx2_f32` checked the CPU's features.
        return unsafe { avx2::sums(x, x, term) }.0;
    }
    blocked_sums(x, x, |v, _| {
        let d = v - centre;
        (d * d, T::zero())
    })
    .0
}

/// `(Σ g, Σ g·(v − μ))` over one plane of the gradient `g`, masked by `act` at the forward's
/// map `mask` (see [`relu_gated`], [`relu6_gated`]), and the input `v`. Centred on the batch mean μ, the second sum does not cancel against
/// μ·Σ g, as Σ g·v would.
pub(super) fn grad_sums<T: Element>(
    dy: &[T],
    x: &[T],
    mu: T,
    mask: Option<(T, T)>,
    act: Act,
) -> (f64, f64) {
    let mask = mask.filter(|_| act != Act::None);
    #[cfg(target_arch = "x86_64")]
    if let (Some(dy), Some(x)) = (avx2_f32(dy), avx2_f32(x)) {
        let f32_of = |v: T| v.to_f64() as f32;
        let term = avx2::Term::Grad {
            mu: f32_of(mu),
            relu: mask.map(|(scale, shift)| (f32_of(scale), f32_of(shift))),
            cap6: act == Act::Relu6,
        };
        // SAFETY: `avx2_f32` checked the CPU's features.
        return unsafe { avx2::sums(dy, x, term) };
    }
    match (mask, act) {
        (None, _) | (_, Act::None) => blocked_sums(dy, x, |d, v| (d, d * (v - mu))),
        (Some(map), Act::Relu) => {
            let g = relu_gated(map);
            blocked_sums(dy, x, |d, v| {
                let d = g(d, v);
                (d, d * (v - mu))
            })
        }
        (Some(map), Act::Relu6) => {
            let g = relu6_gated(map);
            blocked_sums(dy, x, |d, v| {
                let d = g(d, v);
                (d, d * (v - mu))
            })
        }
    }
}

/// The sums of BatchNorm's kernels in f32 with AVX2: 8 lanes in f32 over blocks of
/// [`BLOCK`] elements, each block's sums widened into f64 lanes.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// What is summed over the element pairs `(p, q)`: `(Σ a, Σ b)` of these terms.
    #[derive(Clone, Copy)]
    pub(super) enum Term {
        /// `(p, 0)`.
        Sum,
        /// `((p − c)², 0)`.
        Squares(f32),
        /// `(g, g·(q − μ))` of the gradient `p` and the input `q`, where the gradient `g` is
        /// `p`, or with a ReLU map `(scale, shift)` zero where `q·scale + shift ≤ 0` (the
        /// forward's pre-activation, rounded as [`super::normalise`] rounds it: a product,
        /// then a sum, never fused); with `cap6` (ReLU6) also zero where it is ≥ 6.
        Grad {
            mu: f32,
            relu: Option<(f32, f32)>,
            cap6: bool,
        },
    }

    /// Blocks summed side by side: independent chains of additions, as one chain waits on
    /// each addition's latency (4 cycles for 8 floats: the sums were 4 % of a DRA step).
    const CHAINS: usize = 4;

    /// # Safety
    /// The CPU has AVX2 and FMA; `ps` and `qs` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sums(ps: &[f32], qs: &[f32], term: Term) -> (f64, f64) {
        assert_eq!(ps.len(), qs.len());
        let zero = _mm256_setzero_ps();
        let (mut wa, mut wb) = ([_mm256_setzero_pd(); 2], [_mm256_setzero_pd(); 2]);
        let (mut ra, mut rb) = (0.0f64, 0.0f64);
        // Whole groups of `CHAINS` blocks: each block summed in the same order as alone, and
        // widened in block order, so the result is the one of summing block after block.
        let grouped = ps.len() / (CHAINS * BLOCK) * (CHAINS * BLOCK);
        for (pg, qg) in ps[..grouped]
            .chunks_exact(CHAINS * BLOCK)
            .zip(qs[..grouped].chunks_exact(CHAINS * BLOCK))
        {
            let (mut a, mut b) = ([zero; CHAINS], [zero; CHAINS]);
            for i in (0..BLOCK).step_by(8) {
                for c in 0..CHAINS {
                    let at = c * BLOCK + i;
                    // SAFETY: `at + 8 <= CHAINS·BLOCK == pg.len() == qg.len()`.
                    let (p, q) = unsafe {
                        (
                            _mm256_loadu_ps(pg.as_ptr().add(at)),
                            _mm256_loadu_ps(qg.as_ptr().add(at)),
                        )
                    };
                    (a[c], b[c]) = step(p, q, term, a[c], b[c]);
                }
            }
            for c in 0..CHAINS {
                widen(&mut wa, a[c]);
                widen(&mut wb, b[c]);
            }
        }
        for (pb, qb) in ps[grouped..].chunks(BLOCK).zip(qs[grouped..].chunks(BLOCK)) {
            let (mut a, mut b) = (zero, zero);
            let whole = pb.len() / 8 * 8;
            for i in (0..whole).step_by(8) {
                // SAFETY: `i + 8 <= whole <= pb.len() == qb.len()`, so both 8-lane loads are
                // in bounds.
                let (p, q) = unsafe {
                    (
                        _mm256_loadu_ps(pb.as_ptr().add(i)),
                        _mm256_loadu_ps(qb.as_ptr().add(i)),
                    )
                };
                (a, b) = step(p, q, term, a, b);
            }
            widen(&mut wa, a);
            widen(&mut wb, b);
            for (&p, &q) in pb[whole..].iter().zip(&qb[whole..]) {
                let (ta, tb) = scalar(p, q, term);
                ra += ta;
                rb += tb;
            }
        }
        (total(wa) + ra, total(wb) + rb)
    }

    /// The terms of eight pairs added onto the partial sums `(a, b)`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn step(p: __m256, q: __m256, term: Term, a: __m256, b: __m256) -> (__m256, __m256) {
        match term {
            Term::Sum => (_mm256_add_ps(a, p), b),
            Term::Squares(c) => {
                let d = _mm256_sub_ps(p, _mm256_set1_ps(c));
                (_mm256_fmadd_ps(d, d, a), b)
            }
            Term::Grad { mu, relu, cap6 } => {
                let g = match relu {
                    None => p,
                    Some((scale, shift)) => {
                        let zero = _mm256_setzero_ps();
                        let n = _mm256_add_ps(
                            _mm256_mul_ps(q, _mm256_set1_ps(scale)),
                            _mm256_set1_ps(shift),
                        );
                        let mut off = _mm256_cmp_ps::<_CMP_LE_OQ>(n, zero);
                        if cap6 {
                            off = _mm256_or_ps(
                                off,
                                _mm256_cmp_ps::<_CMP_GE_OQ>(n, _mm256_set1_ps(6.0)),
                            );
                        }
                        _mm256_andnot_ps(off, p)
                    }
                };
                (
                    _mm256_add_ps(a, g),
                    _mm256_fmadd_ps(g, _mm256_sub_ps(q, _mm256_set1_ps(mu)), b),
                )
            }
        }
    }

    /// One pair's terms, for the elements after the last whole group of eight.
    fn scalar(p: f32, q: f32, term: Term) -> (f64, f64) {
        match term {
            Term::Sum => (p as f64, 0.0),
            Term::Squares(c) => {
                let d = (p - c) as f64;
                (d * d, 0.0)
            }
            Term::Grad { mu, relu, cap6 } => {
                let masked = relu.is_some_and(|(scale, shift)| {
                    let n = q * scale + shift;
                    n <= 0.0 || (cap6 && n >= 6.0)
                });
                let g = if masked { 0.0 } else { p };
                (g as f64, g as f64 * (q - mu) as f64)
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn widen(acc: &mut [__m256d; 2], v: __m256) {
        acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
    }

    #[target_feature(enable = "avx2,fma")]
    fn total(acc: [__m256d; 2]) -> f64 {
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds four f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(acc[0], acc[1])) };
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sums of the kernels (f32 through AVX2 where the CPU has it) against direct sums in
    /// f64, over lengths with and without whole blocks and groups of eight, and with a ReLU
    /// mask that zeroes about half of the gradient.
    #[test]
    fn sums_match_f64() {
        for len in [0usize, 5, 8, 127, 128, 300, 1031, 2053] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.03)
                .collect();
            let dy: Vec<f32> = (0..len)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) * 0.01)
                .collect();
            let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<_>>();
            let (xd, dd) = (wide(&x), wide(&dy));
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
            let sum: f64 = xd.iter().sum();
            assert!(close(plane_sum(&x), sum), "{len}: Σ v");
            let c = 0.25f32;
            let squares: f64 = xd.iter().map(|v| (v - c as f64).powi(2)).sum();
            assert!(close(plane_squares(&x, c), squares), "{len}: Σ (v − c)²");
            let mu = 0.1f32;
            // ReLU6's map reaches past 6 on this input (|x| ≤ 1.8).
            for (act, mask) in [
                (Act::None, None),
                (Act::Relu, Some((1.5f32, -0.2f32))),
                (Act::Relu6, Some((4.5f32, -0.2f32))),
            ] {
                let g = |i: usize| {
                    let off = mask.is_some_and(|(s, t)| {
                        let n = x[i] * s + t;
                        n <= 0.0 || (act == Act::Relu6 && n >= 6.0)
                    });
                    if off {
                        0.0
                    } else {
                        dd[i]
                    }
                };
                let a: f64 = (0..len).map(g).sum();
                let b: f64 = (0..len).map(|i| g(i) * (xd[i] - mu as f64)).sum();
                let (sa, sb) = grad_sums(&dy, &x, mu, mask, act);
                assert!(
                    close(sa, a) && close(sb, b),
                    "{len} {act:?}: {sa} {sb} vs {a} {b}"
                );
                let masked = (0..len).filter(|&i| g(i) == 0.0).count();
                if mask.is_some() && len > 100 {
                    assert!(
                        masked > len / 4 && masked < 3 * len / 4,
                        "{len}: mask {masked}"
                    );
                }
            }
        }
    }

    /// A NaN in a channel makes its mean and variance NaN, as in PyTorch, and the running
    /// statistics show it; the other channel is unaffected.
    #[test]
    fn nan_statistics_stay_nan() {
        let x = [1.0f32, f32::NAN, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0];
        let s = batch_stats(&x, (1, 2, 4));
        assert!(s[0].is_nan() && s[2].is_nan(), "{s:?}");
        assert_eq!((s[1], s[3]), (2.5, 1.25));
    }

    /// The sums' ReLU and ReLU6 masks are exactly the forward's: with a unit gradient, Σ g counts the
    /// units kept, which must equal the count by [`relu_gated`] (the rule of the forward and of
    /// the portable sums) on pre-activations of exactly zero, their neighbours either side, and
    /// NaN (kept, as PyTorch's ReLU passes NaN).
    #[test]
    fn sums_mask_is_the_forward_rule() {
        let (scale, shift) = (2.0f32, -1.0f32);
        let half = 0.5f32;
        let mut x = Vec::new();
        for i in 0..300 {
            x.push(match i % 6 {
                0 => half,
                1 => f32::from_bits(half.to_bits() + 1),
                2 => f32::from_bits(half.to_bits() - 1),
                3 => -half,
                4 => f32::NAN,
                _ => i as f32 * 0.01,
            });
        }
        assert_eq!(half * scale + shift, 0.0);
        let ones = vec![1.0f32; x.len()];
        let g = relu_gated((scale, shift));
        let kept = x.iter().filter(|&&v| g(1.0, v) == 1.0).count();
        let (sum, _) = grad_sums(&ones, &x, 0.0, Some((scale, shift)), Act::Relu);
        assert_eq!(sum, kept as f64);
        let portable = blocked_sums(&ones, &x, |d, v| (g(d, v), 0.0)).0;
        assert_eq!(portable, kept as f64);
        assert!(kept > x.len() / 3 && kept < x.len(), "{kept}");

        // ReLU6's mask at its upper bound: pre-activations of exactly 6 and either side.
        let top = 3.5f32;
        assert_eq!(top * scale + shift, 6.0);
        for i in 0..60 {
            x.push(match i % 3 {
                0 => top,
                1 => f32::from_bits(top.to_bits() + 1),
                _ => f32::from_bits(top.to_bits() - 1),
            });
        }
        let ones = vec![1.0f32; x.len()];
        let g6 = relu6_gated((scale, shift));
        let kept6 = x.iter().filter(|&&v| g6(1.0, v) == 1.0).count();
        let (sum, _) = grad_sums(&ones, &x, 0.0, Some((scale, shift)), Act::Relu6);
        assert_eq!(sum, kept6 as f64);
        assert_eq!(
            blocked_sums(&ones, &x, |d, v| (g6(d, v), 0.0)).0,
            kept6 as f64
        );
        assert!(kept6 + 40 <= x.iter().filter(|&&v| g(1.0, v) == 1.0).count());
    }
}
