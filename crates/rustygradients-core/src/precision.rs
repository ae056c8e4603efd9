//! Process-wide precision switches, as PyTorch's `torch.backends.cuda.matmul.allow_tf32`.

use std::sync::atomic::{AtomicBool, Ordering};

static ALLOW_TF32: AtomicBool = AtomicBool::new(false);
static ALLOW_BF16: AtomicBool = AtomicBool::new(false);

/// Lets f32 matmuls on a GPU use TF32 tensor cores (inputs rounded to 10 mantissa bits,
/// products accumulated in f32): several times faster, with relative errors near 1e-3 instead
/// of 1e-6. Off by default, so f32 means f32. The CPU ignores it.
///
/// ```
/// rustygradients_core::set_matmul_allow_tf32(true);
/// assert!(rustygradients_core::matmul_allow_tf32());
/// rustygradients_core::set_matmul_allow_tf32(false);
/// ```
pub fn set_matmul_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Whether f32 GPU matmuls may use TF32 (see [`set_matmul_allow_tf32`]).
pub fn matmul_allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Lets f32 matmuls on the CPU multiply in bf16 where the CPU has AMX tiles (Intel Xeon 4th
/// generation on): the operands are rounded to bf16 (8 significant bits) as they are packed,
/// the products summed in f32, and the result is f32. Several times faster than f32 products,
/// with relative errors near 1e-2 of the terms' magnitudes instead of 1e-6. PyTorch's
/// `torch.backends.mkldnn.matmul.fp32_precision = "bf16"`. Off by default; where the CPU has
/// no AMX it changes nothing. GPUs ignore it (see [`set_matmul_allow_tf32`]).
///
/// ```
/// rustygradients_core::set_matmul_allow_bf16(true);
/// assert!(rustygradients_core::matmul_allow_bf16());
/// rustygradients_core::set_matmul_allow_bf16(false);
/// ```
pub fn set_matmul_allow_bf16(allow: bool) {
    ALLOW_BF16.store(allow, Ordering::Relaxed);
}

/// Whether f32 CPU matmuls may multiply in bf16 (see [`set_matmul_allow_bf16`]).
pub fn matmul_allow_bf16() -> bool {
    ALLOW_BF16.load(Ordering::Relaxed)
}

/// Whether this CPU multiplies in bf16 on AMX tiles when [`set_matmul_allow_bf16`] allows it:
/// the CPU has AMX-BF16, Linux grants the process the tile state, and the CPU kernels run
/// their AVX-512 code (`RG_CPU_ISA` not forcing a lower level).
///
/// ```
/// let fast = rustygradients_core::cpu_amx_available();
/// println!("bf16 matmul products on AMX: {fast}");
/// ```
pub fn cpu_amx_available() -> bool {
    crate::cpu_backend::amx_available()
}

/// How a training (or inference) step computes: the one switch behind `train --precision`.
///
/// | precision | matmuls and attention | everything else | loss scaling |
/// |---|---|---|---|
/// | `Fp32` | f32 | f32 | no |
/// | `Tf32` | f32 through TF32 tensor cores (GPU) | f32 | no |
/// | `Bf16` | bf16, f32 accumulation ([`crate::autocast`]) | f32 / bf16 per autocast's rules | no |
/// | `Fp16` | f16, f32 accumulation ([`crate::autocast`]) | f32 / f16 per autocast's rules | yes (f16's range is narrow) |
///
/// Parameters, gradients and optimizer state stay f32 in every mode, so a checkpoint written
/// in one precision resumes in any other.
///
/// On a CPU with AMX tiles ([`Precision::enter_on`], [`cpu_amx_available`]), `Bf16` keeps every
/// tensor f32 and lets the f32 matmuls multiply in bf16 on the tiles
/// ([`set_matmul_allow_bf16`]): the CPU has nothing else that gains from half precision, and
/// autocast's casts would only cost memory traffic there. Other CPUs run autocast as above.
///
/// ```
/// use rustygradients_core::{DType, Device, Precision, Tensor};
/// let p: Precision = "bf16".parse()?;
/// let (a, b) = (Tensor::ones(&[2, 3], DType::F32, Device::Cpu)?, Tensor::ones(&[3, 2], DType::F32, Device::Cpu)?);
/// let y = p.run(|| a.matmul(&b))??;
/// assert_eq!(y.dtype(), DType::BF16);
/// assert_eq!(Precision::Fp32.run(|| a.matmul(&b))??.dtype(), DType::F32);
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Plain f32 (the default).
    #[default]
    Fp32,
    /// f32 with TF32 matmuls on a GPU.
    Tf32,
    /// bf16 autocast.
    Bf16,
    /// f16 autocast; pair it with a loss scaler.
    Fp16,
}

impl Precision {
    /// Every precision, in the order the CLI lists them.
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Tf32,
        Precision::Bf16,
        Precision::Fp16,
    ];

    /// The CLI name: `fp32`, `tf32`, `bf16` or `fp16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }

    /// The autocast dtype of this precision (`None` for fp32 and tf32).
    pub fn autocast_dtype(self) -> Option<crate::DType> {
        match self {
            Precision::Bf16 => Some(crate::DType::BF16),
            Precision::Fp16 => Some(crate::DType::F16),
            _ => None,
        }
    }

    /// Whether gradients need dynamic loss scaling to stay inside the dtype's range (fp16).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }

    /// Enters this precision on the current thread (autocast) and for the process's f32 GPU
    /// matmuls (TF32) until the guard drops.
    pub fn enter(self) -> PrecisionGuard {
        self.enter_with(self.autocast_dtype(), false)
    }

    /// Enters this precision for work on `device`: as [`Precision::enter`], except that `Bf16`
    /// on a CPU with AMX tiles keeps f32 tensors and multiplies f32 matmuls in bf16 on them
    /// (see the table above).
    ///
    /// ```
    /// use rustygradients_core::{cpu_amx_available, DType, Device, Precision, Tensor};
    /// let a = Tensor::ones(&[2, 3], DType::F32, Device::Cpu)?;
    /// let _bf16 = Precision::Bf16.enter_on(Device::Cpu);
    /// let y = a.matmul(&a.t()?)?;
    /// if cpu_amx_available() {
    ///     assert_eq!(y.dtype(), DType::F32); // bf16 products on the tiles, f32 result
    /// } else {
    ///     assert_eq!(y.dtype(), DType::BF16); // autocast
    /// }
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn enter_on(self, device: crate::Device) -> PrecisionGuard {
        if self.bf16_products_on(device) {
            self.enter_with(None, true)
        } else {
            self.enter()
        }
    }

    /// Whether [`Precision::enter_on`] `device` keeps f32 tensors and multiplies f32 matmuls in
    /// bf16 on AMX tiles (`Bf16` on a CPU with them) rather than entering autocast.
    pub fn bf16_products_on(self, device: crate::Device) -> bool {
        device == crate::Device::Cpu && self == Precision::Bf16 && cpu_amx_available()
    }

    fn enter_with(self, autocast: Option<crate::DType>, bf16: bool) -> PrecisionGuard {
        let tf32 = ALLOW_TF32.swap(self == Precision::Tf32, Ordering::Relaxed);
        let bf16 = ALLOW_BF16.swap(bf16, Ordering::Relaxed);
        let autocast = crate::AutocastGuard::new(autocast)
            .expect("autocast dtypes of a Precision are half types");
        PrecisionGuard {
            tf32,
            bf16,
            _autocast: autocast,
        }
    }

    /// Runs `f` in this precision (see [`Precision::enter`]).
    pub fn run<R>(self, f: impl FnOnce() -> R) -> crate::Result<R> {
        let _guard = self.enter();
        Ok(f())
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| crate::Error::InvalidArgument {
                op: "Precision",
                msg: format!("unknown precision {s:?}: expected fp32, tf32, bf16 or fp16"),
            })
    }
}

/// Restores the previous precision when dropped (see [`Precision::enter`]).
pub struct PrecisionGuard {
    tf32: bool,
    bf16: bool,
    _autocast: crate::AutocastGuard,
}

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        ALLOW_TF32.store(self.tf32, Ordering::Relaxed);
        ALLOW_BF16.store(self.bf16, Ordering::Relaxed);
    }
}
