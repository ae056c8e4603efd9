//! The process-wide cuDNN switch, as PyTorch's `torch.backends.cudnn.enabled`.
//!
//! Where cuDNN 9 is installed, GPU attention of f16/bf16 self-attention runs on cuDNN's fused
//! flash kernels (much faster on Hopper); otherwise, and with the switch off, on this crate's
//! own FlashAttention kernels. Both give the same results to the dtype's rounding and save the
//! same state, so the switch may change at any time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

static ENABLED: AtomicBool = AtomicBool::new(true);
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn env_off() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("RUSTYGRADIENTS_CUDNN").is_ok_and(|v| v == "0"))
}

/// Lets GPU attention use cuDNN where it is installed (on by default; the environment variable
/// `RUSTYGRADIENTS_CUDNN=0` turns it off for the whole process).
///
/// ```
/// rustygradients_core::set_cudnn_enabled(false);
/// assert!(!rustygradients_core::cudnn_enabled());
/// rustygradients_core::set_cudnn_enabled(true);
/// ```
pub fn set_cudnn_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether GPU attention may use cuDNN (see [`set_cudnn_enabled`]).
pub fn cudnn_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) && !env_off()
}

/// How many attention passes (forward or backward) ran on cuDNN in this process: lets tests
/// and benchmarks tell which implementation ran.
pub fn cudnn_attention_calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn count_attention_call() {
    CALLS.fetch_add(1, Ordering::Relaxed);
}
