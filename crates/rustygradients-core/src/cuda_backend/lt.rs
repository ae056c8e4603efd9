//! cuBLASLt GEMMs with fused epilogues, for a linear layer:
//! - forward, `y = x Wᵀ + b`: the bias is added by the GEMM as it writes `y`;
//! - weight gradient, `dW = gᵀ x` with `db = Σ_rows g` reduced by the same GEMM (`BGRADB`);
//! - a feed-forward block's first layer, `a = gelu_tanh(x Wᵀ + b)`, keeping the pre-activation
//!   `x Wᵀ + b` (`GELU_AUX_BIAS`), and the gradient that reaches it through the second layer,
//!   `(g W₂) ⊙ gelu_tanh'(pre)` (`DGELU`), so that no separate GELU pass runs either way.
//!
//! All operands are row-major and dense from element 0: `x (m, k)`, `W (n, k)`, `b (n)`,
//! `g (m, n)`. f32 (TF32 when allowed), f16 and bf16, all of one dtype, accumulate in f32. When
//! cuBLASLt is missing or has no kernel for a case, the callers compose the op from cuBLAS GEMMs
//! and kernels instead. The first GEMM of each shape times the heuristic's best few algorithms
//! on its real operands and keeps the fastest (`RUSTYGRADIENTS_LT_TUNE=0`: the heuristic's
//! first choice).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

use cudarc::cublaslt::{result as lt, sys};

use super::device::CudaDevice;
use super::storage::CudaStorage;
use crate::backend::BackendStorage;
use crate::{DType, Result};

/// Workspace cuBLASLt may use per GEMM (NVIDIA recommends 32 MiB on Hopper).
const WORKSPACE: usize = 32 << 20;

/// What the GEMM does after the product.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Epilogue {
    /// `D = A·B`.
    None,
    /// `D = A·B + bias` (bias along D's rows).
    Bias,
    /// `D = A·B`, and `bias = Σ_k op(B)` (the bias gradient).
    BiasGradB,
    /// `aux = A·B (+ bias)`, `D = gelu_tanh(aux)`; without an aux pointer, `D` only.
    Gelu { bias: bool, aux: bool },
    /// `D = (A·B) ⊙ gelu_tanh'(aux)`.
    GeluGrad,
}

/// One GEMM's shape as cuBLASLt sees it (column-major), the cache key of its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Gemm {
    /// The operands' dtype.
    dtype: DType,
    /// C's and D's (and the bias's): `dtype`, or f32 from half operands.
    out: DType,
    tf32: bool,
    trans_a: bool,
    trans_b: bool,
    m: u64,
    n: u64,
    k: u64,
    epilogue: Epilogue,
    /// `D = A·B + C` (C another matrix of D's shape) instead of `D = A·B`.
    add_c: bool,
}

/// The device memory one GEMM reads and writes: A and B with their leading dimensions, D, and
/// where the case has them C (when [`Gemm::add_c`]), the bias and the epilogue's aux matrix.
struct Operands {
    a: (u64, u64),
    b: (u64, u64),
    c: Option<u64>,
    d: u64,
    bias: Option<u64>,
    aux: Option<u64>,
}

/// The device's cuBLASLt handle, workspace and chosen algorithms (`None`: no kernel exists).
pub(super) struct LtState {
    handle: sys::cublasLtHandle_t,
    workspace: u64,
    algos: HashMap<Gemm, Option<sys::cublasLtMatmulAlgo_t>>,
}

/// Lazily opened per device; `Err` when cuBLASLt could not be opened (never retried).
pub(super) type LtSlot = Mutex<Option<std::result::Result<LtState, String>>>;

fn data_type(d: DType) -> Option<sys::cudaDataType> {
    match d {
        DType::F32 => Some(sys::cudaDataType::CUDA_R_32F),
        DType::F16 => Some(sys::cudaDataType::CUDA_R_16F),
        DType::BF16 => Some(sys::cudaDataType::CUDA_R_16BF),
        _ => None,
    }
}

fn open(dev: &CudaDevice) -> std::result::Result<LtState, String> {
    // SAFETY: only tries to open the shared library.
    if !unsafe { sys::is_culib_present() } {
        return Err("the cuBLASLt library (libcublasLt.so) was not found".into());
    }
    let handle = lt::create_handle().map_err(|e| format!("cublasLtCreate: {e:?}"))?;
    let workspace = dev
        .alloc("linear", WORKSPACE)
        .map_err(|e| format!("the cuBLASLt workspace: {e}"))?;
    Ok(LtState {
        handle,
        workspace,
        algos: HashMap::new(),
    })
}

/// Owns the cuBLASLt descriptors of one call and destroys them on every exit path.
struct Descs {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: Vec<sys::cublasLtMatrixLayout_t>,
    pref: Option<sys::cublasLtMatmulPreference_t>,
}

impl Drop for Descs {
    fn drop(&mut self) {
        // SAFETY: each was created once by this call and is destroyed once here.
        unsafe {
            for &l in &self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            if let Some(p) = self.pref {
                let _ = lt::destroy_matmul_pref(p);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// `D (m×n, column-major, ld m) = op(A)·op(B) (+ C)` with `epilogue` reading or writing
/// `bias`. `Ok(false)` when cuBLASLt is unavailable or has no kernel for this case (nothing
/// was queued then).
fn gemm(dev: &CudaDevice, g: Gemm, ops: Operands) -> Result<bool> {
    let Operands {
        a,
        b,
        c,
        d,
        bias,
        aux,
    } = ops;
    let op = "linear";
    let (Some(ty), Some(out_ty)) = (data_type(g.dtype), data_type(g.out)) else {
        return Ok(false);
    };
    let mut slot = dev.0.lt.lock().unwrap_or_else(|e| e.into_inner());
    let state = match slot.get_or_insert_with(|| open(dev)) {
        Ok(s) => s,
        Err(_) => return Ok(false),
    };
    let fail = |what: &str, e: lt::CublasError| {
        dev.error(
            op,
            format!(
                "cuBLASLt {what} for a {:?} GEMM {}×{}×{} ({:?}): {e:?}",
                g.dtype, g.m, g.n, g.k, g.epilogue
            ),
        )
    };
    let compute = if g.tf32 {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
    } else {
        sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    let desc = lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F)
        .map_err(|e| fail("descriptor", e))?;
    let mut descs = Descs {
        desc,
        layouts: Vec::with_capacity(3),
        pref: None,
    };
    let set = |attr: sys::cublasLtMatmulDescAttributes_t, p: *const c_void, size: usize| {
        // SAFETY: `p` points at a live value of `size` bytes of the type `attr` takes.
        unsafe { lt::set_matmul_desc_attribute(desc, attr, p, size) }
            .map_err(|e| fail("attribute", e))
    };
    use sys::cublasLtMatmulDescAttributes_t as A;
    let (ta, tb) = (g.trans_a as i32, g.trans_b as i32);
    set(A::CUBLASLT_MATMUL_DESC_TRANSA, &ta as *const i32 as _, 4)?;
    set(A::CUBLASLT_MATMUL_DESC_TRANSB, &tb as *const i32 as _, 4)?;
    let epilogue = match g.epilogue {
        Epilogue::None => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
        Epilogue::Bias => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
        Epilogue::BiasGradB => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BGRADB,
        Epilogue::Gelu { bias, aux } => match (bias, aux) {
            (false, false) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU,
            (true, false) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
            (false, true) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_AUX,
            (true, true) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
        },
        Epilogue::GeluGrad => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DGELU,
    };
    set(
        A::CUBLASLT_MATMUL_DESC_EPILOGUE,
        &epilogue as *const sys::cublasLtEpilogue_t as _,
        std::mem::size_of::<sys::cublasLtEpilogue_t>(),
    )?;
    if let Some(p) = bias {
        set(
            A::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
            &p as *const u64 as _,
            8,
        )?;
    }
    if let Some(p) = aux {
        // The aux matrix has D's shape and leading dimension.
        let ld = g.m as i64;
        set(
            A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
            &p as *const u64 as _,
            8,
        )?;
        set(
            A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
            &ld as *const i64 as _,
            8,
        )?;
    }
    // Stored shapes: op(A) is m×k, op(B) k×n.
    let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
    let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
    for (t, rows, cols, ld) in [
        (ty, ar, ac, a.1),
        (ty, br, bc, b.1),
        (out_ty, g.m, g.n, g.m),
    ] {
        let l = lt::create_matrix_layout(t, rows, cols, ld as i64)
            .map_err(|e| fail("matrix layout", e))?;
        descs.layouts.push(l);
    }
    let (la, lb, ld) = (descs.layouts[0], descs.layouts[1], descs.layouts[2]);
    let (alpha, beta) = (1f32, if g.add_c { 1f32 } else { 0f32 });
    let c = if g.add_c { c.unwrap_or(d) } else { d };
    let stream = dev.0.stream.cu_stream() as sys::cudaStream_t;
    let (handle, workspace) = (state.handle, state.workspace);
    let run = |algo: &sys::cublasLtMatmulAlgo_t| {
        // SAFETY: the operands, C, output, bias and workspace are live device buffers of the
        // sizes the layouts describe; alpha/beta are f32 host scalars (the scale type).
        unsafe {
            lt::matmul(
                handle,
                desc,
                &alpha as *const f32 as _,
                &beta as *const f32 as _,
                a.0 as *const c_void,
                la,
                b.0 as *const c_void,
                lb,
                c as *const c_void,
                ld,
                d as *mut c_void,
                ld,
                algo,
                workspace as *mut c_void,
                WORKSPACE,
                stream,
            )
        }
    };
    let algo = match state.algos.get(&g) {
        Some(a) => *a,
        None => {
            let pref = lt::create_matmul_pref().map_err(|e| fail("preference", e))?;
            descs.pref = Some(pref);
            let size = WORKSPACE;
            let mut found =
                [std::mem::MaybeUninit::<sys::cublasLtMatmulHeuristicResult_t>::uninit();
                    CANDIDATES];
            let mut count = 0i32;
            // SAFETY: every descriptor is live; `size` is a usize as the attribute takes;
            // `found` has room for CANDIDATES results.
            let status = unsafe {
                lt::set_matmul_pref_attribute(
                    pref,
                    sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &size as *const usize as _,
                    std::mem::size_of::<usize>(),
                )
                .map_err(|e| fail("preference", e))?;
                sys::cublasLtMatmulAlgoGetHeuristic(
                    state.handle,
                    desc,
                    la,
                    lb,
                    ld,
                    ld,
                    pref,
                    if tune() { CANDIDATES as i32 } else { 1 },
                    found.as_mut_ptr() as *mut sys::cublasLtMatmulHeuristicResult_t,
                    &mut count,
                )
            };
            let candidates: Vec<sys::cublasLtMatmulAlgo_t> = match status {
                sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS => found[..count.max(0) as usize]
                    .iter()
                    // SAFETY: cuBLASLt wrote the first `count` results.
                    .map(|r| unsafe { r.assume_init() })
                    .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                    .map(|r| r.algo)
                    .collect(),
                sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => Vec::new(),
                e => return Err(fail("heuristic", lt::CublasError(e))),
            };
            let algo = if candidates.len() > 1 {
                Some(fastest(dev, &candidates, &run)?)
            } else {
                candidates.first().copied()
            };
            if algo.is_none() {
                eprintln!(
                    "note: cuBLASLt has no kernel for a {:?} GEMM {}×{}×{} with {:?}; \
                     composing it from cuBLAS",
                    g.dtype, g.m, g.n, g.k, g.epilogue
                );
            }
            state.algos.insert(g, algo);
            algo
        }
    };
    let Some(algo) = algo else {
        return Ok(false);
    };
    let name = || {
        format!(
            "cublasLt {:?} {}x{}x{} {:?}",
            g.dtype, g.m, g.n, g.k, g.epilogue
        )
    };
    dev.profiled(name, || run(&algo).map_err(|e| fail("matmul", e)))?;
    Ok(true)
}

/// Heuristic candidates timed per new GEMM shape (`RUSTYGRADIENTS_LT_TUNE=0`: the heuristic's
/// first choice, untimed).
const CANDIDATES: usize = 8;

fn tune() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("RUSTYGRADIENTS_LT_TUNE").map_or(true, |v| v != "0"))
}

/// The candidate that runs fastest on the real operands (each run once to warm up, then timed
/// over three runs between two synchronisations); candidates that fail are skipped.
fn fastest(
    dev: &CudaDevice,
    candidates: &[sys::cublasLtMatmulAlgo_t],
    run: &dyn Fn(&sys::cublasLtMatmulAlgo_t) -> std::result::Result<(), lt::CublasError>,
) -> Result<sys::cublasLtMatmulAlgo_t> {
    let sync = || {
        dev.0
            .stream
            .synchronize()
            .map_err(|e| dev.error("linear", e))
    };
    let mut best: Option<(f64, sys::cublasLtMatmulAlgo_t)> = None;
    for algo in candidates {
        if run(algo).is_err() {
            continue;
        }
        sync()?;
        let t = std::time::Instant::now();
        let ok = (0..3).all(|_| run(algo).is_ok());
        sync()?;
        let secs = t.elapsed().as_secs_f64();
        if ok && best.is_none_or(|(b, _)| secs < b) {
            best = Some((secs, *algo));
        }
    }
    Ok(best.map_or(candidates[0], |b| b.1))
}

fn tf32(d: DType) -> bool {
    d == DType::F32 && crate::matmul_allow_tf32()
}

/// `y (m, n) = x (m, k) · wᵀ + b (+ r)`, with `r (m, n)` added by the GEMM itself, or `None`
/// when cuBLASLt cannot do it here.
pub(super) fn linear_fwd(
    x: &CudaStorage,
    w: &CudaStorage,
    b: Option<&CudaStorage>,
    dims: (usize, usize, usize),
    r: Option<&CudaStorage>,
) -> Result<Option<CudaStorage>> {
    let epilogue = if b.is_some() {
        Epilogue::Bias
    } else {
        Epilogue::None
    };
    forward(x, w, b, dims, epilogue, (None, r))
}

/// `x (m, k) · wᵀ (+ r)` through `epilogue` (reading `b`, writing `aux`) into a new `(m, n)`
/// output; `None` when cuBLASLt has no kernel for it.
fn forward(
    x: &CudaStorage,
    w: &CudaStorage,
    b: Option<&CudaStorage>,
    (m, k, n): (usize, usize, usize),
    epilogue: Epilogue,
    (aux, r): (Option<&CudaStorage>, Option<&CudaStorage>),
) -> Result<Option<CudaStorage>> {
    let dev = x.dev();
    let y = CudaStorage::alloc(dev, "linear", m * n, x.dtype())?;
    // Column-major: yᵀ (n×m) = W (stored k×n, transposed) · xᵀ (stored k×m).
    let g = Gemm {
        dtype: x.dtype(),
        out: x.dtype(),
        tf32: tf32(x.dtype()),
        trans_a: true,
        trans_b: false,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        epilogue,
        add_c: r.is_some(),
    };
    let ops = Operands {
        a: (w.ptr(0), k as u64),
        b: (x.ptr(0), k as u64),
        c: r.map(|r| r.ptr(0)),
        d: y.ptr(0),
        bias: b.map(|b| b.ptr(0)),
        aux: aux.map(|a| a.ptr(0)),
    };
    let ran = gemm(dev, g, ops)?;
    Ok(ran.then_some(y))
}

/// `(dW (n, k) = gᵀ · x, db (n) = Σ_rows g)` (db only when `want_bias`) in `out` (the
/// operands' dtype, or f32 from half operands), or `None` when cuBLASLt cannot do it here.
pub(super) fn linear_wgrad(
    g: &CudaStorage,
    x: &CudaStorage,
    (m, k, n): (usize, usize, usize),
    want_bias: bool,
    out: DType,
) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
    let dev = x.dev();
    if out != x.dtype() && (out != DType::F32 || !matches!(x.dtype(), DType::BF16 | DType::F16)) {
        return Ok(None);
    }
    let dw = CudaStorage::alloc(dev, "linear_backward", n * k, out)?;
    let db = if want_bias {
        Some(CudaStorage::alloc(dev, "linear_backward", n, out)?)
    } else {
        None
    };
    // Column-major: dWᵀ (k×n) = xᵀ (stored k×m) · g (stored n×m, transposed); the bias
    // gradient sums op(B) = gᵀ over the GEMM's k (the rows of g).
    let shape = Gemm {
        dtype: x.dtype(),
        out,
        tf32: tf32(x.dtype()),
        trans_a: false,
        trans_b: true,
        m: k as u64,
        n: n as u64,
        k: m as u64,
        epilogue: if want_bias {
            Epilogue::BiasGradB
        } else {
            Epilogue::None
        },
        add_c: false,
    };
    let ops = Operands {
        a: (x.ptr(0), k as u64),
        b: (g.ptr(0), n as u64),
        c: None,
        d: dw.ptr(0),
        bias: db.as_ref().map(|b| b.ptr(0)),
        aux: None,
    };
    let ran = gemm(dev, shape, ops)?;
    Ok(ran.then_some((dw, db)))
}

/// `(a, pre)` for `a = gelu_tanh(pre)`, `pre (m, n) = x (m, k) · wᵀ + b`, from one GEMM; `pre`
/// only when `keep_pre` (for the backward pass). `None` when cuBLASLt cannot do it here.
pub(super) fn linear_gelu_fwd(
    x: &CudaStorage,
    w: &CudaStorage,
    b: Option<&CudaStorage>,
    dims: (usize, usize, usize),
    keep_pre: bool,
) -> Result<Option<(CudaStorage, Option<CudaStorage>)>> {
    let (m, _, n) = dims;
    // cuBLASLt wants the aux matrix's leading dimension (n) a multiple of 8.
    if keep_pre && n % 8 != 0 {
        return Ok(None);
    }
    let pre = if keep_pre {
        Some(CudaStorage::alloc(
            x.dev(),
            "feed_forward",
            m * n,
            x.dtype(),
        )?)
    } else {
        None
    };
    let epilogue = Epilogue::Gelu {
        bias: b.is_some(),
        aux: keep_pre,
    };
    Ok(forward(x, w, b, dims, epilogue, (pre.as_ref(), None))?.map(|a| (a, pre)))
}

/// `dpre (m, h) = (g (m, n) · w (n, h)) ⊙ gelu_tanh'(pre (m, h))`: the gradient of a
/// feed-forward block's pre-activation from that of its output, through the second layer's
/// weight `w`. `None` when cuBLASLt cannot do it here.
pub(super) fn linear_gelu_dgrad(
    g: &CudaStorage,
    w: &CudaStorage,
    pre: &CudaStorage,
    (m, h, n): (usize, usize, usize),
) -> Result<Option<CudaStorage>> {
    let dev = g.dev();
    if h % 8 != 0 {
        return Ok(None);
    }
    let dpre = CudaStorage::alloc(dev, "feed_forward_backward", m * h, g.dtype())?;
    // Column-major: dpreᵀ (h×m) = W (stored h×n) · gᵀ (stored n×m); the aux (pre) has dpre's
    // layout.
    let shape = Gemm {
        dtype: g.dtype(),
        out: g.dtype(),
        tf32: tf32(g.dtype()),
        trans_a: false,
        trans_b: false,
        m: h as u64,
        n: m as u64,
        k: n as u64,
        epilogue: Epilogue::GeluGrad,
        add_c: false,
    };
    let ops = Operands {
        a: (w.ptr(0), h as u64),
        b: (g.ptr(0), n as u64),
        c: None,
        d: dpre.ptr(0),
        bias: None,
        aux: Some(pre.ptr(0)),
    };
    let ran = gemm(dev, shape, ops)?;
    Ok(ran.then_some(dpre))
}
