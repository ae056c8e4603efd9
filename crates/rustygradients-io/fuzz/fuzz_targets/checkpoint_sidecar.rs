//! Any text given to the checkpoint sidecar parser either parses or is an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rustygradients_io::CheckpointInfo::from_json("fuzz", text);
    }
});
