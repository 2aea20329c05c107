//! The kernel gradient: `dU[ξ] = Σ_tiles Ṁ[ξ] · V[ξ]ᵀ` from the forward's input tiles and the
//! output gradient's tiles, then `dW = Gᵀ dU G`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::layout::{plane_chunks, points, points_mut, transpose, Window};
use super::transforms::{
    grad_tiles, grad_tiles4, input_tiles, input_tiles4, kernel_grads, kernel_grads4, STEP4,
};
use super::{tile_rows, tile_size, Tiling, WHOLE, XI};
use crate::ops::conv::geometry::Geometry;
use crate::ops::cpu::{ordered_sum, par_written, zeroed, PIECES};
use crate::ops::gemm::{matmul, matmul_uninit, Mat, Run};
use crate::ops::{Element, Winograd};

/// d(weight) from the input `x` and d(output) `dy`: `O×C×3×3`, with the forward's tiles.
pub(in crate::ops::conv) fn weight_grad<T: Element>(
    x: &[T],
    dy: &[T],
    g: &Geometry,
    winograd: Winograd,
) -> Vec<T> {
    let t = Tiling::new(
        tile_size(g.oh, g.ow, winograd),
        g.n,
        g.c,
        g.h,
        g.w,
        g.padding,
    );
    // Every tile at once when that is small, or no larger than the two sums of dU that the
    // blocked path holds at least (its total and a partial): the composite head's 1280-channel
    // convolution on 4×4 maps (212 tiles) needs 35 MB of tiles whole, against 105 MB per dU.
    // The choice depends on the shape alone, never on the threads (see `PIECES`).
    let tiles_len = t.whole_len(g.o);
    let partials_len = 2.min(t.rows()) * t.points() * g.o * g.c;
    let whole = tiles_len <= WHOLE.max(partials_len);
    match (t.m, whole) {
        (2, true) => weight_grad_whole::<T, XI>(x, dy, g, &t),
        (2, false) => weight_grad_blocked::<T, XI>(x, dy, g, &t, t.rows_per_block(g.c.max(g.o))),
        (_, true) => weight_grad_whole::<T, 36>(x, dy, g, &t),
        (_, false) => weight_grad_blocked::<T, 36>(x, dy, g, &t, t.rows_per_block(g.c.max(g.o))),
    }
}

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

/// `dU[ξ] (O×C) += Ṁ[ξ] (O×T) · Vᵀ[ξ] (T×C)` for one point, both operands stored
/// `[tile][channel]`.
fn weight_gemm<T: Element>(
    du: &mut [T],
    m: &[T],
    v: &[T],
    (o, c, tiles): (usize, usize, usize),
    run: Run,
) {
    let (m, v) = (point_grad(m, o), point_tiles(v, c));
    matmul(du, m, v, (o, c, tiles), true, run);
}

/// One point's `Ṁ` (stored `[tile][o]`) as the O×T operand.
fn point_grad<T>(m: &[T], o: usize) -> Mat<'_, T> {
    Mat {
        data: m,
        rs: 1,
        cs: o,
    }
}

/// One point's `V` (stored `[tile][c]`) as the T×C operand.
fn point_tiles<T>(v: &[T], c: usize) -> Mat<'_, T> {
    Mat {
        data: v,
        rs: c,
        cs: 1,
    }
}

/// d(weight) for maps with few tiles: every tile transformed (in parallel over tile rows),
/// then the `P` GEMMs in parallel, each over all tiles, writing dU once.
pub(super) fn weight_grad_whole<T: Element, const P: usize>(
    x: &[T],
    dy: &[T],
    g: &Geometry,
    t: &Tiling,
) -> Vec<T> {
    let (c, o) = (g.c, g.o);
    let tiles = t.rows() * t.tw;
    let per_task = t.rows_per_task();
    let du = T::with_scratch(P * (c + o) * tiles, |scratch| {
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
        let point = |xi: usize, du: &mut [MaybeUninit<T>]| {
            let (m, v) = (&m[xi * o * tiles..], &v[xi * c * tiles..]);
            matmul_uninit(
                du,
                c,
                point_grad(m, o),
                point_tiles(v, c),
                (o, c, tiles),
                // Serial: the points are the parallelism.
                Run::serial(g.arithmetic),
            );
        };
        // SAFETY: each point's O×C block is written whole by its GEMM.
        unsafe { par_written(P * o * c, o * c, point) }
    });
    weight_untransform::<T, P>(&du, o, c)
}

/// d(weight) block by block: the blocks fall into [`PIECES`] contiguous pieces, each summing
/// dU over its blocks, and the pieces are added in their order (`ordered_sum`), so that every
/// run adds in the same order whatever the threads.
pub(super) fn weight_grad_blocked<T: Element, const P: usize>(
    x: &[T],
    dy: &[T],
    g: &Geometry,
    t: &Tiling,
    rows_per_block: usize,
) -> Vec<T> {
    let (c, o) = (g.c, g.o);
    let blocks = t.rows().div_ceil(rows_per_block);
    let pieces = blocks.clamp(1, PIECES);
    let du = ordered_sum(pieces, |piece| {
        // Written zeros: the GEMMs accumulate onto it (see `zeroed`).
        let mut du = zeroed::<T>(P * o * c);
        let mut window = Window::new(t);
        let mut grads = GradRows::new(t, o);
        for b in piece * blocks / pieces..(piece + 1) * blocks / pieces {
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
                    // Serial: the pieces are the parallelism.
                    weight_gemm(du, m, v, (o, c, tiles), Run::serial(g.arithmetic));
                }
            });
        }
        du
    });
    weight_untransform::<T, P>(&du, o, c)
}

/// `dW = Gᵀ dU G` for every kernel, where `du` is `dU[ξ][o][c]`, to `O×C×3×3`, in parallel
/// over the output channels.
fn weight_untransform<T: Element, const P: usize>(du: &[T], o: usize, c: usize) -> Vec<T> {
    let mut dw = zeroed::<T>(o * c * 9);
    dw.par_chunks_mut(c * 9).enumerate().for_each_init(
        || {
            let tmp = if P == XI { 0 } else { 18 * c };
            (vec![T::zero(); 9 * c], vec![T::zero(); tmp])
        },
        |(entries, tmp), (oi, dw)| {
            // Row `oi` of every point's dU.
            let du = points::<T, P>(du, oi * c, o * c, c);
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
