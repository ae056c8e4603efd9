//! How many threads the CPU backend uses: rayon's global pool, sized by `RAYON_NUM_THREADS`
//! or by [`set_num_threads`] (like `torch.set_num_threads`), else one per logical CPU.
//! Small tensors stay on the calling thread whatever the count (see the CPU kernels' grain
//! sizes), so a large pool costs them nothing.

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
