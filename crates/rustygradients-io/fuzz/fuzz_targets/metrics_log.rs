//! Any bytes given as metrics.jsonl either parse into records or are an error naming the line;
//! what parses writes back and parses again to the same records.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustygradients_io::metrics_log::parse_until;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = parse_until("fuzz", data, usize::MAX) {
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).expect("a record serializes"));
            text.push('\n');
        }
        let again = parse_until("again", text.as_bytes(), usize::MAX).expect("reparses");
        assert_eq!(again.len(), records.len());
    }
});
