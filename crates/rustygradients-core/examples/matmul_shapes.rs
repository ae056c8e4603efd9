//! GFLOP/s of `matmul` on the shapes of the baby-GPT benchmark (f32).
//! `cargo run --release -p rustygradients-core --example matmul_shapes`
use rustygradients_core::{DType, Device, Result, Tensor};

fn time(f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..10 {
        f()?;
    }
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64)
}

fn main() -> Result<()> {
    for (m, k, n) in [
        (768, 128, 384),
        (768, 128, 512),
        (768, 512, 128),
        (384, 768, 128),
        (768, 384, 128),
    ] {
        let a = Tensor::randn([m, k], DType::F32, Device::Cpu)?;
        let b = Tensor::randn([k, n], DType::F32, Device::Cpu)?;
        let dt = time(|| a.matmul(&b))?;
        println!(
            "{m} {k} {n}: {:.1} GFLOP/s",
            2.0 * (m * k * n) as f64 / dt / 1e9
        );
    }
    let q = Tensor::randn([48, 64, 32], DType::F32, Device::Cpu)?;
    let k = Tensor::randn([48, 32, 64], DType::F32, Device::Cpu)?;
    let dt = time(|| q.matmul(&k))?;
    println!(
        "bmm 48x64x32x64: {:.1} GFLOP/s, {:.0} us",
        2.0 * (48 * 64 * 32 * 64) as f64 / dt / 1e9,
        dt * 1e6
    );
    Ok(())
}
