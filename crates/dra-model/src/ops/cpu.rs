//! The plumbing shared by the CPU kernels (candle custom ops over f32 and f64 storage): their
//! operands as slices, the dispatch on the element type, functions compiled for AVX2 where the
//! CPU has it, and outputs written in parallel.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Layout, Result, WithDType};

use crate::ops::Element;

/// The contiguous elements of an operand, or an error naming the op.
pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: operands must be contiguous")))?;
    Ok(&T::cpu_storage_as_slice(s)?[start..end])
}

/// Runs `$body` with `$t` bound to the storage's element type (f32 or f64).
macro_rules! dispatch {
    ($storage:expr, $op:expr, $t:ident => $body:expr) => {
        match $storage {
            candle_core::CpuStorage::F32(_) => {
                type $t = f32;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                type $t = f64;
                $body
            }
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $op),
        }
    };
}
pub(crate) use dispatch;

/// Defines a kernel function whose body is compiled three times: for AVX-512, for AVX2 + FMA,
/// each taken where the CPU has them (std caches the detection) and `DRA_KERNEL_TIER` allows
/// them ([`KernelTier::allowed`](crate::ops::KernelTier::allowed)), and for the baseline target
/// otherwise. Our element-wise loops then run 16 or 8 lanes wide without the binary requiring
/// either of every machine (the workspace builds for the baseline x86-64, which has only SSE2).
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<$t:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?)
            $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp<$t: $bound>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
                    imp::<$t>($($arg),*)
                }
                use $crate::ops::KernelTier;
                if KernelTier::allowed() >= KernelTier::Avx512
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512::<$t>($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$t: $bound>($($arg: $ty),*) $(-> $ret)? {
                    imp::<$t>($($arg),*)
                }
                if KernelTier::allowed() >= KernelTier::Avx2Fma {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2::<$t>($($arg),*) };
                }
            }
            imp::<$t>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// A vector of `len` zeros, every page of it written before it is returned (by all threads
/// when it is large).
///
/// Not `vec![0; len]`, for two reasons. It zeroes on the calling thread alone while the other
/// core waits (2 % of a DRA step at 128 px ran in such clears). And where `calloc` takes fresh
/// pages from the kernel it does not write them at all: they stay mapped to the kernel's shared
/// zero page until first written. An accumulator that a GEMM reads before it writes (the
/// weight gradients sum image after image) then takes a copy-on-write fault per page, and on a
/// two-core VM each such fault flushes the other core's TLB by interrupt: 15 % of MobileNetV2's
/// DRA step at 128 px went to those flushes.
pub(crate) fn zeroed<T: WithDType>(len: usize) -> Vec<T> {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 15;
    let mut v = Vec::with_capacity(len);
    let clear = |c: &mut [MaybeUninit<T>]| {
        for x in c {
            x.write(T::zero());
        }
    };
    if len < 2 * CHUNK {
        clear(&mut v.spare_capacity_mut()[..len]);
    } else {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(CHUNK)
            .for_each(clear);
    }
    // SAFETY: `clear` wrote all `len` elements, within the capacity reserved.
    unsafe { v.set_len(len) };
    v
}

/// A vector of `len` elements written chunk by chunk in parallel by `fill(i, chunk)` (chunks
/// of `chunk` elements, the last one shorter), without zeroing it first: for outputs that a
/// kernel overwrites whole, where [`zeroed`]'s clearing pass was 3 % of a DRA step at 128 px.
///
/// # Safety
/// `fill` initialises every element of every chunk it is given.
pub(crate) unsafe fn par_written<T: Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the caller's `fill` initialised all `len` elements, within the capacity.
    unsafe { v.set_len(len) };
    v
}

/// `values` as the destination of a kernel that writes [`MaybeUninit`] outputs.
///
/// # Safety
/// Only initialised values are written through the returned slice (as with
/// `MaybeUninit::write`), so that `values` stays initialised.
pub(crate) unsafe fn as_uninit<T>(values: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; the caller keeps the elements initialised.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len()) }
}

/// How many pieces a sum over a batch (or over a map's blocks of tiles) is cut into, whatever
/// the number of threads.
///
/// The rule every kernel keeps (issue #29): the thread count may decide how work is
/// *scheduled*, never where a partial sum begins or ends, the shape of a GEMM (gemm chooses
/// its depth blocking from the shape), or the order in which partial results are added. A
/// model trained on one thread and on sixteen is then the same bit for bit. Before, the weight
/// gradients summed one partial per thread, and two threads trained another model than one
/// did after a few steps (AUC-ROC 0.696 against 0.602 on a quick run).
///
/// Eight pieces keep up to eight cores busy with the sums themselves; beyond that the GEMMs
/// inside each piece run multi-threaded. Fewer would leave cores idle on larger machines; more
/// would cost memory for nothing on small ones ([`ordered_sum`] holds one partial per thread).
/// Work that is not a sum but is shared out in blocks (blocks of images, of tile rows) comes in
/// a multiple of [`PIECES`] blocks for the same reason: a block is a GEMM, whose shape must
/// not follow the threads, and eight divide evenly among 1, 2, 4 or 8 of them.
pub(crate) const PIECES: usize = 8;

/// `Σᵢ part(i)` for `i` in `0..pieces`, added strictly in the order of `i` (((p₀ + p₁) + p₂) + …)
/// however many threads compute the parts.
///
/// The parts are computed a wave of `rayon::current_num_threads()` at a time and folded into
/// the total as each wave ends, so that at most one partial per thread is alive besides the
/// total; the left fold is the same whatever the waves' width. Every part has the same length.
pub(crate) fn ordered_sum<T: Element>(
    pieces: usize,
    part: impl Fn(usize) -> Vec<T> + Sync,
) -> Vec<T> {
    use rayon::prelude::*;
    /// Elements per task of a fold: small folds stay on the calling thread.
    const FOLD_CHUNK: usize = 1 << 15;
    let wave = rayon::current_num_threads().max(1);
    let mut total: Option<Vec<T>> = None;
    for start in (0..pieces).step_by(wave) {
        let parts: Vec<Vec<T>> = (start..(start + wave).min(pieces))
            .into_par_iter()
            .map(&part)
            .collect();
        for p in parts {
            match &mut total {
                None => total = Some(p),
                Some(t) => {
                    debug_assert_eq!(t.len(), p.len());
                    let add = |(a, b): (&mut [T], &[T])| {
                        a.iter_mut().zip(b).for_each(|(a, b)| *a += *b);
                    };
                    if t.len() < 2 * FOLD_CHUNK {
                        add((t, &p));
                    } else {
                        t.par_chunks_mut(FOLD_CHUNK)
                            .zip(p.par_chunks(FOLD_CHUNK))
                            .for_each(add);
                    }
                }
            }
        }
    }
    total.unwrap_or_default()
}
