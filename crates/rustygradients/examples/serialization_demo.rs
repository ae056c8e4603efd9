//! Legacy JSON vs safetensors for the seed's two GPT sizes: file size, save time and load time,
//! plus the cost of opening a safetensors file through its memory map. safetensors tensors
//! borrow the mapped file, so their load time includes one pass over every element (the JSON
//! load has read every element by the time it returns).
//!
//! `cargo run --release --example serialization_demo [-- small|medium|both] [DIR]`
//!
//! Saves are durable (fsync, rename, fsync of the directory) for both formats. Files go to DIR
//! (default `target/serialization_demo`) and are deleted afterwards.
use std::path::Path;
use std::time::Instant;

use rustygradients::io::legacy_json::{load_json, save_json};
use rustygradients::io::{load_safetensors, save_safetensors, SafetensorsFile};
use rustygradients::models::{Gpt, GptConfig};
use rustygradients::nn::Module;
use rustygradients::{manual_seed, DType, Device, Result};

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn size_mb(p: &Path) -> f64 {
    std::fs::metadata(p).map_or(f64::NAN, |m| m.len() as f64 / 1e6)
}

fn run(label: &str, vocab: usize, n_embd: usize, n_layer: usize, dir: &Path) -> Result<()> {
    manual_seed(0);
    let cfg = GptConfig {
        vocab_size: vocab,
        block_size: 1024,
        n_layer,
        n_head: n_embd / 64,
        n_embd,
        dropout: 0.0,
        activation: Default::default(),
    };
    let model = Gpt::new(cfg, DType::F32, Device::Cpu)?;
    let tensors = model.named_parameters();
    let params = model.num_parameters();
    println!("\n{label}: {vocab} vocab, {n_embd} dim, {n_layer} layers — {params} parameters");

    let st = dir.join(format!("{label}.safetensors"));
    let t = Instant::now();
    save_safetensors(&st, &tensors, None)?;
    let st_save = secs(t);
    let t = Instant::now();
    let file = SafetensorsFile::open(&st)?;
    let st_open = secs(t);
    drop(file);
    // CPU tensors borrow the mapped file: loading reads nothing, so time the first pass over
    // every weight as well (a sum, which touches each element once).
    let t = Instant::now();
    let (back, _) = load_safetensors(&st, Device::Cpu)?;
    let st_map = secs(t);
    for (_, w) in &back {
        w.sum_all()?;
    }
    let st_load = secs(t);
    assert_eq!(back.len(), tensors.len());
    drop(back);

    let js = dir.join(format!("{label}.json"));
    let t = Instant::now();
    save_json(&js, &tensors)?;
    let js_save = secs(t);
    let t = Instant::now();
    let back = load_json(&js, Device::Cpu)?;
    for (_, w) in &back {
        w.sum_all()?;
    }
    let js_load = secs(t);
    // The JSON copy must hold exactly the same weights.
    for ((n, a), (m, b)) in tensors.iter().zip(&back) {
        assert_eq!(n, m);
        assert_eq!(a.to_vec::<f32>()?, b.to_vec::<f32>()?, "{n}");
    }
    drop(back);

    let (st_mb, js_mb) = (size_mb(&st), size_mb(&js));
    println!("| format | file size | save | load (and read every element) |");
    println!("|---|---|---|---|");
    println!("| JSON | {js_mb:.0} MB | {js_save:.2} s | {js_load:.2} s |");
    println!(
        "| safetensors | {st_mb:.0} MB | {st_save:.2} s ({:.2} GB/s) | {st_load:.2} s (open: {:.2} ms; every tensor mapped: {:.2} ms) |",
        st_mb / 1e3 / st_save,
        st_open * 1e3,
        st_map * 1e3
    );
    println!(
        "| JSON / safetensors | {:.1}× | {:.1}× | {:.1}× |",
        js_mb / st_mb,
        js_save / st_save,
        js_load / st_load
    );
    std::fs::remove_file(&st).ok();
    std::fs::remove_file(&js).ok();
    Ok(())
}

fn main() -> Result<()> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "both".into());
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "target/serialization_demo".into());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).map_err(|e| rustygradients::Error::io(dir, e))?;
    if which == "small" || which == "both" {
        run("small", 5_000, 768, 6, dir)?;
    }
    if which == "medium" || which == "both" {
        run("medium", 10_000, 1024, 12, dir)?;
    }
    Ok(())
}
