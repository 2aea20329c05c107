//! What the last bits of a result depend on besides the code: the vector instructions that
//! gemm's kernels run with, and how a GEMM's sums are cut into depth blocks.
//!
//! Every product of the custom kernels (convolutions, linear layers) goes through gemm. Its
//! AVX-512 and AVX2 kernels hold a different number of lanes and so cut the depth of a product
//! into other blocks (the block size follows the register tile and the CPU's L1 cache), and a
//! float sum cut otherwise rounds otherwise: a 48-px DRA run scored AUC-ROC 0.908 with AVX2 and
//! 1.0 with AVX-512 on the same seed and data. [`Arithmetic::Portable`] runs the AVX2 + FMA
//! kernels on every CPU and cuts every depth into blocks of at most [`PORTABLE_DEPTH`], whatever
//! the caches: the same bytes on any x86-64 CPU with AVX2 and FMA. Everything else the kernels
//! compute (transforms, BatchNorm, pooling, candle's element-wise ops) rounds the same on every
//! tier: the compiler does not reorder float sums or fuse multiply-adds by itself, and the
//! kernels' explicit lanes are the same width on each.

use std::sync::OnceLock;

/// The vector instructions a CPU's GEMMs can run with, in increasing order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum KernelTier {
    /// Neither AVX2 with FMA nor AVX-512 (or not x86-64): gemm's scalar kernels.
    Baseline,
    /// AVX2 with FMA: gemm's 256-bit kernels; the portable tier.
    #[serde(rename = "avx2+fma")]
    Avx2Fma,
    /// AVX-512F: gemm's 512-bit kernels.
    Avx512,
}

impl KernelTier {
    /// The best tier this CPU has.
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return if std::arch::is_x86_feature_detected!("avx512f") {
                Self::Avx512
            } else {
                Self::Avx2Fma
            };
        }
        Self::Baseline
    }

    /// The best tier this process may use: [`detected`](Self::detected), capped by the
    /// environment variable `DRA_KERNEL_TIER` (`baseline`, `avx2+fma` or `avx512`), read once.
    /// The cap makes a CPU run as one without the instructions above it: how the tiers are
    /// compared on one machine (tests, docs/performance.md). An unknown value is ignored with a
    /// warning on standard error.
    pub fn allowed() -> Self {
        static ALLOWED: OnceLock<KernelTier> = OnceLock::new();
        *ALLOWED.get_or_init(|| {
            let detected = Self::detected();
            match std::env::var("DRA_KERNEL_TIER") {
                Err(_) => detected,
                Ok(v) => match Self::parse(&v) {
                    Some(cap) => detected.min(cap),
                    None => {
                        eprintln!(
                            "warning: DRA_KERNEL_TIER={v:?} ignored; valid: baseline, avx2+fma, \
                             avx512"
                        );
                        detected
                    }
                },
            }
        })
    }

    /// The tier named as in `config.json` and `DRA_KERNEL_TIER`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Avx2Fma => "avx2+fma",
            Self::Avx512 => "avx512",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Baseline, Self::Avx2Fma, Self::Avx512]
            .into_iter()
            .find(|t| t.name() == name.trim())
    }
}

impl std::fmt::Display for KernelTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Depth blocks of a portable GEMM: gemm's smallest automatic block, so that within a block it
/// sums in one pass on every CPU.
pub const PORTABLE_DEPTH: usize = 512;

/// How the custom kernels' GEMMs compute, part of [`crate::Kernels`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Arithmetic {
    /// The fastest the CPU allows ([`KernelTier::allowed`]), with gemm's depth blocks sized
    /// to its caches: the same bytes for any number of threads on one machine, but not
    /// between CPUs of different vector units or caches.
    #[default]
    Native,
    /// AVX2 + FMA on every CPU, depth blocks of at most [`PORTABLE_DEPTH`]: the same bytes on
    /// any x86-64 CPU with AVX2 and FMA (`--reproducible`). Where a CPU lacks them (or
    /// `DRA_KERNEL_TIER` caps it lower), the scalar kernels run instead, which round otherwise.
    Portable,
}

impl Arithmetic {
    /// The tier that this setting's GEMMs run with in this process.
    pub fn tier(self) -> KernelTier {
        match self {
            Self::Native => KernelTier::allowed(),
            Self::Portable => KernelTier::allowed().min(KernelTier::Avx2Fma),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_order_and_name_themselves() {
        assert!(KernelTier::Baseline < KernelTier::Avx2Fma);
        assert!(KernelTier::Avx2Fma < KernelTier::Avx512);
        for t in [
            KernelTier::Baseline,
            KernelTier::Avx2Fma,
            KernelTier::Avx512,
        ] {
            assert_eq!(KernelTier::parse(t.name()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
        assert_eq!(KernelTier::parse("sse"), None);
        assert!(Arithmetic::Portable.tier() <= KernelTier::Avx2Fma);
        assert!(Arithmetic::Portable.tier() <= Arithmetic::Native.tier());
    }
}
