//! Winograd convolution for the stride-1 3×3 convolutions, which carry about 80 % of
//! ResNet-18's multiply-adds. F(4×4, 3×3) for all three passes wherever the output is at
//! least 8×8 (a 6×6 input tile gives a 4×4 output tile with 36 multiplications per
//! channel pair: 4× fewer than direct), F(2×2, 3×3) below that (a 4×4 input tile gives a 2×2
//! output tile with 16: 2.25× fewer).
//!
//! With the input tile `d`, the kernel `g` (3×3) and the transforms `V = Bᵀ d B`,
//! `U = G g Gᵀ`, a tile of the output is `Y = Aᵀ [Σ_c U ⊙ V] A`: one GEMM per point ξ of the
//! transform domain (16 or 36) between the transformed kernels and the transformed tiles. The
//! three passes of training:
//!
//! - forward: `M[ξ] (O×T) = U[ξ] (O×C) · V[ξ] (C×T)`, then `Y = Aᵀ M A` per tile;
//! - d(input): the forward of d(output) with the kernels rotated by 180° and their channels
//!   swapped, and padding 2 − p (a stride-1 convolution's input gradient is a convolution);
//! - d(weight): `dU[ξ] (O×C) = Σ_tiles Ṁ[ξ] (O×T) · V[ξ]ᵀ (T×C)` with `Ṁ = A dY Aᵀ`, then
//!   `dW = Gᵀ dU G` (the adjoint of the forward in the kernel), with the forward's tiles.
//!
//! The tiles are processed in blocks of whole tile rows, sized so that a block's transformed
//! tiles stay within a few MB, in parallel over blocks. The transforms work channels-last: the
//! rows a tile row reads are transposed once into `[column][channel]` rows, and every
//! transform is then a loop over channels (64–512 in ResNet-18), eight lanes at a time,
//! however small the feature map (layer4 of a 64-px image is 2×2). Transformed tiles and the
//! GEMMs' products are stored `[ξ][tile][channel]`. F(4×4)'s float32 results differ from a
//! direct sum by more than F(2×2)'s (its transforms have entries up to 8 and 1/24); the parity
//! tests against PyTorch stay within 3e-6 of the largest score (docs/fidelity.md).

use gemm::Parallelism;
use rayon::prelude::*;

use super::{matmul, Element, Geometry, Mat};
use crate::cpu::multiversion;

/// Points of the 4×4 transform domain.
const XI: usize = 16;

/// Lanes per step of the channel loops: one AVX2 register of f32.
const LANES: usize = 8;

/// Whether a convolution takes the Winograd path: a 3×3 kernel at stride 1 with padding ≤ 2
/// (so that the input gradient is itself a convolution with non-negative padding).
pub(super) fn applies(g: &Geometry) -> bool {
    crate::winograd_enabled() && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding <= 2
}

/// The tiling of one pass: `n` images of `c` planes of `h × w`, zero padding `pad`, and the
/// output (`oh × ow`) cut into `th × tw` tiles of `m × m` (the last ones cropped): m = 2 for
/// F(2×2, 3×3), 4 for F(4×4, 3×3).
#[derive(Clone, Copy, Debug)]
struct Tiling {
    m: usize,
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    fn new(m: usize, n: usize, c: usize, h: usize, w: usize, pad: usize) -> Self {
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        Self {
            m,
            n,
            c,
            h,
            w,
            pad,
            oh,
            ow,
            th: oh.div_ceil(m),
            tw: ow.div_ceil(m),
        }
    }

    /// Tile rows over the whole batch.
    fn rows(&self) -> usize {
        self.n * self.th
    }

    /// Columns of a padded input row that the tiles read (≥ `w + 2·pad`).
    fn padded_width(&self) -> usize {
        self.m * self.tw + 2
    }

    /// Points of the transform domain: (m + 2)².
    fn points(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Tile rows per block: about 2²⁰ / (`points` · `channels`) tiles (so a block's
    /// transformed tiles take about 4 MB in f32), at least one row, in a number of blocks that
    /// is a multiple of the threads and of near-equal sizes, so that no thread waits on
    /// another's last block.
    fn rows_per_block(&self, channels: usize) -> usize {
        let tiles = (1usize << 20) / (self.points() * channels.max(1));
        let by_size = (tiles / self.tw).max(1);
        let threads = rayon::current_num_threads().max(1);
        let blocks = self.rows().div_ceil(by_size).next_multiple_of(threads);
        self.rows().div_ceil(blocks).max(1)
    }
}

/// `out[k][e] = f([inp[0][e], inp[1][e], …])[k]` for every `e < len`. Eight lanes at a time:
/// every input of a step is read before any output is written, so LLVM vectorises the step
/// without having to prove that the slices (cut from shared buffers) do not overlap. The
/// inputs are read in place, not copied into an array first: LLVM turns copies of arrays this
/// size into calls to `memcpy` (4 % of a DRA step at 128 px when it did).
#[inline(always)]
fn lanes<T: Element, const N: usize, const M: usize>(
    out: &mut [&mut [T]; M],
    inp: &[&[T]; N],
    len: usize,
    f: impl Fn([T; N]) -> [T; M],
) {
    let mut e = 0;
    while e + LANES <= len {
        let x: [&[T; LANES]; N] = std::array::from_fn(|k| {
            inp[k][e..e + LANES]
                .try_into()
                .expect("a range of LANES entries")
        });
        let mut y = [[T::zero(); LANES]; M];
        for l in 0..LANES {
            let r = f(std::array::from_fn(|k| x[k][l]));
            for (yk, rk) in y.iter_mut().zip(r) {
                yk[l] = rk;
            }
        }
        for (o, yk) in out.iter_mut().zip(&y) {
            o[e..e + LANES].copy_from_slice(yk);
        }
        e += LANES;
    }
    for e in e..len {
        let r = f(std::array::from_fn(|k| inp[k][e]));
        for (o, rk) in out.iter_mut().zip(r) {
            o[e] = rk;
        }
    }
}

/// The `len` entries at `first + k·stride` of `buf`, for the points `k < N`.
#[inline(always)]
fn points<T, const N: usize>(buf: &[T], first: usize, stride: usize, len: usize) -> [&[T]; N] {
    std::array::from_fn(|k| &buf[first + k * stride..][..len])
}

/// [`points`], writable.
#[inline(always)]
fn points_mut<T, const N: usize>(
    buf: &mut [T],
    first: usize,
    stride: usize,
    len: usize,
) -> [&mut [T]; N] {
    let mut rest = &mut buf[first..];
    std::array::from_fn(|k| {
        let taken = std::mem::take(&mut rest);
        if k + 1 < N {
            let (head, tail) = taken.split_at_mut(stride);
            rest = tail;
            &mut head[..len]
        } else {
            &mut taken[..len]
        }
    })
}

multiversion! {
/// `dst[j·dst_rs + i] = src[i·src_rs + j]` for `i < rows`, `j < cols`: NCHW rows to
/// channels-last rows and back, by blocks of 8×8 (see [`transpose8`]).
fn transpose<T: Element>(
    src: &[T],
    src_rs: usize,
    dst: &mut [T],
    dst_rs: usize,
    rows: usize,
    cols: usize,
) {
    const B: usize = 8;
    let (rb, cb) = (rows / B * B, cols / B * B);
    for i0 in (0..rb).step_by(B) {
        for j0 in (0..cb).step_by(B) {
            transpose8(&src[i0 * src_rs + j0..], src_rs, &mut dst[j0 * dst_rs + i0..], dst_rs);
        }
        for j in cb..cols {
            let out = &mut dst[j * dst_rs + i0..][..B];
            for (i, o) in out.iter_mut().enumerate() {
                *o = src[(i0 + i) * src_rs + j];
            }
        }
    }
    for i in rb..rows {
        for (j, s) in src[i * src_rs..][..cols].iter().enumerate() {
            dst[j * dst_rs + i] = *s;
        }
    }
}
}

/// One 8×8 block of [`transpose`]. In f32 on a CPU with AVX, eight loads, 24 shuffles and
/// eight stores; LLVM compiles the plain loops to one scalar move per entry through the stack
/// (7 % of a DRA step at 128 px when it did).
#[inline(always)]
fn transpose8<T: Element>(src: &[T], src_rs: usize, dst: &mut [T], dst_rs: usize) {
    assert!(src.len() >= 7 * src_rs + 8 && dst.len() >= 7 * dst_rs + 8);
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx")
    {
        // SAFETY: `T` is `f32`, so the casts keep the layout; the assert above keeps all
        // eight rows of both blocks in bounds; the CPU has AVX.
        unsafe { transpose8_avx(src.as_ptr().cast(), src_rs, dst.as_mut_ptr().cast(), dst_rs) };
        return;
    }
    for j in 0..8 {
        for i in 0..8 {
            dst[j * dst_rs + i] = src[i * src_rs + j];
        }
    }
}

/// The 8×8 f32 transpose in AVX registers: pairs of rows interleaved, then pairs of pairs,
/// then the 128-bit halves exchanged.
///
/// # Safety
/// The CPU has AVX; rows 0..8 of `src` (stride `src_rs`) and of `dst` (stride `dst_rs`) are
/// each 8 valid f32, and the blocks do not overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8_avx(src: *const f32, src_rs: usize, dst: *mut f32, dst_rs: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees rows 0..8 of `src` hold 8 valid f32 each.
    let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_rs)) });
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for j in 0..4 {
        // SAFETY: the caller guarantees rows 0..8 of `dst` hold 8 writable f32 each.
        unsafe {
            _mm256_storeu_ps(
                dst.add(j * dst_rs),
                _mm256_permute2f128_ps::<0x20>(s[j], s[4 + j]),
            );
            _mm256_storeu_ps(
                dst.add((4 + j) * dst_rs),
                _mm256_permute2f128_ps::<0x31>(s[j], s[4 + j]),
            );
        }
    }
}

/// Channels-last copies of the padded input rows that tile rows read: padded row `yp` of the
/// current image in slot `yp % 8`, as `[column][channel]` with the padding columns zero. A
/// tile row (m + 2 rows) shares two rows with the next, so each input row is transposed once.
struct Window<T> {
    slots: [Vec<T>; 8],
    /// The (image, padded row) each slot holds.
    held: [Option<(usize, usize)>; 8],
    /// A padded row of zeros, for the rows outside the image.
    zero: Vec<T>,
}

impl<T: Element> Window<T> {
    fn new(t: &Tiling) -> Self {
        let len = t.padded_width() * t.c;
        Self {
            slots: std::array::from_fn(|_| vec![T::zero(); len]),
            held: [None; 8],
            zero: vec![T::zero(); len],
        }
    }

    /// The m + 2 padded rows of tile row `ty` of image `n` in `x` (`N×C×H×W`), then zero
    /// rows up to six.
    fn rows(&mut self, x: &[T], t: &Tiling, n: usize, ty: usize) -> [&[T]; 6] {
        let plane = t.h * t.w;
        let (top, count) = (t.m * ty, t.m + 2);
        let inside = |yp: usize| yp.checked_sub(t.pad).filter(|&y| y < t.h);
        for yp in top..top + count {
            let Some(y) = inside(yp) else { continue };
            if self.held[yp % 8] != Some((n, yp)) {
                let src = &x[n * t.c * plane + y * t.w..];
                // Only columns pad..pad + w are written: the padding stays zero.
                let dst = &mut self.slots[yp % 8][t.pad * t.c..];
                transpose(src, plane, dst, t.c, t.c, t.w);
                self.held[yp % 8] = Some((n, yp));
            }
        }
        std::array::from_fn(|k| match inside(top + k).filter(|_| k < count) {
            Some(_) => &self.slots[(top + k) % 8][..],
            None => &self.zero[..],
        })
    }
}

multiversion! {
/// `V = Bᵀ d B` for the `tw` tiles of one tile row, from its four channels-last padded rows
/// (`c` channels), into `v[ξ][(first + tx)·c + channel]`.
/// Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]].
fn input_tiles<T: Element>(
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
fn grad_tiles<T: Element>(
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
fn output_tiles<T: Element>(
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
const STEP4: usize = 64;

/// `N` of the planes in `planes` from `first`, each from `at` on, `len` long.
#[inline(always)]
fn planes_at<'a, T, const N: usize>(
    planes: &'a mut [&mut [T]],
    first: usize,
    at: usize,
    len: usize,
) -> [&'a mut [T]; N] {
    let mut it = planes[first..first + N].iter_mut();
    std::array::from_fn(|_| {
        let p = it.next().expect("N planes from `first`");
        &mut p[at..at + len]
    })
}

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
fn input_tiles4<T: Element>(
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
fn output_tiles4<T: Element>(
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
fn kernel_points4<T: Element>(
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
fn grad_tiles4<T: Element>(
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
fn kernel_grads4<T: Element>(
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

/// Splits each of the point-major planes of `u` (kernels or tiles) into the same chunks of `chunk`
/// kernels: entry j holds chunk j of every plane, for one task to fill.
fn plane_chunks<T>(u: &mut [T], kernels: usize, chunk: usize) -> Vec<Vec<&mut [T]>> {
    let mut tasks: Vec<Vec<&mut [T]>> = Vec::new();
    for plane in u.chunks_mut(kernels) {
        for (j, part) in plane.chunks_mut(chunk).enumerate() {
            if j == tasks.len() {
                tasks.push(Vec::with_capacity(36));
            }
            tasks[j].push(part);
        }
    }
    tasks
}

/// Kernels per parallel task of the kernel transforms.
fn kernel_chunk(kernels: usize) -> usize {
    kernels.div_ceil(4 * rayon::current_num_threads()).max(1024)
}

/// `U = G g Gᵀ` for every kernel, laid out `[ξ][o][c]` over the `P` points of the tiling
/// (16: F(2×2), 36: F(4×4), whose kernels are rotated by 180° first when `rotate`), in
/// parallel over chunks of kernels.
fn weight_transform<T: Element, const P: usize>(
    w: &[T],
    o: usize,
    c: usize,
    rotate: bool,
) -> Vec<T> {
    /// Kernels per step: their nine rows stay in L1.
    const STEP: usize = 256;
    let kernels = o * c;
    let mut u = crate::cpu::zeroed::<T>(P * kernels);
    let chunk = kernel_chunk(kernels);
    plane_chunks(&mut u, kernels, chunk)
        .into_par_iter()
        .enumerate()
        .for_each(|(j, planes)| {
            let Ok(mut planes) = <[&mut [T]; P]>::try_from(planes) else {
                unreachable!("`plane_chunks` cuts every plane")
            };
            let mut g = vec![T::zero(); 9 * STEP];
            let mut tmp = vec![T::zero(); if P == XI { 0 } else { 18 * STEP }];
            let len = planes[0].len();
            for s in (0..len).step_by(STEP) {
                let n = STEP.min(len - s);
                // The step's kernels as nine rows (one per kernel entry), so that the
                // transform runs along the kernels.
                transpose(&w[(j * chunk + s) * 9..], 9, &mut g, n, n, 9);
                let mut out = planes.each_mut().map(|p| &mut p[s..s + n]);
                // `P` is one of the two sizes; the casts only restate it to the compiler.
                if let Ok(out) = <&mut [&mut [T]; XI]>::try_from(&mut out[..]) {
                    debug_assert!(!rotate, "F(2×2) rotates in the transform domain");
                    kernel_points(&g, n, out);
                } else if let Ok(out) = <&mut [&mut [T]; 36]>::try_from(&mut out[..]) {
                    kernel_points4(&g, n, out, rotate, &mut tmp);
                } else {
                    unreachable!("a tiling has 16 or 36 points")
                }
            }
        });
    u
}

multiversion! {
/// `U = G g Gᵀ` for `len` kernels given entry by entry (`g[a·len + kernel]`, a = 3·row +
/// column), into the sixteen `planes`. G = [[1,0,0],[½,½,½],[½,−½,½],[0,0,1]].
fn kernel_points<T: Element>(g: &[T], len: usize, planes: &mut [&mut [T]; XI]) {
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

/// The transformed kernels of a pass, as the GEMMs' left operands.
struct Kernels<'a, T> {
    /// `U[ξ][o][c]` of the forward convolution's kernels (for F(4×4)'s input gradient, of the
    /// same kernels rotated by 180°).
    u: &'a [T],
    /// The forward's output and input channels.
    o: usize,
    c: usize,
    /// For the input gradient: kernel (o, c) rotated by 180° at position (c, o), read
    /// transposed.
    adjoint: bool,
    /// Whether the adjoint's rotation is still to be done by swapping points: in F(2×2),
    /// rotating a kernel reverses it along both axes, which in the transform domain swaps
    /// points 0 and 3 of each axis (G's rows evaluate g at 0, 1, −1 and ∞), so the forward's U
    /// serves. F(4×4)'s points (0, ±1, ±2, ∞) are not closed under t ↦ 1/t, so its input
    /// gradient transforms the rotated kernels instead.
    swap: bool,
}

impl<'a, T: Element> Kernels<'a, T> {
    /// Output channels of the pass.
    fn rows(&self) -> usize {
        if self.adjoint {
            self.c
        } else {
            self.o
        }
    }

    /// Input channels of the pass.
    fn cols(&self) -> usize {
        if self.adjoint {
            self.o
        } else {
            self.c
        }
    }

    /// The (rows × cols) kernel matrix at point ξ.
    fn at(&self, xi: usize) -> Mat<'a, T> {
        let (o, c) = (self.o, self.c);
        if self.adjoint {
            let swap = |i: usize| [3, 1, 2, 0][i];
            let xi = if self.swap {
                4 * swap(xi / 4) + swap(xi % 4)
            } else {
                xi
            };
            Mat {
                data: &self.u[xi * o * c..],
                rs: 1,
                cs: c,
            }
        } else {
            Mat {
                data: &self.u[xi * o * c..],
                rs: c,
                cs: 1,
            }
        }
    }
}

/// `dW = Gᵀ dU G` for every kernel, where `dU[ξ][o][c]` is the sum of `partials`, to
/// `O×C×3×3`, in parallel over the output channels (the partial sums are added there too, not
/// in a serial pass of their own).
fn weight_untransform<T: Element, const P: usize>(
    partials: &[Vec<T>],
    o: usize,
    c: usize,
) -> Vec<T> {
    let mut dw = crate::cpu::zeroed::<T>(o * c * 9);
    dw.par_chunks_mut(c * 9).enumerate().for_each_init(
        || {
            let tmp = if P == XI { 0 } else { 18 * c };
            (
                vec![T::zero(); P * c],
                vec![T::zero(); 9 * c],
                vec![T::zero(); tmp],
            )
        },
        |(du, entries, tmp), (oi, dw)| {
            // Row `oi` of every point's dU, summed over the partials in their order.
            let du = if let [only] = partials {
                points::<T, P>(only, oi * c, o * c, c)
            } else {
                for (xi, row) in du.chunks_exact_mut(c).enumerate() {
                    let at = (xi * o + oi) * c;
                    row.copy_from_slice(&partials[0][at..at + c]);
                    for part in &partials[1..] {
                        row.iter_mut()
                            .zip(&part[at..at + c])
                            .for_each(|(a, b)| *a += *b);
                    }
                }
                points::<T, P>(du, 0, c, c)
            };
            let mut out = points_mut::<T, 9>(entries, 0, c, c);
            // `P` is one of the two sizes; the casts only restate it to the compiler.
            if let Ok(du) = <&[&[T]; XI]>::try_from(&du[..]) {
                kernel_grads(du, &mut out, c);
            } else if let Ok(du) = <&[&[T]; 36]>::try_from(&du[..]) {
                kernel_grads4(du, &mut out, c, tmp);
            } else {
                unreachable!("a tiling has 16 or 36 points")
            }
            // Entry-major to kernel-major.
            transpose(entries, c, dw, 9, 9, c);
        },
    );
    dw
}

multiversion! {
/// `dW = Gᵀ dU G` for `len` kernels, from the sixteen points of `du` into the nine entries
/// (3·row + column) of `dw`.
fn kernel_grads<T: Element>(du: &[&[T]; XI], dw: &mut [&mut [T]; 9], len: usize) {
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

/// A pointer to the output that blocks write through: each block makes slices of only the
/// output rows of its own tile rows, so the slices of different blocks never overlap.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: see the type's doc: blocks write disjoint elements.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as for `Send`: shared between blocks, it is only written through at disjoint rows.
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// The rows `r0..r1` of a block as (image, tile row) pairs.
fn tile_rows(t: &Tiling, r0: usize, r1: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (r0..r1).map(|r| (r / t.th, r % t.th))
}

/// The convolution of `x` (`t.n × t.c × h × w`) with the transformed kernels `k`:
/// `t.n × k.rows() × oh × ow`.
fn convolve<T: Element>(x: &[T], t: &Tiling, k: &Kernels<T>, rows_per_block: usize) -> Vec<T> {
    let (c, o) = (k.cols(), k.rows());
    debug_assert_eq!(c, t.c);
    // Not zeroed: the blocks write every element (below).
    let len = t.n * o * t.oh * t.ow;
    let mut out = Vec::<T>::with_capacity(len);
    let shared = SharedOut(out.as_mut_ptr());
    let blocks = t.rows().div_ceil(rows_per_block);
    (0..blocks).into_par_iter().for_each(|b| {
        // Rebound so that the closure captures the whole `SharedOut` (which is `Sync`), not
        // its raw-pointer field alone (which is not).
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let (r0, r1) = (b * rows_per_block, ((b + 1) * rows_per_block).min(t.rows()));
        let tiles = (r1 - r0) * t.tw;
        let (points, width) = (t.points(), t.m * t.tw * o);
        let mut window = Window::new(t);
        // A tile row's m output rows, channels-last and then channels-first.
        let mut last = vec![T::zero(); t.m * width];
        let mut first = vec![T::zero(); o * t.m * t.ow];
        // The intermediate rows of F(4×4)'s separable transforms.
        let mut tmp4 = vec![T::zero(); if t.m == 4 { 36 * STEP4 } else { 0 }];
        T::with_scratch(points * (c + o) * tiles, |scratch| {
            let (v, m) = scratch.split_at_mut(points * c * tiles);
            for (i, (n, ty)) in tile_rows(t, r0, r1).enumerate() {
                let rows = window.rows(x, t, n, ty);
                if t.m == 2 {
                    let mut planes = points_mut::<T, XI>(v, 0, c * tiles, c * tiles);
                    let rows = [rows[0], rows[1], rows[2], rows[3]];
                    input_tiles(rows, c, t.tw, &mut planes, i * t.tw);
                } else {
                    let mut planes = points_mut::<T, 36>(v, 0, c * tiles, c * tiles);
                    input_tiles4(rows, c, t.tw, &mut planes, i * t.tw, &mut tmp4);
                }
            }
            for xi in 0..points {
                // Mᵀ[ξ] (T×O) = Vᵀ[ξ] (T×C) · Kᵀ[ξ] (C×O), stored [tile][o].
                let kt = k.at(xi);
                matmul(
                    &mut m[xi * o * tiles..(xi + 1) * o * tiles],
                    Mat {
                        data: &v[xi * c * tiles..],
                        rs: c,
                        cs: 1,
                    },
                    Mat {
                        data: kt.data,
                        rs: kt.cs,
                        cs: kt.rs,
                    },
                    (tiles, o, c),
                    false,
                    Parallelism::None,
                );
            }
            for (i, (n, ty)) in tile_rows(t, r0, r1).enumerate() {
                if t.m == 2 {
                    output_tiles(m, o, t.tw, i * t.tw, o * tiles, &mut last);
                } else {
                    output_tiles4(m, o, t.tw, i * t.tw, o * tiles, &mut last, &mut tmp4);
                }
                // The output rows of this tile row: m·ty up to m of them, inside the output.
                let (y0, y1) = (t.m * ty, (t.m * ty + t.m).min(t.oh));
                let span = (y1 - y0) * t.ow;
                for (r, row) in last.chunks_exact(width).take(y1 - y0).enumerate() {
                    transpose(row, o, &mut first[r * t.ow..], span, t.ow, o);
                }
                for (oi, src) in first.chunks_exact(span).take(o).enumerate() {
                    let start = ((n * o + oi) * t.oh + y0) * t.ow;
                    assert!(start + span <= len);
                    // SAFETY: these rows lie inside `out`'s capacity (asserted), which outlives
                    // the blocks, and belong to this block's tile row alone (see
                    // `SharedOut`); nothing reads `out` until every block is done.
                    unsafe {
                        std::ptr::copy_nonoverlapping(src.as_ptr(), shared.0.add(start), span)
                    };
                }
            }
        });
    });
    // SAFETY: the blocks cover every (image, tile row), and each wrote its output rows
    // m·ty..min(m·ty + m, oh) whole for every output channel: together all rows of every plane.
    unsafe { out.set_len(len) };
    out
}

/// The tile size for an output of `oh × ow`: 4 (F(4×4, 3×3): 36 multiplications per 16
/// outputs and channel pair, against 64 with F(2×2)) where the output is at least 8×8, else 2.
/// Below, an image has at most one 4×4 tile, and the costs per convolution (the 36 transformed
/// kernels per channel pair, 2.25× F(2×2)'s, written and packed for the GEMMs) outweigh the
/// saved multiplications: per-op timings of the DRA step at 128 px, layer4 at 4×4, forward +
/// input gradient 0.28 s with F(4×4) against 0.23 s with F(2×2) over three steps; at 8×8
/// (layer3) F(4×4) took 0.17 s against 0.21 s.
fn tile_size(oh: usize, ow: usize) -> usize {
    if crate::winograd_f4_enabled() && oh >= 8 && ow >= 8 {
        4
    } else {
        2
    }
}

/// The forward convolution: `x` (`N×C×H×W`), `w` (`O×C×3×3`) → `N×O×OH×OW`, and for F(2×2)
/// the transformed kernels, which [`input_grad`] can take instead of transforming `w` again.
pub(super) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> (Vec<T>, Option<Vec<T>>) {
    let t = Tiling::new(tile_size(g.oh, g.ow), g.n, g.c, g.h, g.w, g.padding);
    let u = if t.m == 2 {
        weight_transform::<T, XI>(w, g.o, g.c, false)
    } else {
        weight_transform::<T, 36>(w, g.o, g.c, false)
    };
    let kernels = Kernels {
        u: &u,
        o: g.o,
        c: g.c,
        adjoint: false,
        swap: false,
    };
    let y = convolve(x, &t, &kernels, t.rows_per_block(g.c.max(g.o)));
    (y, (t.m == 2 && tile_size(g.h, g.w) == 2).then_some(u))
}

/// Entries of the transformed kernels that [`forward`] returns.
pub(super) fn kernels_len(g: &Geometry) -> usize {
    XI * g.o * g.c
}

/// d(input) from d(output) `dy` (`N×O×OH×OW`): the convolution of `dy` with the rotated,
/// channel-swapped kernels and padding 2 − p. `kernels` are the forward's F(2×2) transformed
/// kernels where it kept them; otherwise `w` is transformed here.
pub(super) fn input_grad<T: Element>(
    dy: &[T],
    w: &[T],
    kernels: Option<&[T]>,
    g: &Geometry,
) -> Vec<T> {
    let t = Tiling::new(tile_size(g.h, g.w), g.n, g.o, g.oh, g.ow, 2 - g.padding);
    let transformed;
    let u = match kernels {
        Some(u) if t.m == 2 => u,
        _ => {
            transformed = if t.m == 2 {
                weight_transform::<T, XI>(w, g.o, g.c, false)
            } else {
                weight_transform::<T, 36>(w, g.o, g.c, true)
            };
            &transformed
        }
    };
    let kernels = Kernels {
        u,
        o: g.o,
        c: g.c,
        adjoint: true,
        swap: t.m == 2,
    };
    convolve(dy, &t, &kernels, t.rows_per_block(g.c.max(g.o)))
}

/// d(weight) from the input `x` and d(output) `dy`: `O×C×3×3`, with the forward's tiles.
pub(super) fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let t = Tiling::new(tile_size(g.oh, g.ow), g.n, g.c, g.h, g.w, g.padding);
    let whole = t.points() * t.rows() * t.tw * (g.c + g.o) <= WHOLE;
    match (t.m, whole) {
        (2, true) => weight_grad_whole::<T, XI>(x, dy, g, &t),
        (2, false) => weight_grad_blocked::<T, XI>(x, dy, g, &t, t.rows_per_block(g.c.max(g.o))),
        (_, true) => weight_grad_whole::<T, 36>(x, dy, g, &t),
        (_, false) => weight_grad_blocked::<T, 36>(x, dy, g, &t, t.rows_per_block(g.c.max(g.o))),
    }
}

/// Transformed tiles (in f32 entries, 16 MB) up to which d(weight) transforms every tile at
/// once and then runs its GEMMs (one per point) in parallel, each over all tiles. Small
/// feature maps (layer4 of a 64-px image has 53 tiles) would otherwise spend their time on the
/// O×C partial sums of blocks, not on the GEMMs.
const WHOLE: usize = 1 << 22;

/// Scratch of a tile row's transforms for d(weight): the row's m rows of d(output),
/// channels-last (columns from `ow` on stay zero: nothing writes them), `zero` for a row below
/// the output, and the intermediate rows of F(4×4)'s separable transforms.
struct GradRows<T> {
    rows: [Vec<T>; 4],
    zero: Vec<T>,
    tmp: Vec<T>,
}

impl<T: Element> GradRows<T> {
    fn new(t: &Tiling, o: usize) -> Self {
        let len = t.m * t.tw * o;
        Self {
            rows: std::array::from_fn(|r| vec![T::zero(); if r < t.m { len } else { 0 }]),
            zero: vec![T::zero(); len],
            tmp: vec![T::zero(); if t.m == 4 { 36 * STEP4 } else { 0 }],
        }
    }
}

/// `V` of `x` and `Ṁ` of `dy` for the tile rows `r0..r1`, written from tile 0 on into the
/// planes of `v` and of `m` (one per point).
#[allow(clippy::too_many_arguments)]
fn transform_rows<T: Element>(
    (x, dy): (&[T], &[T]),
    t: &Tiling,
    o: usize,
    (r0, r1): (usize, usize),
    window: &mut Window<T>,
    scratch: &mut GradRows<T>,
    v: &mut [&mut [T]],
    m: &mut [&mut [T]],
) {
    let oplane = t.oh * t.ow;
    let GradRows { rows, zero, tmp } = scratch;
    for (i, (n, ty)) in tile_rows(t, r0, r1).enumerate() {
        let input = window.rows(x, t, n, ty);
        let top = t.m * ty;
        let inside = (top + t.m).min(t.oh) - top;
        for (a, row) in rows.iter_mut().enumerate().take(inside) {
            let src = &dy[n * o * oplane + (top + a) * t.ow..];
            transpose(src, oplane, row, o, o, t.ow);
        }
        let grads: [&[T]; 4] =
            std::array::from_fn(|a| if a < inside { &rows[a][..] } else { &zero[..] });
        let first = i * t.tw;
        if let (Ok(v), Ok(m)) = (
            <&mut [&mut [T]; XI]>::try_from(&mut *v),
            <&mut [&mut [T]; XI]>::try_from(&mut *m),
        ) {
            let input = [input[0], input[1], input[2], input[3]];
            input_tiles(input, t.c, t.tw, v, first);
            grad_tiles([grads[0], grads[1]], o, t.tw, m, first);
        } else if let (Ok(v), Ok(m)) = (
            <&mut [&mut [T]; 36]>::try_from(&mut *v),
            <&mut [&mut [T]; 36]>::try_from(&mut *m),
        ) {
            input_tiles4(input, t.c, t.tw, v, first, tmp);
            grad_tiles4(grads, o, t.tw, m, first, tmp);
        } else {
            unreachable!("a tiling has 16 or 36 points")
        }
    }
}

/// `dU[ξ] (O×C) (+)= Ṁ[ξ] (O×T) · Vᵀ[ξ] (T×C)` for one point, both operands stored
/// `[tile][channel]`.
fn weight_gemm<T: Element>(
    du: &mut [T],
    m: &[T],
    v: &[T],
    (o, c, tiles): (usize, usize, usize),
    accumulate: bool,
) {
    matmul(
        du,
        Mat {
            data: m,
            rs: 1,
            cs: o,
        },
        Mat {
            data: v,
            rs: c,
            cs: 1,
        },
        (o, c, tiles),
        accumulate,
        Parallelism::None,
    );
}

/// d(weight) for maps with few tiles: every tile transformed (in parallel over tile rows),
/// then the `P` GEMMs in parallel, each over all tiles, writing dU once.
fn weight_grad_whole<T: Element, const P: usize>(
    x: &[T],
    dy: &[T],
    g: &Geometry,
    t: &Tiling,
) -> Vec<T> {
    let (c, o) = (g.c, g.o);
    let tiles = t.rows() * t.tw;
    let per_task = t
        .rows()
        .div_ceil(rayon::current_num_threads().max(1))
        .max(1);
    let mut du = crate::cpu::zeroed::<T>(P * o * c);
    T::with_scratch(P * (c + o) * tiles, |scratch| {
        let (v, m) = scratch.split_at_mut(P * c * tiles);
        let vs = plane_chunks(v, c * tiles, per_task * t.tw * c);
        let ms = plane_chunks(m, o * tiles, per_task * t.tw * o);
        vs.into_par_iter()
            .zip(ms)
            .enumerate()
            .for_each(|(j, (mut vp, mut mp))| {
                let rows = (j * per_task, ((j + 1) * per_task).min(t.rows()));
                let mut window = Window::new(t);
                let mut grads = GradRows::new(t, o);
                transform_rows(
                    (x, dy),
                    t,
                    o,
                    rows,
                    &mut window,
                    &mut grads,
                    &mut vp,
                    &mut mp,
                );
            });
        let (v, m) = (&*v, &*m);
        du.par_chunks_mut(o * c).enumerate().for_each(|(xi, du)| {
            let (m, v) = (&m[xi * o * tiles..], &v[xi * c * tiles..]);
            weight_gemm(du, m, v, (o, c, tiles), false);
        });
    });
    weight_untransform::<T, P>(std::slice::from_ref(&du), o, c)
}

/// d(weight) block by block: each thread sums dU over its share of the blocks, and the
/// shares are added in a fixed order.
fn weight_grad_blocked<T: Element, const P: usize>(
    x: &[T],
    dy: &[T],
    g: &Geometry,
    t: &Tiling,
    rows_per_block: usize,
) -> Vec<T> {
    let (c, o) = (g.c, g.o);
    let blocks = t.rows().div_ceil(rows_per_block);
    // Σ over the blocks in fixed contiguous chunks, one per thread, summed in chunk order, so
    // that every run adds in the same order (see `WeightGrad`).
    let chunks = blocks.min(rayon::current_num_threads()).max(1);
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut du = vec![T::zero(); P * o * c];
            let mut window = Window::new(t);
            let mut grads = GradRows::new(t, o);
            for b in chunk * blocks / chunks..(chunk + 1) * blocks / chunks {
                let (r0, r1) = (b * rows_per_block, ((b + 1) * rows_per_block).min(t.rows()));
                let tiles = (r1 - r0) * t.tw;
                T::with_scratch(P * (c + o) * tiles, |scratch| {
                    let (v, m) = scratch.split_at_mut(P * c * tiles);
                    let mut vp = points_mut::<T, P>(v, 0, c * tiles, c * tiles);
                    let mut mp = points_mut::<T, P>(m, 0, o * tiles, o * tiles);
                    let rows = (r0, r1);
                    transform_rows(
                        (x, dy),
                        t,
                        o,
                        rows,
                        &mut window,
                        &mut grads,
                        &mut vp,
                        &mut mp,
                    );
                    for xi in 0..P {
                        let du = &mut du[xi * o * c..(xi + 1) * o * c];
                        let (m, v) = (&m[xi * o * tiles..], &v[xi * c * tiles..]);
                        weight_gemm(du, m, v, (o, c, tiles), true);
                    }
                });
            }
            du
        })
        .collect();
    weight_untransform::<T, P>(&partials, o, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−1, 1) with no structure a wrong index could hide behind.
    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The direct definitions: y[n,o,i,j] = Σ x[n,c,i+a−p,j+b−p]·w[o,c,a,b], and the two
    /// gradients of ⟨y, dy⟩.
    fn direct(g: &Geometry, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut y = vec![0.0; g.n * g.o * g.oh * g.ow];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        for n in 0..g.n {
            for o in 0..g.o {
                for i in 0..g.oh {
                    for j in 0..g.ow {
                        let yi = ((n * g.o + o) * g.oh + i) * g.ow + j;
                        for c in 0..g.c {
                            for a in 0..3 {
                                for b in 0..3 {
                                    let (yy, xx) = (
                                        (i + a) as isize - g.padding as isize,
                                        (j + b) as isize - g.padding as isize,
                                    );
                                    if yy < 0 || xx < 0 || yy >= g.h as isize || xx >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * g.c + c) * g.h + yy as usize) * g.w + xx as usize;
                                    let wi = ((o * g.c + c) * 3 + a) * 3 + b;
                                    y[yi] += x[xi] * w[wi];
                                    dx[xi] += dy[yi] * w[wi];
                                    dw[wi] += dy[yi] * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    fn assert_close(a: &[f64], b: &[f64], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= 1e-12 * scale,
            "{what}: max error {err} (scale {scale})"
        );
    }

    /// In f64 (plain loops) and f32 (AVX blocks where the CPU has them), on sizes with and
    /// without whole blocks and with strides wider than the matrices.
    #[test]
    fn transpose_matches_definition() {
        fn check<T: Element + std::fmt::Debug>(cast: fn(f64) -> T) {
            for (rows, cols) in [
                (1, 1),
                (3, 17),
                (8, 8),
                (16, 9),
                (13, 24),
                (2, 40),
                (24, 16),
            ] {
                let (src_rs, dst_rs) = (cols + 3, rows + 5);
                let src: Vec<T> = values(rows * src_rs, 7).into_iter().map(cast).collect();
                let mut dst = vec![T::zero(); cols * dst_rs];
                transpose(&src, src_rs, &mut dst, dst_rs, rows, cols);
                for i in 0..rows {
                    for j in 0..cols {
                        assert_eq!(dst[j * dst_rs + i], src[i * src_rs + j], "{rows}×{cols}");
                    }
                }
            }
        }
        check::<f64>(|v| v);
        check::<f32>(|v| v as f32);
    }

    /// All three passes against the direct sums in f64, on odd sizes, every padding the path
    /// takes, channel counts below and above a vector step, and blocks from one tile row
    /// (blocks then cut through images) to the default.
    #[test]
    fn matches_direct_convolution() -> candle_core::Result<()> {
        for (n, c, h, w, o, pad) in [
            (2, 3, 9, 7, 4, 1),
            (3, 5, 6, 5, 2, 0),
            (1, 2, 5, 8, 3, 2),
            (4, 1, 3, 3, 1, 1),
            (2, 4, 1, 2, 3, 1),
            (1, 3, 4, 4, 5, 0),
            // Eight channels and columns or more: the vector steps and whole 8×8 transposes.
            (2, 9, 10, 11, 16, 1),
            (1, 16, 8, 17, 9, 2),
            // More channels than a step of F(4×4)'s transforms, and kernels in several chunks.
            (1, 70, 5, 6, 70, 1),
        ] {
            let g = Geometry::new((n, c, h, w), (o, c, 3, 3), 1, pad)?;
            assert!(applies(&g));
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * 9, 2);
            let dy = values(n * o * g.oh * g.ow, 3);
            let (y, dx, dw) = direct(&g, &x, &wt, &dy);
            let label = format!("{:?}", (n, c, h, w, o, pad));
            let t = Tiling::new(2, n, c, h, w, pad);
            for m in [2, 4] {
                let t = Tiling::new(m, n, c, h, w, pad);
                let td = Tiling::new(m, n, o, g.oh, g.ow, 2 - pad);
                let (u, ur) = if m == 2 {
                    (weight_transform::<f64, XI>(&wt, o, c, false), None)
                } else {
                    (
                        weight_transform::<f64, 36>(&wt, o, c, false),
                        Some(weight_transform::<f64, 36>(&wt, o, c, true)),
                    )
                };
                for rows in [1, 2, 3, t.rows()] {
                    let k = Kernels {
                        u: &u,
                        o,
                        c,
                        adjoint: false,
                        swap: false,
                    };
                    let got = convolve(&x, &t, &k, rows);
                    assert_close(&got, &y, &format!("y F{m} {label} {rows}"));
                    let k = Kernels {
                        u: ur.as_deref().unwrap_or(&u),
                        adjoint: true,
                        swap: m == 2,
                        ..k
                    };
                    let rows = rows.min(td.rows());
                    let got = convolve(&dy, &td, &k, rows);
                    assert_close(&got, &dx, &format!("dx F{m} {label} {rows}"));
                }
            }
            for rows in [1, 2, 3, t.rows()] {
                let got = weight_grad_blocked::<f64, XI>(&x, &dy, &g, &t, rows);
                assert_close(&got, &dw, &format!("dw F2 {label} {rows}"));
            }
            let got = weight_grad_whole::<f64, XI>(&x, &dy, &g, &t);
            assert_close(&got, &dw, &format!("dw F2 (whole) {label}"));
            let t4 = Tiling::new(4, n, c, h, w, pad);
            for rows in [1, 2, t4.rows()] {
                let got = weight_grad_blocked::<f64, 36>(&x, &dy, &g, &t4, rows);
                assert_close(&got, &dw, &format!("dw F4 {label} {rows}"));
            }
            let got = weight_grad_whole::<f64, 36>(&x, &dy, &g, &t4);
            assert_close(&got, &dw, &format!("dw F4 (whole) {label}"));
            let (got, kept) = forward(&x, &wt, &g);
            assert_close(&got, &y, &label);
            if let Some(kept) = &kept {
                assert_eq!(
                    kept.len(),
                    kernels_len(&g),
                    "{label}: kernels kept by the forward"
                );
            }
            assert_close(&input_grad(&dy, &wt, None, &g), &dx, &label);
            assert_close(&input_grad(&dy, &wt, kept.as_deref(), &g), &dx, &label);
            assert_close(&weight_grad(&x, &dy, &g), &dw, &label);
        }
        Ok(())
    }
}
