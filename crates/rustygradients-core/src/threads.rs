//! How many threads the CPU backend uses: rayon's global pool, sized by `RAYON_NUM_THREADS`
//! or by [`set_num_threads`] (like `torch.set_num_threads`), else one per logical CPU.
//! Small tensors stay on the calling thread whatever the count (see the CPU kernels' grain
//! sizes), so a large pool costs them nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

/// Sets the number of threads CPU kernels run on. The pool is created once per process, at
/// the first parallel kernel: call this before any tensor work (as early as `main`'s first
/// line). Asking for the count the pool already has is fine; asking for another one once it
/// exists is an error, since rayon's global pool cannot be resized.
///
/// ```
/// let n = rustygradients_core::num_threads();
/// rustygradients_core::set_num_threads(n)?; // the current count: always accepted
/// assert!(rustygradients_core::set_num_threads(0).is_err());
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn set_num_threads(n: usize) -> Result<()> {
    let invalid = |msg: String| Error::InvalidArgument {
        op: "set_num_threads",
        msg,
    };
    if n == 0 {
        return Err(invalid("the thread count must be at least 1".into()));
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(_) => Err(invalid(format!(
            "the CPU thread pool already runs {} threads and cannot be resized to {n}; call \
             set_num_threads before any tensor work, or set RAYON_NUM_THREADS={n}",
            rayon::current_num_threads()
        ))),
    }
}

/// The number of threads CPU kernels run on (starting the pool if it has not started).
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// `pause` instructions a spinning worker of [`with_active_workers`] waits between two looks
/// for work.
const SPIN_PAUSES: u32 = 32;

/// Runs `f` on the CPU thread pool with the pool's other workers kept busy looking for work
/// until it returns (OpenMP's active wait), and returns its result.
///
/// Idle rayon workers go to sleep after a few microseconds, and every parallel kernel after
/// that first wakes them: a futex call and a reschedule, tens of microseconds on a virtual
/// machine, paid by each of the hundreds of kernels of a training step. Inside `f` they start at
/// once. The price is that the other workers spin on their cores for as long as `f` runs, so
/// wrap loops of CPU tensor work (a training loop), not programs that mostly wait.
///
/// ```
/// use rustygradients_core::{with_active_workers, DType, Device, Tensor};
/// let s = with_active_workers(|| {
///     let x = Tensor::ones([256, 256], DType::F32, Device::Cpu)?;
///     x.matmul(&x)?.sum_all()?.to_scalar::<f32>()
/// })?;
/// assert_eq!(s, 256.0 * 256.0 * 256.0);
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn with_active_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let workers = rayon::current_num_threads();
    if workers < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let (here, done) = (rayon::current_thread_index(), &done);
        for _ in 1..workers {
            s.spawn(move |_| {
                // A spinner picked up by the thread running `f` (while that thread waits
                // inside one of its own kernels) must not keep it: it returns at once.
                if rayon::current_thread_index() == here {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle = 0;
                        continue;
                    }
                    idle = idle.wrapping_add(1);
                    // Now and then let the OS run anything else that wants this core.
                    if idle.is_multiple_of(256) {
                        std::thread::yield_now();
                    }
                    // Between looks, a couple of microseconds of `pause`: each look scans every
                    // worker's queue, and many spinners scanning without a break slow the
                    // workers whose queues they read.
                    for _ in 0..SPIN_PAUSES {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set however `f` ends (a panic too), or the scope would wait for the spinners forever.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(done);
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::with_active_workers;
    use crate::{DType, Device, Tensor};

    #[test]
    fn active_workers_run_parallel_kernels_and_return_the_result() {
        crate::manual_seed(3);
        // Large enough for the threaded GEMM and elementwise paths.
        let a = Tensor::randn([300, 400], DType::F32, Device::Cpu).unwrap();
        let b = Tensor::randn([400, 500], DType::F32, Device::Cpu).unwrap();
        let run = || a.matmul(&b)?.gelu()?.to_vec::<f32>();
        let want = run().unwrap();
        for _ in 0..3 {
            assert_eq!(with_active_workers(run).unwrap(), want);
        }
        // Nested: the spinning workers still serve a second call's kernels.
        let nested = with_active_workers(|| with_active_workers(run)).unwrap();
        assert_eq!(nested, want);
    }

    #[test]
    fn a_panic_inside_active_workers_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            with_active_workers(|| panic!("inside"));
        });
        assert!(r.is_err());
        // The pool still works afterwards.
        assert_eq!(with_active_workers(|| 7), 7);
    }
}
