//! Reductions: the layout is permuted so that each output's run is consecutive, then one block
//! per output folds its run (see `kernels/reduce.cu`).

use super::compile::Module;
use super::layout::KLay;
use super::storage::CudaStorage;
use crate::backend::{BackendStorage, ReduceOp};
use crate::{DType, Error, Layout, Result};

/// Threads per block (`RBLOCK` in the kernel).
const RBLOCK: u32 = 256;

pub(super) fn reduce(
    s: &CudaStorage,
    l: &Layout,
    op: ReduceOp,
    dims: &[usize],
) -> Result<CudaStorage> {
    let name = op.name();
    let rank = l.shape().rank();
    let mut perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    let n_out: usize = perm.iter().map(|&d| l.dims()[d]).product();
    perm.extend_from_slice(dims);
    let pl = l.permute(&perm);
    let r: usize = dims.iter().map(|&d| l.dims()[d]).product();
    if r == 0 && op != ReduceOp::Sum {
        return Err(Error::EmptyTensor {
            op: name,
            shape: l.shape().clone(),
        });
    }
    let dt = s.dtype();
    let sfx = super::storage::sfx(dt);
    let (kernel, out_dtype, max) = match op {
        ReduceOp::Sum if dt.is_int() => (format!("sum_{sfx}"), DType::I64, 0i32),
        ReduceOp::Sum => (format!("sum_{sfx}"), dt, 0),
        ReduceOp::Max => (format!("extreme_{sfx}"), dt, 1),
        ReduceOp::Min => (format!("extreme_{sfx}"), dt, 0),
        ReduceOp::ArgMax => (format!("arg_extreme_{sfx}"), DType::I64, 1),
        ReduceOp::ArgMin => (format!("arg_extreme_{sfx}"), DType::I64, 0),
    };
    let dev = s.dev();
    let out = CudaStorage::alloc(dev, name, n_out, out_dtype)?;
    if n_out == 0 {
        return Ok(out);
    }
    let blocks = u32::try_from(n_out).map_err(|_| {
        dev.error(
            name,
            format!("{n_out} outputs are more than one launch holds"),
        )
    })?;
    let f = dev.function(name, Module::Reduce, &kernel)?;
    let kl = KLay::of(&pl).map_err(|m| dev.error(name, m))?;
    let (x, rr, o) = (s.ptr(0), r as i64, out.ptr(0));
    if op == ReduceOp::Sum {
        dev.launch(name, &f, blocks, RBLOCK, &mut args![x, kl, rr, o])?;
    } else {
        dev.launch(name, &f, blocks, RBLOCK, &mut args![x, kl, rr, max, o])?;
    }
    Ok(out)
}
