//! Autograd behaviour: accumulation, zero_grad, no_grad, detach, non-scalar backward, freed
//! graphs, and graphs far deeper than the stack.

mod common;

use common::{t64, CPU};
use rustygradients_core::{no_grad, DType, Tensor};

#[test]
fn gradients_accumulate_across_backward_calls_until_zero_grad() {
    let x = t64(&[1.0, 2.0, 3.0], &[3]).requires_grad_(true).unwrap();
    for _ in 0..2 {
        x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        vec![4.0, 8.0, 12.0]
    );
    x.zero_grad();
    assert!(x.grad().is_none());
    x.mul_scalar(3.0)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        vec![3.0, 3.0, 3.0]
    );
}

#[test]
fn a_tensor_used_twice_gets_both_contributions() {
    let x = t64(&[2.0], &[1]).requires_grad_(true).unwrap();
    let y = x.mul(&x).unwrap().add(&x).unwrap(); // x² + x → 2x + 1 = 5
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![5.0]);
}

#[test]
fn backward_with_takes_a_gradient_for_non_scalars() {
    let x = t64(&[1.0, 2.0], &[2]).requires_grad_(true).unwrap();
    let y = x.mul_scalar(3.0).unwrap();
    assert!(
        y.backward().is_err(),
        "backward() on a non-scalar must be an error"
    );
    y.backward_with(&t64(&[1.0, 10.0], &[2])).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0, 30.0]);
}

#[test]
fn broadcast_gradients_are_reduced_to_the_input_shape() {
    let a = t64(&[1.0, 2.0, 3.0], &[3, 1]).requires_grad_(true).unwrap();
    let b = t64(&[1.0, 1.0, 1.0, 1.0], &[4])
        .requires_grad_(true)
        .unwrap();
    a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(a.grad().unwrap().dims(), &[3, 1]);
    assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), vec![4.0; 3]);
    assert_eq!(b.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0; 4]);
}

#[test]
fn no_grad_and_detach_stop_recording() {
    let x = t64(&[1.0, 2.0], &[2]).requires_grad_(true).unwrap();
    let y = no_grad(|| x.exp()).unwrap();
    assert!(!y.is_tracked());
    assert!(y.sum_all().unwrap().backward().is_err());
    let d = x.detach();
    assert!(!d.requires_grad() && !d.is_tracked() && d.same_storage(&x));
    // Only the tracked branch contributes.
    x.mul(&d).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0, 2.0]);
    assert!(rustygradients_core::is_grad_enabled());
}

#[test]
fn the_graph_is_freed_after_backward() {
    let x = t64(&[1.0, 2.0], &[2]).requires_grad_(true).unwrap();
    let y = x.exp().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("freed"), "{err}");
    // The leaf keeps its gradient; nothing was double counted by the failed call.
    assert_eq!(
        x.grad().unwrap().to_vec::<f64>().unwrap(),
        x.exp().unwrap().to_vec::<f64>().unwrap()
    );
}

#[test]
fn requires_grad_only_on_float_leaves() {
    let i = Tensor::zeros(3, DType::I64, CPU).unwrap();
    assert!(i.requires_grad_(true).is_err());
    let x = t64(&[1.0], &[1]).requires_grad_(true).unwrap();
    let y = x.exp().unwrap();
    assert!(y.requires_grad_(true).is_err());
}

#[test]
fn a_chain_of_100k_ops_neither_overflows_backward_nor_drop() {
    // Run on a thread with a small stack, so any recursion over the chain would crash.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let x = t64(&[0.5], &[1]).requires_grad_(true).unwrap();
            let mut y = x.clone();
            for _ in 0..100_000 {
                y = y.mul_scalar(1.0).unwrap().add_scalar(0.0).unwrap();
            }
            y.sum_all().unwrap().backward().unwrap();
            assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0]);

            // Never backpropagated: dropping it must also be iterative.
            let mut z = x.clone();
            for _ in 0..100_000 {
                z = z.add_scalar(1.0).unwrap();
            }
            drop(z);
        })
        .unwrap()
        .join()
        .expect("deep graph crashed");
}

#[test]
fn gradients_flow_through_f32() {
    let x = Tensor::from_vec(vec![1f32, -2.0, 3.0], 3, CPU)
        .unwrap()
        .requires_grad_(true)
        .unwrap();
    x.relu().unwrap().sum_all().unwrap().backward().unwrap();
    let g = x.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, 0.0, 1.0]);
}
