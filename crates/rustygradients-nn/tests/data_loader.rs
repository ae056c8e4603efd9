//! DataLoader: every example exactly once per epoch, the same order for the same seed, a new
//! order each epoch, `drop_last`, rows kept together across tensors, and errors naming shapes.

use rustygradients_core::{DType, Device, Tensor};
use rustygradients_nn::DataLoader;

fn data(n: usize) -> (Tensor, Tensor) {
    let x = Tensor::arange(0.0, (2 * n) as f64, 1.0, DType::F32, Device::Cpu)
        .unwrap()
        .reshape([n, 2])
        .unwrap();
    let y = Tensor::arange(0.0, n as f64, 1.0, DType::I64, Device::Cpu).unwrap();
    (x, y)
}

fn order(loader: &mut DataLoader) -> Vec<i64> {
    loader
        .epoch()
        .unwrap()
        .iter()
        .flat_map(|b| b[1].to_vec::<i64>().unwrap())
        .collect()
}

#[test]
fn every_example_once_per_epoch_reproducibly() {
    let (x, y) = data(103);
    let mut a = DataLoader::new(&[&x, &y], 10).unwrap().shuffle(42);
    let mut b = DataLoader::new(&[&x, &y], 10).unwrap().shuffle(42);
    assert_eq!(a.len(), 11);
    let (e1, e2) = (order(&mut a), order(&mut a));
    for e in [&e1, &e2] {
        let mut sorted = e.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..103).collect::<Vec<i64>>(),
            "not each index exactly once"
        );
    }
    assert_ne!(e1, e2, "each epoch reshuffles");
    assert_ne!(e1, (0..103).collect::<Vec<i64>>());
    assert_eq!(
        (order(&mut b), order(&mut b)),
        (e1.clone(), e2),
        "same seed, same order"
    );
    let mut c = DataLoader::new(&[&x, &y], 10).unwrap().shuffle(43);
    assert_ne!(order(&mut c), e1);

    // Rows stay together: x's row i is [2i, 2i+1] for label i.
    for batch in a.epoch().unwrap() {
        let (xb, yb) = (
            batch[0].to_vec::<f32>().unwrap(),
            batch[1].to_vec::<i64>().unwrap(),
        );
        for (row, label) in xb.chunks(2).zip(&yb) {
            assert_eq!(row, [2.0 * *label as f32, 2.0 * *label as f32 + 1.0]);
        }
    }
    // Without shuffle: in order; the last batch is short unless dropped.
    let mut plain = DataLoader::new(&[&x, &y], 10).unwrap();
    assert_eq!(order(&mut plain), (0..103).collect::<Vec<i64>>());
    let mut dropped = DataLoader::new(&[&x, &y], 10)
        .unwrap()
        .shuffle(1)
        .drop_last(true);
    assert_eq!(dropped.len(), 10);
    let batches = dropped.epoch().unwrap();
    assert!(batches.len() == 10 && batches.iter().all(|b| b[0].dims() == [10, 2]));
}

#[test]
fn mismatched_tensors_are_errors_naming_the_shapes() {
    let (x, _) = data(5);
    let (_, y) = data(6);
    let e = DataLoader::new(&[&x, &y], 2).err().unwrap().to_string();
    assert!(e.contains("[6]") && e.contains("5 rows"), "{e}");
    assert!(DataLoader::new(&[&x], 0).is_err());
    assert!(DataLoader::new(&[], 3).is_err());
}
