//! The max-pool's CPU kernel: the separable forward, and the backward that sends each gradient
//! to the element the window selected, both as PyTorch's CPU kernel decides (first maximum in
//! scan order, NaN wins).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::ops::Range;

use crate::ops::cpu::{dispatch, slice, zeroed};
use crate::ops::Element;

/// One step of PyTorch's running maximum: `v` replaces `best` when it is strictly greater or
/// NaN, so among equal values the first in scan order stays and among NaNs the last one wins.
/// Written as a select, not a branch: on real data the outcome is a coin toss, and a
/// mispredicted branch per element was most of the old kernel's time.
#[inline(always)]
fn pick<T: Element>(best: T, v: T) -> T {
    let take = (v > best) | is_nan(v);
    if take {
        v
    } else {
        best
    }
}

/// NaN is the one value unequal to itself (`Element` has no float trait to ask).
#[inline(always)]
fn is_nan<T: Element>(v: T) -> bool {
    #[allow(clippy::eq_op)]
    let nan = v != v;
    nan
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    /// PyTorch's constraints, which also guarantee that no window lies entirely in the padding.
    pub(crate) fn new(
        kernel: usize,
        stride: usize,
        padding: usize,
        (h, w): (usize, usize),
    ) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            candle_core::bail!("max-pool: kernel {kernel} and stride {stride} must be positive");
        }
        if padding > kernel / 2 {
            candle_core::bail!("max-pool: padding {padding} exceeds half the kernel size {kernel}");
        }
        if h.min(w) + 2 * padding < kernel {
            candle_core::bail!(
                "max-pool: a {h}×{w} input padded by {padding} is smaller than the {}×{} kernel",
                kernel,
                kernel
            );
        }
        Ok(Self {
            kernel,
            stride,
            padding,
        })
    }

    pub(crate) fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// The input indices along one axis that window `o` covers, never empty ([`Geometry::new`]):
    /// padding counts as −∞, so it is simply left out.
    fn span(&self, o: usize, size: usize) -> Range<usize> {
        let start = o * self.stride;
        start.saturating_sub(self.padding)..(start + self.kernel - self.padding).min(size)
    }

    /// The output indices along one axis whose windows lie wholly inside the input.
    fn interior(&self, size: usize) -> Range<usize> {
        let start = self.padding.div_ceil(self.stride);
        let end = (size + self.padding)
            .checked_sub(self.kernel)
            .map_or(0, |last| last / self.stride + 1);
        start..end.max(start)
    }

    /// The pooled `out` (`oh × ow`) of one `h × w` plane. The maximum is separable: first
    /// each input row's maxima over the windows' columns (into `rows`, `h × ow`), then the
    /// maxima over the windows' rows, element-wise over whole output rows. Both passes reduce
    /// in scan order with [`pick`], so the result is the value of the element PyTorch's scan
    /// selects, down to the sign of a zero: the first maximum of the first row holding the
    /// window's maximum is its first maximum in scan order, and the last NaN of the last row
    /// holding a NaN is its last NaN.
    pub(crate) fn pool_plane<T: Element>(
        &self,
        plane: &[T],
        (h, w): (usize, usize),
        rows: &mut [T],
        out: &mut [T],
    ) {
        let ow = self.out_size(w);
        for (src, dst) in plane.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
            self.pool_row(src, dst);
        }
        for (oy, dst) in out.chunks_exact_mut(ow).enumerate() {
            let ys = self.span(oy, h);
            dst.copy_from_slice(&rows[ys.start * ow..(ys.start + 1) * ow]);
            for y in ys.start + 1..ys.end {
                for (d, &v) in dst.iter_mut().zip(&rows[y * ow..(y + 1) * ow]) {
                    *d = pick(*d, v);
                }
            }
        }
    }

    /// The maxima of one input row over each window's columns. The windows wholly inside the
    /// row take one pass per kernel column across all of them (select-only loops without
    /// per-window bounds), instead of a short loop per window; the clipped ones at the edges
    /// go one by one.
    fn pool_row<T: Element>(&self, src: &[T], dst: &mut [T]) {
        let (w, inner) = (src.len(), self.interior(src.len()));
        for ox in (0..inner.start).chain(inner.end..dst.len()) {
            let window = &src[self.span(ox, w)];
            dst[ox] = window[1..].iter().fold(window[0], |b, &v| pick(b, v));
        }
        if inner.is_empty() {
            return;
        }
        let base = inner.start * self.stride - self.padding;
        let dst = &mut dst[inner];
        for (d, &v) in dst.iter_mut().zip(src[base..].iter().step_by(self.stride)) {
            *d = v;
        }
        for kx in 1..self.kernel {
            let column = src[base + kx..].iter().step_by(self.stride);
            for (d, &v) in dst.iter_mut().zip(column) {
                *d = pick(*d, v);
            }
        }
    }

    /// The flat index in `plane` (of width `w`) of the element that the window over rows `ys`
    /// and columns `xs` selected, given its pooled value `max`: the first element equal to it
    /// in scan order (PyTorch's first maximum; the window holds no NaN, or `max` would be
    /// NaN), or when `max` is NaN the last NaN. Comparing against the known result takes no
    /// running maximum and no branch per element, unlike re-running the forward's scan.
    fn source<T: Element>(
        plane: &[T],
        w: usize,
        ys: Range<usize>,
        xs: Range<usize>,
        max: T,
    ) -> usize {
        let mut at = ys.start * w + xs.start;
        if is_nan(max) {
            for y in ys {
                let start = y * w + xs.start;
                for (i, &v) in plane[start..y * w + xs.end].iter().enumerate() {
                    if is_nan(v) {
                        at = start + i;
                    }
                }
            }
        } else {
            // Backwards, so the last hit is the first match; indexed, as `enumerate().rev()`
            // made the whole backward pass twice as slow.
            for y in ys.rev() {
                for i in (y * w + xs.start..y * w + xs.end).rev() {
                    if plane[i] == max {
                        at = i;
                    }
                }
            }
        }
        at
    }
}

impl CustomOp1 for Geometry {
    fn name(&self) -> &'static str {
        "max-pool2d-padded"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(storage, self.name(), T => self.forward::<T>(storage, layout))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op3_no_bwd(
            &res.contiguous()?,
            &grad_res.contiguous()?,
            &Backward(*self),
        )?;
        Ok(Some(grad))
    }
}

impl Geometry {
    fn forward<T: Element>(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(storage, layout, self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_size(h), self.out_size(w));
        let mut out = zeroed::<T>(b * c * oh * ow);
        out.par_chunks_exact_mut(oh * ow)
            .zip(x.par_chunks_exact(h * w))
            .for_each_init(
                || vec![T::zero(); h * ow],
                |rows, (dst, plane)| self.pool_plane(plane, (h, w), rows, dst),
            );
        Ok((T::to_cpu_storage_owned(out), Shape::from((b, c, oh, ow))))
    }
}

/// The gradient of the pooling from the input, the pooled output and the output's gradient:
/// each output gradient goes to the input cell its window selected ([`Geometry::source`]).
struct Backward(Geometry);

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "max-pool2d-padded-bwd"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.run::<T>(xs, xl, ys, yl, gs, gl))
    }
}

impl Backward {
    fn run<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice::<T>(xs, xl, self.name())?;
        let y = slice::<T>(ys, yl, self.name())?;
        let g = slice::<T>(gs, gl, self.name())?;
        let (b, c, h, w) = xl.shape().dims4()?;
        let (oh, ow) = (self.0.out_size(h), self.0.out_size(w));
        if yl.shape().dims() != [b, c, oh, ow] || gl.shape() != yl.shape() {
            candle_core::bail!(
                "{}: output {:?} and gradient {:?} do not match the input {:?}",
                self.name(),
                yl.shape(),
                gl.shape(),
                xl.shape()
            );
        }
        let mut dx = zeroed::<T>(x.len());
        dx.par_chunks_exact_mut(h * w)
            .zip(x.par_chunks_exact(h * w))
            .zip(y.par_chunks_exact(oh * ow).zip(g.par_chunks_exact(oh * ow)))
            .for_each(|((dp, plane), (yp, gp))| self.0.unpool_plane(plane, (h, w), yp, gp, dp));
        Ok((T::to_cpu_storage_owned(dx), xl.shape().clone()))
    }
}

impl Geometry {
    /// The gradient of one `h × w` input `plane` (added into `dp`, zeroed by the caller) from
    /// its `pooled` output and that output's gradient `grad`.
    pub(crate) fn unpool_plane<T: Element>(
        &self,
        plane: &[T],
        (h, w): (usize, usize),
        pooled: &[T],
        grad: &[T],
        dp: &mut [T],
    ) {
        let (ow, inner) = (self.out_size(w), self.interior(w));
        let rows = pooled.chunks_exact(ow).zip(grad.chunks_exact(ow));
        for (oy, (yr, gr)) in rows.enumerate() {
            let ys = self.span(oy, h);
            // ResNet's 3×3 windows wholly inside the plane take the unrolled search.
            let whole_rows = self.kernel == 3 && ys.len() == 3;
            for (ox, (&max, &gv)) in yr.iter().zip(gr).enumerate() {
                let at = if whole_rows && inner.contains(&ox) && !is_nan(max) {
                    Self::source3(
                        plane,
                        w,
                        ys.start * w + ox * self.stride - self.padding,
                        max,
                    )
                } else {
                    Self::source(plane, w, ys.clone(), self.span(ox, w), max)
                };
                dp[at] += gv;
            }
        }
    }

    /// [`Geometry::source`] for a 3×3 window wholly inside the plane, from its top-left cell
    /// `corner`, and a maximum that is not NaN: the nine cells compared in a fixed, unrolled
    /// order (last to first, so the first match in scan order stays), where the general
    /// search's loops over row and column ranges cost more than the comparisons (the stem's
    /// backward search: 2.5 % of a DRA step's samples at 128 px before, 1.8 % after).
    #[inline(always)]
    fn source3<T: Element>(plane: &[T], w: usize, corner: usize, max: T) -> usize {
        let offsets = [0, 1, 2, w, w + 1, w + 2, 2 * w, 2 * w + 1, 2 * w + 2];
        let window = &plane[corner..corner + 2 * w + 3];
        let mut at = corner;
        for &o in offsets.iter().rev() {
            if window[o] == max {
                at = corner + o;
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Kernels, MaxPool2d};
    use candle_core::{DType, Device, Module, Var};

    /// The pooling with this crate's kernels.
    fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        MaxPool2d::new(kernel, stride, padding, Kernels::default()).forward(x)
    }

    /// PyTorch's CPU kernel, literally: per window a running maximum in scan order, replaced
    /// by a strictly greater value or a NaN. Returns the pooled values (as f64) and, per output,
    /// the flat input index it came from.
    fn brute_force(
        x: &[f64],
        (b, c, h, w): (usize, usize, usize, usize),
        g: Geometry,
    ) -> (Vec<f64>, Vec<usize>) {
        let (k, s, p) = (g.kernel as isize, g.stride as isize, g.padding as isize);
        let (oh, ow) = (g.out_size(h), g.out_size(w));
        let (mut values, mut sources) = (vec![], vec![]);
        for plane in 0..b * c {
            for oy in 0..oh as isize {
                for ox in 0..ow as isize {
                    let mut best: Option<(f64, usize)> = None;
                    for y in oy * s - p..oy * s - p + k {
                        for xx in ox * s - p..ox * s - p + k {
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let i = plane * h * w + y as usize * w + xx as usize;
                            match best {
                                Some((m, _)) if !(x[i] > m || x[i].is_nan()) => {}
                                _ => best = Some((x[i], i)),
                            }
                        }
                    }
                    let (m, i) = best.expect("every window holds an input cell");
                    values.push(m);
                    sources.push(i);
                }
            }
        }
        (values, sources)
    }

    /// Values with many ties (steps of 0.5 in [−1.5, 1.5], zeros of either sign), −∞ and NaN.
    fn awkward(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let r = (i as u32).wrapping_mul(2_654_435_761) >> 8;
                match r % 31 {
                    0 => f64::NAN,
                    1 => f64::NEG_INFINITY,
                    2 => -0.0,
                    _ => ((r >> 5) % 7) as f64 * 0.5 - 1.5,
                }
            })
            .collect()
    }

    /// Equal bit for bit (the sign of a zero counts), NaN matching any NaN.
    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// The kernel's values and gradients against [`brute_force`] on odd shapes and geometries,
    /// with ties, signed zeros, −∞ and NaN, in f32 and f64: identical, not merely close.
    #[test]
    fn kernel_matches_brute_force() -> Result<()> {
        let dev = Device::Cpu;
        let geometries = [
            (3, 2, 1),
            (2, 2, 0),
            (3, 1, 1),
            (5, 3, 2),
            (1, 1, 0),
            (4, 3, 2),
        ];
        let shapes = [
            (2, 3, 7, 5),
            (1, 2, 11, 4),
            (1, 1, 3, 3),
            (2, 1, 8, 8),
            (1, 2, 1, 6),
        ];
        let mut nan_windows = 0;
        for dtype in [DType::F32, DType::F64] {
            for (k, s, p) in geometries {
                for dims in shapes {
                    let (b, c, h, w) = dims;
                    let Ok(g) = Geometry::new(k, s, p, (h, w)) else {
                        continue;
                    };
                    let data = awkward(b * c * h * w);
                    let x =
                        Var::from_tensor(&Tensor::from_slice(&data, dims, &dev)?.to_dtype(dtype)?)?;
                    let y = max_pool2d(x.as_tensor(), k, s, p)?;
                    let (values, sources) = brute_force(&data, dims, g);
                    let got = y.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                    let case = format!("{dtype:?} kernel {k} stride {s} padding {p} on {dims:?}");
                    assert_eq!(got.len(), values.len(), "{case}");
                    for (o, (a, e)) in got.iter().zip(&values).enumerate() {
                        assert!(same(*a, *e), "{case}: output {o} is {a}, expected {e}");
                    }
                    nan_windows += values.iter().filter(|v| v.is_nan()).count();

                    let dy_data: Vec<f64> =
                        (0..values.len()).map(|i| (i % 5) as f64 + 1.0).collect();
                    let dy = Tensor::from_slice(&dy_data, y.shape(), &dev)?.to_dtype(dtype)?;
                    let grads = (&y * &dy)?.sum_all()?.backward()?;
                    let dx = grads
                        .get(x.as_tensor())
                        .expect("x takes part in the loss")
                        .to_dtype(DType::F64)?
                        .flatten_all()?
                        .to_vec1::<f64>()?;
                    let mut expected = vec![0.0; data.len()];
                    for (&i, &d) in sources.iter().zip(&dy_data) {
                        expected[i] += d;
                    }
                    assert_eq!(dx, expected, "{case}: gradient");
                }
            }
        }
        assert!(nan_windows > 0, "the data must put NaNs in some windows");
        Ok(())
    }

    /// Kernel timings at ResNet-18's stem at 128 px (8 × 64 × 64 × 64, 3×3 / 2 / 1), for
    /// comparing implementations, with this crate optimised as in a release build:
    /// `cargo test --config 'profile.dev.package.dra-model.opt-level=3' -p dra-model --lib
    /// ops::maxpool::kernel::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a timing, not a test"]
    fn timing() -> Result<()> {
        use std::time::Instant;
        crate::runtime::tune_allocator();
        let g = Geometry::new(3, 2, 1, (64, 64))?;
        let x = Tensor::randn(0f32, 1., (8, 64, 64, 64), &Device::Cpu)?;
        let y = x.apply_op1_no_bwd(&g)?;
        let dy = Tensor::randn(0f32, 1., y.shape(), &Device::Cpu)?;
        let best = |f: &dyn Fn() -> Result<()>| -> Result<f64> {
            let mut best = f64::INFINITY;
            for _ in 0..40 {
                let t = Instant::now();
                f()?;
                best = best.min(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(best)
        };
        let fwd = best(&|| x.apply_op1_no_bwd(&g).map(drop))?;
        let bwd = best(&|| g.bwd(&x, &y, &dy).map(drop))?;
        println!("max-pool forward {fwd:.2} ms, backward {bwd:.2} ms (best of 40)");
        Ok(())
    }
}
