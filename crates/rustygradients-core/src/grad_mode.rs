//! Whether ops record the graph. Recording is on by default; `no_grad` turns it off for a scope
//! on the current thread (as `torch.no_grad()` does).

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True when new ops record their inputs for `backward`.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Turns recording off until dropped, then restores the previous mode.
pub struct NoGradGuard {
    prev: bool,
}

impl NoGradGuard {
    /// Turns recording off on the current thread until the guard is dropped (a scoped
    /// `torch.no_grad()`; [`no_grad`] wraps a closure in one).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { prev }
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Turns recording on until dropped (inside a gradient rule that records a graph of its own,
/// as activation recomputation does).
pub(crate) struct EnableGradGuard {
    prev: bool,
}

impl EnableGradGuard {
    pub(crate) fn new() -> Self {
        let prev = GRAD_ENABLED.with(|g| g.replace(true));
        EnableGradGuard { prev }
    }
}

impl Drop for EnableGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` without recording the graph.
///
/// ```
/// use rustygradients_core::{no_grad, DType, Device, Tensor};
/// let w = Tensor::ones(&[2], DType::F32, Device::Cpu)?.requires_grad_(true)?;
/// let y = no_grad(|| w.exp())?;
/// assert!(!y.requires_grad() && !y.is_tracked());
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}
