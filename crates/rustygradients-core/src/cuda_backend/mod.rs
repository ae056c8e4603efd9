//! The CUDA backend's place in the device dispatch. The kernels (cuBLAS, NVRTC) arrive with the
//! CUDA issue; until then every build has this storage type, and opening a CUDA device returns
//! [`Error::DeviceUnavailable`] instead of pretending to work.

use crate::backend::{AdamHyper, AttnDims, BackendStorage, BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::cpu_backend::CpuStorage;
use crate::{DType, Device, Error, Layout, Result, Shape};

/// GPU memory of one dtype. No value of this type can be created yet: the enum is empty.
#[derive(Debug, Clone)]
pub enum CudaStorage {}

impl CudaStorage {
    /// Copies host data to GPU `ordinal`.
    pub fn from_cpu(_cpu: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        Err(Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            msg: if cfg!(feature = "cuda") {
                "the CUDA kernels are not implemented yet".into()
            } else {
                "this build has no CUDA support; rebuild with `--features cuda`".into()
            },
        })
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        match *self {}
    }
    fn device(&self) -> Device {
        match *self {}
    }
    fn elem_len(&self) -> usize {
        match *self {}
    }
    fn to_cpu(&self) -> Result<CpuStorage> {
        match *self {}
    }
    fn zeros(_shape: &Shape, dtype: DType, device: Device) -> Result<Self> {
        let ordinal = match device {
            Device::Cuda(o) => o,
            Device::Cpu => 0,
        };
        CudaStorage::from_cpu(&CpuStorage::full(0, 0.0, dtype), ordinal)
    }
    fn to_dtype(&self, _: &Layout, _: DType) -> Result<Self> {
        match *self {}
    }
    fn copy_strided(&self, _: &Layout) -> Result<Self> {
        match *self {}
    }
    fn copy_into(&self, _: &Layout, _: &mut Self, _: &Layout) -> Result<()> {
        match *self {}
    }
    fn add_into(&self, _: &Layout, _: &mut Self, _: &Layout) -> Result<()> {
        match *self {}
    }
    fn adam_step(&mut self, _: &mut Self, _: &mut Self, _: &Self, _: AdamHyper) -> Result<()> {
        match *self {}
    }
    fn unary(&self, _: &Layout, _: UnaryOp) -> Result<Self> {
        match *self {}
    }
    fn unary_grad(&self, _: &Layout, _: &Self, _: &Layout, _: UnaryOp) -> Result<Self> {
        match *self {}
    }
    fn binary(&self, _: &Layout, _: &Self, _: &Layout, _: BinaryOp) -> Result<Self> {
        match *self {}
    }
    fn cmp(&self, _: &Layout, _: &Self, _: &Layout, _: CmpOp) -> Result<Self> {
        match *self {}
    }
    fn where_cond(&self, _: &Layout, _: &Self, _: &Layout, _: &Self, _: &Layout) -> Result<Self> {
        match *self {}
    }
    fn reduce(&self, _: &Layout, _: ReduceOp, _: &[usize]) -> Result<Self> {
        match *self {}
    }
    fn matmul(&self, _: &Layout, _: &Self, _: &Layout) -> Result<Self> {
        match *self {}
    }
    fn index_select(&self, _: &Layout, _: &Self, _: &Layout, _: usize) -> Result<Self> {
        match *self {}
    }
    fn gather(&self, _: &Layout, _: &Self, _: &Layout, _: usize) -> Result<Self> {
        match *self {}
    }
    fn scatter_add(
        &self,
        _: &Layout,
        _: &Self,
        _: &Layout,
        _: &Self,
        _: &Layout,
        _: usize,
    ) -> Result<Self> {
        match *self {}
    }
    fn softmax_last(&self, _: &Layout, _: bool) -> Result<Self> {
        match *self {}
    }
    fn softmax_last_bwd(&self, _: &Layout, _: &Self, _: &Layout, _: bool) -> Result<Self> {
        match *self {}
    }
    fn norm_last(&self, _: &Layout, _: f64, _: bool) -> Result<(Self, Self)> {
        match *self {}
    }
    fn norm_last_bwd(&self, _: &Self, _: &Self, _: &Layout, _: bool) -> Result<Self> {
        match *self {}
    }
    fn attention_fwd(&self, _: &Self, _: &Self, _: AttnDims) -> Result<(Self, Self)> {
        match *self {}
    }
    fn attention_bwd(
        &self,
        _: &Self,
        _: &Self,
        _: &Self,
        _: &Self,
        _: AttnDims,
    ) -> Result<(Self, Self, Self)> {
        match *self {}
    }
}
