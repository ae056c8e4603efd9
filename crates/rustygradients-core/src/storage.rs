//! A tensor's memory on whichever device holds it. This is the one place that matches on the
//! device: every method forwards to the device's [`BackendStorage`].

use crate::backend::{
    AdamHyper, AttnDims, BackendDevice, BackendStorage, BinaryOp, CmpOp, Distribution, ReduceOp,
    UnaryOp,
};
use crate::cpu_backend::CpuDevice;
use crate::cuda_backend::{CudaDevice, CudaStorage};
use crate::host::HostBuffer;
use crate::{DType, Device, Error, Layout, Result, WithDType};

/// Memory on one device. The CPU computes on host buffers directly.
#[derive(Debug)]
pub enum Storage {
    Cpu(HostBuffer),
    Cuda(CudaStorage),
}

/// Runs `$body` with `$d` bound to the handle of `$device`, wrapping the storage it returns.
macro_rules! on_device {
    ($device:expr, $d:ident => $body:expr) => {
        match $device {
            Device::Cpu => {
                let $d = CpuDevice;
                Storage::Cpu($body?)
            }
            Device::Cuda(ordinal) => {
                let $d = CudaDevice::get(ordinal)?;
                Storage::Cuda($body?)
            }
        }
    };
}

/// Forwards a method with no storage operands.
macro_rules! one {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Storage::Cpu($s) => Storage::Cpu($body?),
            Storage::Cuda($s) => Storage::Cuda($body?),
        }
    };
}

/// Forwards a method whose operands must all live on the same device.
macro_rules! same_device {
    ($op:expr, ($($a:ident),+) => $body:expr) => {{
        #[allow(unused_parens)]
        match ($($a),+) {
            ($(Storage::Cpu($a)),+) => Storage::Cpu($body?),
            ($(Storage::Cuda($a)),+) => Storage::Cuda($body?),
            #[allow(unreachable_patterns)]
            _ => return Err(mismatch($op, &[$($a.device()),+])),
        }
    }};
}

fn mismatch(op: &'static str, devices: &[Device]) -> Error {
    let lhs = devices[0];
    let rhs = devices.iter().copied().find(|d| *d != lhs).unwrap_or(lhs);
    Error::DeviceMismatch { op, lhs, rhs }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(s) => s.device(),
            Storage::Cuda(s) => s.device(),
        }
    }

    pub fn elem_len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.elem_len(),
            Storage::Cuda(s) => s.elem_len(),
        }
    }

    // ---- memory made by a device ----------------------------------------------------------

    /// Moves host data to `device`.
    pub fn from_host(host: HostBuffer, device: Device) -> Result<Storage> {
        Ok(on_device!(device, d => d.storage_from_host(host)))
    }
    pub fn zeros(n: usize, dtype: DType, device: Device) -> Result<Storage> {
        Ok(on_device!(device, d => d.zeros(n, dtype)))
    }
    pub fn full(n: usize, value: f64, dtype: DType, device: Device) -> Result<Storage> {
        Ok(on_device!(device, d => d.full(n, value, dtype)))
    }
    pub fn arange(
        n: usize,
        start: f64,
        step: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Storage> {
        Ok(on_device!(device, d => d.arange(n, start, step, dtype)))
    }
    pub fn rand(n: usize, dtype: DType, dist: Distribution, device: Device) -> Result<Storage> {
        Ok(on_device!(device, d => d.rand(n, dtype, dist)))
    }
    /// Waits for `device`'s queued work and reports errors its kernels recorded.
    pub fn synchronize(device: Device) -> Result<()> {
        match device {
            Device::Cpu => CpuDevice.synchronize(),
            Device::Cuda(ordinal) => BackendDevice::synchronize(&CudaDevice::get(ordinal)?),
        }
    }

    /// See [`BackendDevice::memory_stats`].
    pub fn memory_stats(device: Device) -> Result<Option<(u64, u64)>> {
        match device {
            Device::Cpu => CpuDevice.memory_stats(),
            Device::Cuda(ordinal) => BackendDevice::memory_stats(&CudaDevice::get(ordinal)?),
        }
    }
    /// See [`BackendDevice::reset_peak_memory`].
    pub fn reset_peak_memory(device: Device) -> Result<()> {
        match device {
            Device::Cpu => CpuDevice.reset_peak_memory(),
            Device::Cuda(ordinal) => BackendDevice::reset_peak_memory(&CudaDevice::get(ordinal)?),
        }
    }

    /// See [`BackendDevice::free_memory`] (`None` also when the device cannot be opened).
    pub fn free_memory(device: Device) -> Option<u64> {
        match device {
            Device::Cpu => CpuDevice.free_memory(),
            Device::Cuda(ordinal) => CudaDevice::get(ordinal).ok()?.free_memory(),
        }
    }
    /// See [`BackendDevice::profile_report`].
    pub fn profile_report(device: Device) -> Result<Option<String>> {
        Ok(match device {
            Device::Cpu => CpuDevice.profile_report(),
            Device::Cuda(ordinal) => BackendDevice::profile_report(&CudaDevice::get(ordinal)?),
        })
    }

    // ---- host copies ----------------------------------------------------------------------

    /// True when the elements are read in place from shared bytes (only host memory can be).
    pub fn is_borrowed(&self) -> bool {
        match self {
            Storage::Cpu(s) => s.is_borrowed(),
            Storage::Cuda(_) => false,
        }
    }
    /// The elements `l` selects, row-major, on the host.
    pub fn to_host(&self, l: &Layout) -> Result<HostBuffer> {
        match self {
            Storage::Cpu(s) => s.to_host(l),
            Storage::Cuda(s) => s.to_host(l),
        }
    }
    /// The elements `l` selects, row-major, converted to `T` (exact for the storage's dtype).
    pub fn to_vec<T: WithDType>(&self, l: &Layout) -> Result<Vec<T>> {
        match self {
            Storage::Cpu(s) => Ok(s.to_vec(l)),
            Storage::Cuda(s) => Ok(s.to_host(l)?.to_vec(&Layout::contiguous(l.shape().clone()))),
        }
    }
    /// The elements `l` selects, contiguous, on `device`.
    pub fn to_device(&self, l: &Layout, device: Device) -> Result<Storage> {
        if device == self.device() {
            return self.copy_strided(l);
        }
        Storage::from_host(self.to_host(l)?, device)
    }

    pub fn to_dtype(&self, l: &Layout, dtype: DType) -> Result<Storage> {
        Ok(one!(self, s => s.to_dtype(l, dtype)))
    }
    pub fn copy_strided(&self, l: &Layout) -> Result<Storage> {
        Ok(one!(self, s => s.copy_strided(l)))
    }
    pub fn copy_into(&self, src_l: &Layout, dst: &mut Storage, dst_l: &Layout) -> Result<()> {
        match (self, dst) {
            (Storage::Cpu(s), Storage::Cpu(d)) => s.copy_into(src_l, d, dst_l),
            (Storage::Cuda(s), Storage::Cuda(d)) => s.copy_into(src_l, d, dst_l),
            (s, d) => Err(mismatch("copy_into", &[s.device(), d.device()])),
        }
    }
    pub fn add_into(&self, src_l: &Layout, dst: &mut Storage, dst_l: &Layout) -> Result<()> {
        match (self, dst) {
            (Storage::Cpu(s), Storage::Cpu(d)) => s.add_into(src_l, d, dst_l),
            (Storage::Cuda(s), Storage::Cuda(d)) => s.add_into(src_l, d, dst_l),
            (s, d) => Err(mismatch("add_into", &[s.device(), d.device()])),
        }
    }
    /// One Adam step for every `(parameter, m, v, gradient)`, all on one device; each
    /// `shadows[i]` given (a half-precision copy of f32 parameter `i`, the one autocast reads)
    /// is rewritten from the updated parameter: on the GPU in the same kernel. `grad_scale`
    /// (one f64, on a GPU only: the tensor layer scales a CPU step's gradients itself)
    /// multiplies every gradient as it is read.
    #[allow(clippy::type_complexity)]
    pub fn adam_step_many(
        items: &mut [(&mut Storage, &mut Storage, &mut Storage, &Storage)],
        shadows: &mut [Option<&mut Storage>],
        h: AdamHyper,
        grad_scale: Option<&Storage>,
    ) -> Result<()> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let device = first.0.device();
        if let Some(d) = items
            .iter()
            .flat_map(|(p, m, v, g)| [p.device(), m.device(), v.device(), g.device()])
            .chain(shadows.iter().flatten().map(|s| s.device()))
            .chain(grad_scale.map(|s| s.device()))
            .find(|d| *d != device)
        {
            return Err(mismatch("adam_step_", &[device, d]));
        }
        // Each backend's `(p, m, v, g)` from the items (all on `device`, checked above).
        macro_rules! batch {
            ($variant:ident, $ty:ty) => {{
                let mut b: Vec<(&mut $ty, &mut $ty, &mut $ty, &$ty)> =
                    Vec::with_capacity(items.len());
                for (p, m, v, g) in items.iter_mut() {
                    match (&mut **p, &mut **m, &mut **v, &**g) {
                        (
                            Storage::$variant(p),
                            Storage::$variant(m),
                            Storage::$variant(v),
                            Storage::$variant(g),
                        ) => b.push((p, m, v, g)),
                        _ => unreachable!("all on one device, checked above"),
                    }
                }
                b
            }};
        }
        match device {
            Device::Cpu => {
                if grad_scale.is_some() {
                    return Err(Error::InvalidArgument {
                        op: "adam_step_",
                        msg: "a CPU step takes its gradients already scaled".into(),
                    });
                }
                <HostBuffer as BackendStorage>::adam_step_many(&mut batch!(Cpu, HostBuffer), h)?;
                // The CPU casts each shadowed parameter again.
                for ((p, ..), s) in items.iter().zip(shadows.iter_mut()) {
                    if let Some(s) = s {
                        let dense = Layout::contiguous(p.elem_len());
                        **s = p.to_dtype(&dense, s.dtype())?;
                    }
                }
                Ok(())
            }
            Device::Cuda(_) => {
                let mut s: Vec<Option<&mut CudaStorage>> = shadows
                    .iter_mut()
                    .map(|s| match s.as_deref_mut() {
                        Some(Storage::Cuda(s)) => Some(s),
                        _ => None,
                    })
                    .collect();
                let scale = match grad_scale {
                    Some(Storage::Cuda(c)) => Some(c),
                    _ => None,
                };
                CudaStorage::adam_step_shadowed(&mut batch!(Cuda, CudaStorage), &mut s, h, scale)
            }
        }
    }
    pub fn unary(&self, l: &Layout, op: UnaryOp) -> Result<Storage> {
        Ok(one!(self, s => s.unary(l, op)))
    }
    pub fn unary_grad(&self, l: &Layout, g: &Storage, gl: &Layout, op: UnaryOp) -> Result<Storage> {
        let (x, g) = (self, g);
        Ok(same_device!(op.name(), (x, g) => x.unary_grad(l, g, gl, op)))
    }
    pub fn binary(&self, l: &Layout, rhs: &Storage, r: &Layout, op: BinaryOp) -> Result<Storage> {
        let (a, b) = (self, rhs);
        Ok(same_device!(op.name(), (a, b) => a.binary(l, b, r, op)))
    }
    pub fn cmp(&self, l: &Layout, rhs: &Storage, r: &Layout, op: CmpOp) -> Result<Storage> {
        let (a, b) = (self, rhs);
        Ok(same_device!(op.name(), (a, b) => a.cmp(l, b, r, op)))
    }
    pub fn where_cond(
        &self,
        l: &Layout,
        on_true: &Storage,
        t: &Layout,
        on_false: &Storage,
        f: &Layout,
    ) -> Result<Storage> {
        let (m, a, b) = (self, on_true, on_false);
        Ok(same_device!("where_cond", (m, a, b) => m.where_cond(l, a, t, b, f)))
    }
    pub fn reduce(&self, l: &Layout, op: ReduceOp, dims: &[usize]) -> Result<Storage> {
        Ok(one!(self, s => s.reduce(l, op, dims)))
    }
    pub fn matmul(&self, l: &Layout, rhs: &Storage, r: &Layout) -> Result<Storage> {
        let (a, b) = (self, rhs);
        Ok(same_device!("matmul", (a, b) => a.matmul(l, b, r)))
    }
    pub fn index_select(
        &self,
        l: &Layout,
        ids: &Storage,
        il: &Layout,
        dim: usize,
    ) -> Result<Storage> {
        let (a, i) = (self, ids);
        Ok(same_device!("index_select", (a, i) => a.index_select(l, i, il, dim)))
    }
    pub fn gather(&self, l: &Layout, ids: &Storage, il: &Layout, dim: usize) -> Result<Storage> {
        let (a, i) = (self, ids);
        Ok(same_device!("gather", (a, i) => a.gather(l, i, il, dim)))
    }
    pub fn scatter_add(
        &self,
        l: &Layout,
        ids: &Storage,
        il: &Layout,
        src: &Storage,
        sl: &Layout,
        dim: usize,
    ) -> Result<Storage> {
        let (a, i, s) = (self, ids, src);
        Ok(same_device!("scatter_add", (a, i, s) => a.scatter_add(l, i, il, s, sl, dim)))
    }
    /// [`Storage::scatter_add`] into this storage itself (dense, of `l`'s shape): `Ok(false)`
    /// (nothing done) where the backend has no in-place form (the CPU).
    #[allow(clippy::too_many_arguments)]
    pub fn scatter_add_in_place(
        &mut self,
        l: &Layout,
        ids: &Storage,
        il: &Layout,
        src: &Storage,
        sl: &Layout,
        dim: usize,
    ) -> Result<bool> {
        match (&mut *self, ids, src) {
            (Storage::Cpu(_), ..) => Ok(false),
            (Storage::Cuda(a), Storage::Cuda(i), Storage::Cuda(s)) => {
                a.scatter_add_in_place(l, i, il, s, sl, dim)?;
                Ok(true)
            }
            (a, i, s) => Err(mismatch(
                "scatter_add",
                &[a.device(), i.device(), s.device()],
            )),
        }
    }
    pub fn softmax_last(&self, l: &Layout, log: bool) -> Result<Storage> {
        Ok(one!(self, s => s.softmax_last(l, log)))
    }
    pub fn softmax_last_bwd(
        &self,
        l: &Layout,
        g: &Storage,
        gl: &Layout,
        log: bool,
    ) -> Result<Storage> {
        let (y, g) = (self, g);
        Ok(same_device!("softmax_backward", (y, g) => y.softmax_last_bwd(l, g, gl, log)))
    }
    pub fn norm_last(&self, l: &Layout, eps: f64, rms: bool) -> Result<(Storage, Storage)> {
        match self {
            Storage::Cpu(s) => s
                .norm_last(l, eps, rms)
                .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b))),
            Storage::Cuda(s) => s
                .norm_last(l, eps, rms)
                .map(|(a, b)| (Storage::Cuda(a), Storage::Cuda(b))),
        }
    }
    pub fn norm_last_bwd(
        &self,
        rstd: &Storage,
        g: &Storage,
        gl: &Layout,
        rms: bool,
    ) -> Result<Storage> {
        let (x, r, g) = (self, rstd, g);
        Ok(same_device!("layer_norm_backward", (x, r, g) => x.norm_last_bwd(r, g, gl, rms)))
    }
    /// `Σ x²` over the first `len` elements of each contiguous storage, as a one-element f64
    /// storage, where the backend has a multi-tensor kernel (the GPU); `None` elsewhere or
    /// when the storages differ in device or dtype (the caller composes it then).
    pub fn sum_sq_many(items: &[(&Storage, usize)]) -> Result<Option<Storage>> {
        let mut cuda = Vec::with_capacity(items.len());
        for (s, len) in items {
            match s {
                Storage::Cuda(c) => cuda.push((c, *len)),
                Storage::Cpu(_) => return Ok(None),
            }
        }
        let Some(first) = cuda.first() else {
            return Ok(None);
        };
        let (dev, dtype) = (first.0.device(), first.0.dtype());
        if cuda
            .iter()
            .any(|(c, _)| c.device() != dev || c.dtype() != dtype)
        {
            return Ok(None);
        }
        Ok(Some(Storage::Cuda(CudaStorage::sum_sq_many(&cuda)?)))
    }

    /// `x *= coef` in place over the first `len` elements of each contiguous storage, where
    /// the backend has a multi-tensor kernel (the GPU; `coef` a one-element f64 there).
    /// Returns false, changing nothing, elsewhere or when devices or dtypes differ.
    pub fn scale_many(items: &mut [(&mut Storage, usize)], coef: &Storage) -> Result<bool> {
        let Storage::Cuda(c) = coef else {
            return Ok(false);
        };
        let Some(first) = items.first() else {
            return Ok(true);
        };
        let dtype = first.0.dtype();
        if c.dtype() != DType::F64
            || items
                .iter()
                .any(|(s, _)| s.device() != coef.device() || s.dtype() != dtype)
        {
            return Ok(false);
        }
        let mut cuda: Vec<(&mut CudaStorage, usize)> = Vec::with_capacity(items.len());
        for (s, len) in items.iter_mut() {
            match &mut **s {
                Storage::Cuda(s) => cuda.push((s, *len)),
                Storage::Cpu(_) => return Ok(false),
            }
        }
        CudaStorage::scale_many(&mut cuda, c)?;
        Ok(true)
    }

    /// `y (m, n) = self (m, k) · wᵀ + b (+ r)` with the bias, and `r (m, n)` where given, added
    /// by the GEMM, all operands dense from element 0 (`dims` = `(m, k, n)`). `None` on
    /// backends (the CPU) or in cases the fused GEMM does not cover: the caller composes the
    /// op then.
    pub fn linear(
        &self,
        w: &Storage,
        b: Option<&Storage>,
        dims: (usize, usize, usize),
        r: Option<&Storage>,
    ) -> Result<Option<Storage>> {
        let op = "linear";
        match (self, w) {
            (Storage::Cpu(_), _) => Ok(None),
            (Storage::Cuda(x), Storage::Cuda(w)) => Ok(x
                .linear(w, on_cuda(op, self, b)?, dims, on_cuda(op, self, r)?)?
                .map(Storage::Cuda)),
            (_, w) => Err(mismatch(op, &[self.device(), w.device()])),
        }
    }

    /// The weight gradient of [`Storage::linear`] with the bias gradient reduced in the same
    /// GEMM: `(dW (n, k) = selfᵀ · x, db (n) = Σ_rows self)` for the output gradient `self
    /// (m, n)`; `db` only when `want_bias`. Both are written in `out` (the operands' dtype,
    /// or f32 for the f32 master weights of half operands). `None` where the backend
    /// composes it instead.
    #[allow(clippy::type_complexity)]
    pub fn linear_wgrad(
        &self,
        x: &Storage,
        dims: (usize, usize, usize),
        want_bias: bool,
        out: DType,
    ) -> Result<Option<(Storage, Option<Storage>)>> {
        match (self, x) {
            (Storage::Cpu(_), _) => Ok(None),
            (Storage::Cuda(g), Storage::Cuda(x)) => Ok(g
                .linear_wgrad(x, dims, want_bias, out)?
                .map(|(dw, db)| (Storage::Cuda(dw), db.map(Storage::Cuda)))),
            _ => Err(mismatch("linear_backward", &[self.device(), x.device()])),
        }
    }

    /// `(gelu_tanh(pre), pre)` with `pre (m, n) = self (m, k) · wᵀ + b` from one GEMM (the
    /// first half of a feed-forward block); `pre` only when `keep_pre`. `None` where the
    /// backend composes it instead (the CPU, or shapes the fused GEMM does not cover).
    #[allow(clippy::type_complexity)]
    pub fn linear_gelu(
        &self,
        w: &Storage,
        b: Option<&Storage>,
        dims: (usize, usize, usize),
        keep_pre: bool,
    ) -> Result<Option<(Storage, Option<Storage>)>> {
        let wrap = |r: Option<(CudaStorage, Option<CudaStorage>)>| {
            r.map(|(a, p)| (Storage::Cuda(a), p.map(Storage::Cuda)))
        };
        match (self, w, b) {
            (Storage::Cpu(_), ..) => Ok(None),
            (Storage::Cuda(x), Storage::Cuda(w), None) => {
                Ok(wrap(x.linear_gelu(w, None, dims, keep_pre)?))
            }
            (Storage::Cuda(x), Storage::Cuda(w), Some(Storage::Cuda(b))) => {
                Ok(wrap(x.linear_gelu(w, Some(b), dims, keep_pre)?))
            }
            (_, _, b) => Err(mismatch(
                "feed_forward",
                &[
                    self.device(),
                    w.device(),
                    b.map_or(w.device(), Storage::device),
                ],
            )),
        }
    }

    /// `(self · w) ⊙ gelu_tanh'(pre)` for the output gradient `self (m, n)` of a feed-forward
    /// block's second layer `w (n, h)` and the saved pre-activation `pre (m, h)`, from one
    /// GEMM (`dims` = `(m, h, n)`). `None` where the backend composes it instead.
    pub fn linear_gelu_dgrad(
        &self,
        w: &Storage,
        pre: &Storage,
        dims: (usize, usize, usize),
    ) -> Result<Option<Storage>> {
        match (self, w, pre) {
            (Storage::Cpu(_), ..) => Ok(None),
            (Storage::Cuda(g), Storage::Cuda(w), Storage::Cuda(p)) => {
                Ok(g.linear_gelu_dgrad(w, p, dims)?.map(Storage::Cuda))
            }
            _ => Err(mismatch(
                "feed_forward_backward",
                &[self.device(), w.device(), pre.device()],
            )),
        }
    }

    /// LayerNorm/RMSNorm with weight and bias in one kernel over `(rows, c)` contiguous rows
    /// from element 0: `(y in out dtype, mean, 1/σ)`. `None` where the backend composes it
    /// from primitives instead (on the CPU: dtypes other than f32/f64, mixed parameter
    /// dtypes, or an output dtype other than the input's).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn norm_affine(
        &self,
        dims: (usize, usize),
        w: Option<&Storage>,
        b: Option<&Storage>,
        eps: f64,
        rms: bool,
        out: DType,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        fn cpu<'a>(x: &Storage, s: Option<&'a Storage>) -> Result<Option<&'a HostBuffer>> {
            match s {
                Some(Storage::Cpu(s)) => Ok(Some(s)),
                None => Ok(None),
                Some(other) => Err(mismatch("layer_norm", &[x.device(), other.device()])),
            }
        }
        match self {
            Storage::Cpu(x) if out == x.dtype() => Ok(crate::cpu_backend::rows::norm_affine(
                x,
                cpu(self, w)?,
                cpu(self, b)?,
                dims,
                eps,
                rms,
            )
            .map(|(y, m, r)| (Storage::Cpu(y), Storage::Cpu(m), Storage::Cpu(r)))),
            Storage::Cpu(_) => Ok(None),
            Storage::Cuda(x) => x
                .norm_affine(
                    dims,
                    on_cuda("layer_norm", self, w)?,
                    on_cuda("layer_norm", self, b)?,
                    eps,
                    rms,
                    out,
                )
                .map(|(y, m, r)| Some((Storage::Cuda(y), Storage::Cuda(m), Storage::Cuda(r)))),
        }
    }

    /// The gradients of [`Storage::norm_affine`]: `(dx, f32 dw, f32 db)`, the last two when
    /// `want` asks for them. With `acc` (a dense gradient of `x`'s size and dtype), `dx` is
    /// added into it and `None` returned in its place: on the GPU inside the kernel, so a
    /// residual stream's gradient costs no separate sum.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn norm_affine_bwd(
        &self,
        w: Option<&Storage>,
        mean: &Storage,
        rstd: &Storage,
        g: &Storage,
        dims: (usize, usize),
        rms: bool,
        want: (bool, bool),
        acc: Option<&mut Storage>,
    ) -> Result<(Option<Storage>, Option<Storage>, Option<Storage>)> {
        let op = "layer_norm_backward";
        match (self, w, mean, rstd, g) {
            (
                Storage::Cpu(x),
                None | Some(Storage::Cpu(_)),
                Storage::Cpu(m),
                Storage::Cpu(r),
                Storage::Cpu(g),
            ) => {
                let w = match w {
                    Some(Storage::Cpu(w)) => Some(w),
                    _ => None,
                };
                let (dx, dw, db) =
                    crate::cpu_backend::rows::norm_affine_bwd(x, w, m, r, g, dims, rms, want)?;
                let dx = Storage::Cpu(dx);
                let dx = match acc {
                    Some(a) => {
                        let dense = Layout::contiguous(dims.0 * dims.1);
                        dx.add_into(&dense, a, &dense)?;
                        None
                    }
                    None => Some(dx),
                };
                Ok((dx, dw.map(Storage::Cpu), db.map(Storage::Cpu)))
            }
            (
                Storage::Cuda(x),
                None | Some(Storage::Cuda(_)),
                Storage::Cuda(m),
                Storage::Cuda(r),
                Storage::Cuda(g),
            ) => {
                let w = match w {
                    Some(Storage::Cuda(w)) => Some(w),
                    _ => None,
                };
                let acc = match acc {
                    None => None,
                    Some(Storage::Cuda(a)) => Some(a),
                    Some(a) => return Err(mismatch(op, &[self.device(), a.device()])),
                };
                let (dx, dw, db) = x.norm_affine_bwd(w, m, r, g, dims, rms, want, acc)?;
                Ok((
                    dx.map(Storage::Cuda),
                    dw.map(Storage::Cuda),
                    db.map(Storage::Cuda),
                ))
            }
            _ => Err(mismatch(op, &[self.device(), g.device()])),
        }
    }
    pub fn cross_entropy_fwd(
        &self,
        l: &Layout,
        targets: &Storage,
        tl: &Layout,
        ignore: Option<i64>,
    ) -> Result<(Storage, Storage)> {
        match (self, targets) {
            (Storage::Cpu(x), Storage::Cpu(t)) => x
                .cross_entropy_fwd(l, t, tl, ignore)
                .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b))),
            (Storage::Cuda(x), Storage::Cuda(t)) => x
                .cross_entropy_fwd(l, t, tl, ignore)
                .map(|(a, b)| (Storage::Cuda(a), Storage::Cuda(b))),
            (x, t) => Err(mismatch("cross_entropy", &[x.device(), t.device()])),
        }
    }
    pub fn cross_entropy_bwd(
        &self,
        targets: &Storage,
        tl: &Layout,
        lse: &Storage,
        g: &Storage,
        ignore: Option<i64>,
    ) -> Result<Storage> {
        let (x, t, lse, g) = (self, targets, lse, g);
        Ok(
            same_device!("cross_entropy_backward", (x, t, lse, g) => x.cross_entropy_bwd(t, tl, lse, g, ignore)),
        )
    }
    /// [`Storage::cross_entropy_bwd`] written over these logits; `Ok(false)` (nothing done)
    /// where the backend has no in-place form (the CPU).
    pub fn cross_entropy_bwd_in_place(
        &mut self,
        targets: &Storage,
        tl: &Layout,
        lse: &Storage,
        g: &Storage,
        ignore: Option<i64>,
    ) -> Result<bool> {
        let op = "cross_entropy_backward";
        match (&mut *self, targets, lse, g) {
            (Storage::Cpu(_), ..) => Ok(false),
            (Storage::Cuda(x), Storage::Cuda(t), Storage::Cuda(l), Storage::Cuda(g)) => {
                x.cross_entropy_bwd_in_place(t, tl, l, g, ignore)?;
                Ok(true)
            }
            (x, t, l, g) => Err(mismatch(
                op,
                &[x.device(), t.device(), l.device(), g.device()],
            )),
        }
    }
    /// Cross-entropy losses of contiguous `(N, C)` logits covering this storage, computed in the
    /// same pass that overwrites them with their gradient `(softmax - onehot) · scale` (0 for
    /// ignored rows), for a loss whose logits nothing else reads: one pass over the logits
    /// instead of the forward's and the backward's. `Ok(None)` (nothing done) where the backend
    /// has no such form for this dtype (the CPU's f16 and bf16).
    pub fn cross_entropy_fwd_grad(
        &mut self,
        l: &Layout,
        targets: &Storage,
        tl: &Layout,
        scale: f64,
        ignore: Option<i64>,
    ) -> Result<Option<Storage>> {
        match (&mut *self, targets) {
            (Storage::Cpu(x), Storage::Cpu(t)) => {
                Ok(crate::cpu_backend::cross_entropy::cross_entropy_fwd_grad(
                    x, l, t, tl, scale, ignore,
                )?
                .map(Storage::Cpu))
            }
            (Storage::Cuda(x), Storage::Cuda(t)) => Ok(Some(Storage::Cuda(
                x.cross_entropy_fwd_grad(l, t, tl, scale, ignore)?,
            ))),
            (x, t) => Err(mismatch("cross_entropy", &[x.device(), t.device()])),
        }
    }
    /// Brings gradient rows that [`Storage::cross_entropy_fwd_grad`] wrote at `scale` to the
    /// contiguous `(N,)` output gradient `g`, in place (rows where `g` equals `scale` are left
    /// as they are).
    pub fn cross_entropy_grad_rescale(&mut self, g: &Storage, scale: f64) -> Result<()> {
        match (&mut *self, g) {
            (Storage::Cpu(x), Storage::Cpu(g)) => {
                crate::cpu_backend::cross_entropy::cross_entropy_grad_rescale(x, g, scale)
            }
            (Storage::Cuda(x), Storage::Cuda(g)) => x.cross_entropy_grad_rescale(g, scale),
            (x, g) => Err(mismatch(
                "cross_entropy_backward",
                &[x.device(), g.device()],
            )),
        }
    }
    pub fn attention_fwd(
        &self,
        k: &Storage,
        v: &Storage,
        dims: AttnDims,
    ) -> Result<(Storage, Storage)> {
        match (self, k, v) {
            (Storage::Cpu(q), Storage::Cpu(k), Storage::Cpu(v)) => q
                .attention_fwd(k, v, dims)
                .map(|(o, p)| (Storage::Cpu(o), Storage::Cpu(p))),
            (Storage::Cuda(q), Storage::Cuda(k), Storage::Cuda(v)) => q
                .attention_fwd(k, v, dims)
                .map(|(o, p)| (Storage::Cuda(o), Storage::Cuda(p))),
            (q, k, v) => Err(mismatch(
                "scaled_dot_product_attention",
                &[q.device(), k.device(), v.device()],
            )),
        }
    }
    /// Strided attention's q (`self`), k and v gradients written side by side into one
    /// `(batch, rows, 3·heads·dim)` buffer, when q, k and v are the thirds of one fused
    /// projection of that layout: its gradient with no copies. `None` where the backend has
    /// only the separate gradients ([`Storage::attention_bwd`]).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd_packed(
        &self,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        saved: &Storage,
        g: &Storage,
        dims: AttnDims,
    ) -> Result<Option<Storage>> {
        match (self, k, v, out, saved, g) {
            (
                Storage::Cuda(q),
                Storage::Cuda(k),
                Storage::Cuda(v),
                Storage::Cuda(o),
                Storage::Cuda(s),
                Storage::Cuda(g),
            ) => Ok(q
                .attention_bwd_packed(k, v, o, s, g, &dims)?
                .map(Storage::Cuda)),
            _ => Ok(None),
        }
    }
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    pub fn attention_bwd(
        &self,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        saved: &Storage,
        g: &Storage,
        dims: AttnDims,
    ) -> Result<(Storage, Storage, Storage)> {
        match (self, k, v, out, saved, g) {
            (
                Storage::Cpu(q),
                Storage::Cpu(k),
                Storage::Cpu(v),
                Storage::Cpu(o),
                Storage::Cpu(p),
                Storage::Cpu(g),
            ) => q
                .attention_bwd(k, v, o, p, g, dims)
                .map(|(a, b, c)| (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c))),
            (
                Storage::Cuda(q),
                Storage::Cuda(k),
                Storage::Cuda(v),
                Storage::Cuda(o),
                Storage::Cuda(p),
                Storage::Cuda(g),
            ) => q
                .attention_bwd(k, v, o, p, g, dims)
                .map(|(a, b, c)| (Storage::Cuda(a), Storage::Cuda(b), Storage::Cuda(c))),
            (q, k, v, o, p, g) => Err(mismatch(
                "scaled_dot_product_attention_backward",
                &[
                    q.device(),
                    k.device(),
                    v.device(),
                    o.device(),
                    p.device(),
                    g.device(),
                ],
            )),
        }
    }
}

/// `s` as the CUDA storage it must be to go with `x` (a CUDA storage) in `op`.
fn on_cuda<'a>(
    op: &'static str,
    x: &Storage,
    s: Option<&'a Storage>,
) -> Result<Option<&'a CudaStorage>> {
    match s {
        Some(Storage::Cuda(s)) => Ok(Some(s)),
        None => Ok(None),
        Some(other) => Err(mismatch(op, &[x.device(), other.device()])),
    }
}
