//! `#[derive(Module)]` and state dicts: names from fields (nested, `Vec`, `Option`, renamed,
//! skipped), train/eval reaching every descendant with no forwarding code, bit-exact
//! save/load round trips, and load errors that name the parameter.

use rustygradients_core::{manual_seed, DType, Device, Result, Tensor};
use rustygradients_nn::optim::{decay_groups, Optimizer, Sgd, SgdConfig};
use rustygradients_nn::{Dropout, Forward, LayerNorm, Linear, Module, Sequential};

const F32: DType = DType::F32;
const CPU: Device = Device::Cpu;

#[derive(Module)]
struct Inner {
    proj: Linear,
    drop: Dropout,
}

#[derive(Module)]
struct Net {
    #[module(rename = "encoder.layers")]
    layers: Vec<Inner>,
    norm: Option<LayerNorm>,
    head: Linear,
    #[module(kind = "norm")]
    scale: Tensor,
    #[module(skip)]
    _name: Vec<String>,
    width: usize,
}

impl Forward for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            x = l.drop.forward(&l.proj.forward(&x)?.relu()?)?;
        }
        if let Some(n) = &self.norm {
            x = n.forward(&x)?;
        }
        self.head.forward(&x)?.mul(&self.scale)
    }
}

fn net(seed: u64) -> Net {
    manual_seed(seed);
    let w = 8;
    Net {
        layers: (0..2)
            .map(|_| {
                Ok(Inner {
                    proj: Linear::new(w, w, true)?,
                    drop: Dropout::new(0.5),
                })
            })
            .collect::<Result<_>>()
            .unwrap(),
        norm: Some(LayerNorm::new(w, true).unwrap()),
        head: Linear::new(w, 3, false).unwrap(),
        scale: Tensor::ones(3, F32, CPU).unwrap(),
        _name: vec!["not a parameter".into()],
        width: w,
    }
}

fn names(m: &dyn Module) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn names_come_from_the_fields() {
    let n = net(0);
    assert_eq!(
        names(&n),
        [
            "encoder.layers.0.proj.weight",
            "encoder.layers.0.proj.bias",
            "encoder.layers.1.proj.weight",
            "encoder.layers.1.proj.bias",
            "norm.weight",
            "norm.bias",
            "head.weight",
            "scale",
        ]
    );
    assert_eq!(n.width, 8);
    assert_eq!(n.num_parameters(), 2 * (64 + 8) + 16 + 24 + 3);
    // Kinds drive the default weight-decay groups: only the two Linear weights and the head decay.
    let groups = decay_groups(&n, 0.1);
    assert_eq!(groups[0].params.len(), 3);
    assert_eq!(groups[1].params.len(), 5);
    // PyTorch's Sequential names: 0, 1, 2 (a function layer has no parameters).
    let seq = Sequential::new()
        .append(Linear::new(2, 4, true).unwrap())
        .append_fn(|x| x.relu())
        .append(Linear::new(4, 1, true).unwrap());
    assert_eq!(names(&seq), ["0.weight", "0.bias", "2.weight", "2.bias"]);
}

#[test]
fn eval_reaches_every_descendant() {
    let n = net(1);
    let x = Tensor::randn([16, 8], F32, CPU).unwrap();
    let run = || n.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(run(), run(), "dropout is active in training mode");
    n.eval();
    assert_eq!(run(), run(), "eval() must switch off the nested dropouts");
    n.train();
    assert_ne!(run(), run());
    // Through a Sequential and a Box too.
    let seq = Sequential::new().append(Dropout::new(0.5));
    seq.eval();
    assert_eq!(
        seq.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        x.to_vec::<f32>().unwrap()
    );
}

#[test]
fn state_dicts_round_trip_bit_exactly_and_training_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let a = net(2);
    a.save(&path).unwrap();
    let b = net(3);
    assert_ne!(
        a.state_dict()[0].1.to_vec::<f32>().unwrap(),
        b.state_dict()[0].1.to_vec::<f32>().unwrap()
    );
    b.load(&path).unwrap();
    for ((na, ta), (nb, tb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(na, nb);
        let bits = |t: &Tensor| -> Vec<u32> {
            t.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(ta), bits(tb), "{na}");
    }
    // One identical SGD step on each gives identical weights.
    a.eval();
    b.eval();
    let x = Tensor::randn([4, 8], F32, CPU).unwrap();
    for m in [&a, &b] {
        let mut opt = Sgd::new(
            decay_groups(m, 0.0),
            SgdConfig {
                lr: 0.1,
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
            },
        );
        m.forward(&x)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
    }
    assert_eq!(
        a.head.weight.to_vec::<f32>().unwrap(),
        b.head.weight.to_vec::<f32>().unwrap()
    );
}

#[test]
fn load_errors_name_the_parameter_and_change_nothing() {
    let n = net(4);
    let mut dict: Vec<(String, Tensor)> = net(5).state_dict();
    dict.pop(); // "scale"
    let e = n.load_state_dict(&dict, true).unwrap_err().to_string();
    assert!(e.contains("missing tensor scale"), "{e}");
    let report = n.load_state_dict(&dict, false).unwrap();
    assert_eq!(report.missing, ["scale"]);
    assert!(report.unexpected.is_empty());

    let mut extra = net(5).state_dict();
    extra.push(("decoder.weight".into(), Tensor::zeros(1, F32, CPU).unwrap()));
    let e = n.load_state_dict(&extra, true).unwrap_err().to_string();
    assert!(e.contains("unexpected tensor decoder.weight"), "{e}");
    assert_eq!(
        n.load_state_dict(&extra, false).unwrap().unexpected,
        ["decoder.weight"]
    );

    let n = net(4);
    let before = n.state_dict()[0].1.to_vec::<f32>().unwrap();
    let mut wrong = net(5).state_dict();
    let last = wrong.len() - 2; // head.weight
    wrong[last].1 = Tensor::zeros([3, 9], F32, CPU).unwrap();
    let e = n.load_state_dict(&wrong, true).unwrap_err().to_string();
    assert!(e.contains("head.weight") && e.contains("[3, 9]"), "{e}");
    assert_eq!(
        n.state_dict()[0].1.to_vec::<f32>().unwrap(),
        before,
        "a failed load changed the module"
    );

    // f64 tensors load into f32 parameters, as PyTorch's load_state_dict converts.
    let f64s: Vec<(String, Tensor)> = net(6)
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F64).unwrap()))
        .collect();
    n.load_state_dict(&f64s, true).unwrap();
    assert_eq!(n.state_dict()[0].1.dtype(), F32);
}

/// A hand-written module (no derive) is walked the same way.
struct Pair(Linear, Linear);

impl Module for Pair {
    fn visit(&self, v: &mut dyn rustygradients_nn::Visitor) {
        v.child("first", &self.0);
        v.child("second", &self.1);
    }
}

#[derive(Module)]
struct Tuple(Linear, #[module(skip)] u8, Pair);

#[test]
fn tuple_structs_and_hand_written_modules() {
    let lin = || Linear::new(2, 2, false).unwrap();
    let t = Tuple(lin(), 7, Pair(lin(), lin()));
    assert_eq!(names(&t), ["0.weight", "2.first.weight", "2.second.weight"]);
    assert_eq!(t.1, 7);
}

#[test]
fn to_converts_every_parameter_once_built() {
    let mut n = net(7);
    let x = Tensor::randn([3, 8], F32, CPU).unwrap();
    n.eval();
    let y32 = n.forward(&x).unwrap().to_vec::<f32>().unwrap();
    n.to(CPU, DType::F64).unwrap();
    assert!(n.parameters().iter().all(|p| p.dtype() == DType::F64));
    // Leaves that required grad still do (`scale` was made without it and stays so).
    assert!(n.head.weight.requires_grad() && !n.scale.requires_grad());
    let y64 = n
        .forward(&x.to_dtype(DType::F64).unwrap())
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for (a, b) in y32.iter().zip(&y64) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Gradients reach the converted parameters.
    n.forward(&x.to_dtype(DType::F64).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(n.head.weight.grad().is_some());
    // A hand-written module that does not implement visit_mut is reported, not skipped.
    let lin = || Linear::new(2, 2, false).unwrap();
    let mut t = Tuple(lin(), 7, Pair(lin(), lin()));
    let e = t.to(CPU, DType::F64).unwrap_err().to_string();
    assert!(
        e.contains("2.first.weight") && e.contains("visit_mut"),
        "{e}"
    );
}
