//! The CPU's limits and our f32 GEMM against them, as JSON lines (one per measurement), for
//! `scripts/bench_cpu.sh` to set beside PyTorch and numpy/OpenBLAS:
//!
//! - `fma_peak`: GFLOP/s of independent FMAs on every thread, 256-bit (AVX2) and, where the
//!   CPU has it, 512-bit (AVX-512): the ceiling a GEMM can reach;
//! - `copy`: GB/s of a parallel copy of 256 MiB (bytes read plus bytes written);
//! - `sgemm`: GFLOP/s of `matmul` (median of repeats) at square sizes and at the products of a
//!   training step, with the kernel `RG_CPU_ISA` selects;
//! - `gemv`: GB/s of weights streamed by one row times a matrix (`x·W` and `x·Wᵀ`);
//! - `elementwise` (Gelem/s over 1M f32) and `rows` (GB/s of input read: LayerNorm, softmax,
//!   cross-entropy over 4096 rows).
//!
//! Everything runs on a worker of rayon's pool, as the CLI's commands do.
//!
//! `cargo run --release -p rustygradients-core --example cpu_bench [-- --quick]`
use std::time::Instant;

use rustygradients_core::{DType, Device, Result, Tensor};

/// Median seconds of `f` over `reps` runs after one warm-up.
fn median_secs(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f().map(|_| s.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;

    /// Accumulators per loop: enough independent chains to cover the FMA latency on two pipes.
    const CHAINS: usize = 12;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(0.5); CHAINS];
        let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let mut out = [0f32; 8];
        let s = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
        _mm256_storeu_ps(out.as_mut_ptr(), s);
        out.iter().sum()
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(0.5); CHAINS];
        let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        _mm512_reduce_add_ps(
            acc.iter()
                .fold(_mm512_setzero_ps(), |s, &a| _mm512_add_ps(s, a)),
        )
    }

    /// FLOPs of one call of a kernel of `lanes`-wide vectors.
    pub fn flops(iters: usize, lanes: usize) -> f64 {
        (iters * CHAINS * lanes * 2) as f64
    }
}

/// GFLOP/s of `kernel` run on every rayon thread at once.
#[cfg(target_arch = "x86_64")]
fn fma_peak(lanes: usize, kernel: unsafe fn(usize) -> f32) -> f64 {
    let iters = 20_000_000;
    let threads = rayon::current_num_threads();
    let run = || {
        let s = Instant::now();
        let sink: f32 = rayon::broadcast(|_| {
            // SAFETY: the caller checked the CPU features this kernel is compiled for.
            unsafe { kernel(iters) }
        })
        .iter()
        .sum();
        std::hint::black_box(sink);
        s.elapsed().as_secs_f64()
    };
    run();
    let secs = (0..3).map(|_| run()).fold(f64::INFINITY, f64::min);
    peak::flops(iters, lanes) * threads as f64 / secs / 1e9
}

fn main() -> Result<()> {
    // On a worker of the thread pool, as the CLI runs its commands: each parallel op then
    // shares its work with the other workers directly, instead of waking them from outside the
    // pool and sleeping until they finish (about 10 µs per op on this 2-core host).
    rayon::scope(|_| run())
}

fn run() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = rayon::current_num_threads();
    let isa = std::env::var("RG_CPU_ISA").unwrap_or_else(|_| "auto".into());
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let g = fma_peak(8, peak::fma256);
            println!("{{\"bench\":\"fma_peak\",\"isa\":\"avx2\",\"threads\":{threads},\"gflops\":{g:.1}}}");
        }
        if is_x86_feature_detected!("avx512f") {
            let g = fma_peak(16, peak::fma512);
            println!("{{\"bench\":\"fma_peak\",\"isa\":\"avx512\",\"threads\":{threads},\"gflops\":{g:.1}}}");
        }
    }
    {
        use rayon::prelude::*;
        let n = 64 << 20;
        let src = vec![1f32; n];
        let mut dst = vec![0f32; n];
        let chunk = n / threads.max(1);
        let secs = median_secs(5, || {
            dst.par_chunks_mut(chunk)
                .zip(src.par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s));
            Ok(())
        })?;
        let gbs = 2.0 * (n * 4) as f64 / secs / 1e9;
        println!("{{\"bench\":\"copy\",\"threads\":{threads},\"gbs\":{gbs:.1}}}");
    }
    let mut shapes: Vec<(String, usize, usize, usize, bool, bool)> = Vec::new();
    let squares: &[usize] = if quick { &[1024] } else { &[1024, 2048, 4096] };
    for &s in squares {
        shapes.push((format!("square {s}"), s, s, s, false, false));
    }
    // A GPT step's products (x·Wᵀ, g·W, gᵀ·x) at the baby GPT's and GPT-2-small's widths.
    for (rows, fan_in, fan_out) in [(768, 128, 384), (768, 128, 512), (1024, 768, 3072)] {
        shapes.push((
            format!("x·Wt {rows}x{fan_in}->{fan_out}"),
            rows,
            fan_in,
            fan_out,
            false,
            true,
        ));
        shapes.push((
            format!("g·W {rows}x{fan_out}->{fan_in}"),
            rows,
            fan_out,
            fan_in,
            false,
            false,
        ));
        shapes.push((
            format!("gt·x {fan_out}x{rows}x{fan_in}"),
            fan_out,
            rows,
            fan_in,
            true,
            false,
        ));
    }
    // The same products with bf16 products on AMX tiles (f32 in and out), where the CPU has
    // them: `isa` "amx-bf16".
    let amx = rustygradients_core::cpu_amx_available();
    let runs = shapes
        .iter()
        .map(|s| (s, false))
        .chain(shapes.iter().filter(|_| amx).map(|s| (s, true)))
        .collect::<Vec<_>>();
    for (&(ref name, m, k, n, ta, tb), bf16) in runs {
        rustygradients_core::set_matmul_allow_bf16(bf16);
        let isa = if bf16 { "amx-bf16" } else { isa.as_str() };
        let a = if ta {
            Tensor::randn([k, m], DType::F32, Device::Cpu)?.t()?
        } else {
            Tensor::randn([m, k], DType::F32, Device::Cpu)?
        };
        let b = if tb {
            Tensor::randn([n, k], DType::F32, Device::Cpu)?.t()?
        } else {
            Tensor::randn([k, n], DType::F32, Device::Cpu)?
        };
        let flop = 2.0 * (m * k * n) as f64;
        let reps = ((2e10 / flop) as usize).clamp(5, 200);
        let secs = median_secs(reps, || a.matmul(&b).map(|_| ()))?;
        println!(
            "{{\"bench\":\"sgemm\",\"shape\":\"{name}\",\"m\":{m},\"k\":{k},\"n\":{n},\"isa\":\"{isa}\",\"threads\":{threads},\"gflops\":{:.1}}}",
            flop / secs / 1e9
        );
    }
    rustygradients_core::set_matmul_allow_bf16(false);
    // One row times a weight matrix (a token being generated): the weights' bytes per second.
    for (k, n, transposed) in [(768, 3072, false), (768, 50304, true)] {
        let x = Tensor::randn([1, k], DType::F32, Device::Cpu)?;
        let w = if transposed {
            Tensor::randn([n, k], DType::F32, Device::Cpu)?.t()?
        } else {
            Tensor::randn([k, n], DType::F32, Device::Cpu)?
        };
        let secs = median_secs(50, || x.matmul(&w).map(|_| ()))?;
        let name = if transposed { "x·Wt" } else { "x·W" };
        println!(
            "{{\"bench\":\"gemv\",\"shape\":\"{name} 1x{k}x{n}\",\"isa\":\"{isa}\",\"threads\":{threads},\"gbs\":{:.1}}}",
            (k * n * 4) as f64 / secs / 1e9
        );
    }
    // Elementwise over 1M f32: elements per second.
    let x = Tensor::randn(1 << 20, DType::F32, Device::Cpu)?;
    type Op = fn(&Tensor) -> Result<Tensor>;
    let ops: [(&str, Op); 4] = [
        ("gelu", |t| t.gelu()),
        ("sigmoid", |t| t.sigmoid()),
        ("exp", |t| t.exp()),
        ("tanh", |t| t.tanh()),
    ];
    for (name, f) in ops {
        let secs = median_secs(100, || f(&x).map(|_| ()))?;
        println!(
            "{{\"bench\":\"elementwise\",\"op\":\"{name}\",\"isa\":\"{isa}\",\"threads\":{threads},\"gelems\":{:.2}}}",
            (1 << 20) as f64 / secs / 1e9
        );
    }
    // Row kernels over 4096 rows: bytes of input read per second.
    let rows = 4096;
    let narrow = Tensor::randn([rows, 768], DType::F32, Device::Cpu)?;
    let (w, b) = (
        Tensor::ones(768, DType::F32, Device::Cpu)?,
        Tensor::zeros(768, DType::F32, Device::Cpu)?,
    );
    let logits = Tensor::randn([rows, 50304], DType::F32, Device::Cpu)?;
    let targets = Tensor::randint(0, 50304, rows, Device::Cpu)?;
    type RowOp<'a> = (&'a str, &'a Tensor, Box<dyn Fn() -> Result<Tensor> + 'a>);
    let row_ops: [RowOp; 3] = [
        (
            "layer_norm 4096x768",
            &narrow,
            Box::new(|| narrow.layer_norm(Some(&w), Some(&b), 1e-5)),
        ),
        ("softmax 4096x768", &narrow, Box::new(|| narrow.softmax(-1))),
        (
            "cross_entropy 4096x50304",
            &logits,
            Box::new(|| logits.cross_entropy(&targets, None, rustygradients_core::Reduction::Mean)),
        ),
    ];
    for (name, input, f) in row_ops {
        let secs = median_secs(20, || f().map(|_| ()))?;
        println!(
            "{{\"bench\":\"rows\",\"op\":\"{name}\",\"isa\":\"{isa}\",\"threads\":{threads},\"gbs\":{:.1}}}",
            (input.elem_count() * 4) as f64 / secs / 1e9
        );
    }
    // Attention forward + backward, causal (B 8, H 12, T 256, D 64): GFLOP/s over the causal
    // half of the 7 products (2 forward, 5 backward).
    let (b, h, t, d) = (8, 12, 256, 64);
    let mk = || Tensor::randn([b, h, t, d], DType::F32, Device::Cpu)?.requires_grad_(true);
    let (q, k, v) = (mk()?, mk()?, mk()?);
    let go = Tensor::randn([b, h, t, d], DType::F32, Device::Cpu)?;
    let secs = median_secs(20, || {
        q.scaled_dot_product_attention(&k, &v, true, 0.0)?
            .backward_with(&go)
    })?;
    let flop = 7.0 * 2.0 * (b * h) as f64 * (t * t * d) as f64 / 2.0;
    println!(
        "{{\"bench\":\"attention\",\"op\":\"sdpa fwd+bwd B8 H12 T256 D64\",\"isa\":\"{isa}\",\"threads\":{threads},\"gflops\":{:.1}}}",
        flop / secs / 1e9
    );
    Ok(())
}
