//! The matrix products of the custom kernels (convolutions, linear layers): gemm's kernels over
//! strided operands, every access checked against the slices before the call, run with the
//! [`Arithmetic`] the model asks for.

use std::mem::MaybeUninit;

use gemm::Parallelism;

use crate::ops::arithmetic::{Arithmetic, KernelTier, PORTABLE_DEPTH};
use crate::ops::Element;

/// How one GEMM runs: on how many threads (gemm splits the output between them, never a sum,
/// so this does not change the result) and with which arithmetic (which does).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub(crate) threads: Parallelism,
    pub(crate) arithmetic: Arithmetic,
}

impl Run {
    /// On the calling thread alone.
    pub(crate) fn serial(arithmetic: Arithmetic) -> Self {
        Self {
            threads: Parallelism::None,
            arithmetic,
        }
    }

    /// On as many of rayon's threads as gemm finds worth it.
    pub(crate) fn parallel(arithmetic: Arithmetic) -> Self {
        Self {
            threads: Parallelism::Rayon(0),
            arithmetic,
        }
    }
}

/// A matrix operand: its data and its row and column strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, `dst` row-major.
pub(crate) fn matmul<T: Element>(
    dst: &mut [T],
    a: Mat<T>,
    b: Mat<T>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    run: Run,
) {
    matmul_into(dst, n, a, b, (m, n, k), accumulate, run);
}

/// [`matmul`] into rows `dst_rs` apart.
fn matmul_into<T: Element>(
    dst: &mut [T],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    dims: (usize, usize, usize),
    accumulate: bool,
    run: Run,
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
            run,
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
pub(crate) fn matmul_uninit<T: Element>(
    dst: &mut [MaybeUninit<T>],
    dst_rs: usize,
    a: Mat<T>,
    b: Mat<T>,
    dims: (usize, usize, usize),
    run: Run,
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
            run,
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
    run: Run,
) {
    assert!(dst_rs >= n && dst_len >= (m - 1) * dst_rs + n);
    assert!(a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs);
    assert!(b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs);
    let tier = run.arithmetic.tier();
    let portable = run.arithmetic == Arithmetic::Portable;
    // Portable: the depth in blocks of PORTABLE_DEPTH, each summed by gemm in one pass (its
    // own depth blocks are never smaller), so that no CPU's caches cut it otherwise.
    let depth = if portable { PORTABLE_DEPTH } else { k.max(1) };
    let mut k0 = 0;
    loop {
        let kc = depth.min(k - k0);
        let call = Call {
            m,
            n,
            k: kc,
            dst,
            dst_rs: dst_rs as isize,
            read_dst: accumulate || k0 > 0,
            // The block's first column of `a` and row of `b` (k0 < k, or both 0).
            lhs: a.data[k0 * a.cs..].as_ptr(),
            lhs_rs: a.rs as isize,
            lhs_cs: a.cs as isize,
            rhs: b.data[k0 * b.rs..].as_ptr(),
            rhs_rs: b.rs as isize,
            rhs_cs: b.cs as isize,
            threads: run.threads,
        };
        // SAFETY: the asserts above keep every access of the strided operands in bounds (a
        // depth block reads a part of them); the caller vouches for `dst`.
        unsafe {
            if tier == KernelTier::detected() && !portable {
                call.native();
            } else {
                call.at(tier);
            }
        }
        k0 += kc;
        if k0 >= k {
            break;
        }
    }
}

/// One GEMM call, `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, `dst`'s columns adjacent; every stride
/// non-negative.
struct Call<T> {
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const T,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const T,
    rhs_rs: isize,
    rhs_cs: isize,
    threads: Parallelism,
}

impl<T: Element> Call<T> {
    /// Through gemm's own dispatch: the best tier the CPU has.
    ///
    /// # Safety
    /// Every access in bounds; `dst` exclusive, initialised where read.
    unsafe fn native(&self) {
        // SAFETY: the caller's.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst,
                1,
                self.dst_rs,
                self.read_dst,
                self.lhs,
                self.lhs_cs,
                self.lhs_rs,
                self.rhs,
                self.rhs_cs,
                self.rhs_rs,
                T::one(),
                T::one(),
                false,
                false,
                false,
                self.threads,
            )
        }
    }

    /// Through gemm's generic driver with the kernels of `tier` (AVX2 + FMA or scalar; an
    /// AVX-512 tier is gemm's own dispatch), as `gemm::gemm` would call it: the problem
    /// transposed first where the destination's rows are further apart than its columns, which
    /// the kernels prefer.
    ///
    /// Calls into gemm-common 0.19's public but undocumented driver, with the kernel tables of
    /// gemm-f32 and gemm-f64 0.19 (pinned by `Cargo.lock`): re-check on upgrades that
    /// `gemm_def!` still calls `gemm_basic_generic` so.
    ///
    /// # Safety
    /// As [`Call::native`].
    unsafe fn at(&self, tier: KernelTier) {
        use std::any::TypeId;
        if tier == KernelTier::Avx512 {
            // SAFETY: the caller's.
            return unsafe { self.native() };
        }
        let c = if self.dst_rs > 1 {
            Call {
                m: self.n,
                n: self.m,
                k: self.k,
                dst: self.dst,
                dst_rs: 1,
                read_dst: self.read_dst,
                lhs: self.rhs,
                lhs_rs: self.rhs_cs,
                lhs_cs: self.rhs_rs,
                rhs: self.lhs,
                rhs_rs: self.lhs_cs,
                rhs_cs: self.lhs_rs,
                threads: self.threads,
            }
        } else {
            Call { ..*self }
        };
        // After the transposition the destination's columns are `self.dst_rs` apart.
        let dst_cs = if self.dst_rs > 1 { self.dst_rs } else { 1 };
        let avx2 = tier == KernelTier::Avx2Fma;
        // SAFETY: `T` is the type each branch casts to (checked by `TypeId`); the rest is the
        // caller's.
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                tiered_f32(&c.cast(), dst_cs, avx2);
            } else if TypeId::of::<T>() == TypeId::of::<f64>() {
                tiered_f64(&c.cast(), dst_cs, avx2);
            } else {
                unreachable!("the kernels' element types are f32 and f64")
            }
        }
    }

    /// The same call over another element type of the same layout.
    fn cast<U>(&self) -> Call<U> {
        Call {
            m: self.m,
            n: self.n,
            k: self.k,
            dst: self.dst.cast(),
            dst_rs: self.dst_rs,
            read_dst: self.read_dst,
            lhs: self.lhs.cast(),
            lhs_rs: self.lhs_rs,
            lhs_cs: self.lhs_cs,
            rhs: self.rhs.cast(),
            rhs_rs: self.rhs_rs,
            rhs_cs: self.rhs_cs,
            threads: self.threads,
        }
    }
}

impl<T> Clone for Call<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Call<T> {}

/// gemm's driver over one element type with the kernels of one module (`fma` or `scalar`) of
/// its microkernel crate; `$n` is that module's lanes, `$simd` its instruction set.
macro_rules! tiered {
    ($name:ident, $t:ident, $krate:ident, $lanes_avx2:expr) => {
        /// # Safety
        /// As [`Call::native`], on a destination `dst_cs` apart by column.
        unsafe fn $name(c: &Call<$t>, dst_cs: isize, avx2: bool) {
            use gemm_common::gemm::gemm_basic_generic as generic;
            use gemm_common::simd::MixedSimd;
            macro_rules! run {
                ($simd:ty, $module:ident, $lanes:expr) => {{
                    use $krate::microkernel::$module::$t as k;
                    let simd = <$simd as MixedSimd<$t, $t, $t, $t>>::try_new()
                        .expect("the CPU has the instructions of the tier it was given");
                    // SAFETY: the caller's.
                    unsafe {
                        generic::<
                            $simd,
                            $t,
                            { $lanes },
                            { k::MR_DIV_N * $lanes },
                            { k::NR },
                            { k::MR_DIV_N },
                            { k::H_M },
                            { k::H_N },
                        >(
                            simd,
                            c.m,
                            c.n,
                            c.k,
                            c.dst,
                            dst_cs,
                            c.dst_rs,
                            c.read_dst,
                            c.lhs,
                            c.lhs_cs,
                            c.lhs_rs,
                            c.rhs,
                            c.rhs_cs,
                            c.rhs_rs,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            |a, b, c| a * b + c,
                            &k::UKR,
                            &k::H_UKR,
                            false,
                            c.threads,
                        )
                    }
                }};
            }
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                return run!(gemm_common::simd::V3, fma, $lanes_avx2);
            }
            let _ = avx2;
            run!(gemm_common::simd::Scalar, scalar, 1)
        }
    };
}
tiered!(tiered_f32, f32, gemm_f32, 8);
tiered!(tiered_f64, f64, gemm_f64, 4);

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) >> 20) as f32 / 2048.0 - 1.0)
            .collect()
    }

    /// `a · b` of an `m × k` and a `k × n` row-major operand (`a` read transposed where
    /// `a_t`), by `tier`'s driver, accumulated onto `init` where given.
    fn product(
        (m, n, k): (usize, usize, usize),
        a_t: bool,
        init: Option<&[f32]>,
        run: impl Fn(&mut [f32], Mat<f32>, Mat<f32>, bool),
    ) -> Vec<f32> {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let a = match a_t {
            false => Mat {
                data: &a,
                rs: k,
                cs: 1,
            },
            true => Mat {
                data: &a,
                rs: 1,
                cs: m,
            },
        };
        let b = Mat {
            data: &b,
            rs: n,
            cs: 1,
        };
        let mut dst = init.map_or_else(|| vec![0.0; m * n], <[f32]>::to_vec);
        run(&mut dst, a, b, init.is_some());
        dst
    }

    /// Our driver at the CPU's own tier gives gemm's own dispatch's bytes, for shapes on both
    /// sides of its small-matrix and vector paths, transposed operands and accumulation: the
    /// calling conventions are gemm's. The scalar tier agrees to rounding.
    #[test]
    fn tiered_driver_matches_gemms_dispatch() {
        let tier = KernelTier::detected();
        for dims in [
            (1, 7, 5),
            (7, 1, 5),
            (3, 4, 2),
            (64, 64, 300),
            (70, 90, 512),
            (33, 130, 700),
        ] {
            for a_t in [false, true] {
                for init in [None, Some(values(dims.0 * dims.1, 3))] {
                    let native = product(dims, a_t, init.as_deref(), |d, a, b, acc| {
                        matmul(d, a, b, dims, acc, Run::serial(Arithmetic::Native))
                    });
                    let call = |tier: KernelTier| {
                        product(dims, a_t, init.as_deref(), |d, a, b, acc| {
                            let call = Call {
                                m: dims.0,
                                n: dims.1,
                                k: dims.2,
                                dst: d.as_mut_ptr(),
                                dst_rs: dims.1 as isize,
                                read_dst: acc,
                                lhs: a.data.as_ptr(),
                                lhs_rs: a.rs as isize,
                                lhs_cs: a.cs as isize,
                                rhs: b.data.as_ptr(),
                                rhs_rs: b.rs as isize,
                                rhs_cs: b.cs as isize,
                                threads: Parallelism::None,
                            };
                            // SAFETY: the operands and `d` are the shapes the call says.
                            unsafe { call.at(tier) }
                        })
                    };
                    let case = format!("{dims:?} transposed {a_t} accumulate {}", init.is_some());
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    if tier == KernelTier::Avx2Fma {
                        assert_eq!(bits(&call(tier)), bits(&native), "{case}");
                    }
                    let scalar = call(KernelTier::Baseline);
                    for (s, n) in scalar.iter().zip(&native) {
                        assert!((s - n).abs() <= 1e-4 * n.abs().max(1.0), "{case}: {s} {n}");
                    }
                }
            }
        }
    }

    /// The portable product sums its depth in blocks of [`PORTABLE_DEPTH`] on every CPU: the
    /// same bytes as the sum of the blocks' products added in order.
    #[test]
    fn portable_products_sum_fixed_depth_blocks() {
        let dims = (20, 30, 2 * PORTABLE_DEPTH + 77);
        let portable = product(dims, false, None, |d, a, b, acc| {
            matmul(d, a, b, dims, acc, Run::parallel(Arithmetic::Portable))
        });
        let blocks = product(dims, false, None, |d, a, b, _| {
            for k0 in (0..dims.2).step_by(PORTABLE_DEPTH) {
                let kc = PORTABLE_DEPTH.min(dims.2 - k0);
                let (a, b) = (
                    Mat {
                        data: &a.data[k0..],
                        ..a
                    },
                    Mat {
                        data: &b.data[k0 * b.rs..],
                        ..b
                    },
                );
                matmul(
                    d,
                    a,
                    b,
                    (dims.0, dims.1, kc),
                    k0 > 0,
                    Run::serial(Arithmetic::Portable),
                );
            }
        });
        assert_eq!(portable, blocks);
    }
}
