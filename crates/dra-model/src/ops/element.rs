//! The element type of every kernel in [`crate::ops`]: f32, and f64 for the double-precision
//! parity tests.

use candle_core::WithDType;

/// The element types of the CPU kernels (f64 serves the double-precision parity tests).
/// `WithDType` brings the arithmetic, the comparisons and `Send + Sync + 'static`; sums that
/// must not lose precision are carried in f64 (`WithDType::{to_f64, from_f64}`).
pub(crate) trait Element: WithDType + Default {
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
