//! Training-mode BatchNorm: the normalisation with the batch statistics ([`Apply`], optionally
//! followed by ReLU), the end of a ResNet basic block ([`AddRelu`]: BatchNorm, the residual
//! added, ReLU) and their closed-form backward ([`Gradient`]).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::stats::grad_sums;
use super::{affine_t, nchw, normalise, relu6_gated, relu_gated, Act};
use crate::ops::cpu::{dispatch, multiversion, par_written, slice};
use crate::ops::Element;

/// y = (x − mean) / √(var + eps) · γ + β from `x`, the batch `stats` and `gb = [γ; β]`,
/// followed by the activation `act` (ResNet's BN → ReLU pairs, MobileNetV2's BN → ReLU6: one
/// pass instead of two or three). Its backward treats the statistics as functions of `x`
/// (training-mode BatchNorm).
pub(super) struct Apply {
    pub(super) eps: f64,
    pub(super) act: Act,
}

multiversion! {
/// One plane of [`Apply`]'s forward: `normalise`, then the activation. Writes every element
/// of `y` (as long as `x`).
pub(crate) fn apply_plane<T: Element>(y: &mut [MaybeUninit<T>], x: &[T], map: (T, T), act: Act) {
    assert_eq!(y.len(), x.len());
    match act {
        Act::None => apply_with(y, x, map, |n| n),
        Act::Relu => apply_with(y, x, map, |n| Act::Relu.apply(n)),
        Act::Relu6 => apply_with(y, x, map, |n| Act::Relu6.apply(n)),
    }
}
}

/// [`apply_plane`]'s loop, instantiated once per activation so that each vectorises.
#[inline(always)]
fn apply_with<T: Element>(y: &mut [MaybeUninit<T>], x: &[T], map: (T, T), f: impl Fn(T) -> T) {
    for (o, &v) in y.iter_mut().zip(x) {
        o.write(f(normalise(v, map)));
    }
}

multiversion! {
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
                act: self.act,
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
            apply_plane(yp, &x[i * plane..(i + 1) * plane], map, self.act);
        };
        // SAFETY: `apply_plane` writes each whole plane.
        let y = unsafe { par_written(x.len(), plane, fill) };
        Ok((T::to_cpu_storage_owned(y), xl.shape().clone()))
    }
}

/// Backward of [`Apply`]: `[dx (flattened); dγ; dβ]` from `x`, `dy` and `[mean; var; γ; β]`.
/// With an activation, `dy` is first masked where the activation's gradient is zero (PyTorch's
/// ReLU passes it where the output is positive, ReLU6 where it lies strictly inside (0, 6)).
struct Gradient {
    eps: f64,
    act: Act,
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
        let out = gradient(x, dy, p, dims, (self.eps, self.act));
        let len = out.len();
        Ok((T::to_cpu_storage_owned(out), Shape::from(len)))
    }
}

/// [`Gradient`]'s arithmetic: `[dx; dγ; dβ]` (`x.len() + 2·C`) from the input `x`
/// (`(n, c, plane)`), the output's gradient `dy` and `p = [mean; var; γ; β]`. With an
/// activation, the gradient is first masked where the activation's gradient is zero.
fn gradient<T: Element>(
    x: &[T],
    dy: &[T],
    p: &[T],
    dims: (usize, usize, usize),
    flags: (f64, Act),
) -> Vec<T> {
    let (_, c, plane) = dims;
    let per = Channels::new(x, dy, p, dims, flags);
    let (planes, width) = (x.len() / plane.max(1), plane.max(1));
    let fill = |i: usize, chunk: &mut [MaybeUninit<T>]| {
        if i < planes {
            let (coefficients, mask) = per.plane(i);
            let r = i * plane..(i + 1) * plane;
            grad_input(chunk, &dy[r.clone()], &x[r], mask, per.act, coefficients);
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
    unsafe { par_written(x.len() + 2 * c, width, fill) }
}

/// [`gradient`] in place: the gradient `dy` is read from the first `x.len()` elements of
/// `out` and overwritten by dx, and dγ, dβ follow (an op that builds the gradient itself then
/// needs no second buffer).
pub(crate) fn gradient_in_place<T: Element>(
    x: &[T],
    p: &[T],
    dims: (usize, usize, usize),
    flags: (f64, Act),
    out: &mut [T],
) {
    let (_, c, plane) = dims;
    let per = Channels::new(x, &out[..x.len()], p, dims, flags);
    let (dx, dgb) = out.split_at_mut(x.len());
    dx.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, dxp)| {
            let (coefficients, mask) = per.plane(i);
            grad_input_in_place(
                dxp,
                &x[i * plane..(i + 1) * plane],
                mask,
                per.act,
                coefficients,
            );
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
    act: Act,
    /// `(Σ dy, Σ dy·x̂)` per channel.
    sums: Vec<(f64, f64)>,
}

impl<'a, T: Element> Channels<'a, T> {
    fn new(
        x: &[T],
        dy: &[T],
        p: &'a [T],
        (n, c, plane): (usize, usize, usize),
        (eps, act): (f64, Act),
    ) -> Self {
        let mut per = Self {
            p,
            c,
            m: (n * plane) as f64,
            eps,
            act,
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
                    let (a, b) = grad_sums(&dy[r.clone()], &x[r], p[ch], mask, act);
                    sdy += a;
                    sdyc += b;
                }
                (sdy, invstd * sdyc)
            })
            .collect();
        per
    }

    /// The channel's mean, 1/√(var + eps) and, with an activation, the forward's affine map
    /// (to recompute the activation's mask exactly).
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
        (
            mu,
            1.0 / (var + self.eps).sqrt(),
            self.act.masks().then_some(map),
        )
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

multiversion! {
/// One plane of the input gradient: `dx = p·g + q·(v − μ) + r` with the masked gradient `g`
/// of `dy`, the input `v` and the channel's coefficients `[p, q, μ, r]`. Writes all of `dx`.
fn grad_input<T: Element>(
    dx: &mut [MaybeUninit<T>],
    dy: &[T],
    x: &[T],
    mask: Option<(T, T)>,
    act: Act,
    coefficients: [T; 4],
) {
    match (mask, act) {
        (None, _) | (_, Act::None) => affine_plane(dx, dy, x, coefficients, |d: T, _: T| d),
        (Some(map), Act::Relu) => affine_plane(dx, dy, x, coefficients, relu_gated(map)),
        (Some(map), Act::Relu6) => affine_plane(dx, dy, x, coefficients, relu6_gated(map)),
    }
}
}

multiversion! {
/// [`grad_input`] in place: the gradient is read from `dx`.
fn grad_input_in_place<T: Element>(
    dx: &mut [T],
    x: &[T],
    mask: Option<(T, T)>,
    act: Act,
    coefficients: [T; 4],
) {
    match (mask, act) {
        (None, _) | (_, Act::None) => affine_plane_in_place(dx, x, coefficients, |d: T, _: T| d),
        (Some(map), Act::Relu) => affine_plane_in_place(dx, x, coefficients, relu_gated(map)),
        (Some(map), Act::Relu6) => affine_plane_in_place(dx, x, coefficients, relu6_gated(map)),
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
pub(super) struct AddRelu {
    pub(super) eps: f64,
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
                act: Act::None,
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
        let y = unsafe { par_written(x.len(), plane, fill) };
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
        let dx = unsafe { par_written(y.len(), CHUNK, fill) };
        Ok((T::to_cpu_storage_owned(dx), yl.shape().clone()))
    }
}
