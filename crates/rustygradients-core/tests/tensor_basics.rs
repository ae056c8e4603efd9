//! Creation, dtypes, host data, printing and seeded randomness.

mod common;

use common::{t64, CPU};
use half::{bf16, f16};
use rustygradients_core::{manual_seed, DType, Tensor};

#[test]
fn creation_functions() {
    assert_eq!(
        Tensor::zeros([2, 2], DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![0.0; 4]
    );
    assert_eq!(
        Tensor::ones(3, DType::I64, CPU)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![1; 3]
    );
    assert_eq!(
        Tensor::full(2.5, (), DType::F64, CPU)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap(),
        2.5
    );
    assert_eq!(
        Tensor::arange(0.0, 5.0, 2.0, DType::I64, CPU)
            .unwrap()
            .to_vec::<i64>()
            .unwrap(),
        vec![0, 2, 4]
    );
    assert_eq!(
        Tensor::arange(3.0, 0.0, -1.0, DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        vec![3.0, 2.0, 1.0]
    );
    assert_eq!(
        Tensor::linspace(0.0, 1.0, 5, DType::F64, CPU)
            .unwrap()
            .to_vec::<f64>()
            .unwrap(),
        vec![0.0, 0.25, 0.5, 0.75, 1.0]
    );
    let x = t64(&[1.0, 2.0], &[2]);
    assert_eq!(
        x.full_like(7.0).unwrap().to_vec::<f64>().unwrap(),
        vec![7.0, 7.0]
    );
    assert_eq!(Tensor::scalar(3u8, CPU).unwrap().rank(), 0);
}

#[test]
fn random_values_are_seeded_and_reproducible() {
    manual_seed(42);
    let a = Tensor::randn([4, 4], DType::F32, CPU)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let u = Tensor::rand(1000, DType::F64, CPU)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    manual_seed(42);
    let b = Tensor::randn([4, 4], DType::F32, CPU)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(
        a,
        Tensor::randn([4, 4], DType::F32, CPU)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    );
    assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    assert!((mean - 0.5).abs() < 0.05, "uniform mean {mean}");
    let r = Tensor::randint(-3, 3, 500, CPU)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    assert!(r.iter().all(|&v| (-3..3).contains(&v)) && r.contains(&-3) && r.contains(&2));
    randperm_is_a_seeded_permutation();
}

/// Called from the test above: tests that reseed the global generator must not run at once.
fn randperm_is_a_seeded_permutation() {
    let perm = |seed| {
        manual_seed(seed);
        Tensor::randperm(1000, CPU)
            .unwrap()
            .to_vec::<i64>()
            .unwrap()
    };
    let (a, b, c) = (perm(3), perm(3), perm(4));
    assert_eq!(a, b, "same seed, same permutation");
    assert_ne!(a, c);
    assert_ne!(a, (0..1000).collect::<Vec<i64>>());
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<i64>>());
    assert_eq!(Tensor::randperm(0, CPU).unwrap().dims(), [0]);
}

#[test]
fn dtype_conversions_round_trip() {
    let x = Tensor::from_vec(vec![1.5f32, -2.25, 3.0], 3, CPU).unwrap();
    for dt in [DType::F64, DType::F16, DType::BF16] {
        assert_eq!(
            x.to_dtype(dt)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![1.5, -2.25, 3.0],
            "{dt:?}"
        );
    }
    assert_eq!(
        x.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(),
        vec![1, -2, 3]
    );
    assert_eq!(
        x.to_dtype(DType::U8).unwrap().to_vec::<u8>().unwrap(),
        vec![1, 0, 3]
    );
    assert_eq!(x.to_dtype(DType::U32).unwrap().dtype(), DType::U32);
    let h = x.to_dtype(DType::F16).unwrap();
    assert_eq!(h.to_vec::<f16>().unwrap()[0], f16::from_f32(1.5));
    assert_eq!(
        x.to_dtype(DType::BF16).unwrap().to_vec::<bf16>().unwrap()[1],
        bf16::from_f32(-2.25)
    );
}

#[test]
fn half_precision_ops_track_f32() {
    manual_seed(3);
    let a = Tensor::randn([8, 16], DType::F32, CPU).unwrap();
    let b = Tensor::randn([16, 4], DType::F32, CPU).unwrap();
    let want = a
        .matmul(&b)
        .unwrap()
        .softmax(-1)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for (dt, tol) in [(DType::F16, 2e-2), (DType::BF16, 5e-2)] {
        let got = a
            .to_dtype(dt)
            .unwrap()
            .matmul(&b.to_dtype(dt).unwrap())
            .unwrap()
            .softmax(-1)
            .unwrap();
        assert_eq!(got.dtype(), dt);
        let got = got.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < tol, "{dt:?}: {g} vs {w}");
        }
    }
}

#[test]
fn integer_arithmetic_wraps_and_reduces() {
    let x = Tensor::from_vec(vec![250u8, 3], 2, CPU).unwrap();
    assert_eq!(
        x.add(&Tensor::from_vec(vec![10u8, 1], 2, CPU).unwrap())
            .unwrap()
            .to_vec::<u8>()
            .unwrap(),
        vec![4, 4]
    );
    let i = Tensor::from_vec(vec![3i64, -7, 5, 1], [2, 2], CPU).unwrap();
    assert_eq!(
        i.sum(1, false).unwrap().to_vec::<i64>().unwrap(),
        vec![-4, 6]
    );
    assert_eq!(
        i.max(0, false).unwrap().to_vec::<i64>().unwrap(),
        vec![5, 1]
    );
    assert_eq!(
        i.argmin(1, false).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 1]
    );
    assert_eq!(i.abs().unwrap().to_vec::<i64>().unwrap(), vec![3, 7, 5, 1]);
}

#[test]
fn display_prints_like_pytorch() {
    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.25, 4.0], [2, 2], CPU).unwrap();
    assert_eq!(
        format!("{x}"),
        "tensor([[ 1.0000, -2.5000],\n        [ 3.2500,  4.0000]], shape=[2, 2], dtype=float32, device=cpu)"
    );
    let i = Tensor::arange(0.0, 3.0, 1.0, DType::I64, CPU).unwrap();
    assert_eq!(
        format!("{i}"),
        "tensor([0, 1, 2], shape=[3], dtype=int64, device=cpu)"
    );
    let w = Tensor::ones(2, DType::F64, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    assert_eq!(
        format!("{w}"),
        "tensor([1., 1.], shape=[2], dtype=float64, device=cpu, requires_grad=True)"
    );
    let big = Tensor::arange(0.0, 2000.0, 1.0, DType::F32, CPU)
        .unwrap()
        .reshape([2, 1000])
        .unwrap();
    assert_eq!(
        format!("{big}"),
        "tensor([[   0.,    1.,    2., ...,  997.,  998.,  999.],\n        [1000., 1001., 1002., ..., 1997., 1998., 1999.]], shape=[2, 1000], dtype=float32, device=cpu)"
    );
    let s = Tensor::scalar(0.5f64, CPU).unwrap();
    assert_eq!(
        format!("{s}"),
        "tensor(0.5000, shape=[], dtype=float64, device=cpu)"
    );
}

#[test]
fn dropout_is_seeded_scaled_and_off_in_eval() {
    let x = Tensor::ones(10_000, DType::F32, CPU).unwrap();
    assert!(x.dropout(0.5, false).unwrap().same_storage(&x));
    manual_seed(9);
    let a = x.dropout(0.25, true).unwrap().to_vec::<f32>().unwrap();
    manual_seed(9);
    assert_eq!(a, x.dropout(0.25, true).unwrap().to_vec::<f32>().unwrap());
    let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
}

#[test]
fn item_and_scalars() {
    let x = t64(&[1.0, 2.0, 3.0], &[3]);
    assert_eq!(x.sum_all().unwrap().item().unwrap(), 6.0);
    assert_eq!(x.mean_all().unwrap().to_scalar::<f64>().unwrap(), 2.0);
    assert_eq!(x.dim(-1).unwrap(), 3);
}

#[test]
fn shared_bytes_are_borrowed_when_aligned_and_checked_for_size() {
    use rustygradients_core::SharedBytes;
    use std::sync::Arc;
    let floats = [1.5f32, -2.0, 3.25, 4.0];
    let mut raw: Vec<u8> = vec![0; 4];
    raw.extend(floats.iter().flat_map(|f| f.to_le_bytes()));
    let bytes: SharedBytes = Arc::new(raw);
    let t = Tensor::from_shared_bytes(bytes.clone(), 4, DType::F32, [2, 2])
        .unwrap()
        .expect("4-byte aligned");
    assert!(t.is_borrowed());
    assert_eq!(t.to_vec::<f32>().unwrap(), floats);
    // Ops on a borrowed tensor produce ordinary tensors.
    let s = t.add(&t).unwrap();
    assert!(!s.is_borrowed());
    assert_eq!(s.to_vec::<f32>().unwrap(), vec![3.0, -4.0, 6.5, 8.0]);
    // Misaligned for f32: the caller must copy.
    assert!(Tensor::from_shared_bytes(bytes.clone(), 2, DType::F32, [2])
        .unwrap()
        .is_none());
    // Past the end: an error naming the op.
    let err = Tensor::from_shared_bytes(bytes, 8, DType::F32, [4])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("from_shared_bytes"), "{err}");
}
