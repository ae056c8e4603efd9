//! Making tensors: constants, ranges, seeded random values, and host data.

use crate::backend::Distribution;
use crate::host::HostBuffer;
use crate::storage::Storage;
use crate::{random, DType, Device, Error, Result, Shape, Tensor, WithDType};

/// Refuses sizes no allocation can satisfy (instead of aborting the process).
fn check_size(op: &'static str, n: usize, dtype: DType) -> Result<()> {
    if n.checked_mul(dtype.size_in_bytes())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("{n} elements of {dtype:?} cannot be allocated"),
        });
    }
    Ok(())
}

impl Tensor {
    /// A CPU tensor of `shape` whose `dtype` elements are read in place, without a copy, from
    /// `bytes` starting at byte `offset` (a memory-mapped file, for instance; the `Arc` keeps
    /// the bytes alive as long as any tensor uses them). Elements are little-endian as on the
    /// host. Returns `Ok(None)` when the start is not aligned for the dtype (copy then).
    /// Writing to the tensor in place gives it a copy of its own; `bytes` never change.
    pub fn from_shared_bytes(
        bytes: crate::SharedBytes,
        offset: usize,
        dtype: DType,
        shape: impl Into<Shape>,
    ) -> Result<Option<Tensor>> {
        let shape = shape.into();
        let n = shape.elem_count();
        let available = (*bytes).as_ref().len().saturating_sub(offset);
        if n.checked_mul(dtype.size_in_bytes())
            .is_none_or(|need| need > available)
        {
            return Err(Error::InvalidArgument {
                op: "from_shared_bytes",
                msg: format!(
                    "{n} elements of {dtype:?} from byte {offset} do not fit in {} bytes",
                    (*bytes).as_ref().len()
                ),
            });
        }
        Ok(HostBuffer::borrowed(dtype, bytes, offset, n)
            .map(|s| Tensor::from_storage(Storage::Cpu(s), shape, None)))
    }

    /// A tensor of `shape` filled with `value` (converted to `dtype`).
    pub fn full(
        value: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        check_size("full", shape.elem_count(), dtype)?;
        let s = Storage::full(shape.elem_count(), value, dtype, device)?;
        Ok(Tensor::from_storage(s, shape, None))
    }
    /// A tensor of `shape` filled with zeros (`torch.zeros`). Fails with
    /// [`Error::InvalidArgument`] for sizes no allocation can hold.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        check_size("zeros", shape.elem_count(), dtype)?;
        Ok(Tensor::from_storage(
            Storage::zeros(shape.elem_count(), dtype, device)?,
            shape,
            None,
        ))
    }
    /// A tensor of `shape` filled with ones (`torch.ones`).
    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(1.0, shape, dtype, device)
    }
    /// Same shape, dtype and device, filled with `value`.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Self::full(value, self.shape().clone(), self.dtype(), self.device())
    }
    /// Zeros of the same shape, dtype and device (`torch.zeros_like`).
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape().clone(), self.dtype(), self.device())
    }
    /// Ones of the same shape, dtype and device (`torch.ones_like`).
    pub fn ones_like(&self) -> Result<Tensor> {
        self.full_like(1.0)
    }

    /// Values `start, start+step, ...` below `end` (above it for a negative step).
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::InvalidArgument {
                op: "arange",
                msg: format!(
                    "start={start}, end={end}, step={step}: need finite values and a non-zero step"
                ),
            });
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        check_size("arange", n, dtype)?;
        let s = Storage::arange(n, start, step, dtype, device)?;
        Ok(Tensor::from_storage(s, n, None))
    }

    /// `steps` evenly spaced values from `start` to `end` inclusive.
    pub fn linspace(
        start: f64,
        end: f64,
        steps: usize,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let v: Vec<f64> = match steps {
            0 => vec![],
            1 => vec![start],
            _ => {
                let step = (end - start) / (steps - 1) as f64;
                (0..steps)
                    .map(|i| {
                        if i == steps - 1 {
                            end
                        } else {
                            start + i as f64 * step
                        }
                    })
                    .collect()
            }
        };
        Tensor::from_vec(v, steps, device)?.to_dtype(dtype)
    }

    fn check_float_dtype(op: &'static str, dtype: DType) -> Result<()> {
        if dtype.is_float() {
            Ok(())
        } else {
            Err(Error::UnsupportedDType {
                op,
                got: dtype,
                expected: "a floating-point dtype",
            })
        }
    }

    /// Uniform samples in `[0, 1)` from the global generator (see [`crate::manual_seed`]).
    pub fn rand(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Self::check_float_dtype("rand", dtype)?;
        let shape = shape.into();
        check_size("rand", shape.elem_count(), DType::F64)?;
        let s = Storage::rand(shape.elem_count(), dtype, Distribution::Uniform, device)?;
        Ok(Tensor::from_storage(s, shape, None))
    }

    /// Standard normal samples from the global generator (see [`crate::manual_seed`]).
    pub fn randn(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Self::check_float_dtype("randn", dtype)?;
        let shape = shape.into();
        check_size("randn", shape.elem_count(), DType::F64)?;
        let s = Storage::rand(shape.elem_count(), dtype, Distribution::Normal, device)?;
        Ok(Tensor::from_storage(s, shape, None))
    }

    /// Uniform integers in `[low, high)`, as `i64`.
    pub fn randint(low: i64, high: i64, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        if low >= high {
            return Err(Error::InvalidArgument {
                op: "randint",
                msg: format!("empty range [{low}, {high})"),
            });
        }
        let shape = shape.into();
        Tensor::from_vec(
            random::int_range(shape.elem_count(), low, high),
            shape,
            device,
        )
    }

    /// A random permutation of `0..n` as `i64` (PyTorch's `torch.randperm`), from the global
    /// seeded generator.
    ///
    /// ```
    /// use rustygradients_core::{manual_seed, Device, Tensor};
    /// manual_seed(1);
    /// let mut p = Tensor::randperm(5, Device::Cpu)?.to_vec::<i64>()?;
    /// p.sort();
    /// assert_eq!(p, [0, 1, 2, 3, 4]);
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn randperm(n: usize, device: Device) -> Result<Tensor> {
        check_size("randperm", n, DType::I64)?;
        Tensor::from_vec(random::permutation(n), n, device)
    }

    /// Takes ownership of host data laid out row-major in `shape`.
    pub fn from_vec<T: WithDType>(
        data: Vec<T>,
        shape: impl Into<Shape>,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::ElementCountMismatch {
                op: "from_vec",
                len: data.len(),
                shape,
            });
        }
        Ok(Tensor::from_storage(
            Storage::from_host(HostBuffer::from_vec(data), device)?,
            shape,
            None,
        ))
    }

    /// Copies host data laid out row-major in `shape`.
    pub fn from_slice<T: WithDType>(
        data: &[T],
        shape: impl Into<Shape>,
        device: Device,
    ) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// A 0-dimensional tensor holding `value`.
    pub fn scalar<T: WithDType>(value: T, device: Device) -> Result<Tensor> {
        Self::from_vec(vec![value], (), device)
    }
}
