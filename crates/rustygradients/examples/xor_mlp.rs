//! A two-layer MLP learns XOR with hand-written SGD: the smallest end-to-end use of tensors,
//! autograd and `no_grad`. Run: `cargo run --release --example xor_mlp`.
use rustygradients::{manual_seed, no_grad, DType, Device, Reduction, Result, Tensor};

/// Trains for `steps` and returns (final loss, accuracy on the four XOR inputs).
pub fn train(steps: usize) -> Result<(f64, f64)> {
    manual_seed(0);
    let dev = Device::Cpu;
    let x = Tensor::from_vec(vec![0f32, 0., 0., 1., 1., 0., 1., 1.], [4, 2], dev)?;
    let y = Tensor::from_vec(vec![0i64, 1, 1, 0], 4, dev)?;
    let mut params = vec![
        Tensor::randn([2, 16], DType::F32, dev)?,
        Tensor::zeros(16, DType::F32, dev)?,
        Tensor::randn([16, 2], DType::F32, dev)?.mul_scalar(0.25)?,
        Tensor::zeros(2, DType::F32, dev)?,
    ];
    let mut loss = f64::NAN;
    for _ in 0..steps {
        params = params
            .into_iter()
            .map(|p| p.requires_grad_(true))
            .collect::<Result<_>>()?;
        let hidden = x.matmul(&params[0])?.add(&params[1])?.tanh()?;
        let logits = hidden.matmul(&params[2])?.add(&params[3])?;
        let l = logits.cross_entropy(&y, None, Reduction::Mean)?;
        l.backward()?;
        loss = l.item()?;
        // SGD step, outside the graph: p ← p − lr·∇p
        params = no_grad(|| {
            params
                .iter()
                .map(|p| p.sub(&p.grad().expect("grad after backward").mul_scalar(0.5)?))
                .collect::<Result<_>>()
        })?;
    }
    let logits = x
        .matmul(&params[0])?
        .add(&params[1])?
        .tanh()?
        .matmul(&params[2])?
        .add(&params[3])?;
    let correct = logits
        .argmax(1, false)?
        .eq(&y)?
        .to_dtype(DType::F32)?
        .mean_all()?;
    Ok((loss, correct.item()?))
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let (loss, acc) = train(300)?;
    println!(
        "XOR MLP: final loss {loss:.4}, accuracy {:.0}%",
        acc * 100.0
    );
    Ok(())
}
