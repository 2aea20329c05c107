//! Process-wide CPU settings that decide how fast candle trains. The binaries call
//! [`configure_cpu_runtime`] first thing in `main`.

/// Tunes the allocator for training; call before any tensor exists.
///
/// glibc's allocator hands every block above its mmap threshold (dynamic, at most 32 MiB) to
/// fresh `mmap`ed pages, and gives freed memory at the top of a heap back to the kernel. A
/// training step allocates and frees the same activation sizes step after step, so the kernel
/// ended up mapping and zeroing the same pages over and over: a quarter of a step's time in
/// `perf` at small image sizes, and the quick profile trains about 30 % faster without it
/// (docs/performance.md). Never trimming the heap keeps those pages in the process, and
/// turning `mmap` off for allocations (the threshold cannot go above 32 MiB, while a 224-px
/// batch's activations are 38–154 MB each) sends the large blocks there too: 15–30 % faster
/// at 224 px. The same sizes come back every step, so they are reused; the peak resident
/// memory of a training step rose by 5–22 % (docs/performance.md).
///
/// candle runs its element-wise ops on a pool of its own, whose workers spin for 25 000 rounds
/// after each op before they sleep. Our kernels run on rayon's pool right after, so on two cores
/// a spinning candle worker took a core from them: 5–8 % of a step's samples in `perf` at
/// 64 px, where ops are short. A limit of 100 rounds made the backbone's training at 64 px
/// 12–20 % faster. A limit the user set (`CANDLE_BARRIER_POOL_SPIN_LIMIT`) is kept.
///
/// Call it first thing in `main`, before any thread exists (it sets an environment variable).
pub fn configure_cpu_runtime() {
    const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(SPIN).is_none() {
        std::env::set_var(SPIN, "100");
    }
    tune_allocator();
}

/// The allocator settings of [`configure_cpu_runtime`] alone: safe to call with threads
/// running (timing tests).
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters.
    unsafe {
        // glibc refuses thresholds above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
