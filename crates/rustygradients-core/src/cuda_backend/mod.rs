//! The CUDA backend: GPU memory, NVRTC-compiled kernels and cuBLAS, behind the `cuda` feature.
//! Without the feature the same types exist (so code and errors can name them) and opening a
//! GPU returns [`crate::Error::DeviceUnavailable`].

/// Pointers to kernel arguments, in order (each value must outlive the launch call).
#[cfg(feature = "cuda")]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        [$(&$a as *const _ as *mut std::ffi::c_void),*]
    };
}

#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda")]
mod cudnn_attn;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod flash;
#[cfg(feature = "cuda")]
mod indexing;
#[cfg(feature = "cuda")]
mod layout;
#[cfg(feature = "cuda")]
mod lt;
#[cfg(feature = "cuda")]
mod matmul;
#[cfg(feature = "cuda")]
mod optim;
#[cfg(feature = "cuda")]
mod reduce;
#[cfg(feature = "cuda")]
mod rows;
#[cfg(feature = "cuda")]
mod storage;
/// Whether a GPU's FlashAttention runs attention of this dtype and these sizes.
#[cfg(feature = "cuda")]
pub(crate) use flash::applies as flash_applies;
#[cfg(feature = "cuda")]
pub use {device::CudaDevice, storage::CudaStorage};

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub(crate) use stub::flash_applies;
#[cfg(not(feature = "cuda"))]
pub use stub::{CudaDevice, CudaStorage};
