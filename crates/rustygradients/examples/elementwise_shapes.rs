//! Time per call of the non-GEMM ops of a baby-GPT training step (f32, activations of
//! 768 tokens × 512 or × 128), in nanoseconds per output element.
//! `cargo run --release --example elementwise_shapes`
use rustygradients::{DType, Device, Result, Tensor};

#[path = "support/training_env.rs"]
mod training_env;

fn time(f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    for _ in 0..20 {
        f()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let n = 100;
        let t = std::time::Instant::now();
        for _ in 0..n {
            f()?;
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    Ok(best)
}

fn report(name: &str, elems: usize, f: impl Fn() -> Result<Tensor>) -> Result<()> {
    let dt = time(f)?;
    println!(
        "{name:<28} {:>8.1} us  {:>6.3} ns/elem",
        dt * 1e6,
        dt * 1e9 / elems as f64
    );
    Ok(())
}

fn main() -> Result<()> {
    training_env::run_like_training(run)
}

fn run() -> Result<()> {
    let h = Tensor::randn([12, 64, 512], DType::F32, Device::Cpu)?;
    let g = Tensor::randn([12, 64, 512], DType::F32, Device::Cpu)?;
    let x = Tensor::randn([12, 64, 128], DType::F32, Device::Cpu)?;
    let y = Tensor::randn([12, 64, 128], DType::F32, Device::Cpu)?;
    let bias = Tensor::randn([512], DType::F32, Device::Cpu)?;
    let w = Tensor::ones([128], DType::F32, Device::Cpu)?;
    let n4 = h.elem_count();
    let n1 = x.elem_count();
    report("gelu (768x512)", n4, || h.gelu())?;
    report("gelu backward (768x512)", n4, || {
        let hv = h.detach().requires_grad_(true)?;
        let out = hv.gelu()?;
        out.backward_with(&g)?;
        Ok(hv.grad().unwrap())
    })?;
    report("add (768x128)", n1, || x.add(&y))?;
    report("mul (768x512)", n4, || h.mul(&g))?;
    report("add bias (768x512 + 512)", n4, || h.add(&bias))?;
    report("sum over rows (768x512)", n4, || {
        h.reshape([768, 512])?.sum(0, true)
    })?;
    report("layer_norm (768x128)", n1, || {
        x.layer_norm(Some(&w), Some(&w), 1e-5)
    })?;
    report("softmax (768x512)", n4, || h.softmax(2))?;
    report("transpose copy (768x128)", n1, || {
        x.reshape([12, 64, 4, 32])?.transpose(1, 2)?.contiguous()
    })?;
    // One layer's attention: (batch 12, heads 4, time 64, head dim 32), causal.
    let qkv: Vec<Tensor> = (0..3)
        .map(|_| Tensor::randn([12, 4, 64, 32], DType::F32, Device::Cpu))
        .collect::<Result<_>>()?;
    let ga = Tensor::randn([12, 4, 64, 32], DType::F32, Device::Cpu)?;
    let na = ga.elem_count();
    report("attention forward", na, || {
        qkv[0].scaled_dot_product_attention(&qkv[1], &qkv[2], true, 0.0)
    })?;
    report("attention forward+backward", na, || {
        let q = qkv[0].detach().requires_grad_(true)?;
        let y = q.scaled_dot_product_attention(&qkv[1], &qkv[2], true, 0.0)?;
        y.backward_with(&ga)?;
        Ok(q.grad().unwrap())
    })?;
    Ok(())
}
