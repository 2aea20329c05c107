//! A convolution for the CPU written for DRA's shapes: Winograd for the stride-1 3×3 kernels
//! (`winograd`); otherwise im2col into a reused per-thread buffer (none at all for 1×1 stride-1
//! kernels), one GEMM per chunk of output rows straight into the output, images in parallel, and a backward that computes d(weight) and d(input) by GEMM as well (candle's
//! stock d(input) is a naive transposed-convolution loop), skipping d(input) where no gradient
//! is needed (the image). f32 and f64 on the CPU; other devices and dtypes, and grouped
//! convolutions, use candle's own op.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor, WithDType};
use candle_nn::{Conv2dConfig, Init, VarBuilder};
use gemm::Parallelism;

use crate::cpu::{dispatch, slice};
use rayon::prelude::*;

mod winograd;

/// The element types of the fast path (f64 serves the double-precision parity tests).
pub(crate) trait Element:
    WithDType + Default + std::ops::AddAssign + Send + Sync + 'static
{
    /// Runs `f` on a scratch buffer of `len` elements kept per thread across calls, so that the
    /// im2col matrices of every step do not each cost a fresh allocation and its page faults.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

macro_rules! scratch {
    ($t:ty, $cell:ident) => {
        thread_local! {
            static $cell: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        impl Element for $t {
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                // Taken out while in use: a nested call on this thread (rayon work stealing
                // inside a parallel GEMM) then gets a buffer of its own instead of a panic.
                let mut buffer = $cell.with(|c| std::mem::take(&mut *c.borrow_mut()));
                if buffer.len() < len {
                    buffer.resize(len, <$t>::default());
                }
                let out = f(&mut buffer[..len]);
                $cell.with(|c| *c.borrow_mut() = buffer);
                out
            }
        }
    };
}
scratch!(f32, SCRATCH_F32);
scratch!(f64, SCRATCH_F64);

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(
        x: (usize, usize, usize, usize),
        k: (usize, usize, usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let (n, c, h, w) = x;
        let (o, kc, kh, kw) = k;
        if kc != c {
            candle_core::bail!("conv2d: input has {c} channels, the kernel expects {kc}");
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            candle_core::bail!("conv2d: input {h}×{w} is smaller than the kernel {kh}×{kw}");
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            stride,
            padding,
            oh: (h + 2 * padding - kh) / stride + 1,
            ow: (w + 2 * padding - kw) / stride + 1,
        })
    }
    /// Rows of the im2col matrix.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output cells per channel.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Output rows per im2col chunk: about 2¹⁶ / K columns, so that a chunk of the im2col
    /// matrix (256 KB in f32) stays in L2 between being written and being multiplied. Whole
    /// (the stem at 128 px, 147 × 4096 per image) it went through memory twice, and its GEMM
    /// ran at half of gemm's speed.
    fn chunk_rows(&self) -> usize {
        ((1usize << 16) / self.k().max(1) / self.ow.max(1)).clamp(1, self.oh.max(1))
    }
    /// A 1×1, stride-1, unpadded kernel reads the input as the im2col matrix itself.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }
    /// GEMMs run single-threaded when images alone keep every thread busy.
    fn parallelism(&self) -> Parallelism {
        if self.n >= rayon::current_num_threads() {
            Parallelism::None
        } else {
            Parallelism::Rayon(0)
        }
    }
}

/// Runs `f(rows, col)` for each chunk of [`Geometry::chunk_rows`] output rows, in order,
/// with `col` this thread's scratch buffer for the chunk's im2col matrix (K rows of
/// `rows.len()·ow` columns): the loop shared by the im2col forward and both gradients.
fn by_row_chunks<T: Element>(g: &Geometry, mut f: impl FnMut(std::ops::Range<usize>, &mut [T])) {
    let chunk = g.chunk_rows();
    T::with_scratch(g.k() * chunk * g.ow, |col| {
        for r0 in (0..g.oh).step_by(chunk) {
            f(r0..(r0 + chunk).min(g.oh), col);
        }
    });
}

/// The output columns `lo..hi` whose input column `ox·stride + j − padding` lies inside a
/// row of `w`, and that input column for `lo` (`x0`, at most `w`: where no column reaches
/// the row, `lo == hi` and the range `x0..` is empty): the loops below then run without a test
/// per element.
fn columns(g: &Geometry, j: usize) -> (usize, usize, usize) {
    let (s, p) = (g.stride, g.padding);
    let lo = p.saturating_sub(j).div_ceil(s).min(g.ow);
    let hi = (g.w + p).saturating_sub(j).div_ceil(s).min(g.ow).max(lo);
    (lo, hi, (lo * s + j).saturating_sub(p).min(g.w))
}

/// im2col of output rows `rows` of one image: row (c, i, j) holds input pixel
/// (c, oy·s − p + i, ox·s − p + j) for every output cell (oy, ox) of those rows, zero outside
/// the image.
fn im2col<T: Element>(x: &[T], g: &Geometry, rows: std::ops::Range<usize>, col: &mut [T]) {
    let p = rows.len() * g.ow;
    let mut row = 0;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (lo, hi, x0) = columns(g, j);
                let dst = &mut col[row * p..(row + 1) * p];
                for (r, oy) in rows.clone().enumerate() {
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    let out = &mut dst[r * g.ow..(r + 1) * g.ow];
                    if y < 0 || y >= g.h as isize {
                        out.fill(T::zero());
                        continue;
                    }
                    let src = &plane[y as usize * g.w..(y as usize + 1) * g.w];
                    out[..lo].fill(T::zero());
                    out[hi..].fill(T::zero());
                    let inside = &mut out[lo..hi];
                    match g.stride {
                        1 => inside.copy_from_slice(&src[x0..x0 + inside.len()]),
                        2 => every_other(inside, &src[x0..]),
                        s => {
                            for (v, s) in inside.iter_mut().zip(src[x0..].iter().step_by(s)) {
                                *v = *s;
                            }
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// `dst[k] = src[2k]` for every `k`: im2col's rows of a stride-2 kernel (every strided
/// convolution of ResNet, the stem's included). In f32 on a CPU with AVX2, eight outputs from
/// two loads and two shuffles; the plain loop moved one element at a time (im2col took 4 % of
/// a DRA step at 128 px).
fn every_other<T: Element>(dst: &mut [T], src: &[T]) {
    assert!(dst.is_empty() || src.len() > 2 * (dst.len() - 1));
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && std::is_x86_feature_detected!("avx2")
    {
        // SAFETY: `T` is `f32`, so the casts keep the layout; the CPU has AVX2; the lengths
        // are the slices'.
        unsafe {
            every_other_avx2(
                dst.as_mut_ptr().cast(),
                dst.len(),
                src.as_ptr().cast(),
                src.len(),
            )
        };
        return;
    }
    for (v, s) in dst.iter_mut().zip(src.iter().step_by(2)) {
        *v = *s;
    }
}

/// [`every_other`] for f32: pairs of even elements gathered by `shuffle_ps` from two vectors
/// of eight, put in order by one 64-bit permutation; the tail one by one.
///
/// # Safety
/// The CPU has AVX2; `dst` is valid for `n` writes and `src` for `src_len` reads, with
/// `src_len > 2·(n − 1)` when `n > 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn every_other_avx2(dst: *mut f32, n: usize, src: *const f32, src_len: usize) {
    use std::arch::x86_64::*;
    let mut k = 0;
    // SAFETY (all blocks): each loop reads src[2k..2k + 16] ⊂ src[..src_len] and writes
    // dst[k..k + 8] ⊂ dst[..n]; the tail reads src[2k] with 2k ≤ 2(n − 1) < src_len.
    while k + 8 <= n && 2 * k + 16 <= src_len {
        // SAFETY: reads src[2k..2k + 16] and writes dst[k..k + 8], inside both (loop bounds).
        unsafe {
            let a = _mm256_loadu_ps(src.add(2 * k));
            let b = _mm256_loadu_ps(src.add(2 * k + 8));
            // Per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6]; then the 64-bit pairs reordered.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let ordered = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even));
            _mm256_storeu_ps(dst.add(k), _mm256_castpd_ps(ordered));
        }
        k += 8;
    }
    while k < n {
        // SAFETY: k < n, and 2k ≤ 2(n − 1) < src_len by the function's contract.
        unsafe { *dst.add(k) = *src.add(2 * k) };
        k += 1;
    }
}

/// The adjoint of [`im2col`]: adds each column entry of output rows `rows` onto its input
/// pixel in `dx`.
fn col2im<T: Element>(col: &[T], g: &Geometry, rows: std::ops::Range<usize>, dx: &mut [T]) {
    let p = rows.len() * g.ow;
    let mut row = 0;
    for c in 0..g.c {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let (lo, hi, x0) = columns(g, j);
                let src = &col[row * p..(row + 1) * p];
                for (r, oy) in rows.clone().enumerate() {
                    let y = (oy * g.stride + i) as isize - g.padding as isize;
                    if y < 0 || y >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[y as usize * g.w..(y as usize + 1) * g.w];
                    let inside = &src[r * g.ow + lo..r * g.ow + hi];
                    for (d, v) in dst[x0..].iter_mut().step_by(g.stride).zip(inside) {
                        *d += *v;
                    }
                }
                row += 1;
            }
        }
    }
}

/// A matrix operand: its data and its row and column strides.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, `dst` row-major.
fn matmul<T: Element>(
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    par: Parallelism,
) {
    matmul_into(dst, n, a, b, (m, n, k), accumulate, par);
}

/// [`matmul`] into rows `dst_rs` apart.
fn matmul_into<T: Element>(
    dst: &mut [T],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    dims: (usize, usize, usize),
    accumulate: bool,
    par: Parallelism,
) {
    // SAFETY: `dst` is an exclusive, initialised slice, which gemm may read when accumulating.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            dst.len(),
            dst_rs,
            a,
            b,
            dims,
            accumulate,
            par,
        )
    }
}

/// `dst[m×n] = a[m×k] · b[k×n]` into rows `dst_rs` apart of a destination that need not be
/// initialised: without accumulation gemm reads nothing of `dst` before writing it, and it
/// writes every element of the m×n block.
///
/// That gemm (0.19.0, pinned by `Cargo.lock`) does not read `dst` when `read_dst` is false is
/// its behaviour, not its documented contract: it sets alpha to zero, and every kernel this
/// build can take (x86 and generic microkernels, gemv, gevv) then stores without loading. Its
/// `experimental-apple-amx` feature, which copies `dst` first, is off. Re-check on upgrades.
fn matmul_uninit<T: Element>(
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    dims: (usize, usize, usize),
    par: Parallelism,
) {
    // SAFETY: `dst` is exclusive; `false`: gemm does not read it.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr().cast(),
            dst.len(),
            dst_rs,
            a,
            b,
            dims,
            false,
            par,
        )
    }
}

/// gemm's `dst[m×n] (+)= a[m×k] · b[k×n]`, after checking every access against the slices.
///
/// # Safety
/// `dst` is valid for writes of `dst_len` elements and exclusive; initialised if `accumulate`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: Element>(
    dst: *mut T,
    dst_len: usize,
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst_rs >= n && dst_len >= (m - 1) * dst_rs + n);
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    // SAFETY: the asserts above keep every access of the strided operands in bounds; the
    // caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// The forward op: `(x: N×C×H×W, w: O×C×kh×kw) → N×O×OH×OW`.
#[derive(Clone, Debug)]
pub(crate) struct Conv {
    stride: usize,
    padding: usize,
    grad_input: bool,
    /// Where a Winograd forward leaves its transformed kernels for the input gradient, when a
    /// backward pass can follow. They are the forward's own (the input gradient belongs to the
    /// weights the forward used), and for ResNet-18's 512-channel layers they cost 4 ms each
    /// to recompute; held, they take 16/9 of the weights' memory until the backward pass uses
    /// them (about 80 MB for the whole network).
    kernels: Option<KernelCache>,
}

/// The transformed kernels of one forward call, taken by its backward.
type KernelCache = std::sync::Arc<std::sync::Mutex<Option<CpuStorage>>>;

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "dra-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.forward::<T>(xs, xl, ws, wl))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dw = self.weight_grad(x, &dy, kh, kw)?;
        let dx = if self.grad_input {
            let (_, _, h, wd) = x.dims4()?;
            Some(dy.apply_op2_no_bwd(
                w,
                &InputGrad {
                    conv: self.clone(),
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        Ok((dx, Some(dw)))
    }
}

impl Conv {
    /// The forward of a convolution that never needs the input's gradient and keeps no
    /// transformed kernels: for ops that run a convolution inside their own kernel.
    pub(crate) fn without_backward(config: &Conv2dConfig) -> Self {
        Self {
            stride: config.stride,
            padding: config.padding,
            grad_input: false,
            kernels: None,
        }
    }

    fn forward<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (
            slice::<T>(xs, xl, "dra-conv2d")?,
            slice::<T>(ws, wl, "dra-conv2d")?,
        );
        let (out, shape) = self.output(x, xl.shape(), w, wl.shape())?;
        Ok((T::to_cpu_storage_owned(out), shape))
    }

    /// The output of `x` (N×C×H×W) convolved with `w` (O×C×kh×kw), and its shape.
    pub(crate) fn output<T: Element>(
        &self,
        x: &[T],
        x_shape: &Shape,
        w: &[T],
        w_shape: &Shape,
    ) -> Result<(Vec<T>, Shape)> {
        let g = Geometry::new(
            x_shape.dims4()?,
            w_shape.dims4()?,
            self.stride,
            self.padding,
        )?;
        let shape = Shape::from((g.n, g.o, g.oh, g.ow));
        if winograd::applies(&g) {
            let (out, kernels) = winograd::forward(x, w, &g);
            if let (Some(cache), Some(kernels)) = (&self.kernels, kernels) {
                *cache.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(T::to_cpu_storage_owned(kernels));
            }
            return Ok((out, shape));
        }
        let (k, p) = (g.k(), g.p());
        let par = g.parallelism();
        let wm = Mat {
            data: w,
            rs: k,
            cs: 1,
        };
        let image = |i: usize, y: &mut [MaybeUninit<T>]| {
            let xn = &x[i * g.c * g.h * g.w..(i + 1) * g.c * g.h * g.w];
            if g.pointwise() {
                let cols = Mat {
                    data: xn,
                    rs: p,
                    cs: 1,
                };
                matmul_uninit(y, p, wm, cols, (g.o, p, k), par);
                return;
            }
            // Chunk by chunk of output rows, into those columns of the output.
            by_row_chunks(&g, |rows, col| {
                let (r0, pc) = (rows.start, rows.len() * g.ow);
                im2col(xn, &g, rows, col);
                let cols = Mat {
                    data: col,
                    rs: pc,
                    cs: 1,
                };
                matmul_uninit(&mut y[r0 * g.ow..], p, wm, cols, (g.o, pc, k), par);
            });
        };
        // SAFETY: each image's O×P output block is written whole: by one GEMM, or by those of
        // its chunks of rows, which cover all of 0..oh.
        let out = unsafe { crate::cpu::par_written(g.n * g.o * p, g.o * p, image) };
        Ok((out, shape))
    }

    /// d(weight) of this convolution from its input `x` and the output's gradient `dy`, for
    /// a kernel of `kh × kw` (no graph).
    pub(crate) fn weight_grad(
        &self,
        x: &Tensor,
        dy: &Tensor,
        kh: usize,
        kw: usize,
    ) -> Result<Tensor> {
        x.apply_op2_no_bwd(
            dy,
            &WeightGrad {
                conv: self.clone(),
                kh,
                kw,
            },
        )
    }
}

/// d(weight) = Σₙ dYₙ[O×P] · colₙᵀ[P×K].
struct WeightGrad {
    conv: Conv,
    kh: usize,
    kw: usize,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "dra-conv2d-dw"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(xs, self.name(), T => self.run::<T>(xs, xl, ds, dl))
    }
}

impl WeightGrad {
    fn run<T: Element>(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy) = (
            slice::<T>(xs, xl, "dra-conv2d-dw")?,
            slice::<T>(ds, dl, "dra-conv2d-dw")?,
        );
        let (n, c, h, w) = xl.shape().dims4()?;
        let (_, o, oh, ow) = dl.shape().dims4()?;
        let (kh, kw) = (self.kh, self.kw);
        let g = Geometry::new(
            (n, c, h, w),
            (o, c, kh, kw),
            self.conv.stride,
            self.conv.padding,
        )?;
        if (g.oh, g.ow) != (oh, ow) {
            candle_core::bail!(
                "dra-conv2d-dw: output gradient is {oh}×{ow}, expected {}×{}",
                g.oh,
                g.ow
            );
        }
        if winograd::applies(&g) {
            let dw = winograd::weight_grad(x, dy, &g);
            return Ok((T::to_cpu_storage_owned(dw), Shape::from((o, c, kh, kw))));
        }
        let (k, p) = (g.k(), g.p());
        let par = g.parallelism();
        // Σ over the batch in fixed contiguous chunks, one per thread, summed in chunk order:
        // the same floating-point sum on every run (rayon's fold groups the samples as work
        // stealing happens to split them, which made training differ from run to run).
        let n_chunks = n.min(rayon::current_num_threads()).max(1);
        let partials: Vec<Vec<T>> = (0..n_chunks)
            .into_par_iter()
            .map(|chunk| {
                let mut acc = vec![T::zero(); o * k];
                for i in chunk * n / n_chunks..(chunk + 1) * n / n_chunks {
                    let xn = &x[i * c * h * w..(i + 1) * c * h * w];
                    let dyn_ = Mat {
                        data: &dy[i * o * p..(i + 1) * o * p],
                        rs: p,
                        cs: 1,
                    };
                    if g.pointwise() {
                        let cols_t = Mat {
                            data: xn,
                            rs: 1,
                            cs: p,
                        };
                        matmul(&mut acc, dyn_, cols_t, (o, k, p), true, par);
                        continue;
                    }
                    // Chunk by chunk of output rows: Σ dYₙ[:, chunk] · col[chunk]ᵀ.
                    by_row_chunks(&g, |rows, col| {
                        let (r0, pc) = (rows.start, rows.len() * g.ow);
                        im2col(xn, &g, rows, col);
                        let dyc = Mat {
                            data: &dyn_.data[r0 * g.ow..],
                            ..dyn_
                        };
                        let cols_t = Mat {
                            data: col,
                            rs: 1,
                            cs: pc,
                        };
                        matmul(&mut acc, dyc, cols_t, (o, k, pc), true, par);
                    });
                }
                acc
            })
            .collect();
        let mut partials = partials.into_iter();
        let mut dw = partials.next().expect("at least one chunk");
        for part in partials {
            dw.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
        }
        Ok((T::to_cpu_storage_owned(dw), Shape::from((o, c, kh, kw))))
    }
}

/// d(input)ₙ = col2im(Wᵀ[K×O] · dYₙ[O×P]).
struct InputGrad {
    conv: Conv,
    h: usize,
    w: usize,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "dra-conv2d-dx"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(ds, self.name(), T => self.run::<T>(ds, dl, ws, wl))
    }
}

impl InputGrad {
    fn run<T: Element>(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (dy, w) = (
            slice::<T>(ds, dl, "dra-conv2d-dx")?,
            slice::<T>(ws, wl, "dra-conv2d-dx")?,
        );
        let (n, _, _, _) = dl.shape().dims4()?;
        let kdims = wl.shape().dims4()?;
        let g = Geometry::new(
            (n, kdims.1, self.h, self.w),
            kdims,
            self.conv.stride,
            self.conv.padding,
        )?;
        if winograd::applies(&g) {
            // The forward's transformed kernels, taken (so freed once used) when it left them.
            let cached = self
                .conv
                .kernels
                .as_ref()
                .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take());
            let kernels = cached
                .as_ref()
                .and_then(|s| T::cpu_storage_as_slice(s).ok())
                .filter(|u| u.len() == winograd::kernels_len(&g));
            let dx = winograd::input_grad(dy, w, kernels, &g);
            return Ok((T::to_cpu_storage_owned(dx), Shape::from((n, g.c, g.h, g.w))));
        }
        let (k, p) = (g.k(), g.p());
        let par = g.parallelism();
        let wt = Mat {
            data: w,
            rs: 1,
            cs: k,
        };
        let mut dx = crate::cpu::zeroed::<T>(n * g.c * g.h * g.w);
        dx.par_chunks_mut(g.c * g.h * g.w)
            .zip(dy.par_chunks(g.o * p))
            .for_each(|(dxn, dyn_)| {
                let d = Mat {
                    data: dyn_,
                    rs: p,
                    cs: 1,
                };
                if g.pointwise() {
                    matmul(dxn, wt, d, (k, p, g.o), false, par);
                    return;
                }
                // Chunk by chunk of output rows, added onto `dxn` (zero from `zeroed`).
                by_row_chunks(&g, |rows, col| {
                    let (r0, pc) = (rows.start, rows.len() * g.ow);
                    let dc = Mat {
                        data: &d.data[r0 * g.ow..],
                        ..d
                    };
                    matmul(col, wt, dc, (k, pc, g.o), false, par);
                    col2im(col, &g, rows, dxn);
                });
            });
        Ok((T::to_cpu_storage_owned(dx), Shape::from((n, g.c, g.h, g.w))))
    }
}

/// A 2-D convolution layer with PyTorch's parameter names (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    grad_input: bool,
}

impl Conv2d {
    /// `bias_init: None` builds a convolution without bias. PyTorch's default initialisation is
    /// applied later by name ([`crate::reset_parameters`]).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        config: Conv2dConfig,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight =
            vb.get_with_hints((cout, cin / config.groups, k, k), "weight", Init::Const(0.))?;
        let bias = if bias {
            Some(vb.get_with_hints(cout, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            config,
            grad_input: true,
        })
    }

    /// Declares that the input never needs a gradient (the image), so the backward skips it.
    pub fn without_input_grad(mut self) -> Self {
        self.grad_input = false;
        self
    }

    /// The weight (`O × C × kh × kw`) and the configuration of a convolution without bias,
    /// for ops that fuse it with what follows.
    pub(crate) fn unbiased_parts(&self) -> Option<(&Tensor, &Conv2dConfig)> {
        self.bias.is_none().then_some((&self.weight, &self.config))
    }

    /// Whether this crate's CPU kernel serves `x` (candle's `conv2d` otherwise). A bias
    /// is added by `forward`, outside the kernel.
    pub(crate) fn fast_path(&self, x: &Tensor) -> bool {
        crate::custom_kernels()
            && x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::F64)
            && self.config.groups == 1
            && self.config.dilation == 1
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let y = if self.fast_path(x) {
            // Only a graph that a backward pass can walk needs the kernels kept.
            let backward = x.track_op() || self.weight.track_op();
            let op = Conv {
                stride: c.stride,
                padding: c.padding,
                grad_input: self.grad_input,
                kernels: (self.grad_input && backward).then(KernelCache::default),
            };
            x.contiguous()?.apply_op2(&self.weight.contiguous()?, op)?
        } else {
            x.conv2d(&self.weight, c.padding, c.stride, c.dilation, c.groups)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::max_diff;
    use candle_core::Var;

    fn ramp(shape: (usize, usize, usize, usize), seed: u32) -> Tensor {
        crate::testutil::ramp(&[shape.0, shape.1, shape.2, shape.3], seed)
            .to_dtype(DType::F32)
            .unwrap()
    }

    /// The stride-2 gather (AVX2 in f32) against the plain loop, over lengths around its
    /// vectors of eight and sources of both parities.
    #[test]
    fn every_other_matches_loop() {
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 40] {
            for extra in [0usize, 1, 2, 9] {
                let len = if n == 0 {
                    extra
                } else {
                    2 * (n - 1) + 1 + extra
                };
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 1.5 - 3.0).collect();
                let mut got = vec![f32::NAN; n];
                every_other(&mut got, &src);
                let want: Vec<f32> = src.iter().step_by(2).take(n).copied().collect();
                assert_eq!(got, want, "n {n}, source {len}");
            }
        }
    }

    /// Values and both gradients against candle's stock convolution, on odd shapes. Where
    /// (h + 2p − k) is not a multiple of the stride, candle's own d(input) comes out one pixel
    /// short (its transposed convolution has no output padding), so there the gradients are
    /// checked by the adjoint identities instead: the convolution is linear in x and in w, so
    /// ⟨conv(x, w), r⟩ = ⟨x, ∂x⟩ = ⟨w, ∂w⟩ for the gradients ∂ of ⟨conv(x, w), r⟩.
    #[test]
    fn matches_candle_on_odd_shapes() -> Result<()> {
        for (n, c, h, w, o, k, s, p) in [
            (2, 3, 9, 7, 4, 3, 1, 1),
            (3, 5, 11, 8, 6, 3, 2, 1),
            (2, 4, 6, 5, 3, 1, 1, 0),
            (2, 4, 7, 9, 5, 1, 2, 0),
            (1, 3, 13, 10, 8, 7, 2, 3),
            (5, 2, 3, 3, 2, 3, 1, 0),
            // An im2col matrix of several chunks of output rows (14, 14 and 8 of 36).
            (1, 3, 71, 61, 4, 7, 2, 3),
            // A stride wider than the image: kernel columns that reach no input column.
            (1, 2, 5, 2, 3, 3, 4, 1),
        ] {
            let x = Var::from_tensor(&ramp((n, c, h, w), 1))?;
            let wt = Var::from_tensor(&ramp((o, c, k, k), 2))?;
            let config = Conv2dConfig {
                padding: p,
                stride: s,
                ..Default::default()
            };
            let conv = Conv2d {
                weight: wt.as_tensor().clone(),
                bias: None,
                config,
                grad_input: true,
            };
            let ours = conv.forward(x.as_tensor())?;
            let stock = x.as_tensor().conv2d(wt.as_tensor(), p, s, 1, 1)?;
            assert_eq!(ours.dims(), stock.dims());
            assert!(
                max_diff(&ours, &stock) < 1e-4,
                "forward {:?}",
                (n, c, h, w, o, k, s, p)
            );
            let r = ramp(ours.dims4()?, 3);
            let inner = (&ours * &r)?.sum_all()?;
            let g1 = inner.backward()?;
            let inner = inner.to_scalar::<f32>()?;
            for v in [&x, &wt] {
                let g = g1.get(v.as_tensor()).unwrap();
                assert_eq!(g.dims(), v.dims());
                let adjoint = (v.as_tensor() * g)?.sum_all()?.to_scalar::<f32>()?;
                assert!(
                    (adjoint - inner).abs() <= 1e-4 * inner.abs().max(1.0),
                    "adjoint {:?}",
                    (n, c, h, w, o, k, s, p)
                );
            }
            if (h + 2 * p - k) % s == 0 && (w + 2 * p - k) % s == 0 {
                let g2 = (&stock * &r)?.sum_all()?.backward()?;
                for v in [&x, &wt] {
                    let (a, b) = (
                        g1.get(v.as_tensor()).unwrap(),
                        g2.get(v.as_tensor()).unwrap(),
                    );
                    assert!(
                        max_diff(a, b) < 1e-3,
                        "gradient {:?}: {}",
                        (n, c, h, w, o, k, s, p),
                        max_diff(a, b)
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn input_gradient_can_be_skipped() -> Result<()> {
        let x = Var::from_tensor(&ramp((2, 3, 8, 8), 1))?;
        let wt = Var::from_tensor(&ramp((4, 3, 3, 3), 2))?;
        let config = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = Conv2d {
            weight: wt.as_tensor().clone(),
            bias: None,
            config,
            grad_input: true,
        }
        .without_input_grad();
        let g = conv.forward(x.as_tensor())?.sum_all()?.backward()?;
        assert!(g.get(x.as_tensor()).is_none());
        assert!(g.get(wt.as_tensor()).is_some());
        Ok(())
    }
}
