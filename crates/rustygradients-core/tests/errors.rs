//! Bad arguments give errors that name the op and what was wrong; none of them panics.

mod common;

use common::{t64, CPU};
use rustygradients_core::{DType, Device, Reduction, Result, Tensor};

#[test]
fn invalid_calls_return_clear_errors() {
    let a = t64(&[1.0; 6], &[2, 3]);
    let b = t64(&[1.0; 8], &[2, 4]);
    let f32t = Tensor::ones([2, 3], DType::F32, CPU).unwrap();
    let ints = Tensor::ones([2, 3], DType::I64, CPU).unwrap();
    let ids_bad = Tensor::from_vec(vec![0i64, 5], 2, CPU).unwrap();
    let ids_neg = Tensor::from_vec(vec![-1i64], 1, CPU).unwrap();
    let empty = Tensor::zeros([0, 3], DType::F64, CPU).unwrap();
    let mask_f = t64(&[1.0; 6], &[2, 3]);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, &[&str], Box<dyn Fn() -> Result<Tensor>>)> = vec![
        (
            "add shapes",
            &["add", "[2, 3]", "[2, 4]"],
            Box::new(|| a.add(&b)),
        ),
        (
            "add dtypes",
            &["add", "F64", "F32"],
            Box::new(|| a.add(&f32t)),
        ),
        (
            "matmul inner dims",
            &["matmul", "[2, 3]", "[2, 4]"],
            Box::new(|| a.matmul(&b)),
        ),
        (
            "matmul scalar",
            &["matmul"],
            Box::new(|| a.matmul(&Tensor::scalar(1.0f64, CPU)?)),
        ),
        (
            "matmul ints",
            &["matmul", "I64"],
            Box::new(|| ints.matmul(&ints.t()?)),
        ),
        (
            "sum dim out of range",
            &["sum", "dim 2", "[2, 3]"],
            Box::new(|| a.sum(2, false)),
        ),
        (
            "sum negative dim",
            &["sum", "dim -3"],
            Box::new(|| a.sum(-3, false)),
        ),
        (
            "duplicate dims",
            &["sum", "more than once"],
            Box::new(|| a.sum([1, -1], false)),
        ),
        (
            "softmax dim",
            &["softmax", "dim 5"],
            Box::new(|| a.softmax(5)),
        ),
        ("exp on ints", &["exp", "I64"], Box::new(|| ints.exp())),
        // Integer `div` is true division (an f32 result, as in PyTorch); integer `pow` is not.
        ("pow on ints", &["pow", "I64"], Box::new(|| ints.pow(&ints))),
        (
            "mean on ints",
            &["mean", "U8", "floating-point"],
            Box::new(|| Tensor::ones([2, 3], DType::U8, CPU)?.mean_all()),
        ),
        ("div int by float", &["div", "I64", "F32"], Box::new(|| ints.div(&f32t))),
        (
            "reshape count",
            &["reshape", "[4, 2]"],
            Box::new(|| a.reshape([4, 2])),
        ),
        (
            "view non-contiguous",
            &["view", "contiguous"],
            Box::new(|| a.t()?.view(6)),
        ),
        (
            "permute not a permutation",
            &["permute", "[0, 0]"],
            Box::new(|| a.permute(&[0, 0])),
        ),
        (
            "permute wrong rank",
            &["permute"],
            Box::new(|| a.permute(&[0])),
        ),
        (
            "narrow past the end",
            &["narrow", "exceeds"],
            Box::new(|| a.narrow(1, 2, 5)),
        ),
        (
            "t on 3-d",
            &["t", "[2, 3, 4]"],
            Box::new(|| Tensor::zeros([2, 3, 4], DType::F32, CPU)?.t()),
        ),
        (
            "broadcast_to incompatible",
            &["broadcast_to", "[2, 3]", "[4, 3]"],
            Box::new(|| a.broadcast_to([4, 3])),
        ),
        (
            "get out of range",
            &["get", "index 7"],
            Box::new(|| a.get(7)),
        ),
        (
            "index_select out of range",
            &["index_select", "index 5", "size 3"],
            Box::new(|| a.index_select(&ids_bad, 1)),
        ),
        (
            "index_select negative",
            &["index_select", "index -1"],
            Box::new(|| a.index_select(&ids_neg, 0)),
        ),
        (
            "index_select float ids",
            &["index_select", "F64"],
            Box::new(|| a.index_select(&a.flatten_all()?, 0)),
        ),
        (
            "embedding out of range",
            &["index_select", "index 5"],
            Box::new(|| a.embedding(&ids_bad)),
        ),
        (
            "gather out of range",
            &["gather", "index 5"],
            Box::new(|| a.gather(1, &ids_bad.reshape([1, 2])?)),
        ),
        (
            "gather rank",
            &["gather"],
            Box::new(|| a.gather(1, &ids_bad)),
        ),
        (
            "scatter_add src dtype",
            &["scatter_add", "F32"],
            Box::new(|| a.scatter_add(1, &ids_neg.reshape([1, 1])?.abs()?, &f32t)),
        ),
        (
            "cat empty list",
            &["cat", "at least one"],
            Box::new(|| Tensor::cat(&[], 0)),
        ),
        (
            "cat shapes",
            &["cat", "[2, 3]", "[2, 4]"],
            Box::new(|| Tensor::cat(&[a.clone(), b.clone()], 0)),
        ),
        (
            "stack shapes",
            &["stack", "[2, 3]", "[2, 4]"],
            Box::new(|| Tensor::stack(&[a.clone(), b.clone()], 0)),
        ),
        (
            "where_cond float mask",
            &["where_cond", "u8"],
            Box::new(|| mask_f.where_cond(&a, &a)),
        ),
        (
            "cross_entropy target range",
            &["cross_entropy", "index 9"],
            Box::new(|| {
                a.cross_entropy(
                    &Tensor::from_vec(vec![0i64, 9], 2, CPU)?,
                    None,
                    Reduction::Mean,
                )
            }),
        ),
        (
            "cross_entropy shapes",
            &["cross_entropy", "[2, 3]", "[3]"],
            Box::new(|| {
                a.cross_entropy(
                    &Tensor::from_vec(vec![0i64, 1, 2], 3, CPU)?,
                    None,
                    Reduction::Mean,
                )
            }),
        ),
        (
            "cross_entropy sequence logits",
            &[
                "cross_entropy: expects logits (N, C) and targets (N,) of class indices (i64 or u32); got logits [2, 5, 7] and targets [2, 5]",
            ],
            Box::new(|| {
                Tensor::zeros([2, 5, 7], DType::F32, CPU)?.cross_entropy(
                    &Tensor::zeros([2, 5], DType::I64, CPU)?,
                    None,
                    Reduction::Mean,
                )
            }),
        ),
        (
            "cross_entropy float targets",
            &["cross_entropy", "F64", "i64 or u32"],
            Box::new(|| a.cross_entropy(&t64(&[0.0, 1.0], &[2]), None, Reduction::Mean)),
        ),
        (
            "cross_entropy u8 targets",
            &["cross_entropy", "U8", "i64 or u32"],
            Box::new(|| {
                a.cross_entropy(
                    &Tensor::from_vec(vec![0u8, 1], 2, CPU)?,
                    None,
                    Reduction::Mean,
                )
            }),
        ),
        (
            "mse shapes",
            &["mse_loss", "[2, 3]", "[2, 4]"],
            Box::new(|| a.mse_loss(&b, Reduction::Mean)),
        ),
        (
            "max of empty",
            &["max", "empty"],
            Box::new(|| empty.max(0, false)),
        ),
        (
            "argmax of empty",
            &["argmax", "empty"],
            Box::new(|| empty.argmax(0, false)),
        ),
        (
            "var of one element",
            &["var"],
            Box::new(|| t64(&[1.0], &[1]).var(0, true, false)),
        ),
        (
            "from_vec count",
            &["from_vec", "[2, 2]"],
            Box::new(|| Tensor::from_vec(vec![1f32; 3], [2, 2], CPU)),
        ),
        (
            "arange zero step",
            &["arange", "step"],
            Box::new(|| Tensor::arange(0.0, 1.0, 0.0, DType::F32, CPU)),
        ),
        (
            "randint empty range",
            &["randint"],
            Box::new(|| Tensor::randint(3, 3, 2, CPU)),
        ),
        (
            "randn int dtype",
            &["randn", "I64"],
            Box::new(|| Tensor::randn(2, DType::I64, CPU)),
        ),
        (
            "clamp min > max",
            &["clamp"],
            Box::new(|| a.clamp(1.0, 0.0)),
        ),
        (
            "dropout p",
            &["dropout", "1.5"],
            Box::new(|| a.dropout(1.5, true)),
        ),
        (
            "split size 0",
            &["split", "positive"],
            Box::new(|| a.split(0, 0).map(|v| v[0].clone())),
        ),
        (
            "chunk 0",
            &["chunk", "positive"],
            Box::new(|| a.chunk(0, 0).map(|v| v[0].clone())),
        ),
        (
            "layer_norm weight shape",
            &["layer_norm", "[2, 3]", "[4]"],
            Box::new(|| a.layer_norm(Some(&t64(&[1.0; 4], &[4])), None, 1e-5)),
        ),
        (
            "tril of 1-d",
            &["tril"],
            Box::new(|| t64(&[1.0], &[1]).tril(0)),
        ),
        (
            "cuda without a device",
            &["cuda"],
            Box::new(|| a.to_device(Device::Cuda(0))),
        ),
        (
            "zeros on cuda",
            &["cuda"],
            Box::new(|| Tensor::zeros(2, DType::F32, Device::Cuda(3))),
        ),
        (
            "to_scalar of many",
            &["to_scalar", "[2, 3]"],
            Box::new(|| a.to_scalar::<f64>().map(|_| a.clone())),
        ),
        (
            "backward non-scalar",
            &["backward", "[2, 3]"],
            Box::new(|| a.exp()?.backward().map(|_| a.clone())),
        ),
        (
            "backward after an in-place change",
            &[
                "backward: a tensor of shape [3, 2] saved by matmul was modified in place after it was used (version 1, saved at version 0)",
            ],
            Box::new(|| {
                let x = a.detach().requires_grad_(true)?;
                let w = t64(&[1.0; 6], &[3, 2]);
                let y = x.matmul(&w)?.sum_all()?;
                w.copy_(&w.mul_scalar(2.0)?)?;
                y.backward().map(|_| y.clone())
            }),
        ),
        (
            "to_vec wrong type",
            &["to_vec", "F64", "F32"],
            Box::new(|| a.to_vec::<f32>().map(|_| a.clone())),
        ),
        (
            "requires_grad int",
            &["requires_grad_", "I64"],
            Box::new(|| ints.clone().requires_grad_(true)),
        ),
    ];
    for (what, needles, f) in &cases {
        if *what == "cuda without a device" && Device::Cuda(0).is_available() {
            continue; // a GPU build on a GPU machine: the move works (tests/cuda_ops.rs)
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let r = r.unwrap_or_else(|_| panic!("{what}: panicked instead of returning an error"));
        let err = match r {
            Ok(t) => panic!(
                "{what}: expected an error, got a tensor of shape {}",
                t.shape()
            ),
            Err(e) => format!("{e}"),
        };
        let dbg = format!("{err} {:?}", err);
        for n in *needles {
            assert!(
                dbg.to_lowercase().contains(&n.to_lowercase()),
                "{what}: error `{err}` does not mention `{n}`"
            );
        }
    }
}
