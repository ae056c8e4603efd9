//! GPU memory of one dtype and the [`BackendStorage`] ops on it: each op checks its operands on
//! the host, allocates its output from the device's pool and queues kernels on the device's
//! stream. Nothing here waits for the GPU except the copies to the host.

use cudarc::driver::result as drv;
use half::{bf16, f16};

use super::compile::Module;
use super::device::CudaDevice;
use super::layout::KLay;
use crate::backend::{
    same_shape, AdamHyper, AttnDims, BackendDevice, BackendStorage, BinaryOp, CmpOp, Distribution,
    ReduceOp, UnaryOp,
};
use crate::host::HostBuffer;
use crate::{random, DType, Device, Error, Layout, Result, WithDType};

/// Threads per block of the elementwise kernels.
pub(super) const BLOCK: u32 = 256;

/// Device memory, returned to the pool (in stream order) when dropped.
struct DevBuf {
    ptr: u64,
    dev: CudaDevice,
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        self.dev.free(self.ptr);
    }
}

/// `len` elements of `dtype` on one GPU.
pub struct CudaStorage {
    buf: DevBuf,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?}, {} elements, {:?})",
            self.dtype, self.len, self.buf.dev
        )
    }
}

/// The kernel-name suffix of a dtype.
pub(super) fn sfx(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I64 => "i64",
        DType::U32 => "u32",
        DType::U8 => "u8",
    }
}

/// Blocks for a grid-stride loop over `n` elements.
pub(super) fn grid(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, 8192) as u32
}

/// Threads per block of a row kernel over rows of `w`: a multiple of 32, at most 1024.
pub(super) fn row_block(w: usize) -> u32 {
    (w.next_power_of_two()).clamp(32, 1024) as u32
}

pub(super) fn float_only(op: &'static str, d: DType) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            op,
            got: d,
            expected: "a floating-point dtype",
        })
    }
}

fn same_dtype(op: &'static str, a: DType, b: DType) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs: a, rhs: b })
    }
}

/// Rows of a contiguous layout: `(offset, width)`.
fn rows_of(op: &'static str, l: &Layout) -> Result<(usize, usize)> {
    if !l.is_contiguous() {
        return Err(Error::NotContiguous {
            op,
            shape: l.shape().clone(),
            strides: l.strides().to_vec(),
            target: l.shape().clone(),
        });
    }
    Ok((l.offset(), l.dims().last().copied().unwrap_or(1)))
}

fn download<T: WithDType>(
    dev: &CudaDevice,
    op: &'static str,
    ptr: u64,
    n: usize,
) -> Result<Vec<T>> {
    let mut v = vec![T::zero(); n];
    if n > 0 {
        // SAFETY: `ptr` addresses at least `n` elements of `T` on this device's stream.
        unsafe { drv::memcpy_dtoh_async(&mut v, ptr, dev.0.stream.cu_stream()) }
            .map_err(|e| dev.error(op, e))?;
    }
    Ok(v)
}

/// The normalisation with its affine parts fused (see `rows::layer_norm_fwd`) and the
/// multi-tensor sum of squares (gradient clipping); the tensor layer calls these for GPU
/// tensors and composes the ops from primitives elsewhere.
impl CudaStorage {
    /// One Adam step for every `(parameter, m, v, gradient)`, rewriting each given shadow (a
    /// bf16 or f16 copy of its f32 parameter) in the same kernel, each gradient read
    /// multiplied by `grad_scale` (one f64) when given.
    #[allow(clippy::type_complexity)]
    pub(crate) fn adam_step_shadowed(
        items: &mut [(&mut Self, &mut Self, &mut Self, &Self)],
        shadows: &mut [Option<&mut Self>],
        h: AdamHyper,
        grad_scale: Option<&Self>,
    ) -> Result<()> {
        super::optim::adam_step_shadowed(items, shadows, h, grad_scale)
    }

    /// `Σ x²` over the first `len` elements of each storage, as a one-element f64 storage.
    pub(crate) fn sum_sq_many(items: &[(&CudaStorage, usize)]) -> Result<CudaStorage> {
        super::optim::sum_sq_many(items)
    }

    /// `x *= coef` in place over the first `len` elements of each storage (`coef`: one f64).
    pub(crate) fn scale_many(
        items: &mut [(&mut CudaStorage, usize)],
        coef: &CudaStorage,
    ) -> Result<()> {
        super::optim::scale_many(items, coef)
    }

    /// `(y, mean, 1/σ)` for `(rows, c)` rows of this contiguous storage from element 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_affine(
        &self,
        (rows, c): (usize, usize),
        w: Option<&CudaStorage>,
        b: Option<&CudaStorage>,
        eps: f64,
        rms: bool,
        out: DType,
    ) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
        super::rows::layer_norm_fwd(self, 0, rows, c, w, b, eps, rms, out)
    }

    /// `(dx, f32 dw, f32 db)` from the forward's input (`self`), statistics and `g`; `dx` is
    /// added into `acc` instead when given (and `None` returned for it).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub(crate) fn norm_affine_bwd(
        &self,
        w: Option<&CudaStorage>,
        mean: &CudaStorage,
        rstd: &CudaStorage,
        g: &CudaStorage,
        dims: (usize, usize),
        rms: bool,
        want: (bool, bool),
        acc: Option<&mut CudaStorage>,
    ) -> Result<(
        Option<CudaStorage>,
        Option<CudaStorage>,
        Option<CudaStorage>,
    )> {
        super::rows::layer_norm_bwd(self, w, mean, rstd, g, dims, rms, want, acc)
    }
}

/// A linear layer's GEMMs with the bias fused in (cuBLASLt epilogues, see `lt.rs`); `None`
/// where cuBLASLt cannot run them, and the tensor layer composes the op instead.
impl CudaStorage {
    /// `y (m, n) = self (m, k) · wᵀ + b (+ r)`, all dense from element 0.
    pub(crate) fn linear(
        &self,
        w: &CudaStorage,
        b: Option<&CudaStorage>,
        dims: (usize, usize, usize),
        r: Option<&CudaStorage>,
    ) -> Result<Option<CudaStorage>> {
        super::lt::linear_fwd(self, w, b, dims, r)
    }

    /// `(dW = selfᵀ · x, db = Σ_rows self)` for the gradient `self (m, n)` and input `x (m, k)`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn linear_wgrad(
        &self,
        x: &CudaStorage,
        dims: (usize, usize, usize),
        want_bias: bool,
        out: DType,
    ) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
        super::lt::linear_wgrad(self, x, dims, want_bias, out)
    }

    /// The gradients of strided attention's q (`self`), k and v, the thirds of one fused
    /// projection, written into one buffer of its layout; `None` where only the separate
    /// gradients are available (see `cudnn_attn::backward_packed`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention_bwd_packed(
        &self,
        k: &CudaStorage,
        v: &CudaStorage,
        out: &CudaStorage,
        saved: &CudaStorage,
        g: &CudaStorage,
        dims: &AttnDims,
    ) -> Result<Option<CudaStorage>> {
        if !super::flash::saved_len_ok(saved, dims) {
            return Ok(None);
        }
        super::cudnn_attn::backward_packed(self, k, v, out, saved, g, dims)
    }

    /// `(gelu_tanh(pre), pre)` with `pre (m, n) = self (m, k) · wᵀ + b` from one GEMM; `pre`
    /// only when `keep_pre`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn linear_gelu(
        &self,
        w: &CudaStorage,
        b: Option<&CudaStorage>,
        dims: (usize, usize, usize),
        keep_pre: bool,
    ) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
        super::lt::linear_gelu_fwd(self, w, b, dims, keep_pre)
    }

    /// `(self · w) ⊙ gelu_tanh'(pre)` for the gradient `self (m, n)`, `w (n, h)`, `pre (m, h)`.
    pub(crate) fn linear_gelu_dgrad(
        &self,
        w: &CudaStorage,
        pre: &CudaStorage,
        dims: (usize, usize, usize),
    ) -> Result<Option<CudaStorage>> {
        super::lt::linear_gelu_dgrad(self, w, pre, dims)
    }
}

impl CudaStorage {
    /// The cross-entropy gradient of these logits written over them (see
    /// `BackendStorage::cross_entropy_bwd`): the backward pass then needs no second
    /// logits-sized buffer.
    pub(crate) fn cross_entropy_bwd_in_place(
        &mut self,
        targets: &CudaStorage,
        tl: &Layout,
        lse: &CudaStorage,
        g: &CudaStorage,
        ignore: Option<i64>,
    ) -> Result<()> {
        let t = targets.ids_i64("cross_entropy_backward", tl)?;
        let out = self.ptr(0);
        super::rows::cross_entropy_bwd_into(self, &t, lse, g, ignore, out)
    }
    /// `scatter_add` into this dense tensor of `l`'s shape itself.
    pub(crate) fn scatter_add_in_place(
        &mut self,
        l: &Layout,
        ids: &CudaStorage,
        il: &Layout,
        src: &CudaStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        super::indexing::scatter_add_into(self, l, ids, il, src, sl, dim)
    }
    /// Cross-entropy losses of these contiguous `(n, c)` logits, which are overwritten by their
    /// gradient at output gradient `scale` (see `Storage::cross_entropy_fwd_grad`).
    pub(crate) fn cross_entropy_fwd_grad(
        &mut self,
        l: &Layout,
        targets: &CudaStorage,
        tl: &Layout,
        scale: f64,
        ignore: Option<i64>,
    ) -> Result<CudaStorage> {
        rows_of("cross_entropy", l)?;
        let t = targets.ids_i64("cross_entropy", tl)?;
        super::rows::cross_entropy_fwd_grad(self, l.dims()[0], l.dims()[1], &t, scale, ignore)
    }
    /// Gradient rows written at `scale` by [`CudaStorage::cross_entropy_fwd_grad`] brought to
    /// the output gradient `g`, in place.
    pub(crate) fn cross_entropy_grad_rescale(&mut self, g: &CudaStorage, scale: f64) -> Result<()> {
        super::rows::cross_entropy_grad_rescale(self, g, scale)
    }
}

impl CudaStorage {
    pub(super) fn dev(&self) -> &CudaDevice {
        &self.buf.dev
    }
    /// The address of element `i`.
    pub(super) fn ptr(&self, i: usize) -> u64 {
        self.buf.ptr + (i * self.dtype.size_in_bytes()) as u64
    }
    /// Uninitialised memory for `n` elements.
    pub(super) fn alloc(
        dev: &CudaDevice,
        op: &'static str,
        n: usize,
        dtype: DType,
    ) -> Result<Self> {
        let bytes = n
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| dev.error(op, format!("{n} elements of {dtype:?} overflow")))?;
        Ok(CudaStorage {
            buf: DevBuf {
                ptr: dev.alloc(op, bytes)?,
                dev: dev.clone(),
            },
            len: n,
            dtype,
        })
    }
    /// The address of `l`'s first element when `l` is contiguous and that address is a
    /// multiple of `pack` bytes: the vectorised kernels (`*_vec_*`) then apply.
    fn packed(&self, l: &Layout, pack: usize) -> Option<u64> {
        let addr = self.ptr(0) + (l.offset() * self.dtype.size_in_bytes()) as u64;
        (l.is_contiguous() && addr.is_multiple_of(pack as u64)).then_some(addr)
    }
    /// Launches the vectorised kernel `kernel` (one thread per 16-byte pack) over `n` elements
    /// of this storage's dtype.
    fn launch_packed(
        &self,
        op: &'static str,
        kernel: &str,
        n: usize,
        args: &mut [*mut std::ffi::c_void],
    ) -> Result<()> {
        let dev = self.dev();
        let f = dev.function(op, Module::Elementwise, kernel)?;
        let lanes = 16 / self.dtype.size_in_bytes();
        dev.launch(op, &f, grid(n / lanes), BLOCK, args)
    }
    /// [`Self::write_into`] between matrices with contiguous, aligned rows (at least one side
    /// strided, the other strided alike or contiguous), 16 bytes per thread; `false` (nothing
    /// queued) for other layouts.
    fn rows_into(
        &self,
        op: &'static str,
        kind: &str,
        src_l: &Layout,
        dst: &mut Self,
        dst_l: &Layout,
    ) -> Result<bool> {
        let (ks, kd) = (self.klay(op, src_l)?, self.klay(op, dst_l)?);
        let Some((rows, cols, _)) = ks.rows().or(kd.rows()) else {
            return Ok(false);
        };
        let stride = |k: &KLay| match k.rows() {
            Some((r, c, s)) if (r, c) == (rows, cols) => Some(s),
            None if k.is_contiguous() => Some(cols),
            _ => None,
        };
        let (Some(srs), Some(drs)) = (stride(&ks), stride(&kd)) else {
            return Ok(false);
        };
        let elem = self.dtype.size_in_bytes();
        let lanes = (16 / elem) as i64;
        let (src, d) = (
            self.ptr(0) + (ks.offset() * elem) as u64,
            dst.ptr(0) + (kd.offset() * elem) as u64,
        );
        if cols % lanes != 0 || srs % lanes != 0 || drs % lanes != 0 || src % 16 != 0 || d % 16 != 0
        {
            return Ok(false);
        }
        let dev = self.dev();
        let name = format!("{kind}_rows_vec_{}", sfx(self.dtype));
        let f = dev.function(op, Module::Elementwise, &name)?;
        let packs = (rows * cols / lanes) as usize;
        dev.launch(
            op,
            &f,
            grid(packs),
            BLOCK,
            &mut args![rows, cols, src, srs, d, drs],
        )?;
        Ok(true)
    }

    fn klay(&self, op: &'static str, l: &Layout) -> Result<KLay> {
        KLay::of(l).map_err(|m| self.dev().error(op, m))
    }
    fn check_device(&self, op: &'static str, other: &CudaStorage) -> Result<()> {
        if self.dev().0.ordinal == other.dev().0.ordinal {
            Ok(())
        } else {
            Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: other.device(),
            })
        }
    }

    /// The indices `il` selects as contiguous `i64` (converted on the device when needed).
    fn ids_i64(&self, op: &'static str, il: &Layout) -> Result<CudaStorage> {
        if !matches!(self.dtype, DType::I64 | DType::U32 | DType::U8) {
            return Err(Error::UnsupportedDType {
                op,
                got: self.dtype,
                expected: "integer indices (i64, u32 or u8)",
            });
        }
        self.to_dtype(il, DType::I64)
    }

    /// The elements `l` selects converted to `dtype`, contiguous, in fresh storage.
    fn cast(&self, l: &Layout, dtype: DType) -> Result<Self> {
        let op = "to_dtype";
        let dev = self.dev();
        let n = l.elem_count();
        let out = CudaStorage::alloc(dev, op, n, dtype)?;
        let (from, to) = (self.dtype.size_in_bytes(), dtype.size_in_bytes());
        let lanes = 16 / from.max(to);
        let vec = matches!(
            (self.dtype, dtype),
            (DType::F32, DType::BF16 | DType::F16) | (DType::BF16 | DType::F16, DType::F32)
        );
        if let (true, Some(src)) = (vec && n > 0, self.packed(l, lanes * from)) {
            let name = format!("cast_vec_{}_{}", sfx(self.dtype), sfx(dtype));
            let f = dev.function(op, Module::Elementwise, &name)?;
            let (nn, dst) = (n as i64, out.ptr(0));
            dev.launch(op, &f, grid(n / lanes), BLOCK, &mut args![nn, src, dst])?;
        } else if n > 0 {
            let name = format!("cast_{}_{}", sfx(self.dtype), sfx(dtype));
            let f = dev.function(op, Module::Elementwise, &name)?;
            let (nn, src, kl, dst) = (n as i64, self.ptr(0), self.klay(op, l)?, out.ptr(0));
            dev.launch(op, &f, grid(n), BLOCK, &mut args![nn, src, kl, dst])?;
        }
        Ok(out)
    }

    /// `out = kernel(self[l], rhs[r], code)` elementwise (`kind` is `binary` or `cmp`, whose
    /// kernels take the op's code), into fresh storage of `out_dtype`.
    #[allow(clippy::too_many_arguments)]
    fn pairwise(
        &self,
        name: &'static str,
        kind: &str,
        l: &Layout,
        rhs: &Self,
        r: &Layout,
        code: i32,
        out_dtype: DType,
    ) -> Result<Self> {
        same_dtype(name, self.dtype, rhs.dtype)?;
        same_shape(name, l, r)?;
        self.check_device(name, rhs)?;
        let dev = self.dev();
        let n = l.elem_count();
        let out = CudaStorage::alloc(dev, name, n, out_dtype)?;
        if kind == "binary" && self.dtype.is_float() && n > 0 {
            if let (Some(a), Some(b)) = (self.packed(l, 16), rhs.packed(r, 16)) {
                let (nn, o) = (n as i64, out.ptr(0));
                let kernel = format!("binary_vec_{}", sfx(self.dtype));
                self.launch_packed(name, &kernel, n, &mut args![nn, a, b, o, code])?;
                return Ok(out);
            }
        }
        let f = dev.function(
            name,
            Module::Elementwise,
            &format!("{kind}_{}", sfx(self.dtype)),
        )?;
        let (nn, a, la, b, lb, o) = (
            n as i64,
            self.ptr(0),
            self.klay(name, l)?,
            rhs.ptr(0),
            self.klay(name, r)?,
            out.ptr(0),
        );
        dev.launch(
            name,
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![nn, a, la, b, lb, o, code],
        )?;
        Ok(out)
    }

    /// Copies or adds `self[src_l]` into `dst[dst_l]` with kernel `kind` (`copy`/`add_into`).
    fn write_into(
        &self,
        op: &'static str,
        kind: &str,
        src_l: &Layout,
        dst: &mut Self,
        dst_l: &Layout,
    ) -> Result<()> {
        same_shape(op, src_l, dst_l)?;
        same_dtype(op, dst.dtype, self.dtype)?;
        self.check_device(op, dst)?;
        let n = src_l.elem_count();
        if n == 0 {
            return Ok(());
        }
        let dev = self.dev();
        if kind == "add_into" && self.dtype.is_float() {
            if let (Some(src), Some(d)) = (self.packed(src_l, 16), dst.packed(dst_l, 16)) {
                let (nn, kernel) = (n as i64, format!("add_into_vec_{}", sfx(self.dtype)));
                return self.launch_packed(op, &kernel, n, &mut args![nn, src, d]);
            }
        }
        if self.dtype.is_float() && self.rows_into(op, kind, src_l, dst, dst_l)? {
            return Ok(());
        }
        let f = dev.function(
            op,
            Module::Elementwise,
            &format!("{kind}_{}", sfx(self.dtype)),
        )?;
        let (nn, src, sl, d, dl) = (
            n as i64,
            self.ptr(0),
            self.klay(op, src_l)?,
            dst.ptr(0),
            self.klay(op, dst_l)?,
        );
        dev.launch(op, &f, grid(n), BLOCK, &mut args![nn, src, sl, d, dl])
    }
}

/// The kernel-name part of GELU's two forms.
fn gelu_form(op: UnaryOp) -> Option<&'static str> {
    match op {
        UnaryOp::Gelu => Some("gelu"),
        UnaryOp::GeluTanh => Some("gelu_tanh"),
        _ => None,
    }
}

fn unary_code(op: UnaryOp) -> (i32, f64, f64) {
    match op {
        UnaryOp::Neg => (0, 0.0, 0.0),
        UnaryOp::Abs => (1, 0.0, 0.0),
        UnaryOp::Exp => (2, 0.0, 0.0),
        UnaryOp::Log => (3, 0.0, 0.0),
        UnaryOp::Sqrt => (4, 0.0, 0.0),
        UnaryOp::Rsqrt => (5, 0.0, 0.0),
        UnaryOp::Sin => (6, 0.0, 0.0),
        UnaryOp::Cos => (7, 0.0, 0.0),
        UnaryOp::Tanh => (8, 0.0, 0.0),
        UnaryOp::Sigmoid => (9, 0.0, 0.0),
        UnaryOp::Relu => (10, 0.0, 0.0),
        UnaryOp::Gelu => (11, 0.0, 0.0),
        UnaryOp::GeluTanh => (12, 0.0, 0.0),
        UnaryOp::Silu => (13, 0.0, 0.0),
        UnaryOp::Softplus => (14, 0.0, 0.0),
        UnaryOp::Sqr => (15, 0.0, 0.0),
        UnaryOp::Recip => (16, 0.0, 0.0),
        UnaryOp::Erf => (17, 0.0, 0.0),
        UnaryOp::Sign => (18, 0.0, 0.0),
        UnaryOp::Powf(e) => (19, e, 0.0),
        UnaryOp::Clamp(lo, hi) => (20, lo, hi),
        UnaryOp::Affine(m, a) => (21, m, a),
    }
}

impl BackendDevice for CudaDevice {
    type Storage = CudaStorage;

    fn storage_from_host(&self, host: HostBuffer) -> Result<CudaStorage> {
        let op = "to_device";
        let out = CudaStorage::alloc(self, op, host.len(), host.dtype())?;
        let bytes = host.as_bytes();
        if !bytes.is_empty() {
            // SAFETY: `out` holds exactly `bytes.len()` bytes. A copy from pageable memory
            // returns once the bytes are staged, so `host` may be dropped afterwards.
            unsafe { drv::memcpy_htod_async(out.ptr(0), bytes, self.0.stream.cu_stream()) }
                .map_err(|e| self.error(op, e))?;
        }
        Ok(out)
    }
    fn zeros(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        let out = CudaStorage::alloc(self, "zeros", n, dtype)?;
        if n > 0 {
            // SAFETY: `out` holds `n * size` bytes; queued on the device's stream.
            unsafe {
                drv::memset_d8_async(
                    out.ptr(0),
                    0,
                    n * dtype.size_in_bytes(),
                    self.0.stream.cu_stream(),
                )
            }
            .map_err(|e| self.error("zeros", e))?;
        }
        Ok(out)
    }
    fn full(&self, n: usize, value: f64, dtype: DType) -> Result<CudaStorage> {
        let op = "full";
        let out = CudaStorage::alloc(self, op, n, dtype)?;
        let f = self.function(op, Module::Elementwise, &format!("fill_{}", sfx(dtype)))?;
        let (p, nn) = (out.ptr(0), n as i64);
        self.launch(
            op,
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![p, nn, value],
        )?;
        Ok(out)
    }
    fn arange(&self, n: usize, start: f64, step: f64, dtype: DType) -> Result<CudaStorage> {
        let op = "arange";
        let out = CudaStorage::alloc(self, op, n, dtype)?;
        let f = self.function(op, Module::Elementwise, &format!("arange_{}", sfx(dtype)))?;
        let (p, nn) = (out.ptr(0), n as i64);
        self.launch(
            op,
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![p, nn, start, step],
        )?;
        Ok(out)
    }
    fn rand(&self, n: usize, dtype: DType, dist: Distribution) -> Result<CudaStorage> {
        let op = "rand";
        float_only(op, dtype)?;
        let out = CudaStorage::alloc(self, op, n, dtype)?;
        // One key per draw from the process generator: seeded, and reproducible run to run.
        let key = random::next_u64();
        let kind = match dist {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
        };
        let f = self.function(op, Module::Random, &format!("{kind}_{}", sfx(dtype)))?;
        let (p, nn, k0, k1) = (out.ptr(0), n as i64, key as u32, (key >> 32) as u32);
        self.launch(
            op,
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![p, nn, k0, k1],
        )?;
        Ok(out)
    }
    fn synchronize(&self) -> Result<()> {
        CudaDevice::synchronize(self)
    }
    fn memory_stats(&self) -> Result<Option<(u64, u64)>> {
        CudaDevice::memory_stats(self).map(Some)
    }
    fn reset_peak_memory(&self) -> Result<()> {
        CudaDevice::reset_peak_memory(self)
    }
    fn profile_report(&self) -> Option<String> {
        CudaDevice::profile_report(self)
    }
    fn free_memory(&self) -> Option<u64> {
        CudaDevice::free_memory(self)
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn device(&self) -> Device {
        self.dev().location()
    }
    fn elem_len(&self) -> usize {
        self.len
    }

    fn to_host(&self, l: &Layout) -> Result<HostBuffer> {
        let op = "to_host";
        let dense;
        let (src, start) = if l.is_contiguous() {
            (self, l.offset())
        } else {
            dense = self.copy_strided(l)?;
            (&dense, 0)
        };
        let (dev, n, p) = (self.dev(), l.elem_count(), src.ptr(start));
        dev.bind(op)?;
        let host = match self.dtype {
            DType::F32 => HostBuffer::from_vec(download::<f32>(dev, op, p, n)?),
            DType::F64 => HostBuffer::from_vec(download::<f64>(dev, op, p, n)?),
            DType::F16 => HostBuffer::from_vec(download::<f16>(dev, op, p, n)?),
            DType::BF16 => HostBuffer::from_vec(download::<bf16>(dev, op, p, n)?),
            DType::I64 => HostBuffer::from_vec(download::<i64>(dev, op, p, n)?),
            DType::U32 => HostBuffer::from_vec(download::<u32>(dev, op, p, n)?),
            DType::U8 => HostBuffer::from_vec(download::<u8>(dev, op, p, n)?),
        };
        // The copies above are queued: wait for them (and report a bad index met on the way).
        dev.synchronize()?;
        Ok(host)
    }

    fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Self> {
        if dtype == self.dtype {
            return self.copy_strided(l);
        }
        self.cast(l, dtype)
    }
    fn copy_strided(&self, l: &Layout) -> Result<Self> {
        let mut out = CudaStorage::alloc(self.dev(), "copy", l.elem_count(), self.dtype)?;
        let dense = Layout::contiguous(l.shape().clone());
        self.write_into("copy", "copy", l, &mut out, &dense)?;
        Ok(out)
    }
    fn copy_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()> {
        self.write_into("copy_into", "copy", src_l, dst, dst_l)
    }
    fn add_into(&self, src_l: &Layout, dst: &mut Self, dst_l: &Layout) -> Result<()> {
        self.write_into("add_into", "add_into", src_l, dst, dst_l)
    }
    fn adam_step(&mut self, m: &mut Self, v: &mut Self, g: &Self, h: AdamHyper) -> Result<()> {
        super::optim::adam_step(&mut [(self, m, v, g)], h)
    }
    fn adam_step_many(
        items: &mut [(&mut Self, &mut Self, &mut Self, &Self)],
        h: AdamHyper,
    ) -> Result<()> {
        super::optim::adam_step(items, h)
    }

    fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Self> {
        if !op.supports_int() {
            float_only(op.name(), self.dtype)?;
        }
        let dev = self.dev();
        let n = l.elem_count();
        let out = CudaStorage::alloc(dev, op.name(), n, self.dtype)?;
        let (code, p0, p1) = unary_code(op);
        if let (true, Some(x)) = (self.dtype.is_float() && n > 0, self.packed(l, 16)) {
            let (nn, o) = (n as i64, out.ptr(0));
            // GELU (a transformer's one big activation) has kernels of its own.
            match gelu_form(op) {
                Some(form) => {
                    let kernel = format!("unary_vec_{form}_{}", sfx(self.dtype));
                    self.launch_packed(op.name(), &kernel, n, &mut args![nn, x, o])?
                }
                None => {
                    let kernel = format!("unary_vec_{}", sfx(self.dtype));
                    let args = &mut args![nn, x, o, code, p0, p1];
                    self.launch_packed(op.name(), &kernel, n, args)?
                }
            }
            return Ok(out);
        }
        let f = dev.function(
            op.name(),
            Module::Elementwise,
            &format!("unary_{}", sfx(self.dtype)),
        )?;
        let (nn, x, kl, o) = (n as i64, self.ptr(0), self.klay(op.name(), l)?, out.ptr(0));
        dev.launch(
            op.name(),
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![nn, x, kl, o, code, p0, p1],
        )?;
        Ok(out)
    }

    fn unary_grad(&self, l: &Layout, g: &Self, gl: &Layout, op: UnaryOp) -> Result<Self> {
        let name = op.name();
        float_only(name, self.dtype)?;
        same_dtype(name, self.dtype, g.dtype)?;
        same_shape(name, l, gl)?;
        let code = match op {
            UnaryOp::Gelu => 11i32,
            UnaryOp::GeluTanh => 12,
            _ => {
                return Err(Error::Backward(format!(
                    "{name} has no fused gradient kernel"
                )));
            }
        };
        let dev = self.dev();
        let n = l.elem_count();
        let out = CudaStorage::alloc(dev, name, n, self.dtype)?;
        let (x, gp, form) = (self.packed(l, 16), g.packed(gl, 16), gelu_form(op));
        if let (true, Some(x), Some(gp), Some(form)) = (n > 0, x, gp, form) {
            let (nn, o) = (n as i64, out.ptr(0));
            let kernel = format!("unary_grad_vec_{form}_{}", sfx(self.dtype));
            self.launch_packed(name, &kernel, n, &mut args![nn, x, gp, o])?;
            return Ok(out);
        }
        let f = dev.function(
            name,
            Module::Elementwise,
            &format!("unary_grad_{}", sfx(self.dtype)),
        )?;
        let (nn, x, xl, gp, glk, o) = (
            n as i64,
            self.ptr(0),
            self.klay(name, l)?,
            g.ptr(0),
            self.klay(name, gl)?,
            out.ptr(0),
        );
        dev.launch(
            name,
            &f,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![nn, x, xl, gp, glk, o, code],
        )?;
        Ok(out)
    }

    fn binary(&self, l: &Layout, rhs: &Self, r: &Layout, op: BinaryOp) -> Result<Self> {
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Pow => 4,
            BinaryOp::Maximum => 5,
            BinaryOp::Minimum => 6,
        };
        self.pairwise(op.name(), "binary", l, rhs, r, code, self.dtype)
    }

    fn cmp(&self, l: &Layout, rhs: &Self, r: &Layout, op: CmpOp) -> Result<Self> {
        let code = match op {
            CmpOp::Eq => 0,
            CmpOp::Ne => 1,
            CmpOp::Lt => 2,
            CmpOp::Le => 3,
            CmpOp::Gt => 4,
            CmpOp::Ge => 5,
        };
        self.pairwise(op.name(), "cmp", l, rhs, r, code, DType::U8)
    }

    fn where_cond(
        &self,
        l: &Layout,
        on_true: &Self,
        t: &Layout,
        on_false: &Self,
        f: &Layout,
    ) -> Result<Self> {
        let name = "where_cond";
        if self.dtype != DType::U8 {
            return Err(Error::UnsupportedDType {
                op: name,
                got: self.dtype,
                expected: "a u8 mask",
            });
        }
        same_dtype(name, on_true.dtype, on_false.dtype)?;
        same_shape(name, l, t)?;
        same_shape(name, l, f)?;
        self.check_device(name, on_true)?;
        self.check_device(name, on_false)?;
        let dev = self.dev();
        let n = l.elem_count();
        let out = CudaStorage::alloc(dev, name, n, on_true.dtype)?;
        let k = dev.function(
            name,
            Module::Elementwise,
            &format!("where_{}", sfx(on_true.dtype)),
        )?;
        let (nn, m, lm, a, la, b, lb, o) = (
            n as i64,
            self.ptr(0),
            self.klay(name, l)?,
            on_true.ptr(0),
            self.klay(name, t)?,
            on_false.ptr(0),
            self.klay(name, f)?,
            out.ptr(0),
        );
        dev.launch(
            name,
            &k,
            grid(n) * (n > 0) as u32,
            BLOCK,
            &mut args![nn, m, lm, a, la, b, lb, o],
        )?;
        Ok(out)
    }

    fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Self> {
        super::reduce::reduce(self, l, op, dims)
    }

    fn matmul(&self, l: &Layout, rhs: &Self, r: &Layout) -> Result<Self> {
        super::matmul::matmul(self, l, rhs, r)
    }

    fn index_select(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        super::indexing::index_select(self, l, ids, il, dim)
    }

    fn gather(&self, l: &Layout, ids: &Self, il: &Layout, dim: usize) -> Result<Self> {
        super::indexing::gather(self, l, ids, il, dim)
    }

    fn scatter_add(
        &self,
        l: &Layout,
        ids: &Self,
        il: &Layout,
        src: &Self,
        sl: &Layout,
        dim: usize,
    ) -> Result<Self> {
        super::indexing::scatter_add(self, l, ids, il, src, sl, dim)
    }

    fn softmax_last(&self, l: &Layout, log: bool) -> Result<Self> {
        let op = if log { "log_softmax" } else { "softmax" };
        let (off, w) = rows_of(op, l)?;
        super::rows::softmax(self, off, l.elem_count(), w, log, 0)
    }

    fn softmax_last_bwd(&self, l: &Layout, g: &Self, gl: &Layout, log: bool) -> Result<Self> {
        let op = "softmax_backward";
        let (yo, w) = rows_of(op, l)?;
        let (go, _) = rows_of(op, gl)?;
        same_shape(op, l, gl)?;
        super::rows::softmax_bwd(self, yo, g, go, l.elem_count(), w, log)
    }

    fn norm_last(&self, l: &Layout, eps: f64, rms: bool) -> Result<(Self, Self)> {
        let (off, w) = rows_of("layer_norm", l)?;
        super::rows::norm(self, off, l.elem_count(), w, eps, rms)
    }

    fn norm_last_bwd(&self, rstd: &Self, g: &Self, gl: &Layout, rms: bool) -> Result<Self> {
        let (go, w) = rows_of("layer_norm_backward", gl)?;
        super::rows::norm_bwd(self, rstd, g, go, gl.elem_count(), w, rms)
    }

    fn cross_entropy_fwd(
        &self,
        l: &Layout,
        targets: &Self,
        tl: &Layout,
        ignore: Option<i64>,
    ) -> Result<(Self, Self)> {
        let (off, _) = rows_of("cross_entropy", l)?;
        let t = targets.ids_i64("cross_entropy", tl)?;
        super::rows::cross_entropy_fwd(self, off, l.dims()[0], l.dims()[1], &t, ignore)
    }

    fn cross_entropy_bwd(
        &self,
        targets: &Self,
        tl: &Layout,
        lse: &Self,
        g: &Self,
        ignore: Option<i64>,
    ) -> Result<Self> {
        let t = targets.ids_i64("cross_entropy_backward", tl)?;
        super::rows::cross_entropy_bwd(self, &t, lse, g, ignore)
    }

    fn attention_fwd(&self, k: &Self, v: &Self, dims: AttnDims) -> Result<(Self, Self)> {
        super::matmul::attention_fwd(self, k, v, dims)
    }

    fn attention_bwd(
        &self,
        k: &Self,
        v: &Self,
        out: &Self,
        saved: &Self,
        g: &Self,
        dims: AttnDims,
    ) -> Result<(Self, Self, Self)> {
        super::matmul::attention_bwd(self, k, v, out, saved, g, dims)
    }
}
