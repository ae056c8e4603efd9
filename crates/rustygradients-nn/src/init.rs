//! Parameter initialisers. Each returns a leaf tensor that requires grad; the values come from the
//! global seeded generator (`manual_seed`), so a seed fixes a model's initial weights.

use rustygradients_core::{DType, Device, Result, Shape, Tensor};

/// Normal(0, std) values.
pub fn normal(shape: impl Into<Shape>, std: f64, dtype: DType, device: Device) -> Result<Tensor> {
    Tensor::randn(shape, DType::F64, device)?
        .mul_scalar(std)?
        .to_dtype(dtype)?
        .requires_grad_(true)
}

/// Uniform values in `[-bound, bound)` (PyTorch's default `Linear` initialisation uses
/// `bound = 1/sqrt(fan_in)`).
pub fn uniform(
    shape: impl Into<Shape>,
    bound: f64,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    Tensor::rand(shape, DType::F64, device)?
        .affine(2.0 * bound, -bound)?
        .to_dtype(dtype)?
        .requires_grad_(true)
}

/// A constant.
pub fn constant(
    shape: impl Into<Shape>,
    value: f64,
    dtype: DType,
    device: Device,
) -> Result<Tensor> {
    Tensor::full(value, shape, dtype, device)?.requires_grad_(true)
}
