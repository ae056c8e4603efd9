//! The CLI's runtime set-up for the benchmark examples, so what they time costs what it costs
//! in training: mimalloc with freed pages kept mapped, and the work running on a rayon worker.

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the version libmimalloc-sys builds by
/// default; the binding crate does not name this option).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs `f` as the CLI runs training: freed pages stay mapped for the next step, and parallel
/// ops start on a rayon worker without a cross-thread wake-up.
pub fn run_like_training<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // SAFETY: sets a mimalloc option; plain integers, no other preconditions.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .expect("thread pool");
    pool.install(f)
}
