//! Process-wide CPU settings that decide how fast candle trains. The binaries call
//! [`configure_cpu_runtime`] first thing in `main`, while theirs is the only thread.

/// Why [`configure_cpu_runtime`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Other threads run: the environment cannot be changed safely any more.
    #[error(
        "CPU runtime left untuned: {threads} threads are running (call configure_cpu_runtime \
         first thing in main, before any thread starts)"
    )]
    ThreadsRunning {
        /// The threads of the process, the caller's included.
        threads: usize,
    },
    /// The threads of the process could not be counted (no `/proc/self/task`: not Linux).
    #[error("CPU runtime left untuned: cannot count the process's threads: {reason}")]
    Unverifiable {
        /// Why, as text.
        reason: String,
    },
}

/// Tunes the allocator and candle's thread pool for training: call it first thing in `main`.
///
/// It sets an environment variable, which is sound only while no other thread can read the
/// environment. So it first counts the process's threads (the entries of `/proc/self/task`)
/// and changes nothing, returning [`RuntimeError::ThreadsRunning`], unless the caller's is
/// the only one; none can start while it runs, as only that thread could start one. Where the
/// threads cannot be counted (systems without `/proc`) it changes nothing either
/// ([`RuntimeError::Unverifiable`]). Either way the settings only make training faster: a
/// caller may report the error and go on.
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
pub fn configure_cpu_runtime() -> Result<(), RuntimeError> {
    const SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    let threads = thread_count()?;
    if threads != 1 {
        return Err(RuntimeError::ThreadsRunning { threads });
    }
    if std::env::var_os(SPIN).is_none() {
        // Sound: this is the process's only thread (checked above), and nothing between the
        // check and here starts another.
        std::env::set_var(SPIN, "100");
    }
    tune_allocator();
    Ok(())
}

/// The threads of this process, the caller's included.
fn thread_count() -> Result<usize, RuntimeError> {
    let unverifiable = |reason: String| RuntimeError::Unverifiable { reason };
    if cfg!(target_os = "linux") {
        let tasks = std::fs::read_dir("/proc/self/task")
            .map_err(|e| unverifiable(format!("/proc/self/task: {e}")))?;
        Ok(tasks.count())
    } else {
        Err(unverifiable("only Linux is supported".into()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// With a second thread alive the call refuses and leaves the environment alone. (The
    /// test harness runs tests on threads of its own, so the refusal does not depend on the
    /// thread started here; it makes sure of one.)
    #[test]
    fn refuses_while_other_threads_run() {
        let before = std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT");
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || wait.recv().ok());
        let result = configure_cpu_runtime();
        stop.send(()).unwrap();
        other.join().unwrap();
        match result {
            Err(RuntimeError::ThreadsRunning { threads }) => assert!(threads >= 2, "{threads}"),
            Err(RuntimeError::Unverifiable { .. }) if !cfg!(target_os = "linux") => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT"), before);
    }
}
