//! Kernel modules: CUDA C sources in `kernels/`, compiled by NVRTC for the GPU at first use.
//! The PTX is cached on disk keyed by a hash of the source, the GPU architecture and the NVRTC
//! version, so a second process loads it without compiling. The cache lives in
//! `$RUSTYGRADIENTS_KERNEL_CACHE`, else `$XDG_CACHE_HOME/rustygradients/kernels`, else
//! `~/.cache/rustygradients/kernels`; set the variable to `off` to disable it. A cache that
//! cannot be read or written only costs a compile.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileOptions, Ptx};

const PRELUDE: &str = include_str!("kernels/prelude.cuh");

/// One compiled unit of kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    Elementwise,
    Reduce,
    Rows,
    Indexing,
    Optim,
    Random,
    Flash,
}

impl Module {
    #[cfg(test)]
    pub(crate) const ALL: [Module; 7] = [
        Module::Elementwise,
        Module::Reduce,
        Module::Rows,
        Module::Indexing,
        Module::Optim,
        Module::Random,
        Module::Flash,
    ];

    fn body(self) -> &'static str {
        match self {
            Module::Elementwise => include_str!("kernels/elementwise.cu"),
            Module::Reduce => include_str!("kernels/reduce.cu"),
            Module::Rows => include_str!("kernels/rows.cu"),
            Module::Indexing => include_str!("kernels/indexing.cu"),
            Module::Optim => include_str!("kernels/optim.cu"),
            Module::Random => include_str!("kernels/random.cu"),
            Module::Flash => include_str!("kernels/flash.cu"),
        }
    }

    /// The full source NVRTC compiles.
    pub(crate) fn source(self) -> String {
        format!("{PRELUDE}\n{}", self.body())
    }
}

/// FNV-1a, 64 bits: stable across Rust versions, which a cache key must be.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("RUSTYGRADIENTS_KERNEL_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("rustygradients").join("kernels")),
    }
}

/// Compiles `module` for `arch` (`sm_90`, ...) with NVRTC, or loads it from the disk cache.
pub(crate) fn ptx(module: Module, arch: &str) -> Result<Ptx, String> {
    let src = module.source();
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; the library's presence was checked when the device opened.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    let version = format!("{major}.{minor}");
    let key = fnv1a(&[src.as_bytes(), arch.as_bytes(), version.as_bytes()]);
    let path = cache_dir().map(|d| d.join(format!("{module:?}-{arch}-{key:016x}.ptx")));
    if let Some(p) = &path {
        if let Ok(text) = std::fs::read_to_string(p) {
            return Ok(Ptx::from_src(text));
        }
    }
    let opts = CompileOptions {
        arch: None,
        options: vec![
            format!("--gpu-architecture={}", arch.replace("sm_", "compute_")),
            "--std=c++17".into(),
        ],
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!(
            "NVRTC failed to compile the {module:?} kernels:\n{}",
            log.to_string_lossy()
        ),
        e => format!("NVRTC failed on the {module:?} kernels: {e:?}"),
    })?;
    if let Some(p) = &path {
        // Written to a temporary name and renamed, so a reader never sees half a file.
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(p.parent().expect("cache files have a folder"))?;
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, ptx.to_src())?;
            std::fs::rename(&tmp, p)
        };
        let _ = write();
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module compiles for Hopper. Needs only NVRTC (no GPU); skips without it.
    #[test]
    fn kernels_compile_with_nvrtc() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipping: libnvrtc.so not found (no CUDA toolkit on this machine)");
            return;
        }
        std::env::set_var("RUSTYGRADIENTS_KERNEL_CACHE", "off");
        for m in Module::ALL {
            if let Err(e) = ptx(m, "sm_90") {
                panic!("{e}");
            }
        }
    }
}
