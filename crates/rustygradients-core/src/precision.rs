//! Process-wide precision switches, as PyTorch's `torch.backends.cuda.matmul.allow_tf32`.

use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets f32 matmuls on a GPU use TF32 tensor cores (inputs rounded to 10 mantissa bits,
/// products accumulated in f32): several times faster, with relative errors near 1e-3 instead
/// of 1e-6. Off by default, so f32 means f32. The CPU ignores it.
///
/// ```
/// rustygradients_core::set_matmul_allow_tf32(true);
/// assert!(rustygradients_core::matmul_allow_tf32());
/// rustygradients_core::set_matmul_allow_tf32(false);
/// ```
pub fn set_matmul_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Whether f32 GPU matmuls may use TF32 (see [`set_matmul_allow_tf32`]).
pub fn matmul_allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}
