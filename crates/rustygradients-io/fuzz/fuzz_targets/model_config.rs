//! Any text given as a model's config.json either gives a valid GptConfig or is an error; a
//! config that validates has a finite memory estimate, and small ones build a model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustygradients_core::{DType, Device};
use rustygradients_models::{Gpt, GptConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // A bare config, or the CLI's config.json with the config under "model".
    let inner = v.get("model").cloned().unwrap_or(v);
    let Ok(cfg) = serde_json::from_value::<GptConfig>(inner) else {
        return;
    };
    if cfg.validate().is_ok() {
        let est = cfg.memory_estimate(1, true);
        assert!(est.total().is_finite() || cfg.num_parameters().is_infinite());
        if est.total() < 4e6 {
            let _ = Gpt::new(cfg, DType::F32, Device::Cpu);
        }
    }
});
