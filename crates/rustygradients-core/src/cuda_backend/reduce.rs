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
    let kl = KLay::of(&pl).map_err(|m| dev.error(name, m))?;
    // Summing the leading dims of a contiguous float tensor (a bias gradient): column sums.
    let leading = dims.iter().enumerate().all(|(i, &d)| i == d) && dims.len() < rank;
    // Any number of rows: a few (a position embedding's gradient summed over the batch) as
    // well as many; one block per output would leave nearly every thread idle there.
    if op == ReduceOp::Sum && dt.is_float() && leading && l.is_contiguous() {
        return column_sums(s, l.offset(), r, n_out, out);
    }
    if op == ReduceOp::Sum {
        if let Some(chunks) = split(n_out, r) {
            return sum_in_two_stages(s, kl, n_out, r, chunks, out);
        }
    }
    let f = dev.function(name, Module::Reduce, &kernel)?;
    let (x, rr, o) = (s.ptr(0), r as i64, out.ptr(0));
    if op == ReduceOp::Sum {
        dev.launch(name, &f, blocks, RBLOCK, &mut args![x, kl, rr, o])?;
    } else {
        dev.launch(name, &f, blocks, RBLOCK, &mut args![x, kl, rr, max, o])?;
    }
    Ok(out)
}

/// How many parts to split each run of a sum into, when there are too few outputs to fill the
/// GPU with one block each and the runs are long (a whole-tensor sum, a gradient norm).
fn split(n_out: usize, r: usize) -> Option<usize> {
    const ENOUGH_BLOCKS: usize = 512;
    const MIN_PART: usize = 16 * RBLOCK as usize;
    if n_out >= ENOUGH_BLOCKS || r < 2 * MIN_PART {
        return None;
    }
    Some((ENOUGH_BLOCKS / n_out).clamp(2, r / MIN_PART))
}

/// A sum as partial sums of `chunks` parts per run, then a sum of the partials (deterministic:
/// the same order every time).
fn sum_in_two_stages(
    s: &CudaStorage,
    kl: KLay,
    n_out: usize,
    r: usize,
    chunks: usize,
    out: CudaStorage,
) -> Result<CudaStorage> {
    let name = "sum";
    let dev = s.dev();
    let dt = s.dtype();
    let acc = match dt {
        DType::F64 => DType::F64,
        d if d.is_float() => DType::F32,
        _ => DType::I64,
    };
    let partial = CudaStorage::alloc(dev, name, n_out * chunks, acc)?;
    let f = dev.function(
        name,
        Module::Reduce,
        &format!("sum_partial_{}", super::storage::sfx(dt)),
    )?;
    let (x, rr, ch, len, p) = (
        s.ptr(0),
        r as i64,
        chunks as i64,
        r.div_ceil(chunks) as i64,
        partial.ptr(0),
    );
    let blocks = u32::try_from(n_out * chunks).map_err(|_| dev.error(name, "too many blocks"))?;
    dev.launch(name, &f, blocks, RBLOCK, &mut args![x, kl, rr, ch, len, p])?;
    // The second stage writes the output directly when it has the accumulation type.
    let total = if acc == out.dtype() {
        out
    } else {
        CudaStorage::alloc(dev, name, n_out, acc)?
    };
    let f = dev.function(
        name,
        Module::Reduce,
        &format!("sum_{}", super::storage::sfx(acc)),
    )?;
    let (pp, pl, rc, o) = (
        partial.ptr(0),
        KLay::contiguous(0),
        chunks as i64,
        total.ptr(0),
    );
    dev.launch(name, &f, n_out as u32, RBLOCK, &mut args![pp, pl, rc, o])?;
    if total.dtype() == dt || (dt.is_int() && total.dtype() == DType::I64) {
        Ok(total)
    } else {
        total.to_dtype(&crate::Layout::contiguous(n_out), dt)
    }
}

/// Sums of the `rows` rows of a contiguous `(rows, cols)` float tensor starting at `offset`.
fn column_sums(
    s: &CudaStorage,
    offset: usize,
    rows: usize,
    cols: usize,
    out: CudaStorage,
) -> Result<CudaStorage> {
    let name = "sum";
    let dev = s.dev();
    let sfx = super::storage::sfx(s.dtype());
    let col_blocks = cols.div_ceil(32);
    let parts = rows
        .div_ceil(64)
        .clamp(1, (4096 / col_blocks).max(1))
        .min(65535);
    let acc = if s.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let partial = CudaStorage::alloc(dev, name, parts * cols, acc)?;
    let f = dev.function(name, Module::Reduce, &format!("col_partial_{sfx}"))?;
    let (x, rr, cc, p) = (s.ptr(offset), rows as i64, cols as i64, partial.ptr(0));
    let gx = u32::try_from(col_blocks).map_err(|_| dev.error(name, "too many columns"))?;
    dev.launch_2d(
        name,
        &f,
        (gx, parts as u32),
        RBLOCK,
        &mut args![x, rr, cc, p],
    )?;
    let f = dev.function(name, Module::Reduce, &format!("col_final_{sfx}"))?;
    let (pp, np, o) = (partial.ptr(0), parts as i64, out.ptr(0));
    dev.launch(
        name,
        &f,
        super::storage::grid(cols),
        super::storage::BLOCK,
        &mut args![pp, np, cc, o],
    )?;
    Ok(out)
}
