//! `index_select`, `gather` and `scatter_add` on the GPU. Shapes are checked on the host as on
//! the CPU; index values are checked by the kernels, which record the first bad one for the next
//! synchronisation instead of reading outside a tensor.

use super::compile::Module;
use super::layout::KLay;
use super::storage::{sfx, CudaStorage};
use crate::backend::{check_index_shape, BackendStorage};
use crate::{DType, Error, Layout, Result, Shape};

/// The indices as `i64` with the layout to read them through: `i64` indices are used in place,
/// others converted (contiguously) on the device.
fn ids_i64<'a>(
    op: &'static str,
    ids: &'a CudaStorage,
    il: &Layout,
    keep: &'a mut Option<CudaStorage>,
) -> Result<(&'a CudaStorage, Layout)> {
    match ids.dtype() {
        DType::I64 => Ok((ids, il.clone())),
        DType::U32 | DType::U8 => {
            let converted = keep.insert(ids.to_dtype(il, DType::I64)?);
            Ok((converted, Layout::contiguous(il.shape().clone())))
        }
        other => Err(Error::UnsupportedDType {
            op,
            got: other,
            expected: "an integer index dtype (i64, u32 or u8)",
        }),
    }
}

pub(super) fn index_select(
    s: &CudaStorage,
    l: &Layout,
    ids: &CudaStorage,
    il: &Layout,
    dim: usize,
) -> Result<CudaStorage> {
    let op = "index_select";
    let dev = s.dev();
    let mut keep = None;
    let (ids, il) = ids_i64(op, ids, il, &mut keep)?;
    let dense;
    let (ids, id0) = if il.is_contiguous() {
        (ids, il.offset())
    } else {
        dense = ids.copy_strided(&il)?;
        (&dense, 0)
    };
    let n_ids = il.elem_count();
    let size = l.dims()[dim];
    let inner: usize = l.dims()[dim + 1..].iter().product();
    let mut dims = l.dims().to_vec();
    dims[dim] = n_ids;
    let n: usize = dims.iter().product();
    let out = CudaStorage::alloc(dev, op, n, s.dtype())?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function(
        op,
        Module::Indexing,
        &format!("index_select_{}", sfx(s.dtype())),
    )?;
    let lx = KLay::of(l).map_err(|m| dev.error(op, m))?;
    let (nn, x, ip, ni, sz, inn, o, err) = (
        n as i64,
        s.ptr(0),
        ids.ptr(id0),
        n_ids as i64,
        size as i64,
        inner as i64,
        out.ptr(0),
        dev.0.err,
    );
    dev.launch(
        op,
        &f,
        super::storage::grid(n),
        super::storage::BLOCK,
        &mut args![nn, x, lx, ip, ni, sz, inn, o, err],
    )?;
    Ok(out)
}

pub(super) fn gather(
    s: &CudaStorage,
    l: &Layout,
    ids: &CudaStorage,
    il: &Layout,
    dim: usize,
) -> Result<CudaStorage> {
    let op = "gather";
    check_index_shape(op, l, il, dim)?;
    let dev = s.dev();
    let mut keep = None;
    let (ids, il) = ids_i64(op, ids, il, &mut keep)?;
    let n = il.elem_count();
    let out = CudaStorage::alloc(dev, op, n, s.dtype())?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function(op, Module::Indexing, &format!("gather_{}", sfx(s.dtype())))?;
    let exact = |x: &Layout| KLay::exact(x).map_err(|m| dev.error(op, m));
    let (nn, x, lx, ip, li, d, o, err) = (
        n as i64,
        s.ptr(0),
        exact(l)?,
        ids.ptr(0),
        exact(&il)?,
        dim as i32,
        out.ptr(0),
        dev.0.err,
    );
    dev.launch(
        op,
        &f,
        super::storage::grid(n),
        super::storage::BLOCK,
        &mut args![nn, x, lx, ip, li, d, o, err],
    )?;
    Ok(out)
}

pub(super) fn scatter_add(
    s: &CudaStorage,
    l: &Layout,
    ids: &CudaStorage,
    il: &Layout,
    src: &CudaStorage,
    sl: &Layout,
    dim: usize,
) -> Result<CudaStorage> {
    let out = s.copy_strided(l)?;
    scatter_add_into(&out, l, ids, il, src, sl, dim)?;
    Ok(out)
}

/// [`scatter_add`] into `out` itself, a dense tensor of `l`'s shape.
pub(super) fn scatter_add_into(
    out: &CudaStorage,
    l: &Layout,
    ids: &CudaStorage,
    il: &Layout,
    src: &CudaStorage,
    sl: &Layout,
    dim: usize,
) -> Result<()> {
    let op = "scatter_add";
    check_index_shape(op, l, il, dim)?;
    check_index_shape(op, sl, il, usize::MAX)?;
    let s = out;
    if s.dtype() != src.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            lhs: s.dtype(),
            rhs: src.dtype(),
        });
    }
    let dev = s.dev();
    let mut keep = None;
    let (ids, il) = ids_i64(op, ids, il, &mut keep)?;
    let n = il.elem_count();
    if n == 0 {
        return Ok(());
    }
    let f = dev.function(
        op,
        Module::Indexing,
        &format!("scatter_add_{}", sfx(s.dtype())),
    )?;
    let exact = |x: &Layout| KLay::exact(x).map_err(|m| dev.error(op, m));
    let out_l = Layout::contiguous(Shape::new(l.dims().to_vec()));
    let (nn, o, lo, ip, li, sp, ls, d, err) = (
        n as i64,
        out.ptr(0),
        exact(&out_l)?,
        ids.ptr(0),
        exact(&il)?,
        src.ptr(0),
        exact(sl)?,
        dim as i32,
        dev.0.err,
    );
    dev.launch(
        op,
        &f,
        super::storage::grid(n),
        super::storage::BLOCK,
        &mut args![nn, o, lo, ip, li, sp, ls, d, err],
    )?;
    Ok(())
}
