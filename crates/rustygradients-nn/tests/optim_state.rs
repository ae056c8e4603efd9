//! Optimizer state dicts keyed by parameter name: a model and its optimizer saved mid-training
//! and restored into fresh ones continue bit-identically (AdamW through the one-call
//! checkpoint, SGD with momentum directly), whatever the group order; bad state dicts are
//! errors naming the entry.

use std::collections::BTreeMap;

use rustygradients_core::{manual_seed, DType, Device, Result, Tensor};
use rustygradients_io::CheckpointManager;
use rustygradients_nn::optim::{
    clip_grad_coef, clip_grad_norm_tensor, decay_groups, AdamW, AdamWConfig, Optimizer, ParamGroup,
    Sgd, SgdConfig,
};
use rustygradients_nn::{
    load_latest_checkpoint, save_checkpoint, Forward, LayerNorm, Linear, Module,
};

#[derive(Module)]
struct Mlp {
    fc: Linear,
    norm: LayerNorm,
    out: Linear,
}

impl Forward for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out
            .forward(&self.norm.forward(&self.fc.forward(x)?.tanh()?)?)
    }
}

fn mlp(seed: u64) -> Mlp {
    manual_seed(seed);
    Mlp {
        fc: Linear::new(5, 16, true).unwrap(),
        norm: LayerNorm::new(16, true).unwrap(),
        out: Linear::new(16, 2, true).unwrap(),
    }
}

/// Deterministic batches that do not touch the global generator.
fn batch(i: usize) -> Tensor {
    let v: Vec<f32> = (0..40)
        .map(|j| ((i * 40 + j) as f32 * 0.37).sin())
        .collect();
    Tensor::from_vec(v, [8, 5], Device::Cpu).unwrap()
}

/// Fresh gradients of the mean squared output on batch `i`.
fn backward(m: &Mlp, opt: &dyn Optimizer, i: usize) {
    opt.zero_grad();
    let loss = m
        .forward(&batch(i))
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    loss.backward().unwrap();
}

fn train(m: &Mlp, opt: &mut dyn Optimizer, steps: std::ops::Range<usize>) {
    for i in steps {
        backward(m, opt, i);
        opt.step().unwrap();
    }
}

fn bits(m: &dyn Module) -> Vec<(String, Vec<u32>)> {
    m.state_dict()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                t.to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            )
        })
        .collect()
}

const CFG: AdamWConfig = AdamWConfig {
    lr: 1e-2,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.1,
};

#[test]
fn adamw_checkpoint_round_trip_continues_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let manager = CheckpointManager::new(dir.path(), 2).unwrap();
    let a = mlp(1);
    let mut opt_a = AdamW::new(&a, CFG);
    train(&a, &mut opt_a, 0..3);
    let metrics = BTreeMap::from([("loss".to_string(), 1.0)]);
    save_checkpoint(
        &manager,
        &a,
        &opt_a,
        3,
        metrics,
        serde_json::json!({"note": "x"}),
    )
    .unwrap();
    train(&a, &mut opt_a, 3..6);

    // A fresh model (other initial weights) and an optimizer whose groups come in the other
    // order: the state is matched by name, not position.
    let b = mlp(2);
    let mut groups = decay_groups(&b, CFG.weight_decay);
    groups.reverse();
    let mut opt_b = AdamW::with_groups(groups, CFG);
    let ck = load_latest_checkpoint(&manager, &b, &mut opt_b).unwrap();
    assert_eq!(
        (ck.info.step, ck.info.state["note"].as_str()),
        (3, Some("x"))
    );
    train(&b, &mut opt_b, 3..6);
    assert_eq!(bits(&a), bits(&b));
    // The keys are PyTorch's state names, then the parameter's name.
    let keys: Vec<String> = opt_b.state_dict().into_iter().map(|(k, _)| k).collect();
    for k in ["exp_avg.fc.weight", "exp_avg_sq.norm.bias", "step.out.bias"] {
        assert!(keys.contains(&k.to_string()), "{k} not in {keys:?}");
    }
}

#[test]
fn sgd_momentum_state_round_trips() {
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
    };
    let a = mlp(3);
    let mut opt_a = Sgd::new(vec![ParamGroup::all(&a, 0.0)], cfg);
    train(&a, &mut opt_a, 0..2);
    let (weights, state) = (a.state_dict(), opt_a.state_dict());
    let weights: Vec<(String, Tensor)> = weights
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect();
    assert_eq!(state.len(), 6, "one momentum buffer per parameter");
    train(&a, &mut opt_a, 2..4);

    let b = mlp(4);
    b.load_state_dict(&weights, true).unwrap();
    let mut opt_b = Sgd::new(vec![ParamGroup::all(&b, 0.0)], cfg);
    opt_b.load_state_dict(&state).unwrap();
    train(&b, &mut opt_b, 2..4);
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn bad_optimizer_state_dicts_name_the_entry() {
    let m = mlp(5);
    let mut opt = AdamW::new(&m, CFG);
    train(&m, &mut opt, 0..1);
    let good = opt.state_dict();
    let before = opt.state_dict()[0].1.to_vec::<f32>().unwrap();

    let mut unknown = good.clone();
    unknown.push((
        "exp_avg.decoder.weight".into(),
        Tensor::zeros(1, DType::F32, Device::Cpu).unwrap(),
    ));
    let e = opt.load_state_dict(&unknown).unwrap_err().to_string();
    assert!(e.contains("exp_avg.decoder.weight"), "{e}");

    let partial: Vec<(String, Tensor)> = good
        .iter()
        .filter(|(k, _)| k != "exp_avg_sq.fc.bias")
        .cloned()
        .collect();
    let e = opt.load_state_dict(&partial).unwrap_err().to_string();
    assert!(e.contains("fc.bias") && e.contains("exp_avg_sq"), "{e}");

    let mut misshapen = good.clone();
    let i = misshapen
        .iter()
        .position(|(k, _)| k == "exp_avg.out.weight")
        .unwrap();
    misshapen[i].1 = Tensor::zeros([3, 3], DType::F32, Device::Cpu).unwrap();
    let e = opt.load_state_dict(&misshapen).unwrap_err().to_string();
    assert!(
        e.contains("exp_avg.out.weight") && e.contains("[3, 3]"),
        "{e}"
    );

    assert_eq!(
        opt.state_dict()[0].1.to_vec::<f32>().unwrap(),
        before,
        "a failed load changed the state"
    );
    opt.load_state_dict(&good).unwrap();
}

/// Clipping inside the update (`clip_grad_coef` + `step_scaled`) takes the same steps, to the
/// bit, as scaling the gradients first (`clip_grad_norm_tensor` + `step`): AdamW through its
/// fused update, SGD through the trait's scaled copies. The gradients are left unscaled.
#[test]
fn clipping_inside_the_step_equals_clipping_the_gradients() {
    type Make = fn(&Mlp) -> Box<dyn Optimizer>;
    let makers: [(&str, Make); 2] = [
        ("adamw", |m| Box::new(AdamW::new(m, CFG))),
        ("sgd", |m| {
            let cfg = SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            };
            Box::new(Sgd::new(vec![ParamGroup::all(m, 0.0)], cfg))
        }),
    ];
    for (name, make) in makers {
        let (a, b) = (mlp(7), mlp(7));
        let (mut oa, mut ob) = (make(&a), make(&b));
        for i in 0..6 {
            let mut norms = Vec::new();
            for (m, opt, inside) in [(&a, &mut oa, false), (&b, &mut ob, true)] {
                backward(m, opt.as_ref(), i);
                let params = opt.params();
                // A limit below the norm: the coefficient is not 1.
                if inside {
                    let before: Vec<Vec<f32>> = params
                        .iter()
                        .map(|p| p.grad().unwrap().to_vec().unwrap())
                        .collect();
                    let (norm, coef) = clip_grad_coef(&params, 0.05).unwrap().unwrap();
                    assert!(coef.item().unwrap() < 1.0, "{name} step {i}");
                    norms.push(norm.item().unwrap());
                    opt.step_scaled(&coef).unwrap();
                    for (p, g) in params.iter().zip(before) {
                        assert_eq!(p.grad().unwrap().to_vec::<f32>().unwrap(), g, "{name}");
                    }
                } else {
                    let norm = clip_grad_norm_tensor(&params, 0.05).unwrap().unwrap();
                    norms.push(norm.item().unwrap());
                    opt.step().unwrap();
                }
            }
            assert_eq!(norms[0], norms[1], "{name} step {i}: norms");
            assert_eq!(bits(&a), bits(&b), "{name} step {i}");
        }
    }
}
