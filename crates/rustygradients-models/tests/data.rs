//! TextDataset: the 90/10 split boundary, next-token targets shifted by exactly one, windows
//! that stay inside their split and reach every offset, and the error for too little text.

use std::collections::BTreeSet;

use rustygradients_core::Device;
use rustygradients_models::{Split, TextDataset};

/// Tokens equal to their position, so a window shows where it came from.
fn dataset(n: u32) -> TextDataset {
    TextDataset::new((0..n).collect(), 7)
}

fn rows(t: &rustygradients_core::Tensor, block: usize) -> Vec<Vec<i64>> {
    t.to_vec::<i64>()
        .unwrap()
        .chunks(block)
        .map(<[i64]>::to_vec)
        .collect()
}

#[test]
fn split_boundary_is_nanogpts() {
    for n in [10u32, 11, 99, 1000, 1001] {
        let d = dataset(n);
        let train = (n as f64 * 0.9) as usize;
        assert_eq!(d.len(Split::Train), train, "n={n}");
        assert_eq!(d.len(Split::Val), n as usize - train, "n={n}");
    }
}

#[test]
fn targets_are_the_inputs_shifted_by_one_and_windows_stay_in_their_split() {
    let mut d = dataset(1000);
    let (block, batch) = (16, 8);
    for (split, lo, hi) in [(Split::Train, 0i64, 900i64), (Split::Val, 900, 1000)] {
        for _ in 0..50 {
            let (x, y) = d.batch(split, batch, block, Device::Cpu).unwrap();
            assert_eq!(x.dims(), [batch, block]);
            assert_eq!(y.dims(), [batch, block]);
            for (xr, yr) in rows(&x, block).iter().zip(rows(&y, block)) {
                for j in 0..block {
                    // Consecutive tokens: a window of the stream, targets one step ahead.
                    assert_eq!(xr[j], xr[0] + j as i64);
                    assert_eq!(yr[j], xr[j] + 1, "{split:?}: target is not the next token");
                }
                assert!(
                    xr[0] >= lo && yr[block - 1] < hi,
                    "{split:?} window leaves its split"
                );
            }
        }
    }
}

#[test]
fn every_window_offset_is_drawn() {
    // 50 tokens: 45 train; windows of 4 with targets start at 0..=40.
    let mut d = dataset(50);
    let block = 4;
    let mut starts = BTreeSet::new();
    for _ in 0..400 {
        let (x, _) = d.batch(Split::Train, 4, block, Device::Cpu).unwrap();
        starts.extend(rows(&x, block).iter().map(|r| r[0]));
    }
    assert_eq!(starts, (0..=40).collect::<BTreeSet<i64>>());
}

#[test]
fn too_little_text_for_the_block_is_an_error_naming_the_sizes() {
    let d = dataset(100);
    d.check_block(9).unwrap();
    let e = d.check_block(10).unwrap_err().to_string();
    assert!(
        e.contains("Val") && e.contains("10 tokens") && e.contains("block size 10"),
        "{e}"
    );
    let mut d = dataset(100);
    assert!(d.batch(Split::Val, 1, 10, Device::Cpu).is_err());
    // The same seed draws the same batches.
    let (a, _) = dataset(100).batch(Split::Train, 3, 5, Device::Cpu).unwrap();
    let (b, _) = dataset(100).batch(Split::Train, 3, 5, Device::Cpu).unwrap();
    assert_eq!(a.to_vec::<i64>().unwrap(), b.to_vec::<i64>().unwrap());
}
