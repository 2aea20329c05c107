//! Depthwise convolution (one `k × k` filter per channel, `groups == channels`): MobileNetV2's
//! 3×3 layers, stride 1 and 2. candle runs a grouped convolution as one convolution per group,
//! which for 960 channels of one pixel each is slow; here every (image, channel) plane is one
//! task, and each kernel tap is one vector loop over the whole plane, laid out as [`Wide`]
//! describes. Forward, d(input) and d(weight), f32 and f64.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::geometry::Geometry;
use crate::ops::cpu::{dispatch, multiversion, par_written, slice};
use crate::ops::Element;

impl Geometry {
    /// A depthwise convolution's geometry: `w` is `C × 1 × k × k`, one filter per channel of
    /// `x` (`N × C × H × W`), so there are as many outputs as channels.
    fn depthwise(
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (o, one, kh, kw) = w;
        if o != x.1 || one != 1 || kh != kw || stride == 0 {
            candle_core::bail!(
                "depthwise conv: kernel {o}×{one}×{kh}×{kw} does not fit {} channels (C×1×k×k)",
                x.1
            );
        }
        // A plain convolution of one channel has the same output size.
        let plane = Self::new((x.0, 1, x.2, x.3), (1, 1, kh, kw), stride, padding)?;
        Ok(Self { c: x.1, o, ..plane })
    }
}

/// The layout in which every kernel tap of a plane is one contiguous run. The input plane,
/// zero-padded, is split into `s × s` phase planes (phase `(a, b)` holds padded pixels
/// `(a + s·i, b + s·j)`), each `wq` columns wide; the output is held `wq` columns wide too
/// ("wide"), its columns from `ow` on junk. Output `(oy, ox)` reads padded pixel
/// `(oy·s + ky, ox·s + kx)`, which is phase `(ky mod s, kx mod s)` at
/// `(oy + ky / s, ox + kx / s)`: for one tap the whole wide output reads one run of
/// `oh · wq` elements at a fixed offset. A 4×4 plane then takes 9 vector loops instead of 36
/// row loops of 4 elements each, whose calls and bounds were most of the kernel's time.
struct Wide {
    s: usize,
    p: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Rows and columns of a phase plane.
    hq: usize,
    wq: usize,
}

impl Wide {
    fn new(g: &Geometry) -> Self {
        let (ph, pw) = (g.h + 2 * g.padding, g.w + 2 * g.padding);
        Self {
            s: g.stride,
            p: g.padding,
            h: g.h,
            w: g.w,
            oh: g.oh,
            ow: g.ow,
            hq: ph.div_ceil(g.stride),
            wq: pw.div_ceil(g.stride),
        }
    }

    /// Elements of one phase plane, with a row to spare: a tap's run may end `k / s`
    /// elements past the last row (those elements meet junk or zero columns only).
    fn phase_len(&self) -> usize {
        (self.hq + 1) * self.wq
    }

    /// Elements of all phase planes.
    fn phases_len(&self) -> usize {
        self.s * self.s * self.phase_len()
    }

    /// Elements of a wide output plane, and of one tap's run.
    fn run_len(&self) -> usize {
        self.oh * self.wq
    }

    /// Where tap `(ky, kx)`'s run starts in the phase planes.
    fn tap(&self, ky: usize, kx: usize) -> usize {
        let phase = (ky % self.s) * self.s + kx % self.s;
        phase * self.phase_len() + (ky / self.s) * self.wq + kx / self.s
    }

    /// The phase planes of image plane `plane` (`h × w`), padding and spare row zero.
    fn split<T: Element>(&self, plane: &[T], out: &mut [T]) {
        for (phase, dst) in out.chunks_exact_mut(self.phase_len()).enumerate() {
            let (a, b) = (phase / self.s, phase % self.s);
            for (i, row) in dst.chunks_exact_mut(self.wq).enumerate() {
                match self.line(a, i) {
                    Some(iy) => {
                        let line = &plane[iy * self.w..(iy + 1) * self.w];
                        let (j0, x0) = self.first_column(b);
                        row[..j0].fill(T::zero());
                        let (inside, after) = row[j0..].split_at_mut(self.columns(x0));
                        if self.s == 1 {
                            inside.copy_from_slice(&line[x0..]);
                        } else {
                            for (d, v) in inside.iter_mut().zip(line[x0..].iter().step_by(self.s)) {
                                *d = *v;
                            }
                        }
                        after.fill(T::zero());
                    }
                    None => row.fill(T::zero()),
                }
            }
        }
    }

    /// The image plane (`h × w`) of the phase planes `phases`, written whole: their padding
    /// dropped.
    fn merge<T: Element>(&self, phases: &[T], plane: &mut [MaybeUninit<T>]) {
        for (phase, src) in phases.chunks_exact(self.phase_len()).enumerate() {
            let (a, b) = (phase / self.s, phase % self.s);
            for (i, row) in src.chunks_exact(self.wq).enumerate() {
                let Some(iy) = self.line(a, i) else { continue };
                let line = &mut plane[iy * self.w..(iy + 1) * self.w];
                let (j0, x0) = self.first_column(b);
                let inside = &row[j0..][..self.columns(x0)];
                for (d, v) in line[x0..].iter_mut().step_by(self.s).zip(inside) {
                    d.write(*v);
                }
            }
        }
    }

    /// The image row of phase row `i` of phases `(a, ·)`, if inside the image.
    fn line(&self, a: usize, i: usize) -> Option<usize> {
        (a + self.s * i).checked_sub(self.p).filter(|&y| y < self.h)
    }

    /// The first column `j0` of phases `(·, b)` inside the image, and its image column `x0`
    /// (at most `w`).
    fn first_column(&self, b: usize) -> (usize, usize) {
        let j0 = self.p.saturating_sub(b).div_ceil(self.s);
        (j0, (b + self.s * j0 - self.p).min(self.w))
    }

    /// Image columns `x0, x0 + s, …` below `w`.
    fn columns(&self, x0: usize) -> usize {
        (self.w - x0).div_ceil(self.s)
    }

    /// `grad` (`oh × ow`) widened to `wq` columns, the junk columns zero.
    fn widen<T: Element>(&self, grad: &[T], wide: &mut [T]) {
        for (src, dst) in grad
            .chunks_exact(self.ow)
            .zip(wide.chunks_exact_mut(self.wq))
        {
            dst[..self.ow].copy_from_slice(src);
            dst[self.ow..].fill(T::zero());
        }
    }

    /// The `oh × ow` output of its wide form.
    fn narrow<T: Element>(&self, wide: &[T], out: &mut [MaybeUninit<T>]) {
        for (src, dst) in wide
            .chunks_exact(self.wq)
            .zip(out.chunks_exact_mut(self.ow))
        {
            for (d, v) in dst.iter_mut().zip(src) {
                d.write(*v);
            }
        }
    }
}

multiversion! {
    /// `out[i] += v · src[i]`.
    fn axpy<T: Element>(out: &mut [T], src: &[T], v: T) {
        for (o, x) in out.iter_mut().zip(src) {
            *o += v * *x;
        }
    }
}

multiversion! {
    /// `Σ a[i] · b[i]` in eight interleaved partial sums (so that the loop vectorises; the
    /// order is fixed, so the result is the same on every run).
    fn dot<T: Element>(a: &[T], b: &[T]) -> T {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [T::zero(); 8];
        let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        for (l, (x, y)) in ar.iter().zip(br).enumerate() {
            acc[l] += *x * *y;
        }
        let (mut lo, hi) = (acc[0] + acc[4], acc[2] + acc[6]);
        lo += acc[1] + acc[5];
        lo + (hi + (acc[3] + acc[7]))
    }
}

fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let wide = Wide::new(g);
    let plane = |nc: usize, out: &mut [MaybeUninit<T>]| {
        let filter = &w[(nc % g.c) * kk..(nc % g.c + 1) * kk];
        T::with_scratch(wide.phases_len() + wide.run_len(), |scratch| {
            let (phases, acc) = scratch.split_at_mut(wide.phases_len());
            wide.split(&x[nc * plane_in..(nc + 1) * plane_in], phases);
            acc.fill(T::zero());
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    axpy(acc, &phases[wide.tap(ky, kx)..], filter[ky * g.kw + kx]);
                }
            }
            wide.narrow(acc, out);
        });
    };
    // SAFETY: `narrow` writes every element of the plane.
    unsafe { par_written(g.n * g.c * plane_out, plane_out, plane) }
}

fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let wide = Wide::new(g);
    // The transpose of the forward: each tap adds `v · grad` onto the run it read.
    let plane = |nc: usize, dx: &mut [MaybeUninit<T>]| {
        let filter = &w[(nc % g.c) * kk..(nc % g.c + 1) * kk];
        T::with_scratch(wide.phases_len() + wide.run_len(), |scratch| {
            let (phases, grad) = scratch.split_at_mut(wide.phases_len());
            wide.widen(&dy[nc * plane_out..(nc + 1) * plane_out], grad);
            phases.fill(T::zero());
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    axpy(
                        &mut phases[wide.tap(ky, kx)..],
                        grad,
                        filter[ky * g.kw + kx],
                    );
                }
            }
            wide.merge(phases, dx);
        });
    };
    // SAFETY: `merge` writes every element of the plane.
    unsafe { par_written(g.n * g.c * plane_in, plane_in, plane) }
}

fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let wide = Wide::new(g);
    let mut dw = vec![T::zero(); g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, dw)| {
        // Each tap's sum over images, carried in f64.
        let mut sums = vec![0f64; kk];
        T::with_scratch(wide.phases_len() + wide.run_len(), |scratch| {
            let (phases, grad) = scratch.split_at_mut(wide.phases_len());
            for n in 0..g.n {
                let nc = n * g.c + c;
                wide.split(&x[nc * plane_in..(nc + 1) * plane_in], phases);
                // Zero junk columns: the runs read past the image there.
                wide.widen(&dy[nc * plane_out..(nc + 1) * plane_out], grad);
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let run = &phases[wide.tap(ky, kx)..];
                        sums[ky * g.kw + kx] += dot(grad, run).to_f64();
                    }
                }
            }
        });
        for (d, s) in dw.iter_mut().zip(sums) {
            *d = T::from_f64(s);
        }
    });
    dw
}

/// The forward op: `(x: N×C×H×W, w: C×1×k×k) → N×C×OH×OW`.
#[derive(Clone, Debug)]
pub(crate) struct Depthwise {
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    /// Whether the input needs a gradient (not for the image).
    pub(crate) grad_input: bool,
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "dra-depthwise"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => {
            let g = Geometry::depthwise(xl.shape().dims4()?, wl.shape().dims4()?, self.stride, self.padding)?;
            let out = forward::<T>(slice(xs, xl, self.name())?, slice(ws, wl, self.name())?, &g);
            Ok((T::to_cpu_storage_owned(out), Shape::from((g.n, g.c, g.oh, g.ow))))
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let grads = Grads {
            op: self.clone(),
            x_dims: x.dims4()?,
            w_dims: w.dims4()?,
        };
        let dw = x.apply_op2_no_bwd(&dy, &WeightGrad(grads.clone()))?;
        let dx = if self.grad_input {
            Some(dy.apply_op2_no_bwd(w, &InputGrad(grads))?)
        } else {
            None
        };
        Ok((dx, Some(dw)))
    }
}

/// What both gradients need of the forward.
#[derive(Clone, Debug)]
struct Grads {
    op: Depthwise,
    x_dims: (usize, usize, usize, usize),
    w_dims: (usize, usize, usize, usize),
}

impl Grads {
    fn geometry(&self) -> Result<Geometry> {
        Geometry::depthwise(self.x_dims, self.w_dims, self.op.stride, self.op.padding)
    }
}

/// `(dy, w) → dx`.
struct InputGrad(Grads);

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "dra-depthwise-dx"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(ds, self.name(), T => {
            let g = self.0.geometry()?;
            let dx = input_grad::<T>(slice(ds, dl, self.name())?, slice(ws, wl, self.name())?, &g);
            Ok((T::to_cpu_storage_owned(dx), Shape::from(self.0.x_dims)))
        })
    }
}

/// `(x, dy) → dw`.
struct WeightGrad(Grads);

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "dra-depthwise-dw"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => {
            let g = self.0.geometry()?;
            let dw = weight_grad::<T>(slice(xs, xl, self.name())?, slice(ds, dl, self.name())?, &g);
            Ok((T::to_cpu_storage_owned(dw), Shape::from(self.0.w_dims)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_gradients_match_finite_differences, max_diff, ramp};
    use candle_core::{DType, Var};

    fn run(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
        x.apply_op2(
            w,
            Depthwise {
                stride,
                padding,
                grad_input: true,
            },
        )
    }

    /// Values and both gradients against candle's grouped convolution, on odd shapes with
    /// strides 1 and 2 (including a stride that skips the last column, a 1-pixel image, and odd
    /// widths whose phases differ in length).
    #[test]
    fn matches_candles_grouped_convolution() -> Result<()> {
        for (n, c, h, w, k, s, p) in [
            (2, 3, 9, 7, 3, 1, 1),
            (3, 5, 11, 8, 3, 2, 1),
            (2, 4, 8, 8, 3, 2, 1),
            (1, 6, 1, 1, 3, 1, 1),
            (2, 2, 6, 5, 1, 1, 0),
            (1, 3, 12, 9, 5, 2, 2),
            // Rows long enough for the eight-lane sums and their remainders.
            (2, 3, 10, 21, 3, 2, 1),
            (1, 2, 17, 35, 3, 1, 1),
        ] {
            let x = Var::from_tensor(&ramp(&[n, c, h, w], 1).to_dtype(DType::F32)?)?;
            let wt = Var::from_tensor(&ramp(&[c, 1, k, k], 2).to_dtype(DType::F32)?)?;
            let ours = run(x.as_tensor(), wt.as_tensor(), s, p)?;
            let stock = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, c)?;
            let case = (n, c, h, w, k, s, p);
            assert_eq!(ours.dims(), stock.dims(), "{case:?}");
            assert!(max_diff(&ours, &stock) < 1e-5, "forward {case:?}");
            let r = ramp(ours.dims(), 3).to_dtype(DType::F32)?;
            let inner = (&ours * &r)?.sum_all()?;
            let g1 = inner.backward()?;
            // Linear in x and in w: ⟨conv(x, w), r⟩ = ⟨x, ∂x⟩ = ⟨w, ∂w⟩.
            let inner = inner.to_scalar::<f32>()?;
            for v in [&x, &wt] {
                let g = g1.get(v.as_tensor()).unwrap();
                assert_eq!(g.dims(), v.dims(), "{case:?}");
                let adjoint = (v.as_tensor() * g)?.sum_all()?.to_scalar::<f32>()?;
                assert!(
                    (adjoint - inner).abs() <= 1e-4 * inner.abs().max(1.0),
                    "adjoint {case:?}"
                );
            }
            // candle's own backward fails where the stride skips input (its transposed
            // convolution has no output padding): compare with it where it works.
            if (h + 2 * p - k) % s == 0 && (w + 2 * p - k) % s == 0 {
                let g2 = (&stock * &r)?.sum_all()?.backward()?;
                for v in [&x, &wt] {
                    let (a, b) = (
                        g1.get(v.as_tensor()).unwrap(),
                        g2.get(v.as_tensor()).unwrap(),
                    );
                    assert!(
                        max_diff(a, b) < 1e-4,
                        "gradient {case:?}: {}",
                        max_diff(a, b)
                    );
                }
            }
        }
        Ok(())
    }

    /// Both gradients against central finite differences in f64, strides 1 and 2.
    #[test]
    fn gradients_match_finite_differences() {
        for (h, w, s) in [(7, 6, 1), (8, 7, 2)] {
            let (n, c, k, p) = (2, 3, 3, 1);
            let r = ramp(&[n, c, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1], 6);
            assert_gradients_match_finite_differences(
                &format!("depthwise {h}x{w} stride {s}"),
                &[ramp(&[n, c, h, w], 4), ramp(&[c, 1, k, k], 5)],
                7,
                |t| (run(&t[0], &t[1], s, p)? * &r)?.sum_all(),
            );
        }
    }

    #[test]
    fn the_wide_layout() -> Result<()> {
        // 3×3, stride 2, padding 1 on a 5×7 plane: 3×4 outputs; padded 7×9, phases 4×5.
        let g = Geometry::depthwise((1, 1, 5, 7), (1, 1, 3, 3), 2, 1)?;
        let wide = Wide::new(&g);
        assert_eq!((g.oh, g.ow, wide.hq, wide.wq), (3, 4, 4, 5));
        let plane: Vec<f64> = (1..=35).map(f64::from).collect();
        let mut phases = vec![f64::NAN; wide.phases_len()];
        wide.split(&plane, &mut phases);
        // Output (oy, ox), tap (ky, kx) reads padded (2·oy + ky, 2·ox + kx), image pixel
        // (2·oy + ky − 1, 2·ox + kx − 1), or zero outside the image.
        for (ky, kx) in [(0, 0), (1, 2), (2, 1), (2, 2)] {
            let run = &phases[wide.tap(ky, kx)..][..wide.run_len()];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (y, x) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                    let inside = (0..5).contains(&y) && (0..7).contains(&x);
                    let expected = if inside {
                        plane[(y * 7 + x) as usize]
                    } else {
                        0.0
                    };
                    assert_eq!(
                        run[oy * wide.wq + ox],
                        expected,
                        "tap {ky},{kx} at {oy},{ox}"
                    );
                }
            }
        }
        let mut back = vec![MaybeUninit::uninit(); plane.len()];
        wide.merge(&phases, &mut back);
        // SAFETY: `merge` wrote every element.
        let back: Vec<f64> = back
            .into_iter()
            .map(|v| unsafe { v.assume_init() })
            .collect();
        assert_eq!(back, plane);
        let bad = Geometry::depthwise((1, 2, 8, 8), (3, 1, 3, 3), 1, 1)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("does not fit 2 channels"), "{bad}");
        Ok(())
    }
}
