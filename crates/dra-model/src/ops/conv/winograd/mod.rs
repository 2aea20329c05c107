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
//! tiles stay within a few MB, in parallel over blocks; on small maps all at once (up to
//! [`WHOLE`] entries), with the GEMMs in parallel over points. The transforms work
//! channels-last: the rows a tile row reads are transposed once into `[column][channel]` rows,
//! and every transform is then a loop over channels (64–512 in ResNet-18), [`LANES`] at a time,
//! however small the feature map (layer4 of a 64-px image is 2×2). Transformed tiles and the
//! GEMMs' products are stored `[ξ][tile][channel]`. F(4×4)'s float32 results differ from a
//! direct sum by more than F(2×2)'s (its transforms have entries up to 8 and 1/24); the parity
//! tests against PyTorch stay within 3e-6 of the largest score (docs/fidelity.md).
//!
//! The code is in four parts: `layout` (channels-last rows, transposes and the loops over eight
//! lanes that every transform runs on), `transforms` (the arithmetic of B, G and A for both
//! tile sizes), `forward` (the kernels' transform, and the forward and input gradient, both
//! convolutions of transformed tiles) and `weight_grad` (the kernel gradient).

mod forward;
mod layout;
mod transforms;
mod weight_grad;

pub(super) use forward::{forward, input_grad, kernels_len};
pub(super) use weight_grad::weight_grad;

use super::geometry::Geometry;
use crate::ops::cpu::PIECES;
use crate::ops::Winograd;

/// Points of the 4×4 transform domain.
const XI: usize = 16;

/// Transformed tiles and products (in f32 entries, 16 MB) up to which a pass transforms every
/// tile at once and then runs its GEMMs (one per point) in parallel, each over all tiles,
/// instead of going block by block. Small feature maps (layer4 of a 64-px image has 53 tiles)
/// would otherwise spend d(weight)'s time on the O×C partial sums of blocks, and the forward's
/// and d(input)'s on packing every point's kernels again for each block.
const WHOLE: usize = 1 << 22;

/// Lanes per step of the channel loops: one AVX-512 register of f32 (two of AVX2). Eight, one
/// AVX2 register, left LLVM's AVX-512 code in 256-bit registers for much of the transforms:
/// ResNet-18's evaluation went from 0.170–0.191 to 0.166–0.186 s at 128 px and from
/// 0.567–0.577 to 0.553–0.570 s at 224 px with sixteen (medians, alternating runs).
const LANES: usize = 16;

/// Whether a convolution takes the Winograd path: Winograd on (`winograd`), and a 3×3 kernel at
/// stride 1 with padding ≤ 2 (so that the input gradient is itself a convolution with
/// non-negative padding).
pub(super) fn applies(g: &Geometry, winograd: Winograd) -> bool {
    winograd != Winograd::Off && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding <= 2
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
    /// is a multiple of [`PIECES`] and of near-equal sizes, so that no thread waits on
    /// another's last block. A block is a GEMM: its size follows from the shape alone, never
    /// from the threads (see [`PIECES`]).
    fn rows_per_block(&self, channels: usize) -> usize {
        let tiles = (1usize << 20) / (self.points() * channels.max(1));
        let by_size = (tiles / self.tw).max(1);
        let blocks = self.rows().div_ceil(by_size).next_multiple_of(PIECES);
        self.rows().div_ceil(blocks).max(1)
    }

    /// Entries of the transformed tiles of every tile at once, with their products (or
    /// gradients) of `other` channels: what a whole-map pass holds, against [`WHOLE`].
    fn whole_len(&self, other: usize) -> usize {
        self.points() * self.rows() * self.tw * (self.c + other)
    }

    /// Tile rows per task of a whole-map pass: the rows split evenly over the threads. Only
    /// the transforms, which treat each tile on its own, are split so; the GEMMs span all tiles.
    fn rows_per_task(&self) -> usize {
        self.rows()
            .div_ceil(rayon::current_num_threads().max(1))
            .max(1)
    }
}

/// The rows `r0..r1` of a block as (image, tile row) pairs.
fn tile_rows(t: &Tiling, r0: usize, r1: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (r0..r1).map(|r| (r / t.th, r % t.th))
}

/// The tile size for an output of `oh × ow`: with [`Winograd::F4`], 4 (F(4×4, 3×3): 36
/// multiplications per 16 outputs and channel pair, against 64 with F(2×2)) where the output
/// is at least 8×8, else 2; with [`Winograd::F2`], 2.
/// Below, an image has at most one 4×4 tile, and the costs per convolution (the 36 transformed
/// kernels per channel pair, 2.25× F(2×2)'s, written and packed for the GEMMs) outweigh the
/// saved multiplications: per-op timings of the DRA step at 128 px, layer4 at 4×4, forward +
/// input gradient 0.28 s with F(4×4) against 0.23 s with F(2×2) over three steps; at 8×8
/// (layer3) F(4×4) took 0.17 s against 0.21 s.
fn tile_size(oh: usize, ow: usize, winograd: Winograd) -> usize {
    if winograd == Winograd::F4 && oh >= 8 && ow >= 8 {
        4
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::forward::{convolve, weight_transform, Plan, Transformed};
    use super::weight_grad::{weight_grad_blocked, weight_grad_whole};
    use super::*;

    /// Deterministic values in [−1, 1) with no structure a wrong index could hide behind.
    pub(super) fn values(len: usize, seed: u64) -> Vec<f64> {
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
            assert!(applies(&g, Winograd::F4));
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
                let plans = [1, 2, 3, t.rows()].map(Plan::Blocks);
                for plan in plans.into_iter().chain([Plan::Whole]) {
                    let k = Transformed {
                        u: &u,
                        o,
                        c,
                        adjoint: false,
                        swap: false,
                        arithmetic: crate::ops::Arithmetic::Native,
                    };
                    let got = convolve(&x, &t, &k, plan);
                    assert_close(&got, &y, &format!("y F{m} {label} {plan:?}"));
                    let k = Transformed {
                        u: ur.as_deref().unwrap_or(&u),
                        adjoint: true,
                        swap: m == 2,
                        ..k
                    };
                    let plan = match plan {
                        Plan::Blocks(rows) => Plan::Blocks(rows.min(td.rows())),
                        whole => whole,
                    };
                    let got = convolve(&dy, &td, &k, plan);
                    assert_close(&got, &dx, &format!("dx F{m} {label} {plan:?}"));
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
            let (got, kept) = forward(&x, &wt, &g, Winograd::F4);
            assert_close(&got, &y, &label);
            if let Some(kept) = &kept {
                assert_eq!(
                    kept.len(),
                    kernels_len(&g),
                    "{label}: kernels kept by the forward"
                );
            }
            assert_close(&input_grad(&dy, &wt, None, &g, Winograd::F4), &dx, &label);
            assert_close(
                &input_grad(&dy, &wt, kept.as_deref(), &g, Winograd::F4),
                &dx,
                &label,
            );
            assert_close(&weight_grad(&x, &dy, &g, Winograd::F4), &dw, &label);
        }
        Ok(())
    }
}
