//! Mini-batches over tensors that share their first dimension (PyTorch's `TensorDataset` +
//! `DataLoader`): each epoch visits every example once, in order or in a shuffled order drawn
//! from the loader's own seeded generator, so the order is the same run after run and does not
//! depend on (or disturb) the global generator.
//!
//! ```
//! use rustygradients_core::{DType, Device, Tensor};
//! use rustygradients_nn::DataLoader;
//!
//! # fn main() -> rustygradients_core::Result<()> {
//! let x = Tensor::arange(0.0, 10.0, 1.0, DType::F32, Device::Cpu)?.reshape([10, 1])?;
//! let y = Tensor::arange(0.0, 10.0, 1.0, DType::I64, Device::Cpu)?;
//! let mut loader = DataLoader::new(&[&x, &y], 4)?.shuffle(7).drop_last(true);
//! assert_eq!(loader.len(), 2);
//! for batch in loader.epoch()? {
//!     let [xb, yb] = &batch[..] else { unreachable!() };
//!     assert_eq!((xb.dims(), yb.dims()), (&[4, 1][..], &[4][..]));
//! }
//! # Ok(())
//! # }
//! ```

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{Device, Error, Result, Tensor};

/// Batches of rows taken together from several tensors.
pub struct DataLoader {
    tensors: Vec<Tensor>,
    batch_size: usize,
    drop_last: bool,
    rng: Option<ChaCha8Rng>,
}

impl DataLoader {
    /// Batches of `batch_size` rows (first-dim entries) of every tensor in `tensors`, in order.
    /// The tensors must share their first dimension.
    pub fn new(tensors: &[&Tensor], batch_size: usize) -> Result<Self> {
        let bad = |msg: String| Error::InvalidArgument {
            op: "DataLoader::new",
            msg,
        };
        if batch_size == 0 {
            return Err(bad("batch_size is 0".into()));
        }
        let Some(first) = tensors.first() else {
            return Err(bad("no tensors".into()));
        };
        if first.rank() == 0 {
            return Err(bad("tensors need a first dimension to batch over".into()));
        }
        let n = first.dims()[0];
        for (i, t) in tensors.iter().enumerate() {
            if t.rank() == 0 || t.dims()[0] != n {
                return Err(bad(format!(
                    "tensor {i} has shape {}, tensor 0 has {} rows",
                    t.shape(),
                    n
                )));
            }
        }
        Ok(DataLoader {
            tensors: tensors.iter().map(|t| (*t).clone()).collect(),
            batch_size,
            drop_last: false,
            rng: None,
        })
    }

    /// Shuffles each epoch with a generator seeded by `seed` (epoch k's order depends only on
    /// the seed and k).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.rng = Some(ChaCha8Rng::seed_from_u64(seed));
        self
    }

    /// Drops the last batch of an epoch when it would be smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Number of examples.
    pub fn num_examples(&self) -> usize {
        self.tensors[0].dims()[0]
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.num_examples();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// True when an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The example indices of the next epoch, batch by batch (shuffled if asked).
    pub fn epoch_indices(&mut self) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.num_examples()).collect();
        if let Some(rng) = &mut self.rng {
            order.shuffle(rng);
        }
        let mut batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }

    /// The next epoch's batches: for each, one tensor per input tensor, rows gathered in the
    /// epoch's order.
    pub fn epoch(&mut self) -> Result<Vec<Vec<Tensor>>> {
        let tensors = self.tensors.clone();
        self.epoch_indices()
            .into_iter()
            .map(|idx| {
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                let n = idx.len();
                tensors
                    .iter()
                    .map(|t| {
                        let ids =
                            Tensor::from_vec(idx.clone(), n, Device::Cpu)?.to_device(t.device())?;
                        t.index_select(&ids, 0)
                    })
                    .collect()
            })
            .collect()
    }
}
