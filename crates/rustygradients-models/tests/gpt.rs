//! GPT end to end: f64 gradient check of every parameter, overfitting one sequence, eval mode,
//! reproducibility, and PyTorch-style parameter names.

use rustygradients_core::{manual_seed, no_grad, DType, Device, Tensor};
use rustygradients_models::{Gpt, GptConfig};
use rustygradients_nn::optim::{decay_groups, Adam, AdamConfig, Optimizer};
use rustygradients_nn::Module;

/// Tests here seed and draw from the one process-wide generator (initial weights, dropout):
/// run concurrently, they would interleave their draws. Each test holds this lock.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(dropout: f64, dtype: DType) -> Gpt {
    manual_seed(1);
    let cfg = GptConfig {
        vocab_size: 7,
        block_size: 5,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout,
        activation: Default::default(),
    };
    Gpt::new(cfg, dtype, Device::Cpu).unwrap()
}

fn ids(v: &[i64], shape: [usize; 2]) -> Tensor {
    Tensor::from_slice(v, shape, Device::Cpu).unwrap()
}

#[test]
fn parameters_have_nanogpt_names() {
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
    let g = tiny(0.0, DType::F32);
    let err = g.logits(&ids(&[0; 6], [1, 6])).unwrap_err().to_string();
    assert!(err.contains("block_size"), "{err}");
}

#[test]
fn load_state_dict_rejects_missing_or_misshapen_weights_and_changes_nothing() {
    let _serial = serial();
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
    let err = model
        .load_state_dict(&missing, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&gone), "{err}");

    // The last tensor has the wrong shape: every earlier one is valid, and still nothing loads.
    let mut wrong = good.clone();
    let (name, t) = wrong.pop().unwrap();
    let n = t.elem_count();
    wrong.push((
        name.clone(),
        Tensor::zeros([n + 1], DType::F32, Device::Cpu).unwrap(),
    ));
    let err = model.load_state_dict(&wrong, true).unwrap_err().to_string();
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
    model.load_state_dict(&good, true).unwrap();
    assert_ne!(
        model.named_parameters()[0].1.to_vec::<f32>().unwrap(),
        before[0]
    );
}

/// Changing a future token never changes an earlier position's logits, and no gradient flows
/// from an earlier position's output to a later position (checked through the position
/// embedding's gradient rows). In f32 with a block of 67 (two whole 32-key blocks and a tail),
/// so the fused attention kernel's block and tail paths all run.
#[test]
fn gpt_is_causal_forward_and_backward() {
    let _serial = serial();
    manual_seed(5);
    let cfg = GptConfig {
        vocab_size: 65,
        block_size: 67,
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        dropout: 0.0,
        activation: Default::default(),
    };
    let g = Gpt::new(cfg, DType::F32, Device::Cpu).unwrap();
    let (b, t, v) = (2usize, 67usize, 65usize);
    let base: Vec<i64> = (0..b * t).map(|i| ((i * 31 + 7) % v) as i64).collect();
    let logits = |ids: &[i64]| -> Vec<f32> {
        no_grad(|| g.logits(&Tensor::from_slice(ids, [b, t], Device::Cpu).unwrap()))
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    let before = logits(&base);
    for p in [0usize, 1, 31, 32, 33, 63, 66] {
        let mut changed = base.clone();
        for row in 0..b {
            changed[row * t + p] = (changed[row * t + p] + 1) % v as i64;
        }
        let after = logits(&changed);
        for row in 0..b {
            for pos in 0..t {
                let range = (row * t + pos) * v..(row * t + pos + 1) * v;
                let same = before[range.clone()] == after[range];
                if pos < p {
                    assert!(same, "changing position {p} changed the logits at {pos}");
                } else if pos == p {
                    assert!(!same, "changing position {p} did not change its own logits");
                }
            }
        }
    }
    // Backward: a loss on positions 0..=p only must give zero gradient to positions > p.
    for p in [0usize, 20, 40, 65] {
        let x = Tensor::from_slice(&base, [b, t], Device::Cpu).unwrap();
        let out = g.logits(&x).unwrap();
        let weights: Vec<f32> = (0..b * t * v)
            .map(|i| {
                if (i / v) % t <= p {
                    ((i % 13) as f32 - 6.0) / 7.0
                } else {
                    0.0
                }
            })
            .collect();
        let w = Tensor::from_vec(weights, [b, t, v], Device::Cpu).unwrap();
        for q in g.parameters() {
            q.zero_grad();
        }
        out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let wpe = g.wpe.weight.grad().unwrap().to_vec::<f32>().unwrap();
        let c = 64;
        for pos in 0..t {
            let row = &wpe[pos * c..(pos + 1) * c];
            let nonzero = row.iter().any(|&x| x != 0.0);
            if pos > p {
                assert!(!nonzero, "loss on positions <= {p} reached position {pos}");
            } else {
                assert!(nonzero, "position {pos} got no gradient");
            }
        }
    }
}

/// Every config field out of range is an error naming it (never a panic deeper down), and a
/// model too large for memory is refused before anything is allocated.
#[test]
fn invalid_configs_name_the_field() {
    let _serial = serial();
    let ok = GptConfig {
        vocab_size: 7,
        block_size: 5,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        activation: Default::default(),
    };
    let cases = [
        (
            GptConfig {
                vocab_size: 0,
                ..ok.clone()
            },
            "vocab_size is 0",
        ),
        (
            GptConfig {
                n_embd: 0,
                ..ok.clone()
            },
            "n_embd is 0",
        ),
        (
            GptConfig {
                n_head: 0,
                ..ok.clone()
            },
            "n_head is 0",
        ),
        (
            GptConfig {
                n_head: 3,
                ..ok.clone()
            },
            "not a multiple of n_head 3",
        ),
        (
            GptConfig {
                block_size: 0,
                ..ok.clone()
            },
            "block_size is 0",
        ),
        (
            GptConfig {
                dropout: 1.0,
                ..ok.clone()
            },
            "dropout 1",
        ),
        (
            GptConfig {
                dropout: f64::NAN,
                ..ok.clone()
            },
            "dropout NaN",
        ),
    ];
    for (cfg, expect) in cases {
        let e = Gpt::new(cfg, DType::F32, Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(expect) && !e.contains("GptConfig {"), "{e}");
    }
    let huge = GptConfig {
        n_embd: 1 << 20,
        n_layer: 64,
        ..ok
    };
    let e = Gpt::new(huge.clone(), DType::F32, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("GiB") && e.contains("available"), "{e}");
    let est = huge.memory_estimate(1, true);
    assert!(est.training_state == 3.0 * est.parameters && est.total() > 1e15);
}

/// Loss and every parameter's gradient (by name) of one training step from `manual_seed(seed)`,
/// with or without activation checkpointing; `precision` is entered around forward and backward
/// as `train --precision` does.
fn loss_and_grads(
    g: &mut Gpt,
    checkpointing: bool,
    seed: u64,
    precision: rustygradients_core::Precision,
) -> (f64, Vec<(String, Vec<f64>)>) {
    g.activation_checkpointing = checkpointing;
    for p in g.parameters() {
        p.zero_grad();
    }
    let x = ids(&[1, 4, 2, 6, 0, 3, 3, 5, 2, 2], [2, 5]);
    let y = ids(&[4, 2, 6, 0, 3, 3, 5, 1, 2, 0], [2, 5]);
    manual_seed(seed);
    let loss = {
        let _p = precision.enter();
        let loss = g.loss(&x, &y).unwrap();
        loss.backward().unwrap();
        loss
    };
    let grads = g
        .named_parameters()
        .into_iter()
        .map(|(n, p)| {
            let grad = p
                .grad()
                .unwrap_or_else(|| panic!("{n} got no gradient (checkpointing {checkpointing})"));
            assert_eq!(grad.dtype(), p.dtype(), "{n}: gradient dtype");
            (n, grad.to_f64_vec().unwrap())
        })
        .collect();
    g.activation_checkpointing = false;
    (loss.to_f64_vec().unwrap()[0], grads)
}

fn assert_same_grads(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], rtol: f64) {
    assert_eq!(a.len(), b.len());
    for ((name, ga), (nb, gb)) in a.iter().zip(b) {
        assert_eq!(name, nb);
        for (i, (x, y)) in ga.iter().zip(gb).enumerate() {
            assert!(
                (x - y).abs() <= rtol * y.abs().max(1e-6),
                "{name}[{i}]: checkpointed {x} vs plain {y}"
            );
        }
    }
}

#[test]
fn activation_checkpointing_gives_the_same_loss_and_gradients() {
    use rustygradients_core::Precision;
    let _serial = serial();
    let mut g = tiny(0.0, DType::F64);
    assert!(!g.activation_checkpointing, "off by default");
    let (l0, g0) = loss_and_grads(&mut g, false, 3, Precision::Fp32);
    let (l1, g1) = loss_and_grads(&mut g, true, 3, Precision::Fp32);
    assert_eq!(l1, l0);
    assert_same_grads(&g1, &g0, 1e-12);
    // The parameters got their gradients through the recomputation, not by accident: every
    // block's weights are non-zero there.
    assert!(g1
        .iter()
        .filter(|(n, _)| n.contains(".h.1.attn."))
        .all(|(_, v)| v.iter().any(|x| *x != 0.0)));
    // And the forward pass without autograd is the plain one.
    let x = ids(&[1, 4, 2, 6, 0], [1, 5]);
    g.eval();
    let plain = no_grad(|| g.logits(&x).unwrap().to_vec::<f64>().unwrap());
    g.activation_checkpointing = true;
    let checked = no_grad(|| g.logits(&x).unwrap().to_vec::<f64>().unwrap());
    assert_eq!(plain, checked);
}

#[test]
fn activation_checkpointing_replays_dropout() {
    use rustygradients_core::Precision;
    let _serial = serial();
    let mut g = tiny(0.3, DType::F64);
    g.train();
    let (l0, g0) = loss_and_grads(&mut g, false, 11, Precision::Fp32);
    let (l1, g1) = loss_and_grads(&mut g, true, 11, Precision::Fp32);
    assert_eq!(l1, l0, "the same masks in the forward pass");
    assert_same_grads(&g1, &g0, 1e-12);
    // Dropout is really active: another seed, another loss.
    let (l2, _) = loss_and_grads(&mut g, true, 12, Precision::Fp32);
    assert_ne!(l2, l0);
    // Without dropout the loss would be different again.
    g.eval();
    let (l3, _) = loss_and_grads(&mut g, true, 11, Precision::Fp32);
    assert_ne!(l3, l0);
}

#[test]
fn activation_checkpointing_under_bf16_autocast_matches_the_plain_autocast_step() {
    use rustygradients_core::Precision;
    let _serial = serial();
    let mut g = tiny(0.2, DType::F32);
    g.train();
    let (l0, g0) = loss_and_grads(&mut g, false, 5, Precision::Bf16);
    let (l1, g1) = loss_and_grads(&mut g, true, 5, Precision::Bf16);
    assert!(l0.is_finite());
    assert_eq!(l1, l0);
    assert_same_grads(&g1, &g0, 1e-6);
    // bf16 really was in use: the f32 step differs.
    let (l32, g32) = loss_and_grads(&mut g, true, 5, Precision::Fp32);
    assert_ne!(l32, l0);
    assert!((l32 - l0).abs() < 5e-2 * l32.abs(), "{l32} vs {l0}");
    assert_ne!(g32[2].1, g0[2].1);
}
