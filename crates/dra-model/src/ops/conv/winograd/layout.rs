//! The data layout of the Winograd passes: the loops over lanes that every transform runs
//! on, the views of point-major planes, the transposes between NCHW and channels-last rows,
//! and the window of channels-last input rows that tile rows share.

use super::{Tiling, LANES};
use crate::ops::cpu::multiversion;
use crate::ops::Element;

/// `out[k][e] = f([inp[0][e], inp[1][e], …])[k]` for every `e < len`. [`LANES`] lanes at a time:
/// every input of a step is read before any output is written, so LLVM vectorises the step
/// without having to prove that the slices (cut from shared buffers) do not overlap. The
/// inputs are read in place, not copied into an array first: LLVM turns copies of arrays this
/// size into calls to `memcpy` (4 % of a DRA step at 128 px when it did).
#[inline(always)]
pub(super) fn lanes<T: Element, const N: usize, const M: usize>(
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
pub(super) fn points<T, const N: usize>(
    buf: &[T],
    first: usize,
    stride: usize,
    len: usize,
) -> [&[T]; N] {
    std::array::from_fn(|k| &buf[first + k * stride..][..len])
}

/// [`points`], writable.
#[inline(always)]
pub(super) fn points_mut<T, const N: usize>(
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

/// `N` of the planes in `planes` from `first`, each from `at` on, `len` long.
#[inline(always)]
pub(super) fn planes_at<'a, T, const N: usize>(
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

/// Splits each of the point-major planes of `u` (kernels or tiles) into the same chunks of `chunk`
/// kernels: entry j holds chunk j of every plane, for one task to fill.
pub(super) fn plane_chunks<T>(u: &mut [T], kernels: usize, chunk: usize) -> Vec<Vec<&mut [T]>> {
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

/// `dst[j·dst_rs + i] = src[i·src_rs + j]` for `i < rows`, `j < cols`: NCHW rows to
/// channels-last rows and back. In f32 on a CPU with AVX-512, the part that whole 16×16 blocks
/// cover goes by those ([`transpose16_avx512`]: 64 shuffles per block, against 96 for its four
/// 8×8 blocks), the rest by blocks of 8×8 ([`transpose8`]) and single elements.
pub(super) fn transpose<T: Element>(
    src: &[T],
    src_rs: usize,
    dst: &mut [T],
    dst_rs: usize,
    rows: usize,
    cols: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if rows >= 16
        && cols >= 16
        && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx512f")
    {
        const B: usize = 16;
        let (rb, cb) = (rows / B * B, cols / B * B);
        // The bounds of every block, checked once: the last block's last row ends at
        // (rb − 1)·rs + cb in `src`, (cb − 1)·rs + rb in `dst`.
        assert!(src.len() >= (rb - 1) * src_rs + cb && dst.len() >= (cb - 1) * dst_rs + rb);
        for i0 in (0..rb).step_by(B) {
            for j0 in (0..cb).step_by(B) {
                // SAFETY: `T` is `f32`, so the casts keep the layout; the assert above keeps
                // all sixteen rows of both blocks in bounds; the CPU has AVX-512F.
                unsafe {
                    transpose16_avx512(
                        src.as_ptr().add(i0 * src_rs + j0).cast(),
                        src_rs,
                        dst.as_mut_ptr().add(j0 * dst_rs + i0).cast(),
                        dst_rs,
                    )
                };
            }
        }
        // The columns right of the blocks, then the rows below them (where there are any: the
        // slices would start past the end of exactly sized buffers otherwise).
        if cols > cb {
            transpose_blocks8(
                &src[cb..],
                src_rs,
                &mut dst[cb * dst_rs..],
                dst_rs,
                rb,
                cols - cb,
            );
        }
        if rows > rb {
            transpose_blocks8(
                &src[rb * src_rs..],
                src_rs,
                &mut dst[rb..],
                dst_rs,
                rows - rb,
                cols,
            );
        }
        return;
    }
    transpose_blocks8(src, src_rs, dst, dst_rs, rows, cols);
}

multiversion! {
/// [`transpose`] by blocks of 8×8 (see [`transpose8`]) and single elements.
fn transpose_blocks8<T: Element>(
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

/// The 16×16 f32 transpose in AVX-512 registers: within each 128-bit lane, pairs of rows
/// interleaved and then pairs of pairs, as in [`transpose8_avx`], which leaves lane L of
/// vector 4g + j holding rows 4g..4g + 4 of column 4L + j; then each output row (a column)
/// gathers its four lanes from the vectors j, 4 + j, 8 + j and 12 + j by two rounds of
/// 128-bit shuffles.
///
/// # Safety
/// The CPU has AVX-512F; rows 0..16 of `src` (stride `src_rs`) and of `dst` (stride `dst_rs`)
/// are each 16 valid f32, and the blocks do not overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(src: *const f32, src_rs: usize, dst: *mut f32, dst_rs: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees rows 0..16 of `src` hold 16 valid f32 each.
    let r: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(src.add(i * src_rs)) });
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + j]: from t[4g] and t[4g + 2] (j = 0, 1) or t[4g + 1] and t[4g + 3] (j = 2, 3).
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, j) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + j / 2], t[4 * g + j / 2 + 2]);
        if j % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    for j in 0..4 {
        let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
        // [a0 a1 b0 b1], [a2 a3 b2 b3], [c0 c1 d0 d1], [c2 c3 d2 d3] (128-bit lanes).
        let (x0, x1) = (
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        );
        let (y0, y1) = (
            _mm512_shuffle_f32x4::<0x44>(c, d),
            _mm512_shuffle_f32x4::<0xEE>(c, d),
        );
        let rows = [
            _mm512_shuffle_f32x4::<0x88>(x0, y0),
            _mm512_shuffle_f32x4::<0xDD>(x0, y0),
            _mm512_shuffle_f32x4::<0x88>(x1, y1),
            _mm512_shuffle_f32x4::<0xDD>(x1, y1),
        ];
        for (l, row) in rows.into_iter().enumerate() {
            // SAFETY: the caller guarantees rows 0..16 of `dst` hold 16 writable f32 each.
            unsafe { _mm512_storeu_ps(dst.add((4 * l + j) * dst_rs), row) };
        }
    }
}

/// Channels-last copies of the padded input rows that tile rows read: padded row `yp` of the
/// current image in slot `yp % 8`, as `[column][channel]` with the padding columns zero. A
/// tile row (m + 2 rows) shares two rows with the next, so each input row is transposed once.
pub(super) struct Window<T> {
    slots: [Vec<T>; 8],
    /// The (image, padded row) each slot holds.
    held: [Option<(usize, usize)>; 8],
    /// A padded row of zeros, for the rows outside the image.
    zero: Vec<T>,
}

impl<T: Element> Window<T> {
    pub(super) fn new(t: &Tiling) -> Self {
        let len = t.padded_width() * t.c;
        Self {
            slots: std::array::from_fn(|_| vec![T::zero(); len]),
            held: [None; 8],
            zero: vec![T::zero(); len],
        }
    }

    /// The m + 2 padded rows of tile row `ty` of image `n` in `x` (`N×C×H×W`), then zero
    /// rows up to six.
    pub(super) fn rows(&mut self, x: &[T], t: &Tiling, n: usize, ty: usize) -> [&[T]; 6] {
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

#[cfg(test)]
mod tests {
    use super::super::tests::values;
    use super::*;

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
                // 16×16 blocks with 8×8 blocks and single elements right of and below them.
                (16, 16),
                (35, 50),
                (64, 32),
                (17, 70),
                // 8×8 blocks right of and below the 16×16 ones.
                (16, 24),
                (40, 40),
            ] {
                let (src_rs, dst_rs) = (cols + 3, rows + 5);
                // Exactly as long as the last row needs, as the callers' buffers may be.
                let src: Vec<T> = values((rows - 1) * src_rs + cols, 7)
                    .into_iter()
                    .map(cast)
                    .collect();
                // A sentinel in every cell, so that the gaps between rows can be checked.
                let sentinel = cast(7.5);
                let mut dst = vec![sentinel; (cols - 1) * dst_rs + rows];
                transpose(&src, src_rs, &mut dst, dst_rs, rows, cols);
                for i in 0..rows {
                    for j in 0..cols {
                        assert_eq!(dst[j * dst_rs + i], src[i * src_rs + j], "{rows}×{cols}");
                    }
                }
                for (at, v) in dst.iter().enumerate() {
                    if at % dst_rs >= rows {
                        assert_eq!(*v, sentinel, "{rows}×{cols}: gap cell {at} written");
                    }
                }
            }
        }
        check::<f64>(|v| v);
        check::<f32>(|v| v as f32);
    }
}
