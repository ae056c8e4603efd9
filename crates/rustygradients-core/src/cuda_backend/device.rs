//! The handle of one GPU: its context and stream, the cuBLAS handle, the compiled kernel modules,
//! the flag kernels raise on a bad index, and the stream-ordered memory pool that all of its
//! allocations come from. One handle per ordinal, made on first use and shared.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaStream};

use super::compile::{self, Module};
use crate::{Device, Error, Result};

/// A GPU's handle (cheap to clone).
#[derive(Clone)]
pub struct CudaDevice(pub(super) Arc<Inner>);

pub(super) struct Inner {
    pub(super) ordinal: usize,
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) blas: Mutex<CudaBlas>,
    /// cuBLASLt (fused GEMM epilogues), opened on first use.
    pub(super) lt: super::lt::LtSlot,
    /// cuDNN (fused attention), opened on first use.
    pub(super) cudnn: super::cudnn_attn::Slot,
    arch: String,
    /// Streaming multiprocessors.
    sms: usize,
    modules: Mutex<HashMap<Module, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// `[op code, index, size]` of the first bad index a kernel met since the last check.
    pub(super) err: u64,
    pool: sys::CUmemoryPool,
    /// Kernel names by function handle, for the profile.
    names: Mutex<HashMap<usize, String>>,
    /// With `RUSTYGRADIENTS_CUDA_PROFILE=1`: calls and seconds per kernel (or GEMM shape).
    profile: Option<Mutex<HashMap<String, (u64, f64)>>>,
}

// SAFETY: the raw pool handle and error-flag address are plain identifiers that the driver
// accepts from any thread; everything mutable is behind a Mutex.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {})", self.0.ordinal, self.0.arch)
    }
}

/// The op names that kernels report bad indices for, by code.
const BAD_INDEX_OPS: [&str; 5] = [
    "?",
    "index_select",
    "gather",
    "scatter_add",
    "cross_entropy",
];

static DEVICES: OnceLock<Mutex<HashMap<usize, CudaDevice>>> = OnceLock::new();

fn unavailable(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        device: Device::Cuda(ordinal),
        msg: msg.into(),
    }
}

/// True when every CUDA library the backend loads at run time is present.
fn libraries_present() -> std::result::Result<(), &'static str> {
    // SAFETY: these only try to open the shared libraries.
    unsafe {
        if !cudarc::driver::sys::is_culib_present() {
            return Err("the CUDA driver library (libcuda.so) was not found");
        }
        if !cudarc::nvrtc::sys::is_culib_present() {
            return Err("the NVRTC library (libnvrtc.so) was not found");
        }
        if !cudarc::cublas::sys::is_culib_present() {
            return Err("the cuBLAS library (libcublas.so) was not found");
        }
    }
    Ok(())
}

impl CudaDevice {
    /// The shared handle of GPU `ordinal`, opened on first use. Fails with
    /// [`Error::DeviceUnavailable`] (never panics) when the CUDA libraries or the GPU are missing.
    pub fn get(ordinal: usize) -> Result<CudaDevice> {
        let devices = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut devices = devices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = devices.get(&ordinal) {
            d.0.ctx
                .bind_to_thread()
                .map_err(|e| unavailable(ordinal, e.to_string()))?;
            return Ok(d.clone());
        }
        let d = Self::open(ordinal)?;
        devices.insert(ordinal, d.clone());
        Ok(d)
    }

    fn open(ordinal: usize) -> Result<CudaDevice> {
        libraries_present().map_err(|m| unavailable(ordinal, m))?;
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(ordinal, format!("the CUDA driver failed: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(
                ordinal,
                format!("this machine has {count} CUDA device(s)"),
            ));
        }
        let fail = |e: &dyn std::fmt::Display| unavailable(ordinal, e.to_string());
        let ctx = CudaContext::new(ordinal).map_err(|e| fail(&e))?;
        // One stream per device: ordering on it is all the synchronisation ops need.
        // SAFETY: no CudaSlice of this context is ever used on another stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| fail(&e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| fail(&e))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| fail(&e))?
            .max(1) as usize;
        // Freed memory stays in the pool for reuse instead of going back to the driver at each
        // synchronisation: allocation is then a pointer bump in stream order.
        let pool = unsafe {
            let pool = drv::device::get_default_mem_pool(ctx.cu_device()).map_err(|e| fail(&e))?;
            let mut threshold = u64::MAX;
            drv::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut c_void,
            )
            .map_err(|e| fail(&e))?;
            pool
        };
        let err = unsafe {
            let p = drv::malloc_sync(3 * 8).map_err(|e| fail(&e))?;
            drv::memset_d8_sync(p, 0, 3 * 8).map_err(|e| fail(&e))?;
            p
        };
        Ok(CudaDevice(Arc::new(Inner {
            ordinal,
            ctx,
            stream,
            blas: Mutex::new(blas),
            lt: Mutex::new(None),
            cudnn: Mutex::new(None),
            arch: format!("sm_{major}{minor}"),
            sms,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            err,
            pool,
            names: Mutex::new(HashMap::new()),
            profile: std::env::var("RUSTYGRADIENTS_CUDA_PROFILE")
                .is_ok_and(|v| v == "1")
                .then(|| Mutex::new(HashMap::new())),
        })))
    }

    /// This device as a [`Device`].
    pub fn location(&self) -> Device {
        Device::Cuda(self.0.ordinal)
    }

    /// An error of the driver or a library during `op`, naming this device.
    pub(super) fn error(&self, op: &'static str, msg: impl std::fmt::Display) -> Error {
        Error::Backend {
            op,
            device: self.location(),
            msg: msg.to_string(),
        }
    }

    /// The kernel `name` of `module`, compiled on first use (once per process, and cached on
    /// disk across processes).
    pub(super) fn function(
        &self,
        op: &'static str,
        module: Module,
        name: &str,
    ) -> Result<CudaFunction> {
        let mut functions = self.0.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = functions.get(name) {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.0.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(&module) {
                Some(m) => m.clone(),
                None => {
                    let ptx = compile::ptx(module, &self.0.arch).map_err(|m| self.error(op, m))?;
                    let m = self.0.ctx.load_module(ptx).map_err(|e| {
                        self.error(op, format!("loading kernel module {module:?}: {e}"))
                    })?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(|e| self.error(op, format!("kernel {name}: {e}")))?;
        functions.insert(name.to_string(), f.clone());
        self.0
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(f.cu_function() as usize, name.to_string());
        Ok(f)
    }

    /// How many blocks of `block` threads using `smem` bytes of dynamic shared memory (at most
    /// 48 KiB) the device runs at once: the grid of a grid-stride kernel that fills every SM in
    /// one wave.
    pub(super) fn resident_blocks(
        &self,
        op: &'static str,
        f: &CudaFunction,
        block: u32,
        smem: u32,
    ) -> Result<usize> {
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(block, smem as usize, None)
            .map_err(|e| self.error(op, format!("querying a kernel's occupancy: {e}")))?;
        Ok(self.0.sms * per_sm.max(1) as usize)
    }

    /// Queues `f` with `grid` blocks of `block` threads; `args` point at the argument values.
    pub(super) fn launch(
        &self,
        op: &'static str,
        f: &CudaFunction,
        grid: u32,
        block: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.launch_2d(op, f, (grid, 1), block, args)
    }

    /// [`CudaDevice::launch`] on a two-dimensional grid.
    pub(super) fn launch_2d(
        &self,
        op: &'static str,
        f: &CudaFunction,
        grid: (u32, u32),
        block: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.launch_smem(op, f, grid, block, 0, args)
    }

    /// [`CudaDevice::launch_2d`] with `smem` bytes of dynamic shared memory (the kernel's
    /// limit is raised to it first when it exceeds the default 48 KiB).
    pub(super) fn launch_smem(
        &self,
        op: &'static str,
        f: &CudaFunction,
        grid: (u32, u32),
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 {
            return Ok(());
        }
        let name = || {
            let names = self.0.names.lock().unwrap_or_else(|e| e.into_inner());
            names
                .get(&(f.cu_function() as usize))
                .cloned()
                .unwrap_or_default()
        };
        self.bind(op)?;
        if smem > 48 * 1024 {
            f.set_attribute(
                cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(|e| self.error(op, format!("raising the shared-memory limit: {e}")))?;
        }
        self.profiled(name, || {
            // SAFETY: the caller passes arguments matching the kernel's signature, pointing at
            // values that outlive this call; device pointers belong to live buffers of this
            // device.
            unsafe {
                drv::launch_kernel(
                    f.cu_function(),
                    (grid.0, grid.1, 1),
                    (block, 1, 1),
                    smem,
                    self.0.stream.cu_stream(),
                    args,
                )
            }
            .map_err(|e| self.error(op, format!("launching a kernel: {e}")))
        })
    }

    /// Runs `f` (which queues GPU work); when profiling, waits for the GPU before and after and
    /// adds the time to `name()`'s entry.
    pub(super) fn profiled<R>(
        &self,
        name: impl FnOnce() -> String,
        f: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let Some(profile) = &self.0.profile else {
            return f();
        };
        let sync = |op| self.0.stream.synchronize().map_err(|e| self.error(op, e));
        sync("profile")?;
        let t = std::time::Instant::now();
        let r = f()?;
        sync("profile")?;
        let secs = t.elapsed().as_secs_f64();
        let mut p = profile.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.entry(name()).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
        Ok(r)
    }

    /// The profile so far (see `RUSTYGRADIENTS_CUDA_PROFILE`), largest total first, then
    /// cleared; `None` when not profiling.
    pub fn profile_report(&self) -> Option<String> {
        let profile = self.0.profile.as_ref()?;
        let mut p = profile.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = p.drain().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let total: f64 = rows.iter().map(|r| r.1 .1).sum();
        let mut out = format!("{:>10} {:>8} {:>6}  kernel\n", "ms", "calls", "%");
        for (name, (calls, secs)) in rows {
            out += &format!(
                "{:>10.3} {calls:>8} {:>6.1}  {name}\n",
                secs * 1e3,
                100.0 * secs / total.max(1e-12)
            );
        }
        out += &format!("{:>10.3} total\n", total * 1e3);
        Some(out)
    }

    /// Makes this device's context current on the calling thread (driver calls need it; a
    /// tensor may be used or dropped on any thread).
    pub(super) fn bind(&self, op: &'static str) -> Result<()> {
        self.0.ctx.bind_to_thread().map_err(|e| self.error(op, e))
    }

    /// Allocates `bytes` from the pool, in stream order (uninitialised).
    pub(super) fn alloc(&self, op: &'static str, bytes: usize) -> Result<u64> {
        self.bind(op)?;
        // SAFETY: a plain stream-ordered allocation; freed by `DevBuf`'s Drop.
        match unsafe { drv::malloc_async(self.0.stream.cu_stream(), bytes.max(1)) } {
            Ok(p) => Ok(p),
            Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
                let (free, total) = drv::mem_get_info().unwrap_or((0, 0));
                Err(Error::OutOfMemory {
                    op,
                    device: self.location(),
                    bytes,
                    free,
                    total,
                })
            }
            Err(e) => Err(self.error(op, format!("allocating {bytes} bytes: {e}"))),
        }
    }

    /// Returns `ptr` to the pool in stream order (after the queued work that uses it).
    pub(super) fn free(&self, ptr: u64) {
        self.0.ctx.record_err(self.0.ctx.bind_to_thread());
        // SAFETY: `ptr` came from `alloc` and is freed once, by its owner's Drop.
        let r = unsafe { drv::free_async(ptr, self.0.stream.cu_stream()) };
        self.0.ctx.record_err(r);
    }

    /// Waits for the stream and reports (and clears) a bad index a kernel recorded.
    pub fn synchronize(&self) -> Result<()> {
        let op = "synchronize";
        self.bind(op)?;
        self.0.stream.synchronize().map_err(|e| self.error(op, e))?;
        self.0.ctx.check_err().map_err(|e| self.error(op, e))?;
        let mut flag = [0i64; 3];
        // SAFETY: `err` is a live 24-byte device buffer of this context.
        unsafe { drv::memcpy_dtoh_sync(&mut flag, self.0.err) }.map_err(|e| self.error(op, e))?;
        if flag[0] != 0 {
            unsafe { drv::memset_d8_sync(self.0.err, 0, 3 * 8) }.map_err(|e| self.error(op, e))?;
            let name = BAD_INDEX_OPS.get(flag[0] as usize).copied().unwrap_or("?");
            return Err(Error::IndexOutOfRange {
                op: name,
                index: flag[1],
                size: flag[2].max(0) as usize,
            });
        }
        Ok(())
    }

    /// Bytes held by live tensors and the most held at once since the last reset.
    pub fn memory_stats(&self) -> Result<(u64, u64)> {
        let get = |attr| -> Result<u64> {
            let mut v = 0u64;
            // SAFETY: the attribute is a u64 counter of a live pool.
            unsafe {
                drv::mem_pool::get_attribute(self.0.pool, attr, &mut v as *mut u64 as *mut c_void)
            }
            .map_err(|e| self.error("memory_stats", e))?;
            Ok(v)
        };
        Ok((
            get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        ))
    }

    /// The driver's free memory plus what the pool holds without a tensor in it.
    pub fn free_memory(&self) -> Option<u64> {
        self.0.ctx.bind_to_thread().ok()?;
        let (free, _) = drv::mem_get_info().ok()?;
        let mut reserved = 0u64;
        // SAFETY: the attribute is a u64 counter of a live pool.
        unsafe {
            drv::mem_pool::get_attribute(
                self.0.pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                &mut reserved as *mut u64 as *mut c_void,
            )
        }
        .ok()?;
        let (in_use, _) = self.memory_stats().ok()?;
        Some(free as u64 + reserved.saturating_sub(in_use))
    }

    /// Starts a new peak for [`CudaDevice::memory_stats`].
    pub fn reset_peak_memory(&self) -> Result<()> {
        let mut zero = 0u64;
        // SAFETY: resetting the high-water mark takes a zero u64.
        unsafe {
            drv::mem_pool::set_attribute(
                self.0.pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut c_void,
            )
        }
        .map_err(|e| self.error("reset_peak_memory", e))
    }
}
