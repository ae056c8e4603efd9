//! An MLP learns a 3-class spiral: data, model, AdamW with warmup + cosine and clipping,
//! shuffled batches, train/eval, and a checkpoint that reloads into a fresh model and optimizer
//! whose next step is identical. `cargo run --release --example spiral_mlp`
use rustygradients::io::CheckpointManager;
use rustygradients::nn::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Optimizer};
use rustygradients::nn::{load_latest_checkpoint, save_checkpoint, DataLoader, Dropout};
use rustygradients::nn::{Forward, Linear, Module, Sequential};
use rustygradients::{manual_seed, no_grad, serde_json, DType, Device, Reduction, Result, Tensor};

fn net() -> Result<Sequential> {
    Ok(Sequential::new()
        .append(Linear::new(2, 64, true)?)
        .append_fn(|x| x.tanh())
        .append(Dropout::new(0.1))
        .append(Linear::new(64, 3, true)?))
}

/// `n` points on each of 3 interleaved spiral arms, with a little noise, and their labels.
fn spiral(n: usize) -> Result<(Tensor, Tensor)> {
    let i = Tensor::arange(0.0, (3 * n) as f64, 1.0, DType::F32, Device::Cpu)?;
    let label = i.div_scalar(n as f64)?.to_dtype(DType::I64)?;
    let class = label.to_dtype(DType::F32)?;
    let r = i.sub(&class.mul_scalar(n as f64)?)?.div_scalar(n as f64)?;
    let noise = Tensor::randn(3 * n, DType::F32, Device::Cpu)?.mul_scalar(0.2)?;
    let t = class.add(&r)?.mul_scalar(4.0)?.add(&noise)?;
    let x = Tensor::stack(&[r.mul(&t.sin()?)?, r.mul(&t.cos()?)?], 1)?;
    Ok((x, label))
}

fn values(m: &Sequential) -> Result<Vec<Vec<f32>>> {
    m.parameters().iter().map(|p| p.to_vec()).collect()
}

fn step(net: &Sequential, opt: &mut AdamW, x: &Tensor, y: &Tensor, lr: f64) -> Result<()> {
    opt.set_learning_rate(lr);
    opt.zero_grad();
    let loss = net.forward(x)?.cross_entropy(y, None, Reduction::Mean)?;
    loss.backward()?;
    clip_grad_norm(&opt.params(), 1.0)?;
    opt.step()
}

pub fn main() -> Result<()> {
    let epochs = 100;
    let dir = std::env::temp_dir().join(format!("rg-spiral-{}", std::process::id()));
    manual_seed(0);
    let (x, y) = spiral(100)?;
    let (model, config) = (net()?, AdamWConfig::default().with_lr(2e-2));
    let mut opt = AdamW::new(&model, config);
    let schedule = LrSchedule::warmup_cosine(2e-2, 1e-3, 30, epochs * 10);
    let mut loader = DataLoader::new(&[&x, &y], 32)?.shuffle(0);
    let mut n = 0;
    for _ in 0..epochs {
        for batch in loader.epoch()? {
            step(&model, &mut opt, &batch[0], &batch[1], schedule.lr_at(n))?;
            n += 1;
        }
    }
    model.eval();
    let pred = no_grad(|| model.forward(&x))?.argmax(1, false)?;
    let acc = pred.eq(&y)?.to_dtype(DType::F64)?.mean_all()?.item()?;
    // Save, reload into a fresh model and optimizer, and take the same next step with both.
    let manager = CheckpointManager::new(&dir, 2)?;
    let metrics = [("accuracy".to_string(), acc)].into();
    let meta = serde_json::json!({});
    save_checkpoint(&manager, &model, &opt, n as u64, metrics, meta)?;
    let copy = net()?;
    let mut opt2 = AdamW::new(&copy, config);
    load_latest_checkpoint(&manager, &copy, &mut opt2)?;
    copy.eval();
    step(&model, &mut opt, &x, &y, 1e-3)?;
    step(&copy, &mut opt2, &x, &y, 1e-3)?;
    let same = values(&model)? == values(&copy)?;
    println!("accuracy {acc:.3}; the reloaded checkpoint steps identically: {same}");
    assert!(acc > 0.95 && same, "no fit, or no exact resume");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
