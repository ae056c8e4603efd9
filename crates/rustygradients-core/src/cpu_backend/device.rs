//! The CPU as a [`BackendDevice`]: host buffers are its storage, so moving data onto it is free.

use super::HostBuffer;
use crate::backend::{BackendDevice, BackendStorage, Distribution};
use crate::{random, DType, Layout, Result};

/// The host CPU's handle (it keeps no state).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuDevice;

impl BackendDevice for CpuDevice {
    type Storage = HostBuffer;

    fn storage_from_host(&self, host: HostBuffer) -> Result<HostBuffer> {
        Ok(host)
    }
    fn zeros(&self, n: usize, dtype: DType) -> Result<HostBuffer> {
        Ok(HostBuffer::full(n, 0.0, dtype))
    }
    fn full(&self, n: usize, value: f64, dtype: DType) -> Result<HostBuffer> {
        Ok(HostBuffer::full(n, value, dtype))
    }
    fn arange(&self, n: usize, start: f64, step: f64, dtype: DType) -> Result<HostBuffer> {
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        HostBuffer::from_vec(v).to_dtype(&Layout::contiguous(n), dtype)
    }
    fn rand(&self, n: usize, dtype: DType, dist: Distribution) -> Result<HostBuffer> {
        let v = match dist {
            Distribution::Uniform => random::uniform(n),
            Distribution::Normal => random::normal(n),
        };
        HostBuffer::from_vec(v).to_dtype(&Layout::contiguous(n), dtype)
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn memory_stats(&self) -> Result<Option<(u64, u64)>> {
        Ok(None)
    }
    fn reset_peak_memory(&self) -> Result<()> {
        Ok(())
    }
}
