//! The geometry of one convolution: what im2col and Winograd both read.

use candle_core::Result;

use crate::ops::gemm::Run;
use crate::ops::Arithmetic;

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) padding: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// How its GEMMs compute ([`Arithmetic::Native`] unless [`with_arithmetic`](Self::with_arithmetic)).
    pub(super) arithmetic: Arithmetic,
}

impl Geometry {
    pub(super) fn new(
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
            arithmetic: Arithmetic::Native,
        })
    }
    /// The same convolution with its GEMMs computed by `arithmetic`.
    pub(super) fn with_arithmetic(self, arithmetic: Arithmetic) -> Self {
        Self { arithmetic, ..self }
    }
    /// Rows of the im2col matrix.
    pub(super) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output cells per channel.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Output rows per im2col chunk: about 2¹⁶ / K columns, so that a chunk of the im2col
    /// matrix (256 KB in f32) stays in L2 between being written and being multiplied. Whole
    /// (the stem at 128 px, 147 × 4096 per image) it went through memory twice, and its GEMM
    /// ran at half of gemm's speed.
    pub(super) fn chunk_rows(&self) -> usize {
        ((1usize << 16) / self.k().max(1) / self.ow.max(1)).clamp(1, self.oh.max(1))
    }
    /// A 1×1, stride-1, unpadded kernel reads the input as the im2col matrix itself.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }
    /// GEMMs run single-threaded when images alone keep every thread busy.
    pub(super) fn run(&self) -> Run {
        if self.n >= rayon::current_num_threads() {
            Run::serial(self.arithmetic)
        } else {
            Run::parallel(self.arithmetic)
        }
    }
}
