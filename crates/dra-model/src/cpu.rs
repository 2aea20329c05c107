//! Plumbing shared by this crate's CPU kernels (candle custom ops over f32 and f64 storage).

use candle_core::{CpuStorage, Layout, Result, WithDType};

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
