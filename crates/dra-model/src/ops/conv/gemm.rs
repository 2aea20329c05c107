//! The matrix products of the convolutions: gemm's kernels over strided operands, every access
//! checked against the slices before the call.

use std::mem::MaybeUninit;

use gemm::Parallelism;

use crate::ops::Element;

/// A matrix operand: its data and its row and column strides.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a, T> {
    pub(super) data: &'a [T],
    pub(super) rs: usize,
    pub(super) cs: usize,
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, `dst` row-major.
pub(super) fn matmul<T: Element>(
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
pub(super) fn matmul_uninit<T: Element>(
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
