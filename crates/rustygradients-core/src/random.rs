//! The seedable random source behind `rand`, `randn`, `randint` and `dropout`. One generator for
//! the process (ChaCha8): the same `manual_seed` gives the same numbers on every machine.

use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The seed used until `manual_seed` is called, so unseeded runs are reproducible too.
pub const DEFAULT_SEED: u64 = 0x5eed;

static RNG: Mutex<Option<ChaCha8Rng>> = Mutex::new(None);

/// Reseeds the global generator (like `torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    *RNG.lock().unwrap_or_else(|e| e.into_inner()) = Some(ChaCha8Rng::seed_from_u64(seed));
}

thread_local! {
    /// A generator of this thread's own while [`fork_rng`] runs.
    static LOCAL: std::cell::RefCell<Option<ChaCha8Rng>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with a generator seeded by `seed` that only this thread draws from (PyTorch's
/// `torch.random.fork_rng` plus a seed): what `rand`, `randn`, `dropout` and the rest draw
/// inside `f` depends on `seed` alone, whatever other threads draw meanwhile, and the global
/// generator is left as it was.
///
/// ```
/// use rustygradients_core::{random::fork_rng, DType, Device, Tensor};
/// let a = fork_rng(7, || Tensor::rand(4, DType::F32, Device::Cpu))?;
/// let b = fork_rng(7, || Tensor::rand(4, DType::F32, Device::Cpu))?;
/// assert_eq!(a.to_vec::<f32>()?, b.to_vec::<f32>()?);
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn fork_rng<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    let outer = LOCAL.with(|l| l.replace(Some(ChaCha8Rng::seed_from_u64(seed))));
    // Restored even if `f` panics.
    struct Restore(Option<ChaCha8Rng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            LOCAL.with(|l| *l.borrow_mut() = outer);
        }
    }
    let _restore = Restore(outer);
    f()
}

/// Runs `f` with this thread's forked generator if there is one, else the global one.
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut ChaCha8Rng) -> R) -> R {
    let mut f = Some(f);
    let local = LOCAL.with(|l| {
        l.borrow_mut()
            .as_mut()
            .map(|rng| (f.take().expect("called once"))(rng))
    });
    if let Some(r) = local {
        return r;
    }
    let f = f.take().expect("not called yet");
    let mut guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let rng = guard.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(DEFAULT_SEED));
    f(rng)
}

/// The generator's state, for checkpoints that must resume the same random stream.
pub fn rng_state() -> ChaCha8Rng {
    with_rng(|r| r.clone())
}

/// Puts `state` in place of the generator draws come from now (this thread's forked one
/// inside [`fork_rng`], else the global one) and returns the one it replaced.
pub(crate) fn swap_active(state: ChaCha8Rng) -> ChaCha8Rng {
    with_rng(|r| std::mem::replace(r, state))
}

/// Restores a state taken by [`rng_state`].
pub fn set_rng_state(state: ChaCha8Rng) {
    *RNG.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
}

/// One 64-bit draw: the key of a counter-based generator on a GPU.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn next_u64() -> u64 {
    with_rng(|r| r.gen())
}

pub(crate) fn uniform(n: usize) -> Vec<f64> {
    with_rng(|r| (0..n).map(|_| r.gen::<f64>()).collect())
}

pub(crate) fn normal(n: usize) -> Vec<f64> {
    with_rng(|r| (0..n).map(|_| r.sample::<f64, _>(StandardNormal)).collect())
}

pub(crate) fn int_range(n: usize, low: i64, high: i64) -> Vec<i64> {
    with_rng(|r| (0..n).map(|_| r.gen_range(low..high)).collect())
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
pub(crate) fn permutation(n: usize) -> Vec<i64> {
    use rand::seq::SliceRandom;
    let mut p: Vec<i64> = (0..n as i64).collect();
    with_rng(|r| p.shuffle(r));
    p
}
