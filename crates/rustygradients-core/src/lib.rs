//! RustyGradients core: one [`Tensor`] type over device storage, the CPU backend, and
//! reverse-mode autograd.
//!
//! | module | what it holds |
//! |---|---|
//! | `shape`, `layout`, `dtype`, `device` | shapes and dims, strided layouts, element types, devices |
//! | `storage`, `backend`, `host` | the per-device storage enum (the one place that names a backend), the traits every backend implements, host buffers |
//! | `cpu_backend`, `cuda_backend` | the backends |
//! | `tensor`, `ops` | the tensor type and its operations (creation, views, math, reductions, nn) |
//! | `op`, `backprop`, `grad_mode` | the recorded graph, the gradient rules, `no_grad` |
//! | `random`, `display`, `error` | seeded randomness, PyTorch-style printing, the error type |

#![warn(missing_docs)]

mod autocast;
mod backend;
mod backprop;
mod checkpoint;
mod cpu_backend;
mod cuda_backend;
mod cudnn;
mod device;
mod display;
mod dtype;
mod error;
mod fast_math;
mod grad_mode;
mod host;
mod layout;
mod op;
mod ops;
mod precision;
pub mod random;
mod shape;
mod storage;
mod tensor;
mod threads;

pub use autocast::{autocast, autocast_dtype, AutocastGuard};
pub use backend::AdamHyper;
pub use cudnn::{cudnn_attention_calls, cudnn_enabled, set_cudnn_enabled};
pub use device::{Device, MemoryStats};
pub use dtype::{DType, FloatDType, WithDType};
pub use error::{Error, Result};
pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};
pub use host::{HostBuf, HostBuffer, SharedBytes};
pub use layout::Layout;
pub use ops::Reduction;
pub use precision::{
    cpu_amx_available, matmul_allow_bf16, matmul_allow_tf32, set_matmul_allow_bf16,
    set_matmul_allow_tf32, Precision, PrecisionGuard,
};
pub use random::manual_seed;
pub use shape::{All, Dim, Dims, Shape};
pub use tensor::{Tensor, TensorId};
pub use threads::{num_threads, set_num_threads, with_active_workers};
