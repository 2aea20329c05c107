//! BatchNorm2d with PyTorch's semantics and a fused CPU kernel for training mode: one pass for
//! the batch statistics, one for the normalisation, and a two-pass backward with the closed-form
//! gradient, instead of a dozen element-wise ops (each with its own autograd node and buffer).
//! In eval mode, forwards that record no graph take one pass as well ([`EvalApply`]).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, Var,
    WithDType,
};
use std::mem::MaybeUninit;

use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use crate::cpu::{dispatch, slice};

/// Element types of the kernels (f64 serves the double-precision parity tests). Sums run in
/// `T` over blocks of [`BLOCK`] elements and are carried across blocks in f64
/// (`WithDType::{to_f64, from_f64}`).
pub(crate) trait Element: WithDType {}
impl Element for f32 {}
impl Element for f64 {}

/// Per-channel values of an NCHW tensor: `(n, c, plane)`.
fn nchw(l: &Layout) -> Result<(usize, usize, usize)> {
    let dims = l.shape().dims();
    if dims.len() < 2 {
        candle_core::bail!("batch-norm input needs at least two dimensions, got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// Batch mean and biased variance per channel, as a `(2, C)` tensor (no gradient).
struct Stats;

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

/// `xs` as f32, when `T` is f32 and the CPU has AVX2 and FMA: the sums then take the
/// [`avx2`] kernels, as LLVM compiled the masked sums of [`blocked_sums`] to a branch per
/// lane (6 % of a DRA step at 128 px).
fn avx2_f32<T: Element>(xs: &[T]) -> Option<&[f32]> {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
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
        /// then a sum, never fused).
        Grad { mu: f32, relu: Option<(f32, f32)> },
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `ps` and `qs` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sums(ps: &[f32], qs: &[f32], term: Term) -> (f64, f64) {
        assert_eq!(ps.len(), qs.len());
        let zero = _mm256_setzero_ps();
        let (mut wa, mut wb) = ([_mm256_setzero_pd(); 2], [_mm256_setzero_pd(); 2]);
        let (mut ra, mut rb) = (0.0f64, 0.0f64);
        for (pb, qb) in ps.chunks(BLOCK).zip(qs.chunks(BLOCK)) {
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
                match term {
                    Term::Sum => a = _mm256_add_ps(a, p),
                    Term::Squares(c) => {
                        let d = _mm256_sub_ps(p, _mm256_set1_ps(c));
                        a = _mm256_fmadd_ps(d, d, a);
                    }
                    Term::Grad { mu, relu } => {
                        let g = match relu {
                            None => p,
                            Some((scale, shift)) => {
                                let n = _mm256_add_ps(
                                    _mm256_mul_ps(q, _mm256_set1_ps(scale)),
                                    _mm256_set1_ps(shift),
                                );
                                _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(n, zero), p)
                            }
                        };
                        a = _mm256_add_ps(a, g);
                        b = _mm256_fmadd_ps(g, _mm256_sub_ps(q, _mm256_set1_ps(mu)), b);
                    }
                }
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

    /// One pair's terms, for the elements after the last whole group of eight.
    fn scalar(p: f32, q: f32, term: Term) -> (f64, f64) {
        match term {
            Term::Sum => (p as f64, 0.0),
            Term::Squares(c) => {
                let d = (p - c) as f64;
                (d * d, 0.0)
            }
            Term::Grad { mu, relu } => {
                let masked = relu.is_some_and(|(scale, shift)| q * scale + shift <= 0.0);
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

/// y = (x − mean) / √(var + eps) · γ + β from `x`, the batch `stats` and `gb = [γ; β]`,
/// followed by ReLU when `relu` (the ResNet's BN → ReLU pairs, one pass instead of two).
/// Its backward treats the statistics as functions of `x` (training-mode BatchNorm).
struct Apply {
    eps: f64,
    relu: bool,
}

/// The per-channel affine map of the normalisation: y = x·scale + shift. Training's forward
/// and backward both round it to `T` and apply it with [`normalise`].
fn affine(mean: f64, var: f64, gamma: f64, beta: f64, eps: f64) -> (f64, f64) {
    let scale = gamma / (var + eps).sqrt();
    (scale, beta - mean * scale)
}

/// `v·scale + shift` in `T`, with the affine map rounded to `T`: the one expression of the
/// training forward ([`Apply`], [`AddRelu`]) and of the backward's ReLU mask
/// ([`relu_gated`]), so the mask is exactly the forward's. In `T`, not f64: eight f32 lanes
/// and no conversions (the f64 version took 4 % of a DRA step at 128 px).
#[inline(always)]
fn normalise<T: Element>(v: T, (scale, shift): (T, T)) -> T {
    v * scale + shift
}

/// [`affine`] rounded to `T`, for [`normalise`].
pub(crate) fn affine_t<T: Element>(mean: f64, var: f64, gamma: f64, beta: f64, eps: f64) -> (T, T) {
    let (scale, shift) = affine(mean, var, gamma, beta, eps);
    (T::from_f64(scale), T::from_f64(shift))
}

crate::cpu::multiversion! {
/// One plane of [`Apply`]'s forward: `normalise`, then ReLU when `relu`. Writes every
/// element of `y` (as long as `x`).
pub(crate) fn apply_plane<T: Element>(y: &mut [MaybeUninit<T>], x: &[T], map: (T, T), relu: bool) {
    assert_eq!(y.len(), x.len());
    for (o, &v) in y.iter_mut().zip(x) {
        let n = normalise(v, map);
        o.write(if relu && n <= T::zero() { T::zero() } else { n });
    }
}
}

crate::cpu::multiversion! {
/// One plane of [`AddRelu`]'s forward: `relu(normalise(x) + residual)`. Writes every element
/// of `y`.
fn add_relu_plane<T: Element>(y: &mut [MaybeUninit<T>], x: &[T], r: &[T], map: (T, T)) {
    assert!(y.len() == x.len() && y.len() == r.len());
    for ((o, &v), &r) in y.iter_mut().zip(x).zip(r) {
        let n = normalise(v, map) + r;
        o.write(if n <= T::zero() { T::zero() } else { n });
    }
}
}

impl CustomOp3 for Apply {
    fn name(&self) -> &'static str {
        "dra-bn-apply"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.forward::<T>(xs, xl, ss, sl, gs, gl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(
            &dy.contiguous()?,
            &Tensor::cat(&[stats, gb], 0)?,
            &Gradient {
                eps: self.eps,
                relu: self.relu,
            },
        )?;
        let numel = x.elem_count();
        let c = stats.dim(1)?;
        let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
        let dgb = packed.narrow(0, numel, 2 * c)?.reshape((2, c))?;
        Ok((Some(dx), None, Some(dgb)))
    }
}

impl Apply {
    fn forward<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(xs, xl, self.name())?;
        let st = slice::<T>(ss, sl, self.name())?;
        let gb = slice::<T>(gs, gl, self.name())?;
        let (_, c, plane) = nchw(xl)?;
        let fill = |i: usize, yp: &mut [MaybeUninit<T>]| {
            let ch = i % c;
            let map = affine_t(
                st[ch].to_f64(),
                st[c + ch].to_f64(),
                gb[ch].to_f64(),
                gb[c + ch].to_f64(),
                self.eps,
            );
            apply_plane(yp, &x[i * plane..(i + 1) * plane], map, self.relu);
        };
        // SAFETY: `apply_plane` writes each whole plane.
        let y = unsafe { crate::cpu::par_written(x.len(), plane, fill) };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }
}

/// Backward of [`Apply`]: `[dx (flattened); dγ; dβ]` from `x`, `dy` and `[mean; var; γ; β]`.
/// With `relu`, `dy` is first masked where the forward output was zero (PyTorch's ReLU
/// backward passes the gradient where the output is positive).
struct Gradient {
    eps: f64,
    relu: bool,
}

impl CustomOp3 for Gradient {
    fn name(&self) -> &'static str {
        "dra-bn-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.run::<T>(xs, xl, ds, dl, ps, pl))
    }
}

impl Gradient {
    fn run<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(xs, xl, self.name())?;
        let dy = slice::<T>(ds, dl, self.name())?;
        let p = slice::<T>(ps, pl, self.name())?;
        let dims = nchw(xl)?;
        if dy.len() != x.len() || p.len() != 4 * dims.1 {
            candle_core::bail!(
                "{}: gradient {:?} and parameters {:?} do not fit the input {:?}",
                self.name(),
                dl.shape(),
                pl.shape(),
                xl.shape()
            );
        }
        let out = gradient(x, dy, p, dims, (self.eps, self.relu));
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

/// [`Gradient`]'s arithmetic: `[dx; dγ; dβ]` (`x.len() + 2·C`) from the input `x`
/// (`(n, c, plane)`), the output's gradient `dy` and `p = [mean; var; γ; β]`. With `relu`, the
/// gradient is first masked where the forward's ReLU output was zero.
fn gradient<T: Element>(
    x: &[T],
    dy: &[T],
    p: &[T],
    dims: (usize, usize, usize),
    flags: (f64, bool),
) -> Vec<T> {
    let (_, c, plane) = dims;
    let per = Channels::new(x, dy, p, dims, flags);
    let (planes, width) = (x.len() / plane.max(1), plane.max(1));
    let fill = |i: usize, chunk: &mut [MaybeUninit<T>]| {
        if i < planes {
            let (coefficients, mask) = per.plane(i);
            let r = i * plane..(i + 1) * plane;
            grad_input(chunk, &dy[r.clone()], &x[r], mask, coefficients);
        } else {
            // The tail, in chunks of `width`: [dγ; dβ].
            let start = (i - planes) * width;
            for (j, o) in chunk.iter_mut().enumerate() {
                let (ch, beta) = ((start + j) % c, start + j >= c);
                let (sdy, sdyx) = per.sums[ch];
                o.write(T::from_f64(if beta { sdy } else { sdyx }));
            }
        }
    };
    // SAFETY: every plane's chunk is written whole by `grad_input` (it asserts the lengths),
    // and the tail's chunks element by element.
    unsafe { crate::cpu::par_written(x.len() + 2 * c, width, fill) }
}

/// [`gradient`] in place: the gradient `dy` is read from the first `x.len()` elements of
/// `out` and overwritten by dx, and dγ, dβ follow (an op that builds the gradient itself then
/// needs no second buffer).
pub(crate) fn gradient_in_place<T: Element>(
    x: &[T],
    p: &[T],
    dims: (usize, usize, usize),
    flags: (f64, bool),
    out: &mut [T],
) {
    let (_, c, plane) = dims;
    let per = Channels::new(x, &out[..x.len()], p, dims, flags);
    let (dx, dgb) = out.split_at_mut(x.len());
    dx.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, dxp)| {
            let (coefficients, mask) = per.plane(i);
            grad_input_in_place(dxp, &x[i * plane..(i + 1) * plane], mask, coefficients);
        });
    for (ch, (sdy, sdyx)) in per.sums.iter().enumerate() {
        dgb[ch] = T::from_f64(*sdyx);
        dgb[c + ch] = T::from_f64(*sdy);
    }
}

/// The per-channel quantities of BatchNorm's input gradient: Σ dy and Σ dy·x̂ (of the masked
/// gradient), and from them each plane's coefficients.
struct Channels<'a, T> {
    p: &'a [T],
    c: usize,
    m: f64,
    eps: f64,
    relu: bool,
    /// `(Σ dy, Σ dy·x̂)` per channel.
    sums: Vec<(f64, f64)>,
}

impl<'a, T: Element> Channels<'a, T> {
    fn new(
        x: &[T],
        dy: &[T],
        p: &'a [T],
        (n, c, plane): (usize, usize, usize),
        (eps, relu): (f64, bool),
    ) -> Self {
        let mut per = Self {
            p,
            c,
            m: (n * plane) as f64,
            eps,
            relu,
            sums: Vec::new(),
        };
        // Σ dy and Σ dy·(x − μ), so Σ dy·x̂ follows.
        per.sums = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (_, invstd, mask) = per.channel(ch);
                let (mut sdy, mut sdyc) = (0.0, 0.0);
                for i in 0..n {
                    let r = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    let (a, b) = grad_sums(&dy[r.clone()], &x[r], p[ch], mask);
                    sdy += a;
                    sdyc += b;
                }
                (sdy, invstd * sdyc)
            })
            .collect();
        per
    }

    /// The channel's mean, 1/√(var + eps) and ReLU mask (the forward's affine map, to
    /// recompute the mask exactly).
    fn channel(&self, ch: usize) -> (f64, f64, Option<(T, T)>) {
        let (p, c) = (self.p, self.c);
        let (mu, var) = (p[ch].to_f64(), p[c + ch].to_f64());
        let map = affine_t(
            mu,
            var,
            p[2 * c + ch].to_f64(),
            p[3 * c + ch].to_f64(),
            self.eps,
        );
        (mu, 1.0 / (var + self.eps).sqrt(), self.relu.then_some(map))
    }

    /// Plane `i`'s coefficients `[p, q, μ, r]` of dx = p·dy + q·(v − μ) + r, from
    /// dx = γ·invstd/M · (M·dy − Σdy − x̂·Σ(dy·x̂)) with x̂ = (v − μ)·invstd, and its mask.
    fn plane(&self, i: usize) -> ([T; 4], Option<(T, T)>) {
        let ch = i % self.c;
        let (_, invstd, mask) = self.channel(ch);
        let k = self.p[2 * self.c + ch].to_f64() * invstd / self.m;
        let (sdy, sdyx) = self.sums[ch];
        let coefficients = [
            T::from_f64(k * self.m),
            T::from_f64(-k * invstd * sdyx),
            self.p[ch],
            T::from_f64(-k * sdy),
        ];
        (coefficients, mask)
    }
}

/// The incoming gradient as a function of `(d, v)` (gradient, input) behind a ReLU: zero
/// where the forward's pre-activation, recomputed by [`normalise`] from the affine map, was
/// not positive. The kernels below instantiate their loops once with this and once with the
/// plain gradient instead of testing the mask per element, so that both loops vectorise.
#[inline(always)]
fn relu_gated<T: Element>(map: (T, T)) -> impl Fn(T, T) -> T {
    move |d: T, v: T| {
        if normalise(v, map) <= T::zero() {
            T::zero()
        } else {
            d
        }
    }
}

/// `(Σ g, Σ g·(v − μ))` over one plane of the masked gradient `g` (see [`relu_gated`]) and
/// the input `v`. Centred on the batch mean μ, the second sum does not cancel against
/// μ·Σ g, as Σ g·v would.
fn grad_sums<T: Element>(dy: &[T], x: &[T], mu: T, mask: Option<(T, T)>) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(dy), Some(x)) = (avx2_f32(dy), avx2_f32(x)) {
        let f32_of = |v: T| v.to_f64() as f32;
        let term = avx2::Term::Grad {
            mu: f32_of(mu),
            relu: mask.map(|(scale, shift)| (f32_of(scale), f32_of(shift))),
        };
        // SAFETY: `avx2_f32` checked the CPU's features.
        return unsafe { avx2::sums(dy, x, term) };
    }
    match mask {
        None => blocked_sums(dy, x, |d, v| (d, d * (v - mu))),
        Some(map) => {
            let g = relu_gated(map);
            blocked_sums(dy, x, |d, v| {
                let d = g(d, v);
                (d, d * (v - mu))
            })
        }
    }
}

/// `dx = p·g + q·(v − μ) + r` over one plane, in `T`: written around `v − μ`, no term grows
/// with the mean |μ|, as `q·v` and `r` separately would.
#[inline(always)]
fn affine_plane<T: Element>(
    dx: &mut [MaybeUninit<T>],
    dy: &[T],
    x: &[T],
    [p, q, mu, r]: [T; 4],
    g: impl Fn(T, T) -> T,
) {
    assert!(dx.len() == dy.len() && dx.len() == x.len());
    for ((o, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
        o.write(p * g(d, v) + q * (v - mu) + r);
    }
}

/// [`affine_plane`] with the gradient read from `dx` itself.
#[inline(always)]
fn affine_plane_in_place<T: Element>(
    dx: &mut [T],
    x: &[T],
    [p, q, mu, r]: [T; 4],
    g: impl Fn(T, T) -> T,
) {
    for (o, &v) in dx.iter_mut().zip(x) {
        *o = p * g(*o, v) + q * (v - mu) + r;
    }
}

crate::cpu::multiversion! {
/// One plane of the input gradient: `dx = p·g + q·(v − μ) + r` with the masked gradient `g`
/// of `dy`, the input `v` and the channel's coefficients `[p, q, μ, r]`. Writes all of `dx`.
fn grad_input<T: Element>(
    dx: &mut [MaybeUninit<T>],
    dy: &[T],
    x: &[T],
    mask: Option<(T, T)>,
    coefficients: [T; 4],
) {
    match mask {
        None => affine_plane(dx, dy, x, coefficients, |d: T, _: T| d),
        Some(map) => affine_plane(dx, dy, x, coefficients, relu_gated(map)),
    }
}
}

crate::cpu::multiversion! {
/// [`grad_input`] in place: the gradient is read from `dx`.
fn grad_input_in_place<T: Element>(
    dx: &mut [T],
    x: &[T],
    mask: Option<(T, T)>,
    coefficients: [T; 4],
) {
    match mask {
        None => affine_plane_in_place(dx, x, coefficients, |d: T, _: T| d),
        Some(map) => affine_plane_in_place(dx, x, coefficients, relu_gated(map)),
    }
}
}

/// relu(x·scale + shift + residual), the end of a ResNet basic block (BatchNorm, the identity
/// added, ReLU), in one pass from `x`, the `residual` and `[mean; var; γ; β]` as one `(4, C)`
/// tensor: a custom op has at most three operands, so the batch statistics travel with γ and β
/// (and get a zero gradient, which nothing reads: they come from a no-gradient op).
///
/// The normalisation is [`Apply`]'s arithmetic rounded to `T`, then the addition in `T`, so the
/// output is bit for bit `relu(forward_t(x) + residual)` with PyTorch's ReLU (NaN propagates).
/// The backward takes the ReLU mask from the output (`out > 0` is exactly `pre-activation > 0`,
/// PyTorch's rule: no gradient at zero); the masked gradient is the residual's, and [`Gradient`]
/// turns it into those of `x`, γ and β.
struct AddRelu {
    eps: f64,
}

impl CustomOp3 for AddRelu {
    fn name(&self) -> &'static str {
        "dra-bn-add-relu"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.forward::<T>(xs, xl, rs, rl, ps, pl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _residual: &Tensor,
        params: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dr = res.apply_op2_no_bwd(&dy.contiguous()?, &ReluBackward)?;
        let packed = x.apply_op3_no_bwd(
            &dr,
            params,
            &Gradient {
                eps: self.eps,
                relu: false,
            },
        )?;
        let numel = x.elem_count();
        let c = params.dim(1)?;
        let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
        let dgb = packed.narrow(0, numel, 2 * c)?.reshape((2, c))?;
        let dparams = Tensor::cat(&[&dgb.zeros_like()?, &dgb], 0)?;
        Ok((Some(dx), Some(dr), Some(dparams)))
    }
}

impl AddRelu {
    fn forward<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(xs, xl, self.name())?;
        let r_in = slice::<T>(rs, rl, self.name())?;
        let p = slice::<T>(ps, pl, self.name())?;
        let (_, c, plane) = nchw(xl)?;
        if rl.shape() != xl.shape() || pl.shape().dims() != [4, c] {
            candle_core::bail!(
                "{}: residual {:?} and parameters {:?} do not fit the input {:?}",
                self.name(),
                rl.shape(),
                pl.shape(),
                xl.shape()
            );
        }
        let fill = |i: usize, yp: &mut [MaybeUninit<T>]| {
            let ch = i % c;
            let map = affine_t(
                p[ch].to_f64(),
                p[c + ch].to_f64(),
                p[2 * c + ch].to_f64(),
                p[3 * c + ch].to_f64(),
                self.eps,
            );
            let r = i * plane..(i + 1) * plane;
            add_relu_plane(yp, &x[r.clone()], &r_in[r], map);
        };
        // SAFETY: `add_relu_plane` writes each whole plane.
        let y = unsafe { crate::cpu::par_written(x.len(), plane, fill) };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }
}

/// PyTorch's ReLU backward from the ReLU's output: `(out, dy) → dy where out > 0, else 0`
/// (NaN outputs pass the gradient, as `threshold_backward` does).
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "dra-relu-backward"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(ys, self.name(), T => self.run::<T>(ys, yl, ds, dl))
    }
}

impl ReluBackward {
    fn run<T: Element>(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = slice::<T>(ys, yl, self.name())?;
        let dy = slice::<T>(ds, dl, self.name())?;
        if yl.shape() != dl.shape() {
            candle_core::bail!(
                "{}: gradient {:?} does not match the output {:?}",
                self.name(),
                dl.shape(),
                yl.shape()
            );
        }
        // Chunks large enough to amortise rayon's scheduling, small enough to share out.
        const CHUNK: usize = 1 << 14;
        let fill = |i: usize, o: &mut [MaybeUninit<T>]| {
            let r = i * CHUNK..i * CHUNK + o.len();
            for ((o, &y), &d) in o.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
                o.write(if y <= T::zero() { T::zero() } else { d });
            }
        };
        // SAFETY: each chunk's `y` and `dy` are as long as the chunk, so every element is
        // written.
        let dx = unsafe { crate::cpu::par_written(y.len(), CHUNK, fill) };
        Ok((T::to_cpu_storage_owned(dx), yl.shape().clone()))
    }
}

/// Eval-mode BatchNorm in one pass: y = x·scale + shift per channel from the running
/// statistics, then `+ residual` (as [`CustomOp3`]) and ReLU when asked. It has no backward:
/// it serves only forwards that record no graph (scoring), where candle's ops would take up
/// to five passes and as many buffers of the activation's size.
struct EvalApply {
    eps: f64,
    relu: bool,
}

impl EvalApply {
    /// `x` and the optional residual, with `params = [mean; var; γ; β]` (`4 × C`).
    fn run<T: Element>(
        &self,
        x: &[T],
        xl: &Layout,
        params: &[T],
        residual: Option<&[T]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, plane) = nchw(xl)?;
        if params.len() != 4 * c {
            candle_core::bail!("dra-bn-eval: {} parameters for {c} channels", params.len());
        }
        let coefficients: Vec<(T, T)> = (0..c)
            .map(|ch| {
                let p = |i: usize| params[i * c + ch].to_f64();
                let (scale, shift) = affine(p(0), p(1), p(2), p(3), self.eps);
                (T::from_f64(scale), T::from_f64(shift))
            })
            .collect();
        let relu = self.relu;
        let fill = |i: usize, yp: &mut [MaybeUninit<T>]| {
            let (scale, shift) = coefficients[i % c];
            let r = i * plane..(i + 1) * plane;
            let res = residual.map(|v| &v[r.clone()]);
            eval_plane(yp, &x[r], res, scale, shift, relu);
        };
        // SAFETY: `eval_plane` writes each whole plane.
        let y = unsafe { crate::cpu::par_written(x.len(), plane, fill) };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }
}

crate::cpu::multiversion! {
/// One plane of [`EvalApply`]. The ReLU is PyTorch's (`max(v, 0)` with NaN kept).
fn eval_plane<T: Element>(
    y: &mut [MaybeUninit<T>],
    x: &[T],
    residual: Option<&[T]>,
    scale: T,
    shift: T,
    relu: bool,
) {
    assert_eq!(y.len(), x.len());
    let relu_of = |v: T| if relu && v < T::zero() { T::zero() } else { v };
    match residual {
        Some(r) => {
            assert_eq!(r.len(), x.len());
            for ((y, &x), &r) in y.iter_mut().zip(x).zip(r) {
                y.write(relu_of(x * scale + shift + r));
            }
        }
        None => {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(relu_of(x * scale + shift));
            }
        }
    }
}
}

impl CustomOp2 for EvalApply {
    fn name(&self) -> &'static str {
        "dra-bn-eval"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, "dra-bn-eval", T => {
            let x = slice::<T>(xs, xl, "dra-bn-eval")?;
            self.run(x, xl, slice::<T>(ps, pl, "dra-bn-eval")?, None)
        })
    }
}

impl CustomOp3 for EvalApply {
    fn name(&self) -> &'static str {
        "dra-bn-eval-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if xl.shape() != rl.shape() {
            candle_core::bail!(
                "dra-bn-eval-add: residual {:?} does not match the input {:?}",
                rl.shape(),
                xl.shape()
            );
        }
        dispatch!(xs, "dra-bn-eval-add", T => {
            let x = slice::<T>(xs, xl, "dra-bn-eval-add")?;
            let r = slice::<T>(rs, rl, "dra-bn-eval-add")?;
            self.run(x, xl, slice::<T>(ps, pl, "dra-bn-eval-add")?, Some(r))
        })
    }
}

/// PyTorch's `BatchNorm2d` (eps 1e-5, momentum 0.1, affine): batch statistics and running
/// statistic updates (with the unbiased variance) in training, running statistics in eval.
/// Tensors: `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// A layer over `channels` channels, its tensors read from `vb` or initialised as PyTorch
    /// does: γ = 1, β = 0, running mean 0, running variance 1.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let stat = |name, v| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(channels, name, Init::Const(v))?)
        };
        Ok(Self {
            running_mean: stat("running_mean", 0.0)?,
            running_var: stat("running_var", 1.0)?,
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Normalises an `(n, c, h, w)` input per channel: with the batch statistics (updating the
    /// running ones) when `train`, with the running statistics otherwise.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train, false)
    }

    /// `relu(forward_t(x))`, fused into the normalisation's pass in training mode on the CPU.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(x, train, true)
    }

    /// `relu(forward_t(x) + residual)`, the end of a ResNet basic block. In training mode on
    /// the CPU the forward is one pass that keeps only its output, and the backward one masking
    /// pass (which is the residual's gradient) before the normalisation's closed form, where
    /// candle's ops would keep the sum as well and build the ReLU's mask in several passes.
    /// Its ReLU is PyTorch's, as in [`BatchNorm2d::forward_relu_t`]: NaN propagates, and no
    /// gradient passes where the pre-activation is exactly zero (candle's `relu` passes it).
    /// Elsewhere it is that composition of candle's ops.
    pub fn forward_add_relu_t(&self, x: &Tensor, residual: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.eval_fused(&[x, residual]) {
            let op = EvalApply {
                eps: self.eps,
                relu: true,
            };
            return x
                .contiguous()?
                .apply_op3(&residual.contiguous()?, &self.eval_params()?, op);
        }
        if !(train && Self::fused(x)) {
            return (self.forward(x, train, false)? + residual)?.relu();
        }
        let x = x.contiguous()?;
        let stats = self.batch_stats(&x)?;
        let params = Tensor::cat(
            &[&stats, &self.weight.unsqueeze(0)?, &self.bias.unsqueeze(0)?],
            0,
        )?;
        x.apply_op3(&residual.contiguous()?, &params, AddRelu { eps: self.eps })
    }

    /// `[γ; β]` (`2 × C`, differentiable) and eps, for ops that fuse the training-mode
    /// normalisation with its neighbours.
    pub(crate) fn affine_params(&self) -> Result<(Tensor, f64)> {
        Ok((Tensor::stack(&[&self.weight, &self.bias], 0)?, self.eps))
    }

    /// Whether the fused CPU kernels serve `x`.
    pub(crate) fn fused(x: &Tensor) -> bool {
        crate::custom_kernels()
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
    }

    /// Whether eval mode can take the one-pass kernel: on the CPU, and with no input that
    /// records a graph (the kernel has no backward).
    fn eval_fused(&self, inputs: &[&Tensor]) -> bool {
        Self::fused(inputs[0])
            && !inputs.iter().any(|t| t.track_op())
            && !self.weight.track_op()
            && !self.bias.track_op()
    }

    /// `[running mean; running var; γ; β]` (`4 × C`), detached.
    fn eval_params(&self) -> Result<Tensor> {
        Tensor::stack(
            &[
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                &self.weight,
                &self.bias,
            ],
            0,
        )?
        .detach()
        .contiguous()
    }

    fn forward(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        if !train && self.eval_fused(&[x]) {
            let op = EvalApply {
                eps: self.eps,
                relu,
            };
            return x.contiguous()?.apply_op2(&self.eval_params()?, op);
        }
        if !train {
            // y = x·scale + shift with the running statistics. These are variables (training
            // updates them in place), so they are detached here: otherwise every eval forward
            // would record a graph through them and keep all its activations alive.
            let (mean, var) = (
                self.running_mean.as_tensor().detach(),
                self.running_var.as_tensor().detach(),
            );
            let scale = (&self.weight / (var + self.eps)?.sqrt()?)?;
            let shift = (&self.bias - (mean * &scale)?)?;
            let shape = (1, (), 1, 1);
            let y = x
                .broadcast_mul(&scale.reshape(shape)?)?
                .broadcast_add(&shift.reshape(shape)?)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        if !Self::fused(x) {
            let y = self.forward_train_stock(x)?;
            return if relu { y.relu() } else { Ok(y) };
        }
        let x = x.contiguous()?;
        let stats = self.batch_stats(&x)?;
        let gb = Tensor::stack(&[&self.weight, &self.bias], 0)?;
        x.apply_op3(
            &stats,
            &gb,
            Apply {
                eps: self.eps,
                relu,
            },
        )
    }

    /// The batch mean and biased variance of a contiguous `x` as `(2, C)`, without gradient,
    /// the running statistics updated from them.
    fn batch_stats(&self, x: &Tensor) -> Result<Tensor> {
        let stats = x.apply_op1_no_bwd(&Stats)?;
        self.update_running(&stats, x.elem_count() / x.dim(1)?)?;
        Ok(stats)
    }

    /// Running statistics: r ← (1 − m)·r + m·batch, the variance made unbiased.
    pub(crate) fn update_running(&self, stats: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let mean = stats.get(0)?;
        let var = (stats.get(1)? * (count as f64 / (count as f64 - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor().detach() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor().detach() * (1.0 - m))? + (var * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)
    }

    /// Training mode from candle's element-wise ops, for devices without the fused kernel.
    fn forward_train_stock(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let xt = x.transpose(0, 1)?.contiguous()?;
        let flat = xt.flatten_from(1)?;
        let mean = flat.mean_keepdim(1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(1)?;
        let stats = Tensor::cat(&[mean.reshape((1, c))?, var.reshape((1, c))?], 0)?.detach();
        self.update_running(&stats, flat.dim(1)?)?;
        let y = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = y
            .broadcast_mul(&self.weight.reshape((c, 1))?)?
            .broadcast_add(&self.bias.reshape((c, 1))?)?;
        y.reshape(xt.shape())?.transpose(0, 1)?.contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{max_diff as diff, ramp};
    use candle_core::Device;
    use candle_nn::VarMap;

    /// A BatchNorm2d of `channels` whose four tensors hold distinct non-trivial values.
    fn seeded(channels: usize, dtype: DType) -> (VarMap, BatchNorm2d) {
        let varmap = VarMap::new();
        let bn = BatchNorm2d::new(
            channels,
            VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu),
        )
        .unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let seed = name.len() as u32;
            let v = (ramp(&[channels], seed) * 0.2).unwrap();
            let v = if name.ends_with("running_var") || name.ends_with("weight") {
                (v + 1.0).unwrap()
            } else {
                v
            };
            var.set(&v.to_dtype(dtype).unwrap()).unwrap();
        }
        (varmap, bn)
    }

    /// The sums of the kernels (f32 through AVX2 where the CPU has it) against direct sums in
    /// f64, over lengths with and without whole blocks and groups of eight, and with a ReLU
    /// mask that zeroes about half of the gradient.
    #[test]
    fn sums_match_f64() {
        for len in [0usize, 5, 8, 127, 128, 300, 1031] {
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
            let (mu, map) = (0.1f32, (1.5f32, -0.2f32));
            for mask in [None, Some(map)] {
                let g = |i: usize| {
                    let off = mask.is_some_and(|(s, t)| x[i] * s + t <= 0.0);
                    if off {
                        0.0
                    } else {
                        dd[i]
                    }
                };
                let a: f64 = (0..len).map(g).sum();
                let b: f64 = (0..len).map(|i| g(i) * (xd[i] - mu as f64)).sum();
                let (sa, sb) = grad_sums(&dy, &x, mu, mask);
                assert!(
                    close(sa, a) && close(sb, b),
                    "{len} {mask:?}: {sa} {sb} vs {a} {b}"
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

    /// The sums' ReLU mask is exactly the forward's: with a unit gradient, Σ g counts the
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
        let (sum, _) = grad_sums(&ones, &x, 0.0, Some((scale, shift)));
        assert_eq!(sum, kept as f64);
        let portable = blocked_sums(&ones, &x, |d, v| (g(d, v), 0.0)).0;
        assert_eq!(portable, kept as f64);
        assert!(kept > x.len() / 3 && kept < x.len(), "{kept}");
    }

    /// The fused kernel against candle's element-wise composition: output, gradients of x, γ
    /// and β, and the running statistics, in f64.
    #[test]
    fn fused_matches_elementwise() -> Result<()> {
        let cases = [[4usize, 3, 5, 7], [2, 6, 1, 1], [3, 2, 4, 4]];
        for (shape, relu) in cases.into_iter().flat_map(|s| [(s, false), (s, true)]) {
            let build = || seeded(shape[1], DType::F64);
            let x = Var::from_tensor(&(ramp(&shape, 1) * 2.0)?)?;
            let r = ramp(&shape, 2);
            let (va, a) = build();
            let (vb, b) = build();
            let ya = a.forward(x.as_tensor(), true, relu)?;
            let yb = b.forward_train_stock(x.as_tensor())?;
            let yb = if relu { yb.relu()? } else { yb };
            if relu {
                // The ramp must leave units on both sides of the ReLU for the test to mean much.
                let zeros = ya
                    .eq(0.0)?
                    .to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?;
                assert!(zeros > 0.0 && zeros < ya.elem_count() as f64, "{shape:?}");
            }
            assert!(diff(&ya, &yb) < 1e-12, "{shape:?} relu {relu}: forward");
            let ga = (&ya * &r)?.sum_all()?.backward()?;
            let gb = (&yb * &r)?.sum_all()?.backward()?;
            assert!(
                diff(
                    ga.get(x.as_tensor()).unwrap(),
                    gb.get(x.as_tensor()).unwrap()
                ) < 1e-10,
                "{shape:?} relu {relu}: dx"
            );
            for (p, q) in [(&a.weight, &b.weight), (&a.bias, &b.bias)] {
                assert!(
                    diff(ga.get(p).unwrap(), gb.get(q).unwrap()) < 1e-10,
                    "{shape:?} relu {relu}: dγ/dβ"
                );
            }
            let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
            for name in ["running_mean", "running_var"] {
                assert!(
                    diff(da[name].as_tensor(), db[name].as_tensor()) < 1e-12,
                    "{shape:?} {name}"
                );
            }
        }
        Ok(())
    }

    /// The fused BatchNorm + residual + ReLU against the composition it replaces (the
    /// BatchNorm, candle's addition, then PyTorch's ReLU: the sum times its mask `sum > 0`, so
    /// no gradient at zero): output, gradients of x, the residual, γ and β, and the running
    /// statistics, in f64 and f32. A quarter of the residual cancels the normalised value
    /// exactly, to put pre-activations at zero, where the ReLU's gradient is decided.
    #[test]
    fn fused_add_relu_matches_composition() -> Result<()> {
        let shapes = [[3usize, 5, 7, 6], [2, 4, 1, 1], [4, 3, 5, 7]];
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            for shape in shapes {
                let case = format!("{dtype:?} {shape:?}");
                let x = Var::from_tensor(&(ramp(&shape, 1) * 2.0)?.to_dtype(dtype)?)?;
                // The normalised values, from a third BatchNorm with the same parameters.
                let (_, probe) = seeded(shape[1], dtype);
                let normalised = probe.forward_t(x.as_tensor(), true)?.flatten_all()?;
                let normalised = normalised.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let base = ramp(&shape, 2).flatten_all()?.to_vec1::<f64>()?;
                let residual: Vec<f64> = base
                    .iter()
                    .zip(&normalised)
                    .enumerate()
                    .map(|(i, (r, n))| if i % 4 == 0 { -n } else { *r })
                    .collect();
                let r = Var::from_tensor(
                    &Tensor::from_vec(residual, &shape[..], &Device::Cpu)?.to_dtype(dtype)?,
                )?;
                let weights = ramp(&shape, 3).to_dtype(dtype)?;

                let (va, a) = seeded(shape[1], dtype);
                let (vb, b) = seeded(shape[1], dtype);
                let ya = a.forward_add_relu_t(x.as_tensor(), r.as_tensor(), true)?;
                let sum = (b.forward_t(x.as_tensor(), true)? + r.as_tensor())?;
                let yb = (&sum * sum.gt(0.0)?.to_dtype(dtype)?)?;

                let count = |t: Tensor| -> Result<f64> {
                    t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()
                };
                let zeros = count(sum.eq(0.0)?)?;
                let positive = count(sum.gt(0.0)?)?;
                assert!(zeros > 0.0, "{case}: no pre-activation is zero");
                assert!(positive > zeros, "{case}: too few positive pre-activations");
                assert!(
                    positive + zeros < sum.elem_count() as f64,
                    "{case}: no negative pre-activation"
                );
                assert!(diff(&ya, &yb) <= tol, "{case}: forward");
                assert_eq!(diff(&ya, &sum.relu()?), 0.0, "{case}: forward against relu");

                let ga = (&ya * &weights)?.sum_all()?.backward()?;
                let gb = (&yb * &weights)?.sum_all()?.backward()?;
                let pairs = [
                    ("dx", x.as_tensor(), x.as_tensor()),
                    ("dresidual", r.as_tensor(), r.as_tensor()),
                    ("dγ", &a.weight, &b.weight),
                    ("dβ", &a.bias, &b.bias),
                ];
                for (what, p, q) in pairs {
                    let (p, q) = (ga.get(p).unwrap(), gb.get(q).unwrap());
                    assert!(diff(p, q) <= tol * 10.0, "{case}: {what}");
                }
                let (da, db) = (va.data().lock().unwrap(), vb.data().lock().unwrap());
                for name in ["running_mean", "running_var"] {
                    assert!(
                        diff(da[name].as_tensor(), db[name].as_tensor()) <= tol,
                        "{case}: {name}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Eval mode: the one-pass kernel (detached inputs) against candle's composition, with and
    /// without ReLU and residual, in f64 and f32; with a tracked input it falls back to the
    /// composition, which backpropagates, and no eval forward records a graph through the
    /// running statistics.
    #[test]
    fn eval_kernel_matches_composition() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            for shape in [[3usize, 5, 7, 6], [2, 4, 1, 1]] {
                let (_vm, bn) = seeded(shape[1], dtype);
                let x = (ramp(&shape, 3) * 2.0)?.to_dtype(dtype)?;
                let r = ramp(&shape, 4).to_dtype(dtype)?;
                let mean = bn
                    .running_mean
                    .as_tensor()
                    .detach()
                    .reshape((1, (), 1, 1))?;
                let var = bn.running_var.as_tensor().detach().reshape((1, (), 1, 1))?;
                let (g, b) = (
                    bn.weight.detach().reshape((1, (), 1, 1))?,
                    bn.bias.detach().reshape((1, (), 1, 1))?,
                );
                let norm = x
                    .broadcast_sub(&mean)?
                    .broadcast_div(&(var + 1e-5)?.sqrt()?)?
                    .broadcast_mul(&g)?
                    .broadcast_add(&b)?;
                // The VarMap's γ and β are variables: use detached copies for the kernel.
                let plain = BatchNorm2d {
                    weight: bn.weight.detach(),
                    bias: bn.bias.detach(),
                    ..bn.clone()
                };
                assert!(plain.eval_fused(&[&x]));
                let cases = [
                    (plain.forward_t(&x, false)?, norm.clone()),
                    (plain.forward_relu_t(&x, false)?, norm.relu()?),
                    (
                        plain.forward_add_relu_t(&x, &r, false)?,
                        (&norm + &r)?.relu()?,
                    ),
                ];
                for (i, (got, want)) in cases.iter().enumerate() {
                    assert!(!got.track_op(), "case {i}: records a graph");
                    assert!(diff(got, want) < tol, "{dtype:?} {shape:?} case {i}");
                }
                // γ tracked: the composition, which has a gradient.
                assert!(!bn.eval_fused(&[&x]));
                let y = bn.forward_add_relu_t(&x, &r, false)?;
                assert!(diff(&y, &cases[2].1) < tol);
                assert!(y.sum_all()?.backward()?.get(&bn.weight).is_some());
            }
        }
        Ok(())
    }
}
