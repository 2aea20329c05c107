//! Winograd F(2×2, 3×3) for the stride-1 3×3 convolutions, which carry about 80 % of
//! ResNet-18's multiply-adds: each 2×2 output tile costs 16 multiplications per channel pair
//! instead of 36, so the GEMMs shrink 2.25×.
//!
//! With the input tile `d` (4×4), the kernel `g` (3×3) and the transforms
//! `V = Bᵀ d B`, `U = G g Gᵀ`, a tile of the output is `Y = Aᵀ [Σ_c U ⊙ V] A`: sixteen GEMMs
//! (one per point ξ of the 4×4 transform domain) between the transformed kernels and the
//! transformed tiles. All three passes of training reuse the same transforms:
//!
//! - forward: `M[ξ] (O×T) = U[ξ] (O×C) · V[ξ] (C×T)`, then `Y = Aᵀ M A` per tile;
//! - d(input): the forward of d(output) with the kernels rotated by 180° and their channels
//!   swapped, and padding 2 − p (a stride-1 convolution's input gradient is a convolution);
//! - d(weight): `dU[ξ] (O×C) = Σ_tiles Ṁ[ξ] (O×T) · V[ξ]ᵀ (T×C)` with `Ṁ = A dY Aᵀ`, then
//!   `dW = Gᵀ dU G` (the adjoint of the forward in the kernel).
//!
//! The tiles are processed in blocks of whole tile rows, sized so that a block's transformed
//! tiles stay within a few MB, in parallel over blocks. Every transform works on whole rows of
//! tiles at once (rows split into even and odd columns), so it vectorises.

use gemm::Parallelism;
use rayon::prelude::*;

use super::{matmul, Element, Geometry, Mat};
use crate::cpu::multiversion;

/// Points of the 4×4 transform domain.
const XI: usize = 16;

/// Whether a convolution takes the Winograd path: a 3×3 kernel at stride 1 with padding ≤ 2
/// (so that the input gradient is itself a convolution with non-negative padding).
pub(super) fn applies(g: &Geometry) -> bool {
    crate::winograd_enabled() && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding <= 2
}

/// The tiling of one pass: `n` images of `c` planes of `h × w`, zero padding `pad`, and the
/// output (`oh × ow`) cut into `th × tw` tiles of 2×2 (the last ones cropped).
#[derive(Clone, Copy, Debug)]
struct Tiling {
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
    fn new(n: usize, c: usize, h: usize, w: usize, pad: usize) -> Self {
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        Self {
            n,
            c,
            h,
            w,
            pad,
            oh,
            ow,
            th: oh.div_ceil(2),
            tw: ow.div_ceil(2),
        }
    }

    /// Tile rows over the whole batch.
    fn rows(&self) -> usize {
        self.n * self.th
    }

    /// Tile rows per block: about 2¹⁶ / `channels` tiles (so a block's transformed tiles, 16
    /// values per tile and channel, take about 4 MB in f32), at least one row, and no fewer
    /// blocks than threads.
    fn rows_per_block(&self, channels: usize) -> usize {
        let tiles = (1usize << 16) / channels.max(1);
        let by_size = (tiles / self.tw).max(1);
        let by_threads = self.rows().div_ceil(rayon::current_num_threads());
        by_size.min(by_threads).max(1)
    }
}

/// Scratch rows of the per-row transforms, reused across the rows of a block.
struct Rows<T> {
    /// Four zero-padded, vertically transformed input rows.
    raw: [Vec<T>; 4],
    /// Even and odd columns of four vertically transformed rows.
    even: [Vec<T>; 4],
    odd: [Vec<T>; 4],
    /// An input row of zeros, for the rows outside the image.
    zero: Vec<T>,
}

impl<T: Element> Rows<T> {
    fn new(t: &Tiling) -> Self {
        let rows = |len: usize| std::array::from_fn(|_| vec![T::zero(); len]);
        Self {
            raw: rows(2 * t.tw + 2),
            even: rows(t.tw + 1),
            odd: rows(t.tw + 1),
            zero: vec![T::zero(); t.w],
        }
    }
}

/// `out[k][i] = f([a[i], b[i], c[i], d[i]])[k]` over the lanes of `out[0]`: one loop over
/// slices cut to one known length, which LLVM vectorises without bounds checks.
#[inline(always)]
fn lanes<T: Copy, const N: usize>(
    out: [&mut [T]; N],
    inp: [&[T]; 4],
    f: impl Fn([T; 4]) -> [T; N],
) {
    let n = out[0].len();
    let out = out.map(|o| &mut o[..n]);
    let [i0, i1, i2, i3] = inp;
    let (i0, i1, i2, i3) = (&i0[..n], &i1[..n], &i2[..n], &i3[..n]);
    let mut out = out;
    for j in 0..n {
        let r = f([i0[j], i1[j], i2[j], i3[j]]);
        for (o, v) in out.iter_mut().zip(r) {
            o[j] = v;
        }
    }
}

/// Splits `src` (at least `2·n` long) into its even and odd entries.
#[inline(always)]
fn deinterleave<T: Copy>(src: &[T], even: &mut [T], odd: &mut [T], n: usize) {
    for ((e, o), pair) in even[..n]
        .iter_mut()
        .zip(&mut odd[..n])
        .zip(src.chunks_exact(2))
    {
        *e = pair[0];
        *o = pair[1];
    }
}

multiversion! {
/// `V = Bᵀ d B` for the tiles of tile row `ty` of one input plane, written to
/// `dst[ξ·stride + tx]`. Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]].
fn input_row<T: Element>(
    plane: &[T],
    t: &Tiling,
    ty: usize,
    rows: &mut Rows<T>,
    dst: &mut [T],
    stride: usize,
) {
    let tw = t.tw;
    let Rows {
        raw,
        even,
        odd,
        zero,
    } = rows;
    // The tile row's four input rows (the zero row outside the image).
    let src: [&[T]; 4] = std::array::from_fn(|k| {
        let y = (2 * ty + k) as isize - t.pad as isize;
        if y < 0 || y >= t.h as isize {
            &zero[..]
        } else {
            &plane[y as usize * t.w..][..t.w]
        }
    });
    // Bᵀ along the tiles' columns, into padded rows: padded column q is input column q − pad.
    // The padding columns are never written, so they stay zero.
    let len = t.w.min(raw[0].len() - t.pad);
    lanes(
        raw.each_mut().map(|r| &mut r[t.pad..t.pad + len]),
        src,
        |[a, b, c, d]| [a - c, b + c, c - b, b - d],
    );
    // Bᵀ along the tiles' rows: tile tx reads padded columns 2tx..2tx+3, which are even[tx],
    // odd[tx], even[tx+1] and odd[tx+1].
    let n = tw + 1;
    // All four rows are split before any is read back: a vector load of entries that scalar
    // stores have only just written stalls until those stores retire.
    for k in 0..4 {
        deinterleave(&raw[k], &mut even[k], &mut odd[k], n);
    }
    for k in 0..4 {
        let (e, o) = (&even[k], &odd[k]);
        lanes(
            points(dst, 4 * k, stride, tw),
            [&e[..tw], &o[..tw], &e[1..n], &o[1..n]],
            |[e0, o0, e1, o1]| [e0 - e1, o0 + e1, e1 - o0, o0 - o1],
        );
    }
}
}

/// The `len` entries of four consecutive points `first..first + 4` of a `[ξ·stride + tile]`
/// buffer.
#[inline(always)]
fn points<T>(dst: &mut [T], first: usize, stride: usize, len: usize) -> [&mut [T]; 4] {
    let (d0, rest) = dst[first * stride..].split_at_mut(stride);
    let (d1, rest) = rest.split_at_mut(stride);
    let (d2, rest) = rest.split_at_mut(stride);
    [
        &mut d0[..len],
        &mut d1[..len],
        &mut d2[..len],
        &mut rest[..len],
    ]
}

multiversion! {
/// `Ṁ = A e Aᵀ` for the 2×2 output-gradient tiles of tile row `ty` of one plane, written to
/// `dst[ξ·stride + tx]`. A = [[1,0],[1,1],[1,−1],[0,−1]]; outside the output counts as zero.
fn grad_row<T: Element>(
    plane: &[T],
    t: &Tiling,
    ty: usize,
    rows: &mut Rows<T>,
    dst: &mut [T],
    stride: usize,
) {
    let tw = t.tw;
    let Rows { even, odd, .. } = rows;
    // Even and odd output columns of the tile row's two output rows, zero beyond the output.
    for r in 0..2 {
        let (e, o) = (&mut even[r][..tw], &mut odd[r][..tw]);
        let y = 2 * ty + r;
        if y >= t.oh {
            e.fill(T::zero());
            o.fill(T::zero());
            continue;
        }
        let src = &plane[y * t.ow..][..t.ow];
        deinterleave(src, e, o, t.ow / 2);
        if t.ow % 2 == 1 {
            e[tw - 1] = src[t.ow - 1];
            o[tw - 1] = T::zero();
        }
    }
    // A along the tiles' columns gives rows (e0, e0 + e1, e0 − e1, −e1); A along their rows
    // then (a, a + b, a − b, −b) of each row's even and odd parts a and b.
    let [e0, e1, e2, e3] = even.each_mut().map(|e| &mut e[..tw]);
    let [o0, o1, o2, o3] = odd.each_mut().map(|o| &mut o[..tw]);
    lanes(
        [&mut *e2, &mut *e3, &mut *o2, &mut *o3],
        [e0, e1, o0, o1],
        |[e0, e1, o0, o1]| [e0 + e1, e0 - e1, o0 + o1, o0 - o1],
    );
    let zero = T::zero();
    for (k, (a, b)) in [(&*e0, &*o0), (&*e2, &*o2), (&*e3, &*o3), (&*e1, &*o1)]
        .into_iter()
        .enumerate()
    {
        // Row 3 of A e is −e1: its transform is that of e1, negated.
        let sign = if k == 3 { zero - T::one() } else { T::one() };
        lanes(
            points(dst, 4 * k, stride, tw),
            [a, b, a, b],
            |[a, b, _, _]| [a * sign, (a + b) * sign, (a - b) * sign, (zero - b) * sign],
        );
    }
}
}

multiversion! {
/// `Y = Aᵀ M A` for the tiles of one tile row of one output plane, from `m[ξ·stride + tx]`,
/// into `out`: the tile row's output rows (one where the output ends), each `ow` long.
/// Aᵀ = [[1,1,1,0],[0,1,−1,−1]].
fn output_row<T: Element>(m: &[T], stride: usize, t: &Tiling, rows: &mut Rows<T>, out: &mut [T]) {
    let tw = t.tw;
    let point = |xi: usize| &m[xi * stride..][..tw];
    let [s0, s1, s2, s3] = rows.even.each_mut().map(|s| &mut s[..tw]);
    for (r, out) in out.chunks_exact_mut(t.ow).enumerate() {
        // Aᵀ along the tiles' columns: s[k] is row r of (Aᵀ M) for the tiles' column k.
        for (k, sk) in [&mut *s0, &mut *s1, &mut *s2, &mut *s3].into_iter().enumerate() {
            let inp = [point(k), point(4 + k), point(8 + k), point(12 + k)];
            if r == 0 {
                lanes([sk], inp, |[a, b, c, _]| [a + b + c]);
            } else {
                lanes([sk], inp, |[_, b, c, d]| [b - c - d]);
            }
        }
        // Aᵀ along the tiles' rows, interleaving the tiles' two output columns.
        let (s0, s1, s2, s3) = (&s0[..tw], &s1[..tw], &s2[..tw], &s3[..tw]);
        let mut pairs = out.chunks_exact_mut(2);
        for (((pair, a), (b, c)), d) in (&mut pairs).zip(s0).zip(s1.iter().zip(s2)).zip(s3) {
            pair[0] = *a + *b + *c;
            pair[1] = *b - *c - *d;
        }
        if let [last] = pairs.into_remainder() {
            *last = s0[tw - 1] + s1[tw - 1] + s2[tw - 1];
        }
    }
}
}

/// `U = G g Gᵀ` for every kernel, laid out `[ξ][o][c]`, with G = [[1,0,0],[½,½,½],[½,−½,½],
/// [0,0,1]].
fn weight_transform<T: Element>(w: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut u = vec![T::zero(); XI * o * c];
    for (oc, g) in w.chunks_exact(9).enumerate() {
        // G along the kernel's columns: 4×3.
        let mut a = [[T::zero(); 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            a[0][j] = g0;
            a[1][j] = (g0 + g1 + g2) * half;
            a[2][j] = (g0 - g1 + g2) * half;
            a[3][j] = g2;
        }
        for (i, ai) in a.iter().enumerate() {
            let v = [
                ai[0],
                (ai[0] + ai[1] + ai[2]) * half,
                (ai[0] - ai[1] + ai[2]) * half,
                ai[2],
            ];
            for (k, vk) in v.into_iter().enumerate() {
                u[(4 * i + k) * o * c + oc] = vk;
            }
        }
    }
    u
}

/// The transformed kernels of a pass, as the GEMMs' left operands.
struct Kernels<'a, T> {
    /// `U[ξ][o][c]` of the forward convolution.
    u: &'a [T],
    /// The forward's output and input channels.
    o: usize,
    c: usize,
    /// For the input gradient: kernel (o, c) rotated by 180° at position (c, o). Rotating a
    /// kernel reverses it along both axes, which in the transform domain swaps points 0 and 3
    /// of each axis (G's rows evaluate g at 0, 1, −1 and ∞), so U itself serves, read
    /// transposed at the swapped point.
    adjoint: bool,
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
            let xi = 4 * swap(xi / 4) + swap(xi % 4);
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

/// `dW = Gᵀ dU G` for every kernel, from `du[ξ][o][c]` to `O×C×3×3`.
fn weight_untransform<T: Element>(du: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut dw = vec![T::zero(); o * c * 9];
    for oi in 0..o {
        for ci in 0..c {
            let u = |xi: usize| du[(xi * o + oi) * c + ci];
            // Gᵀ along the columns: column k of the 3×4 product.
            let cols: [[T; 3]; 4] = std::array::from_fn(|k| {
                let (u0, u1, u2, u3) = (u(k), u(4 + k), u(8 + k), u(12 + k));
                [
                    u0 + (u1 + u2) * half,
                    (u1 - u2) * half,
                    (u1 + u2) * half + u3,
                ]
            });
            // Then along the rows.
            let kernel = &mut dw[(oi * c + ci) * 9..(oi * c + ci + 1) * 9];
            for (i, row) in kernel.chunks_exact_mut(3).enumerate() {
                let h = |k: usize| cols[k][i];
                row[0] = h(0) + (h(1) + h(2)) * half;
                row[1] = (h(1) - h(2)) * half;
                row[2] = (h(1) + h(2)) * half + h(3);
            }
        }
    }
    dw
}

/// A pointer to the output that blocks write through: each block makes slices of only the
/// output rows of its own tile rows, so the slices of different blocks never overlap.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T);
// SAFETY: see the type's doc: blocks write disjoint elements.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// `V` of a block's tile rows `rows` into `v` (`[ξ][c][tile]`). Channel by channel, so that each
/// of the sixteen `(ξ, c)` rows of `v` is written front to back and the input plane is read
/// front to back.
fn transform_inputs<T: Element>(
    x: &[T],
    t: &Tiling,
    rows: std::ops::Range<usize>,
    scratch: &mut Rows<T>,
    v: &mut [T],
) {
    let (c, plane) = (t.c, t.h * t.w);
    let tiles = rows.len() * t.tw;
    for ci in 0..c {
        for r in rows.clone() {
            let (n, ty) = (r / t.th, r % t.th);
            let src = &x[(n * c + ci) * plane..][..plane];
            let dst = &mut v[ci * tiles + (r - rows.start) * t.tw..];
            input_row(src, t, ty, scratch, dst, c * tiles);
        }
    }
}

/// The convolution of `x` (`t.n × t.c × h × w`) with the transformed kernels `k`:
/// `t.n × k.rows() × oh × ow`.
fn convolve<T: Element>(x: &[T], t: &Tiling, k: &Kernels<T>, rows_per_block: usize) -> Vec<T> {
    let (c, o) = (k.cols(), k.rows());
    debug_assert_eq!(c, t.c);
    let mut out = vec![T::zero(); t.n * o * t.oh * t.ow];
    let shared = SharedOut(out.as_mut_ptr());
    let blocks = t.rows().div_ceil(rows_per_block);
    (0..blocks).into_par_iter().for_each(|b| {
        // Rebound so that the closure captures the whole `SharedOut` (which is `Sync`), not
        // its raw-pointer field alone (which is not).
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let (r0, r1) = (b * rows_per_block, ((b + 1) * rows_per_block).min(t.rows()));
        let tiles = (r1 - r0) * t.tw;
        let mut rows = Rows::new(t);
        T::with_scratch(XI * (c + o) * tiles, |scratch| {
            let (v, m) = scratch.split_at_mut(XI * c * tiles);
            transform_inputs(x, t, r0..r1, &mut rows, v);
            for xi in 0..XI {
                let v = Mat {
                    data: &v[xi * c * tiles..],
                    rs: tiles,
                    cs: 1,
                };
                let m = &mut m[xi * o * tiles..(xi + 1) * o * tiles];
                matmul(m, k.at(xi), v, (o, tiles, c), false, Parallelism::None);
            }
            // Channel by channel, reading `m` and writing each output plane front to back.
            for oi in 0..o {
                for r in r0..r1 {
                    let (n, ty) = (r / t.th, r % t.th);
                    // The output rows of this tile row: 2ty and, inside the output, 2ty + 1.
                    let (y0, y1) = (2 * ty, (2 * ty + 2).min(t.oh));
                    let start = ((n * o + oi) * t.oh + y0) * t.ow;
                    // SAFETY: these rows lie inside `out`, which outlives the blocks, and
                    // belong to this block's tile row alone (see `SharedOut`); nothing reads
                    // `out` until every block is done.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(shared.0.add(start), (y1 - y0) * t.ow)
                    };
                    let src = &m[oi * tiles + (r - r0) * t.tw..];
                    output_row(src, o * tiles, t, &mut rows, dst);
                }
            }
        });
    });
    out
}

/// The forward convolution: `x` (`N×C×H×W`), `w` (`O×C×3×3`) → `N×O×OH×OW`.
pub(super) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let t = Tiling::new(g.n, g.c, g.h, g.w, g.padding);
    let u = weight_transform(w, g.o, g.c);
    let kernels = Kernels {
        u: &u,
        o: g.o,
        c: g.c,
        adjoint: false,
    };
    convolve(x, &t, &kernels, t.rows_per_block(g.c.max(g.o)))
}

/// d(input) from d(output) `dy` (`N×O×OH×OW`): the convolution of `dy` with the rotated,
/// channel-swapped kernels and padding 2 − p.
pub(super) fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let t = Tiling::new(g.n, g.o, g.oh, g.ow, 2 - g.padding);
    let u = weight_transform(w, g.o, g.c);
    let kernels = Kernels {
        u: &u,
        o: g.o,
        c: g.c,
        adjoint: true,
    };
    convolve(dy, &t, &kernels, t.rows_per_block(g.c.max(g.o)))
}

/// d(weight) from the input `x` and d(output) `dy`: `O×C×3×3`.
pub(super) fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let t = Tiling::new(g.n, g.c, g.h, g.w, g.padding);
    weight_grad_blocked(x, dy, g, &t, t.rows_per_block(g.c.max(g.o)))
}

fn weight_grad_blocked<T: Element>(
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
            let mut du = vec![T::zero(); XI * o * c];
            let mut rows = Rows::new(t);
            for b in chunk * blocks / chunks..(chunk + 1) * blocks / chunks {
                let (r0, r1) = (b * rows_per_block, ((b + 1) * rows_per_block).min(t.rows()));
                let tiles = (r1 - r0) * t.tw;
                T::with_scratch(XI * (c + o) * tiles, |scratch| {
                    let (v, m) = scratch.split_at_mut(XI * c * tiles);
                    let oplane = t.oh * t.ow;
                    transform_inputs(x, t, r0..r1, &mut rows, v);
                    // Channel by channel, like the inputs.
                    for oi in 0..o {
                        for r in r0..r1 {
                            let (n, ty) = (r / t.th, r % t.th);
                            let plane = &dy[(n * o + oi) * oplane..][..oplane];
                            let dst = &mut m[oi * tiles + (r - r0) * t.tw..];
                            grad_row(plane, t, ty, &mut rows, dst, o * tiles);
                        }
                    }
                    for xi in 0..XI {
                        matmul(
                            &mut du[xi * o * c..(xi + 1) * o * c],
                            Mat {
                                data: &m[xi * o * tiles..],
                                rs: tiles,
                                cs: 1,
                            },
                            Mat {
                                data: &v[xi * c * tiles..],
                                rs: 1,
                                cs: tiles,
                            },
                            (o, c, tiles),
                            true,
                            Parallelism::None,
                        );
                    }
                });
            }
            du
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut du = partials.next().expect("at least one chunk");
    for part in partials {
        du.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
    }
    weight_untransform(&du, o, c)
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

    /// All three passes against the direct sums in f64, on odd sizes, every padding the path
    /// takes, and blocks from one tile row (blocks then cut through images) to the default.
    #[test]
    fn matches_direct_convolution() -> candle_core::Result<()> {
        for (n, c, h, w, o, pad) in [
            (2, 3, 9, 7, 4, 1),
            (3, 5, 6, 5, 2, 0),
            (1, 2, 5, 8, 3, 2),
            (4, 1, 3, 3, 1, 1),
            (2, 4, 1, 2, 3, 1),
            (1, 3, 4, 4, 5, 0),
        ] {
            let g = Geometry::new((n, c, h, w), (o, c, 3, 3), 1, pad)?;
            assert!(applies(&g));
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * 9, 2);
            let dy = values(n * o * g.oh * g.ow, 3);
            let (y, dx, dw) = direct(&g, &x, &wt, &dy);
            let label = format!("{:?}", (n, c, h, w, o, pad));
            let t = Tiling::new(n, c, h, w, pad);
            let td = Tiling::new(n, o, g.oh, g.ow, 2 - pad);
            let u = weight_transform(&wt, o, c);
            for rows in [1, 2, 3, t.rows()] {
                let mut k = Kernels {
                    u: &u,
                    o,
                    c,
                    adjoint: false,
                };
                let got = convolve(&x, &t, &k, rows);
                assert_close(&got, &y, &format!("y {label} {rows}"));
                k.adjoint = true;
                let got = convolve(&dy, &td, &k, rows);
                assert_close(&got, &dx, &format!("dx {label} {rows}"));
                let got = weight_grad_blocked(&x, &dy, &g, &t, rows);
                assert_close(&got, &dw, &format!("dw {label} {rows}"));
            }
            assert_close(&forward(&x, &wt, &g), &y, &label);
            assert_close(&input_grad(&dy, &wt, &g), &dx, &label);
            assert_close(&weight_grad(&x, &dy, &g), &dw, &label);
        }
        Ok(())
    }
}
