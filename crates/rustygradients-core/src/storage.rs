//! A tensor's memory on whichever device holds it. This is the one place that matches on the
//! device: every method forwards to the device's [`BackendStorage`].

use crate::backend::{AdamHyper, AttnDims, BackendStorage, BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::cpu_backend::CpuStorage;
use crate::cuda_backend::CudaStorage;
use crate::{DType, Device, Error, Layout, Result, Shape};

#[derive(Debug, Clone)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
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

    /// Moves host data to `device`.
    pub fn from_cpu(cpu: CpuStorage, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => Ok(Storage::Cpu(cpu)),
            Device::Cuda(ordinal) => Ok(Storage::Cuda(CudaStorage::from_cpu(&cpu, ordinal)?)),
        }
    }
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => s.to_cpu(),
            Storage::Cuda(s) => s.to_cpu(),
        }
    }
    pub fn zeros(shape: &Shape, dtype: DType, device: Device) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::zeros(shape, dtype, device)?),
            Device::Cuda(_) => Storage::Cuda(CudaStorage::zeros(shape, dtype, device)?),
        })
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
    pub fn adam_step(
        &mut self,
        m: &mut Storage,
        v: &mut Storage,
        g: &Storage,
        h: AdamHyper,
    ) -> Result<()> {
        match (self, m, v, g) {
            (Storage::Cpu(p), Storage::Cpu(m), Storage::Cpu(v), Storage::Cpu(g)) => {
                p.adam_step(m, v, g, h)
            }
            (Storage::Cuda(p), Storage::Cuda(m), Storage::Cuda(v), Storage::Cuda(g)) => {
                p.adam_step(m, v, g, h)
            }
            (p, m, v, g) => Err(mismatch(
                "adam_step_",
                &[p.device(), m.device(), v.device(), g.device()],
            )),
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
    #[allow(clippy::type_complexity)]
    pub fn attention_bwd(
        &self,
        k: &Storage,
        v: &Storage,
        probs: &Storage,
        g: &Storage,
        dims: AttnDims,
    ) -> Result<(Storage, Storage, Storage)> {
        match (self, k, v, probs, g) {
            (
                Storage::Cpu(q),
                Storage::Cpu(k),
                Storage::Cpu(v),
                Storage::Cpu(p),
                Storage::Cpu(g),
            ) => q
                .attention_bwd(k, v, p, g, dims)
                .map(|(a, b, c)| (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c))),
            (
                Storage::Cuda(q),
                Storage::Cuda(k),
                Storage::Cuda(v),
                Storage::Cuda(p),
                Storage::Cuda(g),
            ) => q
                .attention_bwd(k, v, p, g, dims)
                .map(|(a, b, c)| (Storage::Cuda(a), Storage::Cuda(b), Storage::Cuda(c))),
            (q, k, v, p, g) => Err(mismatch(
                "scaled_dot_product_attention_backward",
                &[q.device(), k.device(), v.device(), p.device(), g.device()],
            )),
        }
    }
}
