//! Any text given as a tokenizer.json either loads or is an error; a loaded tokenizer
//! round-trips its own vocabulary and its JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustygradients_tokenizers::CharTokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tok) = CharTokenizer::from_json(text) {
        let ids: Vec<u32> = (0..tok.vocab_size() as u32).collect();
        let decoded = tok.decode(&ids).expect("every id decodes");
        assert_eq!(tok.encode(&decoded).expect("its own characters encode"), ids);
        assert_eq!(CharTokenizer::from_json(&tok.to_json()).expect("reloads"), tok);
    }
});
