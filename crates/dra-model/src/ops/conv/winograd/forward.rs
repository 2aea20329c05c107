//! The forward convolution and the input gradient, both a convolution of transformed tiles with
//! transformed kernels, and the kernels' transform.

use rayon::prelude::*;

use super::layout::{plane_chunks, transpose, Window};
use super::transforms::{
    input_tiles, input_tiles4, kernel_points, kernel_points4, output_tiles, output_tiles4, STEP4,
};
use super::{tile_rows, tile_size, Tiling, WHOLE, XI};
use crate::ops::conv::geometry::Geometry;
use crate::ops::cpu::zeroed;
use crate::ops::gemm::{matmul, Mat, Run};
use crate::ops::{Element, Winograd};

/// The forward convolution: `x` (`N×C×H×W`), `w` (`O×C×3×3`) → `N×O×OH×OW`, and for F(2×2)
/// the transformed kernels, which [`input_grad`] can take instead of transforming `w` again.
pub(in crate::ops::conv) fn forward<T: Element>(
    x: &[T],
    w: &[T],
    g: &Geometry,
    winograd: Winograd,
) -> (Vec<T>, Option<Vec<T>>) {
    let t = Tiling::new(
        tile_size(g.oh, g.ow, winograd),
        g.n,
        g.c,
        g.h,
        g.w,
        g.padding,
    );
    let u = if t.m == 2 {
        weight_transform::<T, XI>(w, g.o, g.c, false)
    } else {
        weight_transform::<T, 36>(w, g.o, g.c, false)
    };
    let kernels = Transformed {
        u: &u,
        o: g.o,
        c: g.c,
        adjoint: false,
        swap: false,
        arithmetic: g.arithmetic,
    };
    let y = convolve(x, &t, &kernels, Plan::new(&t, g.o));
    (
        y,
        (t.m == 2 && tile_size(g.h, g.w, winograd) == 2).then_some(u),
    )
}

/// Entries of the transformed kernels that [`forward`] returns.
pub(in crate::ops::conv) fn kernels_len(g: &Geometry) -> usize {
    XI * g.o * g.c
}

/// d(input) from d(output) `dy` (`N×O×OH×OW`): the convolution of `dy` with the rotated,
/// channel-swapped kernels and padding 2 − p. `kernels` are the forward's F(2×2) transformed
/// kernels where it kept them; otherwise `w` is transformed here.
pub(in crate::ops::conv) fn input_grad<T: Element>(
    dy: &[T],
    w: &[T],
    kernels: Option<&[T]>,
    g: &Geometry,
    winograd: Winograd,
) -> Vec<T> {
    let t = Tiling::new(
        tile_size(g.h, g.w, winograd),
        g.n,
        g.o,
        g.oh,
        g.ow,
        2 - g.padding,
    );
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
    let kernels = Transformed {
        u,
        o: g.o,
        c: g.c,
        adjoint: true,
        swap: t.m == 2,
        arithmetic: g.arithmetic,
    };
    convolve(dy, &t, &kernels, Plan::new(&t, g.c))
}

/// Kernels per parallel task of the kernel transforms.
fn kernel_chunk(kernels: usize) -> usize {
    kernels.div_ceil(4 * rayon::current_num_threads()).max(1024)
}

/// `U = G g Gᵀ` for every kernel, laid out `[ξ][o][c]` over the `P` points of the tiling
/// (16: F(2×2), 36: F(4×4), whose kernels are rotated by 180° first when `rotate`), in
/// parallel over chunks of kernels.
pub(super) fn weight_transform<T: Element, const P: usize>(
    w: &[T],
    o: usize,
    c: usize,
    rotate: bool,
) -> Vec<T> {
    /// Kernels per step: their nine rows stay in L1.
    const STEP: usize = 256;
    let kernels = o * c;
    let mut u = zeroed::<T>(P * kernels);
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

/// The transformed kernels of a pass, as the GEMMs' left operands.
pub(super) struct Transformed<'a, T> {
    /// `U[ξ][o][c]` of the forward convolution's kernels (for F(4×4)'s input gradient, of the
    /// same kernels rotated by 180°).
    pub(super) u: &'a [T],
    /// The forward's output and input channels.
    pub(super) o: usize,
    pub(super) c: usize,
    /// For the input gradient: kernel (o, c) rotated by 180° at position (c, o), read
    /// transposed.
    pub(super) adjoint: bool,
    /// Whether the adjoint's rotation is still to be done by swapping points: in F(2×2),
    /// rotating a kernel reverses it along both axes, which in the transform domain swaps
    /// points 0 and 3 of each axis (G's rows evaluate g at 0, 1, −1 and ∞), so the forward's U
    /// serves. F(4×4)'s points (0, ±1, ±2, ∞) are not closed under t ↦ 1/t, so its input
    /// gradient transforms the rotated kernels instead.
    pub(super) swap: bool,
    /// How the point GEMMs compute.
    pub(super) arithmetic: crate::ops::Arithmetic,
}

impl<'a, T: Element> Transformed<'a, T> {
    /// Output channels of the pass.
    pub(super) fn rows(&self) -> usize {
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
    pub(super) fn at(&self, xi: usize) -> Mat<'a, T> {
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

/// A pointer to the output (and its capacity) that tasks write through: each task makes
/// slices of only the output rows of its own tile rows, so the slices of different tasks never
/// overlap.
#[derive(Clone, Copy)]
struct SharedOut<T>(*mut T, usize);
// SAFETY: see the type's doc: blocks write disjoint elements.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as for `Send`: shared between blocks, it is only written through at disjoint rows.
unsafe impl<T: Send> Sync for SharedOut<T> {}

/// How [`convolve`] goes through the tiles.
#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    /// Every tile at once ([`convolve_whole`]).
    Whole,
    /// Blocks of this many tile rows ([`convolve_blocked`]).
    Blocks(usize),
}

impl Plan {
    /// For a pass to `o` output channels: every tile at once where the transformed tiles and
    /// products of all of them take at most [`WHOLE`] entries, else blocks of
    /// [`Tiling::rows_per_block`].
    fn new(t: &Tiling, o: usize) -> Self {
        if t.whole_len(o) <= WHOLE {
            Plan::Whole
        } else {
            Plan::Blocks(t.rows_per_block(t.c.max(o)))
        }
    }
}

/// The convolution of `x` (`t.n × t.c × h × w`) with the transformed kernels `k`:
/// `t.n × k.rows() × oh × ow`.
pub(super) fn convolve<T: Element>(x: &[T], t: &Tiling, k: &Transformed<T>, plan: Plan) -> Vec<T> {
    let (c, o) = (k.cols(), k.rows());
    debug_assert_eq!(c, t.c);
    // Not zeroed: the tasks write every element (below).
    let len = t.n * o * t.oh * t.ow;
    let mut out = Vec::<T>::with_capacity(len);
    let shared = SharedOut(out.as_mut_ptr(), len);
    match plan {
        Plan::Whole => convolve_whole(x, t, k, shared),
        Plan::Blocks(rows) => convolve_blocked(x, t, k, rows, shared),
    }
    // SAFETY: both paths cover every (image, tile row), and write its output rows
    // m·ty..min(m·ty + m, oh) whole for every output channel: together all rows of every plane.
    unsafe { out.set_len(len) };
    out
}

/// Block by block of tile rows, in parallel over blocks: each block's tiles transformed, its
/// GEMMs (one per point) and its output tiles.
fn convolve_blocked<T: Element>(
    x: &[T],
    t: &Tiling,
    k: &Transformed<T>,
    rows_per_block: usize,
    shared: SharedOut<T>,
) {
    let (c, o) = (k.cols(), k.rows());
    let blocks = t.rows().div_ceil(rows_per_block);
    (0..blocks).into_par_iter().for_each(|b| {
        // Rebound so that the closure captures the whole `SharedOut` (which is `Sync`), not
        // its raw-pointer field alone (which is not).
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        let rows = (b * rows_per_block, ((b + 1) * rows_per_block).min(t.rows()));
        let tiles = (rows.1 - rows.0) * t.tw;
        let points = t.points();
        let mut scratch = RowScratch::new(t, o);
        T::with_scratch(points * (c + o) * tiles, |buf| {
            let (v, m) = buf.split_at_mut(points * c * tiles);
            let mut planes: Vec<&mut [T]> = v.chunks_exact_mut(c * tiles).collect();
            transform_rows(x, t, rows, &mut planes, &mut scratch);
            for (xi, mx) in m.chunks_exact_mut(o * tiles).enumerate() {
                point_product(mx, &v[xi * c * tiles..], k, xi, tiles);
            }
            untransform_rows(m, 0, o * tiles, t, o, rows, &mut scratch, shared);
        });
    });
}

/// Every tile at once, for maps with few tiles (layer3 and layer4 of small images): all tiles
/// transformed (in parallel over tile rows), then one GEMM per point over all of them (in
/// parallel over points), then the output tiles (over tile rows). Block by block, each block
/// packed every point's kernels for its GEMMs again: at 512 × 512 kernels per point for about
/// a hundred tiles, that packing took as long as the products (ResNet-18's evaluation at
/// 128 px: 12 % of its samples against 18 % in gemm's microkernel).
fn convolve_whole<T: Element>(x: &[T], t: &Tiling, k: &Transformed<T>, shared: SharedOut<T>) {
    let (c, o) = (k.cols(), k.rows());
    let (points, tiles) = (t.points(), t.rows() * t.tw);
    let per_task = t.rows_per_task();
    let task_rows = |j: usize| (j * per_task, ((j + 1) * per_task).min(t.rows()));
    // One set of buffers per task, for both of its transform phases.
    let mut scratches: Vec<RowScratch<T>> = (0..t.rows().div_ceil(per_task))
        .map(|_| RowScratch::new(t, o))
        .collect();
    T::with_scratch(points * (c + o) * tiles, |buf| {
        let (v, m) = buf.split_at_mut(points * c * tiles);
        plane_chunks(v, c * tiles, per_task * t.tw * c)
            .into_par_iter()
            .zip(&mut scratches)
            .enumerate()
            .for_each(|(j, (mut planes, scratch))| {
                transform_rows(x, t, task_rows(j), &mut planes, scratch);
            });
        let v = &*v;
        m.par_chunks_mut(o * tiles)
            .enumerate()
            .for_each(|(xi, mx)| point_product(mx, &v[xi * c * tiles..], k, xi, tiles));
        let m = &*m;
        scratches
            .par_iter_mut()
            .enumerate()
            .for_each(|(j, scratch)| {
                #[allow(clippy::redundant_locals)]
                let shared = shared;
                let rows = task_rows(j);
                untransform_rows(m, rows.0 * t.tw, o * tiles, t, o, rows, scratch, shared);
            });
    });
}

/// The per-task buffers of the transforms: the sliding window of input rows, a tile row's m
/// output rows channels-last (`last`) and channels-first (`first`), and the intermediate rows
/// of F(4×4)'s separable transforms.
struct RowScratch<T> {
    window: Window<T>,
    last: Vec<T>,
    first: Vec<T>,
    tmp4: Vec<T>,
}

impl<T: Element> RowScratch<T> {
    fn new(t: &Tiling, o: usize) -> Self {
        Self {
            window: Window::new(t),
            last: vec![T::zero(); t.m * t.m * t.tw * o],
            first: vec![T::zero(); o * t.m * t.ow],
            tmp4: vec![T::zero(); if t.m == 4 { 36 * STEP4 } else { 0 }],
        }
    }
}

/// `V` of the tile rows `r0..r1` of `x`, written from tile 0 on into `planes` (one per point).
fn transform_rows<T: Element>(
    x: &[T],
    t: &Tiling,
    (r0, r1): (usize, usize),
    planes: &mut [&mut [T]],
    scratch: &mut RowScratch<T>,
) {
    let c = t.c;
    for (i, (n, ty)) in tile_rows(t, r0, r1).enumerate() {
        let rows = scratch.window.rows(x, t, n, ty);
        if let Ok(planes) = <&mut [&mut [T]; XI]>::try_from(&mut *planes) {
            let rows = [rows[0], rows[1], rows[2], rows[3]];
            input_tiles(rows, c, t.tw, planes, i * t.tw);
        } else if let Ok(planes) = <&mut [&mut [T]; 36]>::try_from(&mut *planes) {
            input_tiles4(rows, c, t.tw, planes, i * t.tw, &mut scratch.tmp4);
        } else {
            unreachable!("a tiling has 16 or 36 points")
        }
    }
}

/// `Mᵀ[ξ] (T×O) = Vᵀ[ξ] (T×C) · Kᵀ[ξ] (C×O)` of one point, stored `[tile][o]`, from its
/// tiles `v` (stored `[tile][c]`).
fn point_product<T: Element>(m: &mut [T], v: &[T], k: &Transformed<T>, xi: usize, tiles: usize) {
    let kt = k.at(xi);
    matmul(
        m,
        Mat {
            data: v,
            rs: k.cols(),
            cs: 1,
        },
        Mat {
            data: kt.data,
            rs: kt.cs,
            cs: kt.rs,
        },
        (tiles, k.rows(), k.cols()),
        false,
        Run::serial(k.arithmetic),
    );
}

/// The output rows of the tile rows `r0..r1` from their products in `m` (points `stride`
/// apart, the first row's tiles from tile `m_first` on), written into the output.
#[allow(clippy::too_many_arguments)]
fn untransform_rows<T: Element>(
    m: &[T],
    m_first: usize,
    stride: usize,
    t: &Tiling,
    o: usize,
    (r0, r1): (usize, usize),
    scratch: &mut RowScratch<T>,
    out: SharedOut<T>,
) {
    let width = t.m * t.tw * o;
    let RowScratch {
        last, first, tmp4, ..
    } = scratch;
    for (i, (n, ty)) in tile_rows(t, r0, r1).enumerate() {
        let at = m_first + i * t.tw;
        if t.m == 2 {
            output_tiles(m, o, t.tw, at, stride, last);
        } else {
            output_tiles4(m, o, t.tw, at, stride, last, tmp4);
        }
        // The output rows of this tile row: m·ty up to m of them, inside the output.
        let (y0, y1) = (t.m * ty, (t.m * ty + t.m).min(t.oh));
        let span = (y1 - y0) * t.ow;
        for (r, row) in last.chunks_exact(width).take(y1 - y0).enumerate() {
            transpose(row, o, &mut first[r * t.ow..], span, t.ow, o);
        }
        for (oi, src) in first.chunks_exact(span).take(o).enumerate() {
            let start = ((n * o + oi) * t.oh + y0) * t.ow;
            assert!(start + span <= out.1);
            // SAFETY: these rows lie inside the output's capacity (asserted), which outlives
            // the tasks, and belong to this tile row alone (see `SharedOut`); nothing reads
            // the output until every task is done.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out.0.add(start), span) };
        }
    }
}
