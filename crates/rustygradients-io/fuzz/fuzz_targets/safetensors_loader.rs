//! Any byte string given to the safetensors loader either loads or is an error: never a
//! panic, never out-of-bounds. Loaded tensors are read back in full.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustygradients_core::Device;

fuzz_target!(|data: &[u8]| {
    if let Ok((tensors, _)) = rustygradients_io::load_safetensors_bytes("fuzz", data, Device::Cpu) {
        for (_, t) in tensors {
            let _ = t.to_dtype(rustygradients_core::DType::F64).and_then(|t| t.to_vec::<f64>());
        }
    }
});
