//! Attention through cuDNN's fused flash kernels (cuDNN 9's graph API), where cuDNN is
//! installed: on Hopper its runtime-compiled `wgmma` kernels run a GPT-2-sized causal
//! attention 2–3× faster than `flash.cu`'s `mma.sync` ones.
//!
//! cuDNN recognises attention as a pattern of primitive operations (two matmuls, the scale,
//! the causal mask as index comparisons, and the softmax as reductions and pointwise ops), so
//! the forward and backward are each described as such a graph below, and cuDNN's heuristics
//! pick the fused engine. The graphs follow the ones NVIDIA's cuDNN frontend builds for its
//! SDPA node (read from cuDNN's API log of PyTorch's `scaled_dot_product_attention`).
//!
//! The inputs and results are exactly those of `flash.rs`: q, k, v read in place, outputs
//! `(batch, rows, heads, d)`-major, and the per-row logsumexp (natural log, `(batch, heads,
//! rows)`) that both implementations save, so either backward can follow either forward.
//! Used for f16/bf16, head dims 64 and 128, self-attention (`t == s`), when every operand is
//! 16-byte aligned, while [`crate::cudnn_enabled`]. The plans of each shape are built
//! once (the forward's and the backward's together, on the first forward) and cached; a shape
//! cuDNN has no engine for runs on `flash.rs` instead.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys;
use sys::cudnnBackendAttributeName_t as A;
use sys::cudnnBackendAttributeType_t as T;
use sys::cudnnBackendDescriptorType_t as D;
use sys::cudnnDataType_t as Dt;

use super::device::CudaDevice;
use super::storage::CudaStorage;
use crate::backend::{AttnDims, BackendStorage};
use crate::{DType, Result};

/// One backend descriptor, destroyed on drop.
struct Desc(sys::cudnnBackendDescriptor_t);

// SAFETY: a descriptor is an opaque handle that cuDNN accepts from any thread; each is used
// under the device's cuDNN mutex only.
unsafe impl Send for Desc {}
unsafe impl Sync for Desc {}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once by `Desc::new` and destroyed once here.
        unsafe {
            sys::cudnnBackendDestroyDescriptor(self.0);
        }
    }
}

type Res<R> = std::result::Result<R, String>;

fn check(what: &str, s: sys::cudnnStatus_t) -> Res<()> {
    if s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what}: {s:?}"))
    }
}

impl Desc {
    fn new(ty: D) -> Res<Desc> {
        let mut d = std::ptr::null_mut();
        // SAFETY: writes one descriptor handle.
        check("cudnnBackendCreateDescriptor", unsafe {
            sys::cudnnBackendCreateDescriptor(ty, &mut d)
        })?;
        Ok(Desc(d))
    }
    /// Sets `name` to `vals`, elements of the C type `ty` names.
    fn set<V>(&self, name: A, ty: T, vals: &[V]) -> Res<()> {
        // SAFETY: `vals` is a live slice of `vals.len()` elements of the type `ty` names.
        check(&format!("setting {name:?}"), unsafe {
            sys::cudnnBackendSetAttribute(
                self.0,
                name,
                ty,
                vals.len() as i64,
                vals.as_ptr() as *const c_void,
            )
        })
    }
    fn set_descs(&self, name: A, descs: &[&Desc]) -> Res<()> {
        let raw: Vec<_> = descs.iter().map(|d| d.0).collect();
        self.set(name, T::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw)
    }
    fn finalize(self) -> Res<Desc> {
        // SAFETY: a live descriptor with its required attributes set.
        check("cudnnBackendFinalize", unsafe {
            sys::cudnnBackendFinalize(self.0)
        })?;
        Ok(self)
    }
}

/// A tensor of a graph (its descriptor).
#[derive(Clone)]
struct Tensor {
    desc: Arc<Desc>,
}

/// Builds one operation graph. The tensor, pointwise, reduction and matmul descriptors live as
/// long as the plan built from them; the operations, the graph and the engine configurations
/// only until the plan is built.
struct Graph {
    keep: Vec<Arc<Desc>>,
    ops: Vec<Desc>,
    next_uid: i64,
}

/// `[dims, strides]` of a 4-d tensor.
type Shape = [[i64; 4]; 2];

fn dense(dims: [i64; 4]) -> Shape {
    let s3 = 1;
    let s2 = dims[3];
    let s1 = s2 * dims[2];
    [dims, [s1 * dims[1], s1, s2, s3]]
}

impl Graph {
    fn new() -> Self {
        Graph {
            keep: Vec::new(),
            ops: Vec::new(),
            next_uid: 100,
        }
    }

    fn tensor(&mut self, uid: Option<i64>, dt: Dt, shape: Shape, virt: bool) -> Res<Tensor> {
        let flag = virt.then_some(A::CUDNN_ATTR_TENSOR_IS_VIRTUAL);
        self.describe(uid, dt, shape, flag)
    }

    /// An f32 scalar passed by value at execution (`uid`).
    fn scalar(&mut self, uid: i64) -> Res<Tensor> {
        let one = [[1i64; 4]; 2];
        let flag = Some(A::CUDNN_ATTR_TENSOR_IS_BY_VALUE);
        self.describe(Some(uid), Dt::CUDNN_DATA_FLOAT, one, flag)
    }

    /// A tensor descriptor (a fresh uid when `uid` is `None`), with the boolean attribute
    /// `flag` (virtual, or passed by value) set.
    fn describe(&mut self, uid: Option<i64>, dt: Dt, shape: Shape, flag: Option<A>) -> Res<Tensor> {
        let uid = uid.unwrap_or_else(|| {
            self.next_uid += 1;
            self.next_uid
        });
        let d = Desc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
        d.set(
            A::CUDNN_ATTR_TENSOR_DATA_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[dt],
        )?;
        d.set(
            A::CUDNN_ATTR_TENSOR_DIMENSIONS,
            T::CUDNN_TYPE_INT64,
            &shape[0],
        )?;
        d.set(A::CUDNN_ATTR_TENSOR_STRIDES, T::CUDNN_TYPE_INT64, &shape[1])?;
        d.set(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, T::CUDNN_TYPE_INT64, &[uid])?;
        d.set(
            A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
            T::CUDNN_TYPE_INT64,
            &[16i64],
        )?;
        if let Some(flag) = flag {
            d.set(flag, T::CUDNN_TYPE_BOOLEAN, &[true])?;
        }
        let desc = Arc::new(d.finalize()?);
        self.keep.push(desc.clone());
        Ok(Tensor { desc })
    }

    /// A virtual f32 (or `dt`) tensor of `shape`.
    fn virt(&mut self, dt: Dt, shape: Shape) -> Res<Tensor> {
        self.tensor(None, dt, shape, true)
    }

    /// `y = mode(x[, b])` (`t` selects for `BINARY_SELECT`; `axis` for `GEN_INDEX`).
    #[allow(clippy::too_many_arguments)]
    fn pointwise(
        &mut self,
        mode: sys::cudnnPointwiseMode_t,
        prec: Dt,
        x: &Tensor,
        b: Option<&Tensor>,
        t: Option<&Tensor>,
        axis: Option<i64>,
        y: &Tensor,
    ) -> Res<()> {
        let pw = Desc::new(D::CUDNN_BACKEND_POINTWISE_DESCRIPTOR)?;
        pw.set(
            A::CUDNN_ATTR_POINTWISE_MODE,
            T::CUDNN_TYPE_POINTWISE_MODE,
            &[mode],
        )?;
        pw.set(
            A::CUDNN_ATTR_POINTWISE_MATH_PREC,
            T::CUDNN_TYPE_DATA_TYPE,
            &[prec],
        )?;
        if let Some(a) = axis {
            pw.set(A::CUDNN_ATTR_POINTWISE_AXIS, T::CUDNN_TYPE_INT64, &[a])?;
        }
        let pw = pw.finalize()?;
        let op = Desc::new(D::CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)?;
        op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, &[&pw])?;
        op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_XDESC, &[&x.desc])?;
        if let Some(b) = b {
            op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_BDESC, &[&b.desc])?;
        }
        if let Some(t) = t {
            op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_TDESC, &[&t.desc])?;
        }
        op.set_descs(A::CUDNN_ATTR_OPERATION_POINTWISE_YDESC, &[&y.desc])?;
        self.ops.push(op.finalize()?);
        self.keep.push(Arc::new(pw));
        Ok(())
    }

    /// `y = mode(x, b)` in f32, into a new virtual tensor of `shape`.
    fn binary(
        &mut self,
        mode: sys::cudnnPointwiseMode_t,
        x: &Tensor,
        b: &Tensor,
        shape: Shape,
    ) -> Res<Tensor> {
        let y = self.virt(Dt::CUDNN_DATA_FLOAT, shape)?;
        self.pointwise(mode, Dt::CUDNN_DATA_FLOAT, x, Some(b), None, None, &y)?;
        Ok(y)
    }

    fn unary(&mut self, mode: sys::cudnnPointwiseMode_t, x: &Tensor, y: &Tensor) -> Res<()> {
        self.pointwise(mode, Dt::CUDNN_DATA_FLOAT, x, None, None, None, y)
    }

    /// Sums (`ADD`) or maxes `x` over its last dim into `y`.
    fn reduce(&mut self, op: sys::cudnnReduceTensorOp_t, x: &Tensor, y: &Tensor) -> Res<()> {
        let r = Desc::new(D::CUDNN_BACKEND_REDUCTION_DESCRIPTOR)?;
        r.set(
            A::CUDNN_ATTR_REDUCTION_COMP_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[Dt::CUDNN_DATA_FLOAT],
        )?;
        r.set(
            A::CUDNN_ATTR_REDUCTION_OPERATOR,
            T::CUDNN_TYPE_REDUCTION_OPERATOR_TYPE,
            &[op],
        )?;
        let r = r.finalize()?;
        let o = Desc::new(D::CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR)?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_REDUCTION_DESC, &[&r])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_REDUCTION_XDESC, &[&x.desc])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_REDUCTION_YDESC, &[&y.desc])?;
        self.ops.push(o.finalize()?);
        self.keep.push(Arc::new(r));
        Ok(())
    }

    /// `c = a · b` over the last two dims, f32 accumulation.
    fn matmul(&mut self, a: &Tensor, b: &Tensor, c: &Tensor) -> Res<()> {
        let m = Desc::new(D::CUDNN_BACKEND_MATMUL_DESCRIPTOR)?;
        m.set(
            A::CUDNN_ATTR_MATMUL_COMP_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[Dt::CUDNN_DATA_FLOAT],
        )?;
        let m = m.finalize()?;
        let o = Desc::new(D::CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR)?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_MATMUL_ADESC, &[&a.desc])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_MATMUL_BDESC, &[&b.desc])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_MATMUL_CDESC, &[&c.desc])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_MATMUL_DESC, &[&m])?;
        self.ops.push(o.finalize()?);
        self.keep.push(Arc::new(m));
        Ok(())
    }

    /// `y` views `x`'s elements with other strides (here: a transpose, cast on the way).
    fn reshape(&mut self, x: &Tensor, y: &Tensor) -> Res<()> {
        let o = Desc::new(D::CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR)?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_RESHAPE_XDESC, &[&x.desc])?;
        o.set_descs(A::CUDNN_ATTR_OPERATION_RESHAPE_YDESC, &[&y.desc])?;
        self.ops.push(o.finalize()?);
        Ok(())
    }

    /// `scores` with the keys after each query replaced by −∞ (top-left causal mask).
    fn causal(&mut self, scores: &Tensor, shape: Shape) -> Res<Tensor> {
        use sys::cudnnPointwiseMode_t as P;
        let row = self.virt(Dt::CUDNN_DATA_INT32, shape)?;
        let col = self.virt(Dt::CUDNN_DATA_INT32, shape)?;
        let f = Dt::CUDNN_DATA_FLOAT;
        self.pointwise(
            P::CUDNN_POINTWISE_GEN_INDEX,
            f,
            scores,
            None,
            None,
            Some(2),
            &row,
        )?;
        self.pointwise(
            P::CUDNN_POINTWISE_GEN_INDEX,
            f,
            scores,
            None,
            None,
            Some(3),
            &col,
        )?;
        let keep = self.virt(Dt::CUDNN_DATA_BOOLEAN, shape)?;
        self.pointwise(
            P::CUDNN_POINTWISE_CMP_GE,
            Dt::CUDNN_DATA_BOOLEAN,
            &row,
            Some(&col),
            None,
            None,
            &keep,
        )?;
        let neg_inf = self.scalar(NEG_INF)?;
        let out = self.virt(f, shape)?;
        self.pointwise(
            P::CUDNN_POINTWISE_BINARY_SELECT,
            f,
            scores,
            Some(&neg_inf),
            Some(&keep),
            None,
            &out,
        )?;
        Ok(out)
    }

    /// The operation graph, its best engine that builds, and that plan's workspace size.
    fn plan(self, handle: sys::cudnnHandle_t) -> Res<Plan> {
        let graph = Desc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        let ops: Vec<&Desc> = self.ops.iter().collect();
        graph.set_descs(A::CUDNN_ATTR_OPERATIONGRAPH_OPS, &ops)?;
        graph.set(
            A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
            T::CUDNN_TYPE_HANDLE,
            &[handle],
        )?;
        let graph = graph.finalize()?;
        let heur = Desc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
        heur.set_descs(A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[&graph])?;
        heur.set(
            A::CUDNN_ATTR_ENGINEHEUR_MODE,
            T::CUDNN_TYPE_HEUR_MODE,
            &[sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A],
        )?;
        let heur = heur.finalize()?;
        let mut count = 0i64;
        // SAFETY: asks for the number of results only.
        check("engine heuristics", unsafe {
            sys::cudnnBackendGetAttribute(
                heur.0,
                A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                0,
                &mut count,
                std::ptr::null_mut(),
            )
        })?;
        let cfgs = (0..count.max(0))
            .map(|_| Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
            .collect::<Res<Vec<_>>>()?;
        let mut raw: Vec<_> = cfgs.iter().map(|c| c.0).collect();
        let mut got = 0i64;
        // SAFETY: `raw` holds `count` created engine-config descriptors to fill.
        check("engine heuristics", unsafe {
            sys::cudnnBackendGetAttribute(
                heur.0,
                A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                count,
                &mut got,
                raw.as_mut_ptr() as *mut c_void,
            )
        })?;
        let mut last = String::from("no engine configuration");
        for cfg in cfgs.iter().take(got.max(0) as usize) {
            let built = (|| {
                let plan = Desc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
                plan.set(
                    A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
                    T::CUDNN_TYPE_HANDLE,
                    &[handle],
                )?;
                plan.set_descs(A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[cfg])?;
                plan.finalize()
            })();
            match built {
                Ok(plan) => {
                    let mut ws = 0i64;
                    let mut n = 0i64;
                    // SAFETY: reads one i64 of a finalized plan.
                    check("plan workspace size", unsafe {
                        sys::cudnnBackendGetAttribute(
                            plan.0,
                            A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                            T::CUDNN_TYPE_INT64,
                            1,
                            &mut n,
                            &mut ws as *mut i64 as *mut c_void,
                        )
                    })?;
                    return Ok(Plan {
                        plan,
                        workspace: ws.max(0) as usize,
                        _keep: self.keep,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(format!("no engine builds this graph ({last})"))
    }
}

/// An execution plan and the descriptors it was built from.
struct Plan {
    plan: Desc,
    workspace: usize,
    _keep: Vec<Arc<Desc>>,
}

// The graphs' uids of the tensors passed at execution.
const Q: i64 = 1;
const K: i64 = 2;
const V: i64 = 3;
const O: i64 = 4;
const STATS: i64 = 5;
const SCALE: i64 = 6;
const NEG_INF: i64 = 7;
const DO: i64 = 8;
const DQ: i64 = 9;
const DK: i64 = 10;
const DV: i64 = 11;
const ONE: i64 = 12;
/// Workspace tensors of the backward: rowsum(dO ∘ O), and dQ accumulated in f32.
const DELTA: i64 = 13;
const DQ_ACC: i64 = 14;

/// What a plan depends on: the dtype, sizes, masking and the inputs' strides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    dtype: DType,
    b: usize,
    h: usize,
    t: usize,
    d: usize,
    causal: bool,
    /// Batch, head and row strides of q, k and v (elements).
    strides: [[usize; 3]; 3],
    /// The row stride of dq, dk and dv: `h·d`, or `3·h·d` when they go into one
    /// `(b, rows, 3, h, d)` buffer (see [`backward_packed`]).
    grad_row: usize,
}

/// The forward's and backward's plans of one shape.
struct Plans {
    fwd: Plan,
    bwd: Plan,
}

/// The device's cuDNN handle and plans (`None`: cuDNN has no engine for the shape).
pub(super) struct State {
    handle: sys::cudnnHandle_t,
    plans: HashMap<Key, Option<Arc<Plans>>>,
}

// SAFETY: the handle is used under the device's mutex only.
unsafe impl Send for State {}

/// Lazily opened per device; `Err` when cuDNN could not be opened (never retried).
pub(super) type Slot = Mutex<Option<std::result::Result<State, String>>>;

fn open(dev: &CudaDevice) -> Res<State> {
    // SAFETY: only tries to open the shared library.
    if !unsafe { sys::is_culib_present() } {
        return Err("cuDNN (libcudnn.so) was not found".into());
    }
    // SAFETY: plain queries of the loaded library.
    let version = unsafe { sys::cudnnGetVersion() };
    if version < 90000 {
        return Err(format!("cuDNN {version} is older than 9.0"));
    }
    let mut handle = std::ptr::null_mut();
    // SAFETY: writes one handle; the stream is the device's, alive as long as the device.
    unsafe {
        check("cudnnCreate", sys::cudnnCreate(&mut handle))?;
        check(
            "cudnnSetStream",
            sys::cudnnSetStream(handle, dev.0.stream.cu_stream() as sys::cudaStream_t),
        )?;
    }
    Ok(State {
        handle,
        plans: HashMap::new(),
    })
}

fn dt(dtype: DType) -> Option<Dt> {
    match dtype {
        DType::BF16 => Some(Dt::CUDNN_DATA_BFLOAT16),
        DType::F16 => Some(Dt::CUDNN_DATA_HALF),
        _ => None,
    }
}

fn i(v: usize) -> i64 {
    v as i64
}

/// An operand read as `(batch, heads, rows, d)`: `[offset, batch stride, head stride, row
/// stride]` in elements.
fn operand(d: &AttnDims, which: fn(&crate::backend::AttnStrides) -> [usize; 4]) -> [usize; 4] {
    match &d.strided {
        Some(s) => which(s),
        // Contiguous (n, rows, d): one head per batch entry.
        None => [0, d.t * d.d, d.t * d.d, d.d],
    }
}

impl Key {
    fn of(dtype: DType, d: &AttnDims, packed_grads: bool) -> Option<Key> {
        let h = d.strided.map_or(1, |s| s.heads);
        let strides = [
            operand(d, |s| s.q),
            operand(d, |s| s.k),
            operand(d, |s| s.v),
        ]
        .map(|[_, b, hh, r]| [b, hh, r]);
        let ok = crate::cudnn_enabled()
            && dt(dtype).is_some()
            && d.d == d.dv
            && matches!(d.d, 64 | 128)
            && d.t == d.s
            && d.t > 0
            && d.n.is_multiple_of(h)
            && d.scale.is_finite()
            && strides.iter().flatten().all(|s| s.is_multiple_of(8));
        ok.then_some(Key {
            dtype,
            b: d.n / h,
            h,
            t: d.t,
            d: d.d,
            causal: d.causal,
            strides,
            grad_row: if packed_grads { 3 } else { 1 } * h * d.d,
        })
    }

    /// An input's `[dims, strides]` (`which` = 0, 1, 2 for q, k, v), transposed (`[b, h, d,
    /// rows]`) when `t`.
    fn input(&self, which: usize, t: bool) -> Shape {
        let [sb, sh, sr] = self.strides[which].map(i);
        let (b, h, r, d) = (i(self.b), i(self.h), i(self.t), i(self.d));
        if t {
            [[b, h, d, r], [sb, sh, 1, sr]]
        } else {
            [[b, h, r, d], [sb, sh, sr, 1]]
        }
    }

    /// An output's (or the output gradient's) `(batch, rows, heads, d)`-major layout.
    fn output(&self) -> Shape {
        let (b, h, r, d) = (i(self.b), i(self.h), i(self.t), i(self.d));
        [[b, h, r, d], [r * h * d, d, h * d, 1]]
    }

    /// dq's, dk's and dv's layout: the output's, with rows `grad_row` apart.
    fn grads(&self) -> Shape {
        let (b, h, r, d) = (i(self.b), i(self.h), i(self.t), i(self.d));
        let row = i(self.grad_row);
        [[b, h, r, d], [r * row, d, row, 1]]
    }

    fn scores(&self) -> Shape {
        let (b, h, r) = (i(self.b), i(self.h), i(self.t));
        dense([b, h, r, r])
    }

    /// The scores with the last two strides swapped (their transpose, for `t == s`).
    fn scores_t(&self) -> Shape {
        let [dims, s] = self.scores();
        [dims, [s[0], s[1], 1, s[2]]]
    }

    fn rows(&self) -> Shape {
        dense([i(self.b), i(self.h), i(self.t), 1])
    }

    fn forward_graph(&self, handle: sys::cudnnHandle_t) -> Res<Plan> {
        use sys::cudnnPointwiseMode_t as P;
        use sys::cudnnReduceTensorOp_t as R;
        let half = dt(self.dtype).ok_or("dtype")?;
        let f = Dt::CUDNN_DATA_FLOAT;
        let mut g = Graph::new();
        let q = g.tensor(Some(Q), half, self.input(0, false), false)?;
        let k = g.tensor(Some(K), half, self.input(1, true), false)?;
        let v = g.tensor(Some(V), half, self.input(2, false), false)?;
        let o = g.tensor(Some(O), half, self.output(), false)?;
        let stats = g.tensor(Some(STATS), f, self.rows(), false)?;
        let scale = g.scalar(SCALE)?;
        let (ss, rs) = (self.scores(), self.rows());
        let s = g.virt(f, ss)?;
        g.matmul(&q, &k, &s)?;
        let mut s = g.binary(P::CUDNN_POINTWISE_MUL, &s, &scale, ss)?;
        if self.causal {
            s = g.causal(&s, ss)?;
        }
        let max = g.virt(f, rs)?;
        g.reduce(R::CUDNN_REDUCE_TENSOR_MAX, &s, &max)?;
        let shifted = g.binary(P::CUDNN_POINTWISE_SUB, &s, &max, ss)?;
        let e = g.virt(f, ss)?;
        g.unary(P::CUDNN_POINTWISE_EXP, &shifted, &e)?;
        let sum = g.virt(f, rs)?;
        g.reduce(R::CUDNN_REDUCE_TENSOR_ADD, &e, &sum)?;
        let log = g.virt(f, rs)?;
        g.unary(P::CUDNN_POINTWISE_LOG, &sum, &log)?;
        g.pointwise(
            P::CUDNN_POINTWISE_ADD,
            f,
            &max,
            Some(&log),
            None,
            None,
            &stats,
        )?;
        let p = g.virt(half, ss)?;
        g.pointwise(P::CUDNN_POINTWISE_DIV, f, &e, Some(&sum), None, None, &p)?;
        g.matmul(&p, &v, &o)?;
        g.plan(handle)
    }

    fn backward_graph(&self, handle: sys::cudnnHandle_t) -> Res<Plan> {
        use sys::cudnnPointwiseMode_t as P;
        use sys::cudnnReduceTensorOp_t as R;
        let half = dt(self.dtype).ok_or("dtype")?;
        let f = Dt::CUDNN_DATA_FLOAT;
        let (b, h, r, d) = (i(self.b), i(self.h), i(self.t), i(self.d));
        let mut g = Graph::new();
        let q = g.tensor(Some(Q), half, self.input(0, false), false)?;
        let kt = g.tensor(Some(K), half, self.input(1, true), false)?;
        let vt = g.tensor(Some(V), half, self.input(2, true), false)?;
        let o = g.tensor(Some(O), half, self.output(), false)?;
        let d_o = g.tensor(Some(DO), half, self.output(), false)?;
        let stats = g.tensor(Some(STATS), f, self.rows(), false)?;
        let dq = g.tensor(Some(DQ), half, self.grads(), false)?;
        let dk = g.tensor(Some(DK), half, self.grads(), false)?;
        let dv = g.tensor(Some(DV), half, self.grads(), false)?;
        let scale = g.scalar(SCALE)?;
        let one = g.scalar(ONE)?;
        let (ss, rs) = (self.scores(), self.rows());
        // delta = rowsum(dO ∘ O), kept in the workspace.
        let prod = g.binary(
            P::CUDNN_POINTWISE_MUL,
            &d_o,
            &o,
            [[b, h, r, d], [h * r * d, r * d, h * d, 1]],
        )?;
        let rowsum = g.virt(f, rs)?;
        g.reduce(R::CUDNN_REDUCE_TENSOR_ADD, &prod, &rowsum)?;
        let delta = g.tensor(Some(DELTA), f, rs, false)?;
        g.pointwise(
            P::CUDNN_POINTWISE_MUL,
            f,
            &rowsum,
            Some(&one),
            None,
            None,
            &delta,
        )?;
        // p = exp(scale · q kᵀ − logsumexp), masked.
        let s = g.virt(f, ss)?;
        g.matmul(&q, &kt, &s)?;
        let s = g.binary(P::CUDNN_POINTWISE_MUL, &s, &scale, ss)?;
        let mut s = g.binary(P::CUDNN_POINTWISE_SUB, &s, &stats, ss)?;
        if self.causal {
            s = g.causal(&s, ss)?;
        }
        let p = g.virt(f, ss)?;
        g.unary(P::CUDNN_POINTWISE_EXP, &s, &p)?;
        // dV = pᵀ dO.
        let pt = g.virt(half, self.scores_t())?;
        g.reshape(&p, &pt)?;
        g.matmul(&pt, &d_o, &dv)?;
        // dS = scale · p ∘ (dO vᵀ − delta).
        let dp = g.virt(f, ss)?;
        g.matmul(&d_o, &vt, &dp)?;
        let x = g.binary(P::CUDNN_POINTWISE_SUB, &dp, &delta, ss)?;
        let x = g.binary(P::CUDNN_POINTWISE_MUL, &x, &p, ss)?;
        let ds = g.binary(P::CUDNN_POINTWISE_MUL, &x, &scale, ss)?;
        // dK = dSᵀ q.
        let dst = g.virt(half, self.scores_t())?;
        g.reshape(&ds, &dst)?;
        g.matmul(&dst, &q, &dk)?;
        // dQ = dS k, accumulated in f32 in the workspace, then cast.
        let k = g.virt(f, self.input(1, false))?;
        g.reshape(&kt, &k)?;
        let acc = g.tensor(Some(DQ_ACC), f, dense([b, h, r, d]), false)?;
        g.matmul(&ds, &k, &acc)?;
        g.unary(P::CUDNN_POINTWISE_IDENTITY, &acc, &dq)?;
        g.plan(handle)
    }
}

/// The plans for `key`, built on first use; `None` when cuDNN is missing or has no engine.
fn plans(dev: &CudaDevice, key: Key) -> Option<(sys::cudnnHandle_t, Arc<Plans>)> {
    // cuDNN works in the calling thread's current context: this device's, on any thread.
    dev.bind("scaled_dot_product_attention").ok()?;
    let mut slot = dev.0.cudnn.lock().unwrap_or_else(|e| e.into_inner());
    let state = match slot.get_or_insert_with(|| open(dev)) {
        Ok(s) => s,
        Err(_) => return None,
    };
    let handle = state.handle;
    let entry = state.plans.entry(key).or_insert_with(|| {
        let built = key
            .forward_graph(handle)
            .and_then(|fwd| Ok((fwd, key.backward_graph(handle)?)));
        match built {
            Ok((fwd, bwd)) => Some(Arc::new(Plans { fwd, bwd })),
            Err(e) => {
                eprintln!("note: cuDNN attention unavailable for {key:?} ({e}); using flash.cu");
                None
            }
        }
    });
    entry.clone().map(|p| (handle, p))
}

/// Runs `plan` with the tensors `(uid, address)` (device buffers, or host scalars passed by
/// value), plus the scale (and, for a causal mask, −∞) by value, and a fresh workspace.
fn execute(
    dev: &CudaDevice,
    op: &'static str,
    (handle, plan): (sys::cudnnHandle_t, &Plan),
    d: &AttnDims,
    given: &[(i64, u64)],
) -> Result<()> {
    let fail = |e: String| dev.error(op, format!("cuDNN attention: {e}"));
    let (scale, neg_inf) = (d.scale as f32, f32::NEG_INFINITY);
    let host = |x: &f32| x as *const f32 as u64;
    let mut tensors = given.to_vec();
    tensors.push((SCALE, host(&scale)));
    if d.causal {
        tensors.push((NEG_INF, host(&neg_inf)));
    }
    let ws = dev.alloc(op, plan.workspace)?;
    let result = dev.profiled(
        || format!("cudnn {op}"),
        || {
            (|| {
                let uids: Vec<i64> = tensors.iter().map(|t| t.0).collect();
                let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.1 as *mut c_void).collect();
                let pack = Desc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
                pack.set(
                    A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
                    T::CUDNN_TYPE_INT64,
                    &uids,
                )?;
                pack.set(
                    A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                    T::CUDNN_TYPE_VOID_PTR,
                    &ptrs,
                )?;
                pack.set(
                    A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
                    T::CUDNN_TYPE_VOID_PTR,
                    &[ws as *mut c_void],
                )?;
                let pack = pack.finalize()?;
                // SAFETY: every pointer in the pack is a live device buffer of the size its
                // tensor describes (or a host scalar that outlives this call); queued on the
                // device's stream.
                check("cudnnBackendExecute", unsafe {
                    sys::cudnnBackendExecute(handle, plan.plan.0, pack.0)
                })
            })()
            .map_err(fail)
        },
    );
    dev.free(ws);
    result?;
    crate::cudnn::count_attention_call();
    Ok(())
}

/// What both passes start from: the handle, the plans and q, k, v's addresses; `None` when
/// this case is not cuDNN's (dtype, sizes, cuDNN missing or without an engine for it, or one of
/// those addresses or `more` not 16-byte aligned).
fn prepare(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    (d, packed_grads): (&AttnDims, bool),
    more: &[u64],
) -> Option<(sys::cudnnHandle_t, Arc<Plans>, [u64; 3])> {
    let key = Key::of(q.dtype(), d, packed_grads)?;
    let ptrs = [
        q.ptr(operand(d, |s| s.q)[0]),
        k.ptr(operand(d, |s| s.k)[0]),
        v.ptr(operand(d, |s| s.v)[0]),
    ];
    if ptrs.iter().chain(more).any(|p| !p.is_multiple_of(16)) {
        return None;
    }
    let (handle, plans) = plans(q.dev(), key)?;
    Some((handle, plans, ptrs))
}

/// The output and saved state of `flash::forward`, or `None` when this case is not cuDNN's.
pub(super) fn forward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    d: &AttnDims,
) -> Result<Option<(CudaStorage, CudaStorage)>> {
    let op = "scaled_dot_product_attention";
    let Some((handle, plans, [qp, kp, vp])) = prepare(q, k, v, (d, false), &[]) else {
        return Ok(None);
    };
    let dev = q.dev();
    let rows = d.n * d.t;
    let out = CudaStorage::alloc(dev, op, rows * d.d, q.dtype())?;
    // Each row's logsumexp (f32, two elements of the 16-bit dtype); the backward reads the
    // output itself.
    let saved = CudaStorage::alloc(dev, op, 2 * rows, q.dtype())?;
    let tensors = [
        (Q, qp),
        (K, kp),
        (V, vp),
        (O, out.ptr(0)),
        (STATS, saved.ptr(0)),
    ];
    execute(dev, op, (handle, &plans.fwd), d, &tensors)?;
    Ok(Some((out, saved)))
}

/// `flash::backward`'s gradients, or `None` when this case is not cuDNN's.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    out: &CudaStorage,
    saved: &CudaStorage,
    g: &CudaStorage,
    d: &AttnDims,
) -> Result<Option<(CudaStorage, CudaStorage, CudaStorage)>> {
    let op = "scaled_dot_product_attention_backward";
    let Some(prepared) = prepare(q, k, v, (d, false), &[g.ptr(0), out.ptr(0)]) else {
        return Ok(None);
    };
    let (dev, n) = (q.dev(), d.n * d.t * d.d);
    let dq = CudaStorage::alloc(dev, op, n, q.dtype())?;
    let dk = CudaStorage::alloc(dev, op, n, q.dtype())?;
    let dv = CudaStorage::alloc(dev, op, n, q.dtype())?;
    let grads = [dq.ptr(0), dk.ptr(0), dv.ptr(0)];
    run_backward(prepared, (out, saved), g, d, grads)?;
    Ok(Some((dq, dk, dv)))
}

/// The gradients of q, k and v written side by side into one `(batch, rows, 3·heads·dim)`
/// buffer, the layout of the fused projection they are the thirds of: its gradient, with no
/// copies to assemble it. `None` when this case is not cuDNN's.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_packed(
    q: &CudaStorage,
    k: &CudaStorage,
    v: &CudaStorage,
    out: &CudaStorage,
    saved: &CudaStorage,
    g: &CudaStorage,
    d: &AttnDims,
) -> Result<Option<CudaStorage>> {
    let op = "scaled_dot_product_attention_backward";
    let Some(s) = d.strided else {
        return Ok(None);
    };
    let c = s.heads * d.d;
    let Some(prepared) = prepare(q, k, v, (d, true), &[g.ptr(0), out.ptr(0)]) else {
        return Ok(None);
    };
    let dqkv = CudaStorage::alloc(q.dev(), op, 3 * d.n * d.t * d.d, q.dtype())?;
    let grads = [dqkv.ptr(0), dqkv.ptr(c), dqkv.ptr(2 * c)];
    run_backward(prepared, (out, saved), g, d, grads)?;
    Ok(Some(dqkv))
}

/// Runs the backward plan, writing dq, dk and dv at `grads`.
fn run_backward(
    (handle, plans, [qp, kp, vp]): (sys::cudnnHandle_t, Arc<Plans>, [u64; 3]),
    (out, saved): (&CudaStorage, &CudaStorage),
    g: &CudaStorage,
    d: &AttnDims,
    [dq, dk, dv]: [u64; 3],
) -> Result<()> {
    let op = "scaled_dot_product_attention_backward";
    let dev = saved.dev();
    let rows = d.n * d.t;
    let delta = CudaStorage::alloc(dev, op, rows, DType::F32)?;
    let acc = CudaStorage::alloc(dev, op, rows * d.d, DType::F32)?;
    let one = 1f32;
    let tensors = [
        (Q, qp),
        (K, kp),
        (V, vp),
        (O, out.ptr(0)),
        (DO, g.ptr(0)),
        (STATS, saved.ptr(0)),
        (DQ, dq),
        (DK, dk),
        (DV, dv),
        // The dropout scale cuDNN's pattern carries (none here), by value.
        (ONE, &one as *const f32 as u64),
        (DELTA, delta.ptr(0)),
        (DQ_ACC, acc.ptr(0)),
    ];
    execute(dev, op, (handle, &plans.bwd), d, &tensors)
}
