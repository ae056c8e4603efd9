//! Multi-tensor kernels: the fused Adam/AdamW step, the sum of squares and the in-place scale
//! of gradient clipping. Up to [`ADAM_MAX`] tensors per launch, their addresses passed by value
//! (see `kernels/optim.cu`).

use super::compile::Module;
use super::storage::{sfx, CudaStorage};
use crate::backend::{AdamHyper, BackendStorage};
use crate::{Error, Result};

/// Parameters per launch (`ADAM_MAX` in the kernel).
const ADAM_MAX: usize = 32;

/// Addresses per tensor in an Adam batch (`ADAM_WIDTH`): parameter, moments, gradient, shadow.
const ADAM_WIDTH: usize = 5;

/// Mirrors `struct AdamBatch`.
#[repr(C)]
struct AdamBatch {
    ptrs: [u64; ADAM_WIDTH * ADAM_MAX],
    ends: [i64; ADAM_MAX],
    n: i32,
}

/// Elements per block of the multi-tensor kernels (`OPTIM_CHUNK` in the kernel): each block
/// works inside one tensor.
const CHUNK: usize = 4096;

/// Elements per block of the sum of squares (`SUMSQ_CHUNK`), which ends each block with a
/// reduction and an atomic add.
const SUMSQ_CHUNK: usize = 32768;

/// Calls `launch` once per [`ADAM_MAX`] tensors with their batch (each tensor's `WIDTH`
/// addresses side by side, and the running element counts) and the blocks it needs (one per
/// `chunk` elements of each tensor); batches of no elements launch nothing.
fn in_batches<const WIDTH: usize>(
    tensors: &[([u64; WIDTH], usize)],
    chunk: usize,
    mut launch: impl FnMut(&AdamBatch, u32) -> Result<()>,
) -> Result<()> {
    for group in tensors.chunks(ADAM_MAX) {
        let mut b = AdamBatch {
            ptrs: [0; ADAM_WIDTH * ADAM_MAX],
            ends: [0; ADAM_MAX],
            n: group.len() as i32,
        };
        let (mut total, mut blocks) = (0usize, 0usize);
        for (i, (ptrs, len)) in group.iter().enumerate() {
            b.ptrs[WIDTH * i..WIDTH * (i + 1)].copy_from_slice(ptrs);
            total += len;
            blocks += len.div_ceil(chunk);
            b.ends[i] = total as i64;
        }
        if total > 0 {
            let blocks = u32::try_from(blocks).map_err(|_| Error::InvalidArgument {
                op: "multi-tensor kernel",
                msg: format!("{total} elements in one batch are too many"),
            })?;
            launch(&b, blocks)?;
        }
    }
    Ok(())
}

/// The one dtype of `items`' storages (an error naming `op` and the first other one).
fn one_dtype<'a>(
    op: &'static str,
    mut items: impl Iterator<Item = &'a CudaStorage>,
) -> Result<crate::DType> {
    let first = items.next().ok_or_else(|| Error::InvalidArgument {
        op,
        msg: "no tensors".into(),
    })?;
    let dtype = first.dtype();
    match items.map(|s| s.dtype()).find(|&d| d != dtype) {
        Some(d) => Err(Error::DTypeMismatch {
            op,
            lhs: dtype,
            rhs: d,
        }),
        None => Ok(dtype),
    }
}

/// Mirrors `struct AdamConsts`.
#[repr(C)]
struct AdamConsts {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decay: f64,
    step_size: f64,
    bc2_sqrt: f64,
    decoupled: i32,
    half: i32,
    gscale: u64,
}

/// One step for every `(parameter, m, v, gradient)`: all contiguous, each of one length and
/// all of one float dtype.
pub(crate) fn adam_step(
    items: &mut [(
        &mut CudaStorage,
        &mut CudaStorage,
        &mut CudaStorage,
        &CudaStorage,
    )],
    h: AdamHyper,
) -> Result<()> {
    let mut none: Vec<Option<&mut CudaStorage>> = items.iter().map(|_| None).collect();
    adam_step_shadowed(items, &mut none, h, None)
}

/// [`adam_step`], also rewriting each given shadow (an f32 parameter's bf16 or f16 copy, all
/// of one dtype, one per item or `None`) from the updated parameter in the same pass; with
/// `grad_scale` (one f64 on the device), every gradient is read multiplied by it.
pub(crate) fn adam_step_shadowed(
    items: &mut [(
        &mut CudaStorage,
        &mut CudaStorage,
        &mut CudaStorage,
        &CudaStorage,
    )],
    shadows: &mut [Option<&mut CudaStorage>],
    h: AdamHyper,
    grad_scale: Option<&CudaStorage>,
) -> Result<()> {
    let op = "adam_step_";
    let Some(first) = items.first() else {
        return Ok(());
    };
    let dtype = first.0.dtype();
    let dev = first.0.dev().clone();
    for (p, m, v, g) in items.iter() {
        let n = p.elem_len();
        if m.elem_len() != n || v.elem_len() != n || g.elem_len() != n {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "parameter, moments and gradient differ in length: {n}, {}, {}, {}",
                    m.elem_len(),
                    v.elem_len(),
                    g.elem_len()
                ),
            });
        }
        for d in [p.dtype(), m.dtype(), v.dtype(), g.dtype()] {
            if d != dtype || !d.is_float() {
                return Err(Error::UnsupportedDType {
                    op,
                    got: d,
                    expected: "one floating-point dtype for parameter, moments and gradient",
                });
            }
        }
    }
    let step = h.step.max(1) as i32;
    let mut k = AdamConsts {
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        decay: 1.0 - h.lr * h.weight_decay,
        step_size: h.lr / (1.0 - h.beta1.powi(step)),
        bc2_sqrt: (1.0 - h.beta2.powi(step)).sqrt(),
        decoupled: h.decoupled as i32,
        half: 0,
        gscale: 0,
    };
    if let Some(c) = grad_scale {
        if c.dtype() != crate::DType::F64 || c.elem_len() != 1 {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "the gradient scale must be one f64, not {} {:?} elements",
                    c.elem_len(),
                    c.dtype()
                ),
            });
        }
        k.gscale = c.ptr(0);
    }
    if shadows.len() != items.len() {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("{} shadows for {} parameters", shadows.len(), items.len()),
        });
    }
    for (s, (p, ..)) in shadows.iter().zip(items.iter()) {
        let Some(s) = s else { continue };
        let code = match s.dtype() {
            crate::DType::BF16 => 1,
            crate::DType::F16 => 2,
            d => {
                return Err(Error::UnsupportedDType {
                    op,
                    got: d,
                    expected: "a bf16 or f16 shadow",
                })
            }
        };
        if (k.half != 0 && k.half != code)
            || s.elem_len() != p.elem_len()
            || dtype != crate::DType::F32
        {
            return Err(Error::InvalidArgument {
                op,
                msg: "shadows must be one half dtype, of their f32 parameter's length".into(),
            });
        }
        k.half = code;
    }
    let f = dev.function(op, Module::Optim, &format!("adam_{}", sfx(dtype)))?;
    let tensors: Vec<_> = items
        .iter()
        .zip(shadows.iter())
        .map(|((p, m, v, g), s)| {
            let sp = s.as_ref().map_or(0, |s| s.ptr(0));
            ([p.ptr(0), m.ptr(0), v.ptr(0), g.ptr(0), sp], p.elem_len())
        })
        .collect();
    in_batches(&tensors, CHUNK, |b, blocks| {
        dev.launch(op, &f, blocks, super::storage::BLOCK, &mut args![*b, k])
    })
}

/// `x *= coef` in place for the first `len` elements of each storage in `items` (one float
/// dtype); `coef` is a one-element f64 storage on the same device.
pub(crate) fn scale_many(
    items: &mut [(&mut CudaStorage, usize)],
    coef: &CudaStorage,
) -> Result<()> {
    let op = "mul_many_";
    if items.is_empty() {
        return Ok(());
    }
    let dtype = one_dtype(op, items.iter().map(|s| &*s.0))?;
    let dev = coef.dev();
    let f = dev.function(op, Module::Optim, &format!("scale_many_{}", sfx(dtype)))?;
    let tensors: Vec<_> = items.iter().map(|(s, len)| ([s.ptr(0)], *len)).collect();
    let c = coef.ptr(0);
    in_batches(&tensors, CHUNK, |b, blocks| {
        dev.launch(op, &f, blocks, super::storage::BLOCK, &mut args![*b, c])
    })
}

/// `Σ x²` over the first `len` elements of each storage in `items` (one float dtype), as a
/// one-element f64 storage, in one launch per [`ADAM_MAX`] tensors.
pub(crate) fn sum_sq_many(items: &[(&CudaStorage, usize)]) -> Result<CudaStorage> {
    let op = "sum_sq_many";
    let dtype = one_dtype(op, items.iter().map(|s| s.0))?;
    let dev = items[0].0.dev();
    let out = crate::backend::BackendDevice::zeros(dev, 1, crate::DType::F64)?;
    let f = dev.function(op, Module::Optim, &format!("sumsq_{}", sfx(dtype)))?;
    let tensors: Vec<_> = items.iter().map(|(s, len)| ([s.ptr(0)], *len)).collect();
    let o = out.ptr(0);
    in_batches(&tensors, SUMSQ_CHUNK, |b, blocks| {
        dev.launch(op, &f, blocks, super::storage::BLOCK, &mut args![*b, o])
    })?;
    Ok(out)
}
