//! Where a tensor lives. Every device has a backend folder (`cpu_backend/`, `cuda_backend/`).

/// A compute device. `Cuda(ordinal)` names a GPU; it exists in every build so that code and
/// errors can name it, and opening it fails cleanly when the `cuda` feature or the GPU is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The host CPU (the default).
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal (`cuda:0`, ...). In a build without the `cuda` feature,
    /// or on a machine without that GPU, putting a tensor on it fails with
    /// [`Error::DeviceUnavailable`](crate::Error::DeviceUnavailable).
    Cuda(usize),
}

/// A GPU allocator's counters (see [`Device::memory_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub in_use: u64,
    /// The most bytes held at once since the last reset.
    pub peak: u64,
}

impl Device {
    /// True for [`Device::Cpu`].
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }
    /// True for any [`Device::Cuda`].
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// True when tensors can be put on this device: always for the CPU; for a GPU, when this
    /// build has the `cuda` feature and the driver opens that ordinal.
    pub fn is_available(&self) -> bool {
        crate::storage::Storage::synchronize(*self).is_ok()
    }

    /// Waits until the work queued on the device has finished (a no-op on the CPU, whose ops
    /// run when called) and reports an error a GPU kernel recorded since the last check, such
    /// as an out-of-range index. Reading values (`to_vec`, `item`) synchronises too.
    pub fn synchronize(&self) -> crate::Result<()> {
        crate::storage::Storage::synchronize(*self)
    }

    /// Device memory held by tensors now and the most held at once since the last
    /// [`Device::reset_peak_memory`] (PyTorch's `torch.cuda.memory_allocated` and
    /// `max_memory_allocated`), for GPUs; `None` for the CPU.
    pub fn memory_stats(&self) -> crate::Result<Option<MemoryStats>> {
        Ok(crate::storage::Storage::memory_stats(*self)?
            .map(|(in_use, peak)| MemoryStats { in_use, peak }))
    }

    /// Starts a new peak for [`Device::memory_stats`].
    pub fn reset_peak_memory(&self) -> crate::Result<()> {
        crate::storage::Storage::reset_peak_memory(*self)
    }

    /// A table of GPU time per kernel and cuBLAS call since the last report, when the process
    /// was started with `RUSTYGRADIENTS_CUDA_PROFILE=1` (each launch is then timed between two
    /// synchronisations, so the run is slower); `None` otherwise and for the CPU.
    pub fn profile_report(&self) -> crate::Result<Option<String>> {
        crate::storage::Storage::profile_report(*self)
    }

    /// Bytes this process could still allocate on the device, when known: for the CPU, Linux's
    /// `MemAvailable`, lowered to the cgroup's remaining allowance when one is set; for a GPU,
    /// the driver's free memory plus what this process's pool holds free for reuse. For sizing
    /// checks made before a large allocation (an allocation that fails aborts the process).
    pub fn available_memory(&self) -> Option<u64> {
        match self {
            Device::Cpu => host_available_memory(),
            Device::Cuda(_) => crate::storage::Storage::free_memory(*self),
        }
    }
}

fn host_available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let mut avail = kib * 1024;
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    // cgroup v2: "max" (no limit) does not parse and leaves MemAvailable as the answer.
    if let (Some(max), Some(cur)) = (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        avail = avail.min(max.saturating_sub(cur));
    }
    Some(avail)
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
