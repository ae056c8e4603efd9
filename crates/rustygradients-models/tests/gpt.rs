//! GPT end to end: f64 gradient check of every parameter, overfitting one sequence, eval mode,
//! reproducibility, and PyTorch-style parameter names.

use rustygradients_core::{manual_seed, no_grad, DType, Device, Tensor};
use rustygradients_models::{Gpt, GptConfig};
use rustygradients_nn::optim::{decay_groups, Adam, AdamConfig, Optimizer};
use rustygradients_nn::Module;

fn tiny(dropout: f64, dtype: DType) -> Gpt {
    manual_seed(1);
    let cfg = GptConfig {
        vocab_size: 7,
        block_size: 5,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout,
    };
    Gpt::new(cfg, dtype, Device::Cpu).unwrap()
}

fn ids(v: &[i64], shape: [usize; 2]) -> Tensor {
    Tensor::from_slice(v, shape, Device::Cpu).unwrap()
}

#[test]
fn parameters_have_nanogpt_names() {
    let g = tiny(0.0, DType::F32);
    let names: Vec<String> = g.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        &names[..4],
        [
            "transformer.wte.weight",
            "transformer.wpe.weight",
            "transformer.h.0.ln_1.weight",
            "transformer.h.0.ln_1.bias"
        ]
    );
    assert!(names.contains(&"transformer.h.1.attn.c_attn.weight".to_string()));
    assert!(names.contains(&"transformer.h.1.mlp.c_proj.bias".to_string()));
    assert_eq!(names.last().unwrap(), "transformer.ln_f.bias");
    // 7*8 + 5*8 + 2 * (4*8 + 8*24+24 + 8*8+8 + 8*32+32 + 32*8+8) + 2*8
    assert_eq!(
        g.num_parameters(),
        56 + 40 + 2 * (32 + 216 + 72 + 288 + 264) + 16
    );
}

#[test]
fn gradcheck_gpt_end_to_end() {
    let g = tiny(0.0, DType::F64);
    let x = ids(&[1, 4, 2, 6, 0, 3, 3, 5], [2, 4]);
    let y = ids(&[4, 2, 6, 0, 3, 3, 5, 1], [2, 4]);
    g.loss(&x, &y).unwrap().backward().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (name, p) in g.named_parameters() {
        let grad = p
            .grad()
            .unwrap_or_else(|| panic!("{name} got no gradient"))
            .to_vec::<f64>()
            .unwrap();
        let base = p.to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                p.copy_(&Tensor::from_vec(v, p.shape().clone(), Device::Cpu).unwrap())
                    .unwrap();
                no_grad(|| g.loss(&x, &y).unwrap().item().unwrap())
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            p.copy_(&Tensor::from_vec(base.clone(), p.shape().clone(), Device::Cpu).unwrap())
                .unwrap();
            assert!(
                (grad[i] - numeric).abs() < 1e-6 + 1e-4 * numeric.abs(),
                "{name}[{i}]: autograd {} vs numeric {numeric}",
                grad[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, g.num_parameters());
}

#[test]
fn overfits_one_sequence() {
    let g = tiny(0.0, DType::F32);
    let x = ids(&[1, 4, 2, 6, 0], [1, 5]);
    let y = ids(&[4, 2, 6, 0, 3], [1, 5]);
    let mut opt = Adam::new(decay_groups(&g, 0.0), AdamConfig::adamw(1e-2));
    let mut loss = f64::INFINITY;
    for _ in 0..200 {
        opt.zero_grad();
        let l = g.loss(&x, &y).unwrap();
        l.backward().unwrap();
        opt.step().unwrap();
        loss = l.item().unwrap();
    }
    assert!(loss < 0.05, "loss after 200 steps: {loss}");
}

#[test]
fn eval_mode_disables_dropout() {
    let g = tiny(0.5, DType::F32);
    let x = ids(&[1, 4, 2, 6, 0], [1, 5]);
    let run = || g.logits(&x).unwrap().to_vec::<f32>().unwrap();
    g.eval();
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    g.train();
    let (c, d) = (run(), run());
    assert_ne!(c, d, "dropout should make training passes differ");
    assert_ne!(a, c);
}

#[test]
fn same_seed_same_losses() {
    let losses = || {
        let g = tiny(0.1, DType::F32);
        let x = ids(&[1, 4, 2, 6, 0, 3, 3, 5], [2, 4]);
        let y = ids(&[4, 2, 6, 0, 3, 3, 5, 1], [2, 4]);
        let mut opt = Adam::new(decay_groups(&g, 0.1), AdamConfig::adamw(1e-3));
        (0..5)
            .map(|_| {
                opt.zero_grad();
                let l = g.loss(&x, &y).unwrap();
                l.backward().unwrap();
                opt.step().unwrap();
                l.item().unwrap()
            })
            .collect::<Vec<f64>>()
    };
    assert_eq!(losses(), losses());
}

#[test]
fn rejects_sequences_longer_than_the_block() {
    let g = tiny(0.0, DType::F32);
    let err = g.logits(&ids(&[0; 6], [1, 6])).unwrap_err().to_string();
    assert!(err.contains("block_size"), "{err}");
}

#[test]
fn load_named_rejects_missing_or_misshapen_weights_and_changes_nothing() {
    let model = tiny(0.0, DType::F32);
    let before: Vec<Vec<f32>> = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.to_vec::<f32>().unwrap())
        .collect();
    let good: Vec<(String, Tensor)> = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.affine(2.0, 1.0).unwrap()))
        .collect();

    let mut missing = good.clone();
    let (gone, _) = missing.pop().unwrap();
    let err = model.load_named(&missing).unwrap_err().to_string();
    assert!(err.contains(&gone), "{err}");

    // The last tensor has the wrong shape: every earlier one is valid, and still nothing loads.
    let mut wrong = good.clone();
    let (name, t) = wrong.pop().unwrap();
    let n = t.elem_count();
    wrong.push((
        name.clone(),
        Tensor::zeros([n + 1], DType::F32, Device::Cpu).unwrap(),
    ));
    let err = model.load_named(&wrong).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("shape"), "{err}");

    let after: Vec<Vec<f32>> = model
        .named_parameters()
        .iter()
        .map(|(_, p)| p.to_vec::<f32>().unwrap())
        .collect();
    assert_eq!(
        before, after,
        "a failed load must leave the model as it was"
    );
    model.load_named(&good).unwrap();
    assert_ne!(
        model.named_parameters()[0].1.to_vec::<f32>().unwrap(),
        before[0]
    );
}
