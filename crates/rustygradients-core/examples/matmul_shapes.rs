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
    // The three products of each Linear layer in training, with the operand layouts autograd
    // produces: y = x·Wᵀ (W stored (out, in)), dx = g·W, dW = gᵀ·x.
    for (fan_in, fan_out) in [(128, 384), (128, 128), (128, 512), (512, 128), (128, 65)] {
        let x = Tensor::randn([768, fan_in], DType::F32, Device::Cpu)?;
        let w = Tensor::randn([fan_out, fan_in], DType::F32, Device::Cpu)?;
        let g = Tensor::randn([768, fan_out], DType::F32, Device::Cpu)?;
        let flop = 2.0 * (768 * fan_in * fan_out) as f64;
        let fwd = time(|| x.matmul(&w.t()?))?;
        let dx = time(|| g.matmul(&w))?;
        let dw = time(|| g.t()?.matmul(&x))?;
        println!(
            "linear {fan_in}->{fan_out}: x·Wt {:.1}, g·W {:.1}, gt·x {:.1} GFLOP/s",
            flop / fwd / 1e9,
            flop / dx / 1e9,
            flop / dw / 1e9
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
