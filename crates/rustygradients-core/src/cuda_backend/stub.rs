//! The CUDA backend of a build without the `cuda` feature: the types exist so that code and
//! errors can name them, but no value of them can be made, and opening a GPU returns
//! [`Error::DeviceUnavailable`].

use crate::backend::{
    AdamHyper, AttnDims, BackendDevice, BackendStorage, BinaryOp, CmpOp, Distribution, ReduceOp,
    UnaryOp,
};
use crate::host::HostBuffer;
use crate::{DType, Device, Error, Layout, Result};

/// A GPU's handle; none exists without the `cuda` feature.
#[derive(Debug, Clone)]
pub enum CudaDevice {}

impl CudaDevice {
    /// Fails: this build has no CUDA support.
    pub fn get(ordinal: usize) -> Result<CudaDevice> {
        Err(Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            msg: "this build has no CUDA support; rebuild with `--features cuda`".into(),
        })
    }
}

impl BackendDevice for CudaDevice {
    type Storage = CudaStorage;
    fn storage_from_host(&self, _: HostBuffer) -> Result<CudaStorage> {
        match *self {}
    }
    fn zeros(&self, _: usize, _: DType) -> Result<CudaStorage> {
        match *self {}
    }
    fn full(&self, _: usize, _: f64, _: DType) -> Result<CudaStorage> {
        match *self {}
    }
    fn arange(&self, _: usize, _: f64, _: f64, _: DType) -> Result<CudaStorage> {
        match *self {}
    }
    fn rand(&self, _: usize, _: DType, _: Distribution) -> Result<CudaStorage> {
        match *self {}
    }
    fn synchronize(&self) -> Result<()> {
        match *self {}
    }
    fn memory_stats(&self) -> Result<Option<(u64, u64)>> {
        match *self {}
    }
    fn reset_peak_memory(&self) -> Result<()> {
        match *self {}
    }
}

/// No FlashAttention without the `cuda` feature.
pub(crate) fn flash_applies(_: DType, _: &AttnDims) -> bool {
    false
}

/// GPU memory; none exists without the `cuda` feature.
#[derive(Debug, Clone)]
pub enum CudaStorage {}

impl CudaStorage {
    pub(crate) fn sum_sq_many(items: &[(&CudaStorage, usize)]) -> Result<CudaStorage> {
        match *items[0].0 {}
    }

    pub(crate) fn scale_many(
        _: &mut [(&mut CudaStorage, usize)],
        coef: &CudaStorage,
    ) -> Result<()> {
        match *coef {}
    }

    pub(crate) fn linear(
        &self,
        _: &CudaStorage,
        _: Option<&CudaStorage>,
        _: (usize, usize, usize),
        _: Option<&CudaStorage>,
    ) -> Result<Option<CudaStorage>> {
        match *self {}
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn adam_step_shadowed(
        _: &mut [(&mut Self, &mut Self, &mut Self, &Self)],
        _: &mut [Option<&mut Self>],
        _: AdamHyper,
        _: Option<&Self>,
    ) -> Result<()> {
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_bwd_packed(
        &self,
        _: &CudaStorage,
        _: &CudaStorage,
        _: &CudaStorage,
        _: &CudaStorage,
        _: &CudaStorage,
        _: &AttnDims,
    ) -> Result<Option<CudaStorage>> {
        match *self {}
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn linear_wgrad(
        &self,
        _: &CudaStorage,
        _: (usize, usize, usize),
        _: bool,
        _: DType,
    ) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
        match *self {}
    }

    #[allow(clippy::type_complexity)]
    pub(crate) fn linear_gelu(
        &self,
        _: &CudaStorage,
        _: Option<&CudaStorage>,
        _: (usize, usize, usize),
        _: bool,
    ) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
        match *self {}
    }

    pub(crate) fn linear_gelu_dgrad(
        &self,
        _: &CudaStorage,
        _: &CudaStorage,
        _: (usize, usize, usize),
    ) -> Result<Option<CudaStorage>> {
        match *self {}
    }

    pub(crate) fn cross_entropy_bwd_in_place(
        &mut self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &CudaStorage,
        _: Option<i64>,
    ) -> Result<()> {
        match *self {}
    }

    pub(crate) fn scatter_add_in_place(
        &mut self,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: usize,
    ) -> Result<()> {
        match *self {}
    }

    pub(crate) fn cross_entropy_fwd_grad(
        &mut self,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: f64,
        _: Option<i64>,
    ) -> Result<CudaStorage> {
        match *self {}
    }

    pub(crate) fn cross_entropy_grad_rescale(&mut self, _: &CudaStorage, _: f64) -> Result<()> {
        match *self {}
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_affine(
        &self,
        _: (usize, usize),
        _: Option<&CudaStorage>,
        _: Option<&CudaStorage>,
        _: f64,
        _: bool,
        _: DType,
    ) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
        match *self {}
    }

    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(crate) fn norm_affine_bwd(
        &self,
        _: Option<&CudaStorage>,
        _: &CudaStorage,
        _: &CudaStorage,
        _: &CudaStorage,
        _: (usize, usize),
        _: bool,
        _: (bool, bool),
        _: Option<&mut CudaStorage>,
    ) -> Result<(
        Option<CudaStorage>,
        Option<CudaStorage>,
        Option<CudaStorage>,
    )> {
        match *self {}
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
    fn to_host(&self, _: &Layout) -> Result<HostBuffer> {
        match *self {}
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
    fn cross_entropy_fwd(
        &self,
        _: &Layout,
        _: &Self,
        _: &Layout,
        _: Option<i64>,
    ) -> Result<(Self, Self)> {
        match *self {}
    }
    fn cross_entropy_bwd(
        &self,
        _: &Self,
        _: &Layout,
        _: &Self,
        _: &Self,
        _: Option<i64>,
    ) -> Result<Self> {
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
        _: &Self,
        _: AttnDims,
    ) -> Result<(Self, Self, Self)> {
        match *self {}
    }
}
