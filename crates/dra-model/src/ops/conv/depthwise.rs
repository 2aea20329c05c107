//! Depthwise convolution (one `k × k` filter per channel, `groups == channels`): MobileNetV2's
//! 3×3 layers, stride 1 and 2. candle runs a grouped convolution as one convolution per group,
//! which for 960 channels of one pixel each is slow; here every (image, channel) plane is one
//! task, and the inner loops run over the columns a kernel tap reaches, without bounds checks
//! per pixel. Forward, d(input) and d(weight), f32 and f64.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::Geometry;
use crate::ops::cpu::{dispatch, multiversion, slice, zeroed};
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

    /// The output columns `ox` whose tap at kernel column `kx` reads an input column:
    /// `0 ≤ ox·s − p + kx < W`.
    fn columns(&self, kx: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.padding);
        let first = p.saturating_sub(kx).div_ceil(s);
        let last = (self.w + p)
            .checked_sub(kx + 1)
            .map(|v| v / s + 1)
            .unwrap_or(0);
        first..last.min(self.ow).max(first)
    }

    /// The input row that output row `oy` reads at kernel row `ky`, if inside the image.
    fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.padding)
            .filter(|&iy| iy < self.h)
    }
}

multiversion! {
    /// `out[ox] += v · input[ox·s + offset]` over `columns` (offset = kx − p, ≥ −ox·s there).
    fn tap<T: Element>(out: &mut [T], input: &[T], v: T, s: usize, base: isize, columns: std::ops::Range<usize>) {
        for ox in columns {
            let ix = (ox * s) as isize + base;
            out[ox] += v * input[ix as usize];
        }
    }
}

multiversion! {
    /// `input[ox·s + offset] += v · grad[ox]` over `columns`: the transpose of [`tap`].
    fn untap<T: Element>(input: &mut [T], grad: &[T], v: T, s: usize, base: isize, columns: std::ops::Range<usize>) {
        for ox in columns {
            let ix = (ox * s) as isize + base;
            input[ix as usize] += v * grad[ox];
        }
    }
}

multiversion! {
    /// Σ over `columns` of `grad[ox] · input[ox·s + offset]`.
    fn dot<T: Element>(grad: &[T], input: &[T], s: usize, base: isize, columns: std::ops::Range<usize>) -> T {
        let mut acc = T::zero();
        for ox in columns {
            let ix = (ox * s) as isize + base;
            acc += grad[ox] * input[ix as usize];
        }
        acc
    }
}

fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut out = zeroed::<T>(g.n * g.c * plane_out);
    out.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(nc, out)| {
            let input = &x[nc * plane_in..(nc + 1) * plane_in];
            let filter = &w[(nc % g.c) * kk..(nc % g.c + 1) * kk];
            for oy in 0..g.oh {
                let row = &mut out[oy * g.ow..(oy + 1) * g.ow];
                for ky in 0..g.kh {
                    let Some(iy) = g.row(oy, ky) else { continue };
                    let line = &input[iy * g.w..(iy + 1) * g.w];
                    for kx in 0..g.kh {
                        let base = kx as isize - g.padding as isize;
                        tap(
                            row,
                            line,
                            filter[ky * g.kh + kx],
                            g.stride,
                            base,
                            g.columns(kx),
                        );
                    }
                }
            }
        });
    out
}

fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dx = zeroed::<T>(g.n * g.c * plane_in);
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(nc, dx)| {
            let grad = &dy[nc * plane_out..(nc + 1) * plane_out];
            let filter = &w[(nc % g.c) * kk..(nc % g.c + 1) * kk];
            for oy in 0..g.oh {
                let row = &grad[oy * g.ow..(oy + 1) * g.ow];
                for ky in 0..g.kh {
                    let Some(iy) = g.row(oy, ky) else { continue };
                    let line = &mut dx[iy * g.w..(iy + 1) * g.w];
                    for kx in 0..g.kh {
                        let base = kx as isize - g.padding as isize;
                        untap(
                            line,
                            row,
                            filter[ky * g.kh + kx],
                            g.stride,
                            base,
                            g.columns(kx),
                        );
                    }
                }
            }
        });
    dx
}

fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dw = vec![T::zero(); g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, dw)| {
        // Each tap's sum over images and rows, carried in f64.
        let mut sums = vec![0f64; kk];
        for n in 0..g.n {
            let nc = n * g.c + c;
            let input = &x[nc * plane_in..(nc + 1) * plane_in];
            let grad = &dy[nc * plane_out..(nc + 1) * plane_out];
            for oy in 0..g.oh {
                let row = &grad[oy * g.ow..(oy + 1) * g.ow];
                for ky in 0..g.kh {
                    let Some(iy) = g.row(oy, ky) else { continue };
                    let line = &input[iy * g.w..(iy + 1) * g.w];
                    for kx in 0..g.kh {
                        let base = kx as isize - g.padding as isize;
                        sums[ky * g.kh + kx] +=
                            dot(row, line, g.stride, base, g.columns(kx)).to_f64();
                    }
                }
            }
        }
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
    use crate::testutil::{max_diff, ramp};
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
    /// strides 1 and 2 (including a stride that skips the last column and a 1-pixel image).
    #[test]
    fn matches_candles_grouped_convolution() -> Result<()> {
        for (n, c, h, w, k, s, p) in [
            (2, 3, 9, 7, 3, 1, 1),
            (3, 5, 11, 8, 3, 2, 1),
            (2, 4, 8, 8, 3, 2, 1),
            (1, 6, 1, 1, 3, 1, 1),
            (2, 2, 6, 5, 1, 1, 0),
            (1, 3, 12, 9, 5, 2, 2),
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
    fn gradients_match_finite_differences() -> Result<()> {
        for (h, w, s) in [(7, 6, 1), (8, 7, 2)] {
            let (n, c, k, p) = (2, 3, 3, 1);
            let x = Var::from_tensor(&ramp(&[n, c, h, w], 4))?;
            let wt = Var::from_tensor(&ramp(&[c, 1, k, k], 5))?;
            let r = ramp(&[n, c, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1], 6);
            let loss = |x: &Tensor, w: &Tensor| -> Result<f64> {
                (run(x, w, s, p)? * &r)?.sum_all()?.to_scalar::<f64>()
            };
            let grads = (run(x.as_tensor(), wt.as_tensor(), s, p)? * &r)?
                .sum_all()?
                .backward()?;
            for v in [&x, &wt] {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f64>()?;
                let values = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
                for i in (0..values.len()).step_by(7) {
                    let eps = 1e-5;
                    let at = |d: f64| -> Result<f64> {
                        let mut moved = values.clone();
                        moved[i] += d;
                        let t = Tensor::from_vec(moved, v.dims(), v.device())?;
                        if std::ptr::eq(v, &x) {
                            loss(&t, wt.as_tensor())
                        } else {
                            loss(x.as_tensor(), &t)
                        }
                    };
                    let numeric = (at(eps)? - at(-eps)?) / (2.0 * eps);
                    assert!(
                        (numeric - g[i]).abs() < 1e-6 * numeric.abs().max(1.0),
                        "{i}: {numeric} vs {}",
                        g[i]
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_columns_a_tap_reaches() -> Result<()> {
        // 3×3, stride 2, padding 1 on 8 columns: 4 outputs read columns 2·ox − 1 + kx.
        let g = Geometry::depthwise((1, 1, 8, 8), (1, 1, 3, 3), 2, 1)?;
        assert_eq!(g.ow, 4);
        assert_eq!(g.columns(0), 1..4); // ox = 0 would read column −1
        assert_eq!(g.columns(1), 0..4);
        assert_eq!(g.columns(2), 0..4); // ox = 3 reads column 7
        let bad = Geometry::depthwise((1, 2, 8, 8), (3, 1, 3, 3), 1, 1)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("does not fit 2 channels"), "{bad}");
        Ok(())
    }
}
