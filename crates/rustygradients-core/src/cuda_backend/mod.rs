//! The CUDA backend: GPU memory, NVRTC-compiled kernels and cuBLAS, behind the `cuda` feature.
//! Without the feature the same types exist (so code and errors can name them) and opening a
//! GPU returns [`crate::Error::DeviceUnavailable`].

#[cfg(not(feature = "cuda"))]
mod stub;
#[cfg(not(feature = "cuda"))]
pub use stub::{CudaDevice, CudaStorage};
