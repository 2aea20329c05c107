//! The transforms of F(2×2, 3×3) and F(4×4, 3×3): of the input tiles (Bᵀ d B), of the output
//! gradient's tiles (A e Aᵀ), of the products back to output tiles (Aᵀ M A), of the kernels
//! (G g Gᵀ) and of the kernels' gradients back (Gᵀ dU G), each over the channels of a tile row
//! [`super::LANES`] lanes at a time.

use super::layout::{lanes, planes_at, points, points_mut};
use super::XI;
use crate::ops::cpu::multiversion;
use crate::ops::Element;

multiversion! {
/// `V = Bᵀ d B` for the `tw` tiles of one tile row, from its four channels-last padded rows
/// (`c` channels), into `v[ξ][(first + tx)·c + channel]`.
/// Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]].
pub(super) fn input_tiles<T: Element>(
    rows: [&[T]; 4],
    c: usize,
    tw: usize,
    v: &mut [&mut [T]; XI],
    first: usize,
) {
    for tx in 0..tw {
        // d[4i + j]: row i, column j of the tile, which starts at padded column 2tx.
        let d: [&[T]; XI] = std::array::from_fn(|p| &rows[p / 4][(2 * tx + p % 4) * c..][..c]);
        let mut out = v.each_mut().map(|p| &mut p[(first + tx) * c..][..c]);
        lanes(&mut out, &d, c, |d| {
            // Bᵀ down each column j, then B along each row i.
            let col = |j: usize| {
                [
                    d[j] - d[8 + j],
                    d[4 + j] + d[8 + j],
                    d[8 + j] - d[4 + j],
                    d[4 + j] - d[12 + j],
                ]
            };
            let (c0, c1, c2, c3) = (col(0), col(1), col(2), col(3));
            std::array::from_fn(|p| {
                let i = p / 4;
                match p % 4 {
                    0 => c0[i] - c2[i],
                    1 => c1[i] + c2[i],
                    2 => c2[i] - c1[i],
                    _ => c1[i] - c3[i],
                }
            })
        });
    }
}
}

multiversion! {
/// `Ṁ = A e Aᵀ` for the `tw` output-gradient tiles of one tile row, from its two
/// channels-last rows (`o` channels, zero beyond the output), into
/// `m[ξ][(first + tx)·o + channel]`. A = [[1,0],[1,1],[1,−1],[0,−1]].
pub(super) fn grad_tiles<T: Element>(
    rows: [&[T]; 2],
    o: usize,
    tw: usize,
    m: &mut [&mut [T]; XI],
    first: usize,
) {
    for tx in 0..tw {
        // e[2a + b]: row a, column b of the tile.
        let e: [&[T]; 4] = std::array::from_fn(|p| &rows[p / 2][(2 * tx + p % 2) * o..][..o]);
        let mut out = m.each_mut().map(|p| &mut p[(first + tx) * o..][..o]);
        lanes(&mut out, &e, o, |e| {
            // A down each column b, then A along each row.
            let col = |b: usize| {
                let (top, bottom) = (e[b], e[2 + b]);
                [top, top + bottom, top - bottom, T::zero() - bottom]
            };
            let (t0, t1) = (col(0), col(1));
            std::array::from_fn(|p| {
                let i = p / 4;
                match p % 4 {
                    0 => t0[i],
                    1 => t0[i] + t1[i],
                    2 => t0[i] - t1[i],
                    _ => T::zero() - t1[i],
                }
            })
        });
    }
}
}

multiversion! {
/// `Y = Aᵀ M A` for the `tw` tiles of one tile row, from
/// `m[ξ·stride + (first + tx)·o + channel]`, into two channels-last output rows
/// `out[r][column][channel]` of `2·tw` columns each. Aᵀ = [[1,1,1,0],[0,1,−1,−1]].
pub(super) fn output_tiles<T: Element>(
    m: &[T],
    o: usize,
    tw: usize,
    first: usize,
    stride: usize,
    out: &mut [T],
) {
    let (top, bottom) = out.split_at_mut(2 * tw * o);
    for tx in 0..tw {
        let inp = points::<T, XI>(m, (first + tx) * o, stride, o);
        let (y00, y01) = top[2 * tx * o..][..2 * o].split_at_mut(o);
        let (y10, y11) = bottom[2 * tx * o..][..2 * o].split_at_mut(o);
        lanes(&mut [y00, y01, y10, y11], &inp, o, |m| {
            // Aᵀ down each column j, then Aᵀ along each row.
            let s0 = |j: usize| m[j] + m[4 + j] + m[8 + j];
            let s1 = |j: usize| m[4 + j] - m[8 + j] - m[12 + j];
            let (a, b) = ([s0(0), s0(1), s0(2), s0(3)], [s1(0), s1(1), s1(2), s1(3)]);
            [
                a[0] + a[1] + a[2],
                a[1] - a[2] - a[3],
                b[0] + b[1] + b[2],
                b[1] - b[2] - b[3],
            ]
        });
    }
}
}

/// Bᵀ of F(4×4, 3×3) on one column or row (Lavin & Gray's points 0, ±1, ±2, ∞):
/// Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
/// 0 4 0 −5 0 1].
#[inline(always)]
fn bt4<T: Element>([d0, d1, d2, d3, d4, d5]: [T; 6]) -> [T; 6] {
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    [
        four * d0 - five * d2 + d4,
        d3 + d4 - four * (d1 + d2),
        four * (d1 - d2) - d3 + d4,
        two * (d3 - d1) - d2 + d4,
        two * (d1 - d3) - d2 + d4,
        four * d1 - five * d3 + d5,
    ]
}

/// Aᵀ of F(4×4, 3×3): Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
#[inline(always)]
fn at4<T: Element>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> [T; 4] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let (p12, m12, p34, m34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [
        m0 + p12 + p34,
        m12 + two * m34,
        p12 + four * p34,
        m12 + eight * m34 + m5,
    ]
}

/// G of F(4×4, 3×3): G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1].
#[inline(always)]
fn g4<T: Element>([g0, g1, g2]: [T; 3]) -> [T; 6] {
    let c = |v: f64| T::from_f64(v);
    [
        g0 * c(0.25),
        (g0 + g1 + g2) * c(-1.0 / 6.0),
        (g0 - g1 + g2) * c(-1.0 / 6.0),
        g0 * c(1.0 / 24.0) + g1 * c(1.0 / 12.0) + g2 * c(1.0 / 6.0),
        g0 * c(1.0 / 24.0) - g1 * c(1.0 / 12.0) + g2 * c(1.0 / 6.0),
        g2,
    ]
}

/// Channels per step of F(4×4)'s separable transforms: their intermediate rows (36 of them)
/// stay in L1.
pub(super) const STEP4: usize = 64;

/// A 6×6-point transform `P = F t Fᵀ` of the `tw` tiles of one tile row, where `F` maps `R`
/// values to 6 (`f`) and tile tx's `R × R` entries start at column 4tx of the `R`
/// channels-last `rows` (`c` channels): `f` down the tile's columns into `tmp`
/// (6R · [`STEP4`]), then along its six rows into `dst[ξ][(first + tx)·c + channel]`, each
/// a loop of `R` inputs and six outputs over the channels (one 36-point loop did not
/// vectorise).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn six_by_six<T: Element, const R: usize>(
    rows: [&[T]; R],
    c: usize,
    tw: usize,
    dst: &mut [&mut [T]; 36],
    first: usize,
    tmp: &mut [T],
    f: impl Fn([T; R]) -> [T; 6] + Copy,
) {
    for tx in 0..tw {
        for c0 in (0..c).step_by(STEP4) {
            let n = STEP4.min(c - c0);
            // tmp[(R·i + j)·STEP4 + channel]: row i of F t, column j.
            for j in 0..R {
                let inp: [&[T]; R] =
                    std::array::from_fn(|i| &rows[i][(4 * tx + j) * c + c0..][..n]);
                let mut out = points_mut::<T, 6>(tmp, j * STEP4, R * STEP4, n);
                lanes(&mut out, &inp, n, f);
            }
            for i in 0..6 {
                let inp = points::<T, R>(tmp, R * i * STEP4, STEP4, n);
                let mut out = planes_at::<T, 6>(&mut dst[..], 6 * i, (first + tx) * c + c0, n);
                lanes(&mut out, &inp, n, f);
            }
        }
    }
}

multiversion! {
/// F(4×4, 3×3)'s `V = Bᵀ d B` for the `tw` tiles of one tile row, from its six channels-last
/// padded rows (`c` channels), into `v[ξ][(first + tx)·c + channel]`, ξ = 6i + j.
pub(super) fn input_tiles4<T: Element>(
    rows: [&[T]; 6],
    c: usize,
    tw: usize,
    v: &mut [&mut [T]; 36],
    first: usize,
    tmp: &mut [T],
) {
    six_by_six(rows, c, tw, v, first, tmp, bt4);
}
}

multiversion! {
/// F(4×4, 3×3)'s `Y = Aᵀ M A` for the `tw` tiles of one tile row, from
/// `m[ξ·stride + (first + tx)·o + channel]`, into four channels-last output rows
/// `out[r][column][channel]` of `4·tw` columns each: Aᵀ down the six columns into `tmp`
/// (24 · [`STEP4`]), then along the four rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn output_tiles4<T: Element>(
    m: &[T],
    o: usize,
    tw: usize,
    first: usize,
    stride: usize,
    out: &mut [T],
    tmp: &mut [T],
) {
    let width = 4 * tw * o;
    for tx in 0..tw {
        for o0 in (0..o).step_by(STEP4) {
            let n = STEP4.min(o - o0);
            // tmp[(6r + j)·STEP4 + channel]: row r of Aᵀ M, column j.
            for j in 0..6 {
                let inp = points::<T, 6>(m, j * stride + (first + tx) * o + o0, 6 * stride, n);
                let mut dst = points_mut::<T, 4>(tmp, j * STEP4, 6 * STEP4, n);
                lanes(&mut dst, &inp, n, at4);
            }
            for r in 0..4 {
                let inp = points::<T, 6>(tmp, 6 * r * STEP4, STEP4, n);
                let mut dst = points_mut::<T, 4>(&mut out[r * width..], 4 * tx * o + o0, o, n);
                lanes(&mut dst, &inp, n, at4);
            }
        }
    }
}
}

multiversion! {
/// F(4×4, 3×3)'s `U = G g Gᵀ` for `len` kernels given entry by entry (`g[a·len + kernel]`),
/// into the 36 `planes`; rotated by 180° first when `rotate` (the input gradient's kernels).
/// G down the three columns into `tmp` (18 · `len`), then along the six rows.
pub(super) fn kernel_points4<T: Element>(
    g: &[T],
    len: usize,
    planes: &mut [&mut [T]; 36],
    rotate: bool,
    tmp: &mut [T],
) {
    let entry = |a: usize| {
        let a = if rotate { 8 - a } else { a };
        &g[a * len..][..len]
    };
    // tmp[(3i + j)·len + kernel]: row i of G g, column j.
    for j in 0..3 {
        let inp = [entry(j), entry(3 + j), entry(6 + j)];
        let mut out = points_mut::<T, 6>(tmp, j * len, 3 * len, len);
        lanes(&mut out, &inp, len, g4);
    }
    for i in 0..6 {
        let inp = points::<T, 3>(tmp, 3 * i * len, len, len);
        let mut out = planes_at::<T, 6>(&mut planes[..], 6 * i, 0, len);
        lanes(&mut out, &inp, len, g4);
    }
}
}

/// A of F(4×4, 3×3) on one column or row (A = (Aᵀ)ᵀ, 6×4).
#[inline(always)]
fn a4<T: Element>([e0, e1, e2, e3]: [T; 4]) -> [T; 6] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let (even, odd) = (e0 + e2, e1 + e3);
    let (even4, odd2) = (e0 + four * e2, two * e1 + eight * e3);
    [e0, even + odd, even - odd, even4 + odd2, even4 - odd2, e3]
}

/// Gᵀ of F(4×4, 3×3) on one column or row (Gᵀ is 3×6).
#[inline(always)]
fn gt4<T: Element>([u0, u1, u2, u3, u4, u5]: [T; 6]) -> [T; 3] {
    let c = |v: f64| T::from_f64(v);
    let (p12, m12, p34, m34) = (u1 + u2, u2 - u1, u3 + u4, u3 - u4);
    [
        u0 * c(0.25) - p12 * c(1.0 / 6.0) + p34 * c(1.0 / 24.0),
        m12 * c(1.0 / 6.0) + m34 * c(1.0 / 12.0),
        (p34 - p12) * c(1.0 / 6.0) + u5,
    ]
}

multiversion! {
/// F(4×4, 3×3)'s `Ṁ = A e Aᵀ` for the `tw` output-gradient tiles of one tile row, from its
/// four channels-last rows (`o` channels, zero beyond the output), into
/// `m[ξ][(first + tx)·o + channel]`.
pub(super) fn grad_tiles4<T: Element>(
    rows: [&[T]; 4],
    o: usize,
    tw: usize,
    m: &mut [&mut [T]; 36],
    first: usize,
    tmp: &mut [T],
) {
    six_by_six(rows, o, tw, m, first, tmp, a4);
}
}

multiversion! {
/// F(4×4, 3×3)'s `dW = Gᵀ dU G` for `len` kernels, from the 36 points of `du` into the nine
/// entries (3·row + column) of `dw`: Gᵀ down the six columns into `tmp` (18 · `len`), then
/// along the three rows.
pub(super) fn kernel_grads4<T: Element>(
    du: &[&[T]; 36],
    dw: &mut [&mut [T]; 9],
    len: usize,
    tmp: &mut [T],
) {
    // tmp[(6r + k)·len + kernel]: row r of Gᵀ dU, column k.
    for k in 0..6 {
        let inp: [&[T]; 6] = std::array::from_fn(|i| du[6 * i + k]);
        let mut out = points_mut::<T, 3>(tmp, k * len, 6 * len, len);
        lanes(&mut out, &inp, len, gt4);
    }
    for r in 0..3 {
        let inp = points::<T, 6>(tmp, 6 * r * len, len, len);
        let mut out = planes_at::<T, 3>(&mut dw[..], 3 * r, 0, len);
        lanes(&mut out, &inp, len, gt4);
    }
}
}

multiversion! {
/// `U = G g Gᵀ` for `len` kernels given entry by entry (`g[a·len + kernel]`, a = 3·row +
/// column), into the sixteen `planes`. G = [[1,0,0],[½,½,½],[½,−½,½],[0,0,1]].
pub(super) fn kernel_points<T: Element>(g: &[T], len: usize, planes: &mut [&mut [T]; XI]) {
    let half = T::from_f64(0.5);
    let g = points::<T, 9>(g, 0, len, len);
    lanes(planes, &g, len, |g| {
        // G down each column j: 4×3.
        let a: [[T; 3]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                match i {
                    0 => g0,
                    1 => (g0 + g1 + g2) * half,
                    2 => (g0 - g1 + g2) * half,
                    _ => g2,
                }
            })
        });
        // Then G along each row i.
        std::array::from_fn(|p| {
            let ai = a[p / 4];
            match p % 4 {
                0 => ai[0],
                1 => (ai[0] + ai[1] + ai[2]) * half,
                2 => (ai[0] - ai[1] + ai[2]) * half,
                _ => ai[2],
            }
        })
    });
}
}

multiversion! {
/// `dW = Gᵀ dU G` for `len` kernels, from the sixteen points of `du` into the nine entries
/// (3·row + column) of `dw`.
pub(super) fn kernel_grads<T: Element>(du: &[&[T]; XI], dw: &mut [&mut [T]; 9], len: usize) {
    let half = T::from_f64(0.5);
    lanes(dw, du, len, |u| {
        // Gᵀ down each column k: 3×4.
        let cols: [[T; 3]; 4] = std::array::from_fn(|k| {
            let (u0, u1, u2, u3) = (u[k], u[4 + k], u[8 + k], u[12 + k]);
            [
                u0 + (u1 + u2) * half,
                (u1 - u2) * half,
                (u1 + u2) * half + u3,
            ]
        });
        // Then G along each row i.
        std::array::from_fn(|p| {
            let h = |k: usize| cols[k][p / 3];
            match p % 3 {
                0 => h(0) + (h(1) + h(2)) * half,
                1 => (h(1) - h(2)) * half,
                _ => (h(1) + h(2)) * half + h(3),
            }
        })
    });
}
}
