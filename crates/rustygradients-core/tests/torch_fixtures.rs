//! Forward values and gradients checked against PyTorch. The fixtures are made by
//! `scripts/gen_torch_fixtures.py` (float64 throughout); this test needs no Python.

mod common;

use rustygradients_core::{DType, Reduction, Result, Tensor};
use serde::Deserialize;
use serde_json::Value;

use common::{assert_close, CPU};

#[derive(Deserialize)]
struct Fixtures {
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct TensorData {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    op: String,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    inputs: Vec<TensorData>,
    output: Option<TensorData>,
    outputs: Option<Vec<TensorData>>,
    cotangent: Option<TensorData>,
    cotangents: Option<Vec<TensorData>>,
    grads: Option<Vec<Option<TensorData>>>,
}

fn to_tensor(t: &TensorData) -> Tensor {
    match t.dtype.as_str() {
        "f64" => Tensor::from_slice(&t.data, t.shape.as_slice(), CPU).unwrap(),
        "i64" => Tensor::from_vec(
            t.data.iter().map(|&v| v as i64).collect(),
            t.shape.as_slice(),
            CPU,
        )
        .unwrap(),
        "u8" => Tensor::from_vec(
            t.data.iter().map(|&v| v as u8).collect(),
            t.shape.as_slice(),
            CPU,
        )
        .unwrap(),
        other => panic!("unknown fixture dtype {other}"),
    }
}

fn reduction(p: &serde_json::Map<String, Value>) -> Reduction {
    match p["reduction"].as_str().unwrap() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        _ => Reduction::None,
    }
}

/// Runs the op a case names on `x`; returns every output.
fn run(case: &Case, x: &[Tensor]) -> Result<Vec<Tensor>> {
    let p = &case.params;
    let f = |k: &str| p[k].as_f64().unwrap();
    let i = |k: &str| p[k].as_i64().unwrap();
    let b = |k: &str| p[k].as_bool().unwrap();
    let dims = || {
        p["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect::<Vec<i64>>()
    };
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match case.op.as_str() {
        "neg" => one(x[0].neg()),
        "abs" => one(x[0].abs()),
        "exp" => one(x[0].exp()),
        "log" => one(x[0].log()),
        "sqrt" => one(x[0].sqrt()),
        "rsqrt" => one(x[0].rsqrt()),
        "sin" => one(x[0].sin()),
        "cos" => one(x[0].cos()),
        "tanh" => one(x[0].tanh()),
        "sigmoid" => one(x[0].sigmoid()),
        "relu" => one(x[0].relu()),
        "gelu" => one(x[0].gelu()),
        "gelu_tanh" => one(x[0].gelu_tanh()),
        "silu" => one(x[0].silu()),
        "softplus" => one(x[0].softplus()),
        "sqr" => one(x[0].sqr()),
        "recip" => one(x[0].recip()),
        "powf" => one(x[0].powf(f("exponent"))),
        "clamp" => one(x[0].clamp(f("min"), f("max"))),
        "add" => one(x[0].add(&x[1])),
        "sub" => one(x[0].sub(&x[1])),
        "mul" => one(x[0].mul(&x[1])),
        "div" => one(x[0].div(&x[1])),
        "pow" => one(x[0].pow(&x[1])),
        "maximum" => one(x[0].maximum(&x[1])),
        "minimum" => one(x[0].minimum(&x[1])),
        "eq" => one(x[0].eq(&x[1])),
        "ne" => one(x[0].ne(&x[1])),
        "lt" => one(x[0].lt(&x[1])),
        "le" => one(x[0].le(&x[1])),
        "gt" => one(x[0].gt(&x[1])),
        "ge" => one(x[0].ge(&x[1])),
        "where_cond" => one(x[0].where_cond(&x[1], &x[2])),
        "masked_fill" => one(x[0].masked_fill(&x[1], f("value"))),
        "sum" => one(x[0].sum(dims(), b("keepdim"))),
        "mean" => one(x[0].mean(dims(), b("keepdim"))),
        "max" => one(x[0].max(dims(), b("keepdim"))),
        "min" => one(x[0].min(dims(), b("keepdim"))),
        "logsumexp" => one(x[0].logsumexp(dims(), b("keepdim"))),
        "var" => one(x[0].var(dims(), b("unbiased"), b("keepdim"))),
        "argmax" => one(x[0].argmax(i("dim"), b("keepdim"))),
        "argmin" => one(x[0].argmin(i("dim"), b("keepdim"))),
        "softmax" => one(x[0].softmax(i("dim"))),
        "log_softmax" => one(x[0].log_softmax(i("dim"))),
        "layer_norm" => one(x[0].layer_norm(Some(&x[1]), Some(&x[2]), f("eps"))),
        "rms_norm" => one(x[0].rms_norm(Some(&x[1]), f("eps"))),
        "matmul" => one(x[0].matmul(&x[1])),
        "cross_entropy" => one(x[0].cross_entropy(&x[1], Some(i("ignore_index")), reduction(p))),
        "mse_loss" => one(x[0].mse_loss(&x[1], reduction(p))),
        "embedding" => one(x[0].embedding(&x[1])),
        "index_select" => one(x[0].index_select(&x[1], i("dim"))),
        "gather" => one(x[0].gather(i("dim"), &x[1])),
        "scatter_add" => one(x[0].scatter_add(i("dim"), &x[1], &x[2])),
        "cat" => one(Tensor::cat(x, i("dim"))),
        "stack" => one(Tensor::stack(x, i("dim"))),
        "split" => x[0].split(i("split_size") as usize, i("dim")),
        "chunk" => x[0].chunk(i("chunks") as usize, i("dim")),
        "tril" => one(x[0].tril(i("diagonal"))),
        "triu" => one(x[0].triu(i("diagonal"))),
        "scaled_dot_product_attention" => {
            one(x[0].scaled_dot_product_attention(&x[1], &x[2], b("causal"), 0.0))
        }
        other => panic!("fixture op {other} has no mapping"),
    }
}

fn check_values(got: &Tensor, want: &TensorData, what: &str) {
    assert_eq!(got.dims(), want.shape.as_slice(), "{what}: shape");
    let expected_dtype = match want.dtype.as_str() {
        "f64" => DType::F64,
        "i64" => DType::I64,
        _ => DType::U8,
    };
    assert_eq!(got.dtype(), expected_dtype, "{what}: dtype");
    assert_close(&got.to_f64_vec().unwrap(), &want.data, 1e-10, 1e-12, what);
}

#[test]
fn forward_and_gradients_match_pytorch() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_ops.json");
    let fx: Fixtures = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(fx.cases.len() > 200, "fixture file looks truncated");
    for case in &fx.cases {
        let inputs: Vec<Tensor> = case
            .inputs
            .iter()
            .map(|t| {
                let x = to_tensor(t);
                if t.dtype == "f64" && (case.cotangent.is_some() || case.cotangents.is_some()) {
                    x.requires_grad_(true).unwrap()
                } else {
                    x
                }
            })
            .collect();
        let outs = run(case, &inputs).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let wants: Vec<TensorData> = case
            .outputs
            .clone()
            .unwrap_or_else(|| vec![case.output.clone().unwrap()]);
        assert_eq!(outs.len(), wants.len(), "{}: number of outputs", case.name);
        for (k, (o, w)) in outs.iter().zip(&wants).enumerate() {
            check_values(o, w, &format!("{} output {k}", case.name));
        }
        let cots: Vec<TensorData> = match (&case.cotangent, &case.cotangents) {
            (Some(c), _) => vec![c.clone()],
            (None, Some(cs)) => cs.clone(),
            _ => continue,
        };
        let mut loss: Option<Tensor> = None;
        for (o, c) in outs.iter().zip(&cots) {
            let term = o.mul(&to_tensor(c)).unwrap().sum_all().unwrap();
            loss = Some(match loss {
                Some(l) => l.add(&term).unwrap(),
                None => term,
            });
        }
        loss.unwrap()
            .backward()
            .unwrap_or_else(|e| panic!("{}: backward: {e}", case.name));
        for (k, (x, want)) in inputs.iter().zip(case.grads.as_ref().unwrap()).enumerate() {
            let Some(want) = want else { continue };
            let got = x
                .grad()
                .unwrap_or_else(|| panic!("{}: input {k} got no gradient", case.name));
            check_values(&got, want, &format!("{} grad of input {k}", case.name));
        }
    }
}
