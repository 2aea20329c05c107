//! The im2col convolution, for every kernel that Winograd does not serve: im2col into a reused
//! per-thread buffer (none at all for 1×1 stride-1 kernels), one GEMM per chunk of output rows
//! straight into the output, images in parallel, or, where an image has few output cells (the
//! strided convolutions of layer3 and layer4), one GEMM per block of images side by side; and a
//! backward that computes d(weight) and d(input) by GEMM as well (candle's stock d(input) is a
//! naive transposed-convolution loop).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::geometry::Geometry;
use crate::ops::cpu::{ordered_sum, par_written, zeroed, PIECES};
use crate::ops::gemm::{matmul, matmul_uninit, Mat, Run};
use crate::ops::Element;

/// The output of `x` (N×C×H×W) convolved with `w` (O×C×kh×kw): `N×O×OH×OW`.
pub(super) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let run = g.run();
    let wm = Mat {
        data: w,
        rs: k,
        cs: 1,
    };
    let images = images_per_gemm(g);
    if images > 1 {
        let block = |b: usize, y: &mut [MaybeUninit<T>]| {
            let m = y.len() / (g.o * p);
            let cols = m * p;
            T::with_scratch((k + g.o) * cols, |buf| {
                let (col, prod) = buf.split_at_mut(k * cols);
                gather_cols(x, g, b * images..b * images + m, col);
                let cm = Mat {
                    data: col,
                    rs: cols,
                    cs: 1,
                };
                matmul(prod, wm, cm, (g.o, cols, k), false, run);
                // `prod` is O × (image, cell); the output is (image, O, cell).
                for (j, yj) in y.chunks_exact_mut(g.o * p).enumerate() {
                    for (oi, dst) in yj.chunks_exact_mut(p).enumerate() {
                        let src = &prod[oi * cols + j * p..][..p];
                        for (d, s) in dst.iter_mut().zip(src) {
                            d.write(*s);
                        }
                    }
                }
            });
        };
        // SAFETY: each block of images has its O×P outputs written whole, every image's plane
        // of every output channel copied from the block's product.
        return unsafe { par_written(g.n * g.o * p, images * g.o * p, block) };
    }
    let image = |i: usize, y: &mut [MaybeUninit<T>]| {
        let xn = &x[i * g.c * g.h * g.w..(i + 1) * g.c * g.h * g.w];
        if g.pointwise() {
            let cols = Mat {
                data: xn,
                rs: p,
                cs: 1,
            };
            matmul_uninit(y, p, wm, cols, (g.o, p, k), run);
            return;
        }
        // Chunk by chunk of output rows, into those columns of the output.
        by_row_chunks(g, |rows, col| {
            let (r0, pc) = (rows.start, rows.len() * g.ow);
            im2col(xn, g, rows, col, pc);
            let cols = Mat {
                data: col,
                rs: pc,
                cs: 1,
            };
            matmul_uninit(&mut y[r0 * g.ow..], p, wm, cols, (g.o, pc, k), run);
        });
    };
    // SAFETY: each image's O×P output block is written whole: by one GEMM, or by those of
    // its chunks of rows, which cover all of 0..oh.
    unsafe { par_written(g.n * g.o * p, g.o * p, image) }
}

/// Columns of a GEMM below which images are multiplied together: the GEMM of one image has
/// as many columns as output cells, 16 for layer4 of a 128-px image (4 for its 64-px copy),
/// where gemm spent its time packing the kernels (up to 512 × 2304 of them, again for every
/// image) and running part-empty register tiles.
const MIN_COLUMNS: usize = 256;

/// Images per GEMM: about as many as make [`MIN_COLUMNS`] columns where one image has fewer,
/// no more than leave each of [`PIECES`] threads a block, and evened out over a multiple of
/// [`PIECES`] blocks: 53 images of 16 cells go in blocks of 7 (seven of them and one of 4), not
/// of 16 (16, 16, 16, 5), which threads could not share evenly.
///
/// A function of the shape alone, not of the threads: the blocks are GEMMs, whose shape
/// decides gemm's depth blocking and so the rounding (see [`PIECES`]).
fn images_per_gemm(g: &Geometry) -> usize {
    let p = g.p().max(1);
    if p >= MIN_COLUMNS || g.n == 0 {
        return 1;
    }
    let wanted = MIN_COLUMNS.div_ceil(p).min(g.n.div_ceil(PIECES)).max(1);
    let blocks = g.n.div_ceil(wanted).next_multiple_of(PIECES);
    g.n.div_ceil(blocks).max(1)
}

/// The im2col matrices of `images` side by side: K rows of (image, cell) columns.
fn gather_cols<T: Element>(x: &[T], g: &Geometry, images: std::ops::Range<usize>, col: &mut [T]) {
    let (p, plane) = (g.p(), g.c * g.h * g.w);
    let ld = images.len() * p;
    for (j, i) in images.enumerate() {
        im2col(
            &x[i * plane..(i + 1) * plane],
            g,
            0..g.oh,
            &mut col[j * p..],
            ld,
        );
    }
}

/// `images`' planes of `dy` (each O × P) side by side: O rows of (image, cell) columns.
fn gather_grads<T: Element>(dy: &[T], g: &Geometry, images: std::ops::Range<usize>, out: &mut [T]) {
    let p = g.p();
    let ld = images.len() * p;
    for (j, i) in images.enumerate() {
        for (oi, src) in dy[i * g.o * p..(i + 1) * g.o * p]
            .chunks_exact(p)
            .enumerate()
        {
            out[oi * ld + j * p..][..p].copy_from_slice(src);
        }
    }
}

/// d(weight) = Σₙ dYₙ[O×P] · colₙᵀ[P×K] from the input `x` and the output's gradient `dy`.
pub(super) fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
    let (k, p) = (g.k(), g.p());
    // Σ over the batch in [`PIECES`] contiguous pieces fixed by the batch's size, added in
    // their order (`ordered_sum`): the same floating-point sum for any number of threads.
    // Where the pieces are fewer than the threads, their GEMMs share out the rest (gemm splits
    // the output between threads, never a sum).
    let pieces = n.clamp(1, PIECES);
    let run = if pieces >= rayon::current_num_threads() {
        Run::serial(g.arithmetic)
    } else {
        Run::parallel(g.arithmetic)
    };
    let images = images_per_gemm(g);
    ordered_sum(pieces, |piece| {
        // Written zeros, not `calloc`'s: the GEMMs below read it first (see `zeroed`).
        let mut acc = zeroed::<T>(o * k);
        let (first, end) = (piece * n / pieces, (piece + 1) * n / pieces);
        if images > 1 {
            // Σ over blocks of images of dY[O × (image, cell)] · colᵀ[(image, cell) × K].
            for i0 in (first..end).step_by(images) {
                let block = i0..(i0 + images).min(end);
                let cols = block.len() * p;
                T::with_scratch((k + o) * cols, |buf| {
                    let (col, dyb) = buf.split_at_mut(k * cols);
                    gather_cols(x, g, block.clone(), col);
                    gather_grads(dy, g, block.clone(), dyb);
                    let dym = Mat {
                        data: dyb,
                        rs: cols,
                        cs: 1,
                    };
                    let cols_t = Mat {
                        data: col,
                        rs: 1,
                        cs: cols,
                    };
                    matmul(&mut acc, dym, cols_t, (o, k, cols), true, run);
                });
            }
            return acc;
        }
        for i in first..end {
            let xn = &x[i * c * h * w..(i + 1) * c * h * w];
            let dyn_ = Mat {
                data: &dy[i * o * p..(i + 1) * o * p],
                rs: p,
                cs: 1,
            };
            if g.pointwise() {
                let cols_t = Mat {
                    data: xn,
                    rs: 1,
                    cs: p,
                };
                matmul(&mut acc, dyn_, cols_t, (o, k, p), true, run);
                continue;
            }
            // Chunk by chunk of output rows: Σ dYₙ[:, chunk] · col[chunk]ᵀ.
            by_row_chunks(g, |rows, col| {
                let (r0, pc) = (rows.start, rows.len() * g.ow);
                im2col(xn, g, rows, col, pc);
                let dyc = Mat {
                    data: &dyn_.data[r0 * g.ow..],
                    ..dyn_
                };
                let cols_t = Mat {
                    data: col,
                    rs: 1,
                    cs: pc,
                };
                matmul(&mut acc, dyc, cols_t, (o, k, pc), true, run);
            });
        }
        acc
    })
}

/// d(input)ₙ = col2im(Wᵀ[K×O] · dYₙ[O×P]) from the output's gradient `dy` and the kernel `w`.
pub(super) fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let n = g.n;
    let (k, p) = (g.k(), g.p());
    let run = g.run();
    let wt = Mat {
        data: w,
        rs: 1,
        cs: k,
    };
    let mut dx = zeroed::<T>(n * g.c * g.h * g.w);
    let images = images_per_gemm(g);
    if images > 1 {
        // dcol[K × (image, cell)] = Wᵀ · dY[O × (image, cell)], then col2im image by image.
        let plane = g.c * g.h * g.w;
        dx.par_chunks_mut(images * plane)
            .enumerate()
            .for_each(|(b, dxb)| {
                let block = b * images..b * images + dxb.len() / plane;
                let cols = block.len() * p;
                T::with_scratch((k + g.o) * cols, |buf| {
                    let (dcol, dyb) = buf.split_at_mut(k * cols);
                    gather_grads(dy, g, block, dyb);
                    let d = Mat {
                        data: dyb,
                        rs: cols,
                        cs: 1,
                    };
                    matmul(dcol, wt, d, (k, cols, g.o), false, run);
                    for (j, dxn) in dxb.chunks_exact_mut(plane).enumerate() {
                        col2im(&dcol[j * p..], g, 0..g.oh, dxn, cols);
                    }
                });
            });
        return dx;
    }
    dx.par_chunks_mut(g.c * g.h * g.w)
        .zip(dy.par_chunks(g.o * p))
        .for_each(|(dxn, dyn_)| {
            let d = Mat {
                data: dyn_,
                rs: p,
                cs: 1,
            };
            if g.pointwise() {
                matmul(dxn, wt, d, (k, p, g.o), false, run);
                return;
            }
            // Chunk by chunk of output rows, added onto `dxn` (zero from `zeroed`).
            by_row_chunks(g, |rows, col| {
                let (r0, pc) = (rows.start, rows.len() * g.ow);
                let dc = Mat {
                    data: &d.data[r0 * g.ow..],
                    ..d
                };
                matmul(col, wt, dc, (k, pc, g.o), false, run);
                col2im(col, g, rows, dxn, pc);
            });
        });
    dx
}

/// Runs `f(rows, col)` for each chunk of [`Geometry::chunk_rows`] output rows, in order,
/// with `col` this thread's scratch buffer for the chunk's im2col matrix (K rows of
/// `rows.len()·ow` columns): the loop shared by the im2col forward and both gradients.
fn by_row_chunks<T: Element>(g: &Geometry, mut f: impl FnMut(std::ops::Range<usize>, &mut [T])) {
    let chunk = g.chunk_rows();
    T::with_scratch(g.k() * chunk * g.ow, |col| {
        for r0 in (0..g.oh).step_by(chunk) {
            f(r0..(r0 + chunk).min(g.oh), col);
        }
    });
}

/// The output columns `lo..hi` whose input column `ox·stride + j − padding` lies inside a
/// row of `w`, and that input column for `lo` (`x0`, at most `w`: where no column reaches
/// the row, `lo == hi` and the range `x0..` is empty): the loops below then run without a test
/// per element.
fn columns(g: &Geometry, j: usize) -> (usize, usize, usize) {
    let (s, p) = (g.stride, g.padding);
    let lo = p.saturating_sub(j).div_ceil(s).min(g.ow);
    let hi = (g.w + p).saturating_sub(j).div_ceil(s).min(g.ow).max(lo);
    (lo, hi, (lo * s + j).saturating_sub(p).min(g.w))
}

/// im2col of output rows `rows` of one image: row (c, i, j), `ld` elements after the one
/// before, holds input pixel (c, oy·s − p + i, ox·s − p + j) for every output cell (oy, ox)
/// of those rows, zero outside the image.
fn im2col<T: Element>(
    x: &[T],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    col: &mut [T],
    ld: usize,
) {
    let p = rows.len() * g.ow;
    let mut row = 0;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (lo, hi, x0) = columns(g, j);
                let dst = &mut col[row * ld..row * ld + p];
                for (r, oy) in rows.clone().enumerate() {
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    let out = &mut dst[r * g.ow..(r + 1) * g.ow];
                    if y < 0 || y >= g.h as isize {
                        out.fill(T::zero());
                        continue;
                    }
                    let src = &plane[y as usize * g.w..(y as usize + 1) * g.w];
                    out[..lo].fill(T::zero());
                    out[hi..].fill(T::zero());
                    let inside = &mut out[lo..hi];
                    match g.stride {
                        1 => inside.copy_from_slice(&src[x0..x0 + inside.len()]),
                        2 => every_other(inside, &src[x0..]),
                        s => {
                            for (v, s) in inside.iter_mut().zip(src[x0..].iter().step_by(s)) {
                                *v = *s;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// `dst[k] = src[2k]` for every `k`: im2col's rows of a stride-2 kernel (every strided
/// convolution of ResNet, the stem's included). In f32 on a CPU with AVX2, eight outputs from
/// two loads and two shuffles; the plain loop moved one element at a time (im2col took 4 % of
/// a DRA step at 128 px).
fn every_other<T: Element>(dst: &mut [T], src: &[T]) {
    assert!(dst.is_empty() || src.len() > 2 * (dst.len() - 1));
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx2")
    {
        // SAFETY: `T` is `f32`, so the casts keep the layout; the CPU has AVX2; the lengths
        // are the slices'.
        unsafe {
            every_other_avx2(
                dst.as_mut_ptr().cast(),
                dst.len(),
                src.as_ptr().cast(),
                src.len(),
            )
        };
        return;
    }
    for (v, s) in dst.iter_mut().zip(src.iter().step_by(2)) {
        *v = *s;
    }
}

/// [`every_other`] for f32: pairs of even elements gathered by `shuffle_ps` from two vectors
/// of eight, put in order by one 64-bit permutation; the tail one by one.
///
/// # Safety
/// The CPU has AVX2; `dst` is valid for `n` writes and `src` for `src_len` reads, with
/// `src_len > 2·(n − 1)` when `n > 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn every_other_avx2(dst: *mut f32, n: usize, src: *const f32, src_len: usize) {
    use std::arch::x86_64::*;
    let mut k = 0;
    // SAFETY (all blocks): each loop reads src[2k..2k + 16] ⊂ src[..src_len] and writes
    // dst[k..k + 8] ⊂ dst[..n]; the tail reads src[2k] with 2k ≤ 2(n − 1) < src_len.
    while k + 8 <= n && 2 * k + 16 <= src_len {
        // SAFETY: reads src[2k..2k + 16] and writes dst[k..k + 8], inside both (loop bounds).
        unsafe {
            let a = _mm256_loadu_ps(src.add(2 * k));
            let b = _mm256_loadu_ps(src.add(2 * k + 8));
            // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the 64-bit pairs reordered.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let ordered = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even));
            _mm256_storeu_ps(dst.add(k), _mm256_castpd_ps(ordered));
        }
        k += 8;
    }
    while k < n {
        // SAFETY: k < n, and 2k ≤ 2(n − 1) < src_len by the function's contract.
        unsafe { *dst.add(k) = *src.add(2 * k) };
        k += 1;
    }
}

/// The adjoint of [`im2col`]: adds each column entry of output rows `rows` (rows of `col`
/// `ld` apart) onto its input pixel in `dx`.
fn col2im<T: Element>(
    col: &[T],
    g: &Geometry,
    rows: std::ops::Range<usize>,
    dx: &mut [T],
    ld: usize,
) {
    let p = rows.len() * g.ow;
    let mut row = 0;
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (lo, hi, x0) = columns(g, j);
                let src = &col[row * ld..row * ld + p];
                for (r, oy) in rows.clone().enumerate() {
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[y as usize * g.w..(y as usize + 1) * g.w];
                    let inside = &src[r * g.ow + lo..r * g.ow + hi];
                    for (d, v) in dst[x0..].iter_mut().step_by(g.stride).zip(inside) {
                        *d += *v;
                    }
                }
                row += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of images as even as [`PIECES`] threads can share them, the same on any number
    /// of threads: layer4 at 128 px (16 output cells) on 53 images in blocks of 7, not of 16.
    #[test]
    fn image_blocks_share_evenly() {
        let per = |n: usize, side: usize, threads: usize| -> usize {
            let g = Geometry::new((n, 4, 2 * side, 2 * side), (4, 4, 3, 3), 2, 1).unwrap();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| images_per_gemm(&g))
        };
        for threads in [1, 2, 3] {
            assert_eq!(per(53, 4, threads), 7);
            // 8×8 outputs: blocks of 4, fourteen of them, evened over sixteen to 4 still.
            assert_eq!(per(53, 8, threads), 4);
            assert_eq!(per(48, 4, threads), 6);
            assert_eq!(per(27, 2, threads), 4);
            // Outputs of 256 cells or more: one image per GEMM.
            assert_eq!(per(53, 16, threads), 1);
            // Fewer images than pieces, and none.
            assert_eq!(per(1, 4, threads), 1);
            assert_eq!(per(3, 4, threads), 1);
            assert_eq!(per(0, 4, threads), 1);
        }
    }

    /// The stride-2 gather (AVX2 in f32) against the plain loop, over lengths around its
    /// vectors of eight and sources of both parities.
    #[test]
    fn every_other_matches_loop() {
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 40] {
            for extra in [0usize, 1, 2, 9] {
                let len = if n == 0 {
                    extra
                } else {
                    2 * (n - 1) + 1 + extra
                };
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 1.5 - 3.0).collect();
                let mut got = vec![f32::NAN; n];
                every_other(&mut got, &src);
                let want: Vec<f32> = src.iter().step_by(2).take(n).copied().collect();
                assert_eq!(got, want, "n {n}, source {len}");
            }
        }
    }
}
