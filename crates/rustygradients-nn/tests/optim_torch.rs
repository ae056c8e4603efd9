//! Optimizer updates, gradient clipping and the LR schedule against PyTorch fixtures
//! (`scripts/gen_optim_fixtures.py`): same parameters after every step within 1e-6.

use rustygradients_core::{Device, Tensor};
use rustygradients_nn::optim::{
    clip_grad_norm, Adam, AdamConfig, LrSchedule, Optimizer, ParamGroup, Sgd, SgdConfig,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct T {
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(Deserialize)]
struct OptCase {
    name: String,
    kind: String,
    hyper: serde_json::Map<String, serde_json::Value>,
    lrs: Option<Vec<f64>>,
    params0: Vec<T>,
    grads: Vec<Vec<T>>,
    params: Vec<Vec<T>>,
}

#[derive(Deserialize)]
struct ClipCase {
    name: String,
    max_norm: f64,
    grads: Vec<T>,
    total_norm: f64,
    clipped: Vec<T>,
}

#[derive(Deserialize)]
struct SchedCase {
    name: String,
    max_lr: f64,
    min_lr: f64,
    warmup: usize,
    decay_iters: usize,
    lrs: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixtures {
    optimizers: Vec<OptCase>,
    clip: Vec<ClipCase>,
    schedules: Vec<SchedCase>,
}

fn load() -> Fixtures {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensor(t: &T) -> Tensor {
    Tensor::from_slice(&t.data, t.shape.as_slice(), Device::Cpu).unwrap()
}

fn assert_close(got: &Tensor, want: &T, tol: f64, what: &str) {
    let g = got.to_vec::<f64>().unwrap();
    for (i, (a, b)) in g.iter().zip(&want.data).enumerate() {
        assert!((a - b).abs() <= tol, "{what}: element {i}: {a} vs {b}");
    }
}

#[test]
fn optimizer_steps_match_pytorch() {
    let fx = load();
    assert!(fx.optimizers.len() >= 9);
    for case in &fx.optimizers {
        let h = |k: &str| case.hyper[k].as_f64().unwrap();
        let params: Vec<Tensor> = case
            .params0
            .iter()
            .map(|t| tensor(t).requires_grad_(true).unwrap())
            .collect();
        let named = params
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("p{i}"), p.clone()))
            .collect();
        let groups = vec![ParamGroup::new(named, h("weight_decay"))];
        let mut opt: Box<dyn Optimizer> = match case.kind.as_str() {
            "sgd" => Box::new(Sgd::new(
                groups,
                SgdConfig {
                    lr: h("lr"),
                    momentum: h("momentum"),
                    dampening: h("dampening"),
                    nesterov: case.hyper["nesterov"].as_bool().unwrap(),
                },
            )),
            kind => Box::new(Adam::new(
                groups,
                AdamConfig {
                    lr: h("lr"),
                    beta1: h("beta1"),
                    beta2: h("beta2"),
                    eps: h("eps"),
                    decoupled_weight_decay: kind == "adamw",
                },
            )),
        };
        for (step, (grads, want)) in case.grads.iter().zip(&case.params).enumerate() {
            if let Some(lrs) = &case.lrs {
                opt.set_learning_rate(lrs[step]);
            }
            for (p, g) in params.iter().zip(grads) {
                p.set_grad(Some(tensor(g))).unwrap();
            }
            opt.step().unwrap();
            for (k, (p, w)) in params.iter().zip(want).enumerate() {
                assert_close(p, w, 1e-6, &format!("{} step {step} param {k}", case.name));
            }
        }
    }
}

#[test]
fn clip_grad_norm_matches_pytorch() {
    for case in load().clip {
        let params: Vec<Tensor> = case
            .grads
            .iter()
            .map(|g| {
                tensor(g)
                    .zeros_like()
                    .unwrap()
                    .requires_grad_(true)
                    .unwrap()
            })
            .collect();
        for (p, g) in params.iter().zip(&case.grads) {
            p.set_grad(Some(tensor(g))).unwrap();
        }
        let norm = clip_grad_norm(&params, case.max_norm).unwrap();
        assert!(
            (norm - case.total_norm).abs() < 1e-9,
            "{}: norm {norm} vs {}",
            case.name,
            case.total_norm
        );
        for (p, w) in params.iter().zip(&case.clipped) {
            assert_close(&p.grad().unwrap(), w, 1e-12, &case.name);
        }
    }
}

#[test]
fn warmup_cosine_matches_nanogpt() {
    for case in load().schedules {
        let s = LrSchedule::WarmupCosine {
            max_lr: case.max_lr,
            min_lr: case.min_lr,
            warmup: case.warmup,
            decay_iters: case.decay_iters,
        };
        for (step, &want) in case.lrs.iter().enumerate() {
            assert!(
                (s.lr_at(step) - want).abs() < 1e-15,
                "{} step {step}: {} vs {want}",
                case.name,
                s.lr_at(step)
            );
        }
    }
}
