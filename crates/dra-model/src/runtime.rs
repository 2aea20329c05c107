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
pub fn configure_cpu_runtime() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters.
    unsafe {
        // glibc refuses thresholds above HEAP_MAX_SIZE / 2, 32 MiB on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
