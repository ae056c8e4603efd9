//! A small bidirectional transformer encoder classifies padded token sequences: modules built
//! with `#[derive(Module)]` (nested and `Vec` children), attention with a key-padding mask, mean
//! pooling over the real tokens, AdamW. The task: does the sequence contain token 1?
//! `cargo run --release --example encoder_classifier`
use rand::Rng;
use rustygradients::nn::optim::{AdamW, AdamWConfig, Optimizer};
use rustygradients::nn::SelfAttention;
use rustygradients::nn::{Activation, Embedding, Forward, LayerNorm, Linear, Mlp, Module};
use rustygradients::{manual_seed, no_grad, random, DType, Device, Reduction, Result, Tensor};

const VOCAB: usize = 8; // token 0 is padding
const T: usize = 12;
const C: usize = 32;

#[derive(Module)]
struct EncoderLayer {
    ln_1: LayerNorm,
    attn: SelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

#[derive(Module)]
struct Classifier {
    tok: Embedding,
    pos: Embedding,
    layers: Vec<EncoderLayer>,
    ln_f: LayerNorm,
    head: Linear,
}

impl Classifier {
    fn new(n_layer: usize) -> Result<Self> {
        let layer = || -> Result<EncoderLayer> {
            Ok(EncoderLayer {
                ln_1: LayerNorm::new(C, true)?,
                attn: SelfAttention::new(C, 4, false)?,
                ln_2: LayerNorm::new(C, true)?,
                mlp: Mlp::new(C, 4 * C, Activation::Gelu)?,
            })
        };
        Ok(Classifier {
            tok: Embedding::normal(VOCAB, C, 0.1)?,
            pos: Embedding::normal(T, C, 0.1)?,
            layers: (0..n_layer).map(|_| layer()).collect::<Result<_>>()?,
            ln_f: LayerNorm::new(C, true)?,
            head: Linear::new(C, 2, true)?,
        })
    }

    /// Logits `(B, 2)` for ids `(B, T)` whose padding (id 0) is marked by `pad` (`(B, T)` u8).
    fn forward(&self, ids: &Tensor, pad: &Tensor) -> Result<Tensor> {
        let positions = Tensor::arange(0.0, T as f64, 1.0, DType::I64, ids.device())?;
        let mut h = self.tok.forward(ids)?.add(&self.pos.forward(&positions)?)?;
        for l in &self.layers {
            h = h.add(&l.attn.forward_masked(&l.ln_1.forward(&h)?, Some(pad))?)?;
            h = h.add(&l.mlp.forward(&l.ln_2.forward(&h)?)?)?;
        }
        // Mean over the real tokens only.
        let keep = pad.to_dtype(DType::F32)?.affine(-1.0, 1.0)?.unsqueeze(2)?;
        let pooled = self
            .ln_f
            .forward(&h)?
            .mul(&keep)?
            .sum(1, false)?
            .div(&keep.sum(1, false)?)?;
        self.head.forward(&pooled)
    }
}

/// `n` sequences of 4 to 12 random tokens from 1..VOCAB, padded with 0 to `T`; the padding
/// mask; label 1 when token 1 occurs.
fn batch(n: usize, rng: &mut impl Rng) -> Result<(Tensor, Tensor, Tensor)> {
    let (mut ids, mut pad, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let len = rng.gen_range(4..=T);
        let seq: Vec<i64> = (0..T)
            .map(|i| {
                if i < len {
                    rng.gen_range(1..VOCAB as i64)
                } else {
                    0
                }
            })
            .collect();
        labels.push(i64::from(seq.contains(&1)));
        pad.extend(seq.iter().map(|&t| u8::from(t == 0)));
        ids.extend(seq);
    }
    let cpu = Device::Cpu;
    Ok((
        Tensor::from_vec(ids, [n, T], cpu)?,
        Tensor::from_vec(pad, [n, T], cpu)?,
        Tensor::from_vec(labels, n, cpu)?,
    ))
}

/// Trains for `steps`; returns the accuracy on fresh sequences.
pub fn run(steps: usize) -> Result<f64> {
    manual_seed(0);
    let mut rng = random::rng_state();
    let model = Classifier::new(2)?;
    let mut opt = AdamW::new(&model, AdamWConfig::default().with_lr(3e-3));
    for _ in 0..steps {
        let (ids, pad, y) = batch(32, &mut rng)?;
        opt.zero_grad();
        model
            .forward(&ids, &pad)?
            .cross_entropy(&y, None, Reduction::Mean)?
            .backward()?;
        opt.step()?;
    }
    model.eval();
    let (ids, pad, y) = batch(512, &mut rng)?;
    let pred = no_grad(|| model.forward(&ids, &pad))?.argmax(1, false)?;
    pred.eq(&y)?.to_dtype(DType::F64)?.mean_all()?.item()
}

#[allow(dead_code)]
fn main() -> Result<()> {
    let acc = run(300)?;
    println!(
        "encoder classifier: accuracy {:.1}% on 512 fresh sequences",
        acc * 100.0
    );
    Ok(())
}
