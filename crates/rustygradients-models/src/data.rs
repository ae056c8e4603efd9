//! A tokenised corpus for language modelling: the first 90% trains, the last 10% validates, and
//! batches are `(B, T)` windows at random offsets drawn from the dataset's own seeded generator
//! (so a checkpoint can store its position in the stream).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{Device, Error, Result, Tensor};

/// Which part of a [`TextDataset`] to draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The first 90% of the tokens.
    Train,
    /// The last 10% of the tokens.
    Val,
}

/// A token stream split 90/10 into train and val, batched by a seeded generator.
pub struct TextDataset {
    train: Vec<u32>,
    val: Vec<u32>,
    rng: ChaCha8Rng,
}

impl TextDataset {
    /// Splits `tokens` 90/10 (nanoGPT's rule: `n = int(0.9 * len)`).
    pub fn new(tokens: Vec<u32>, seed: u64) -> Self {
        let n = (tokens.len() as f64 * 0.9) as usize;
        let val = tokens[n..].to_vec();
        let mut train = tokens;
        train.truncate(n);
        TextDataset {
            train,
            val,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Checks that each split holds more than `block` tokens (a window plus its next-token
    /// targets), with an error naming the sizes.
    pub fn check_block(&self, block: usize) -> Result<()> {
        self.check_split(Split::Train, block)?;
        self.check_split(Split::Val, block)
    }

    /// [`TextDataset::check_block`] for one split.
    fn check_split(&self, split: Split, block: usize) -> Result<()> {
        let n = self.len(split);
        if n > block {
            return Ok(());
        }
        let share = if split == Split::Train {
            "first 90%"
        } else {
            "last 10%"
        };
        Err(Error::InvalidArgument {
            op: "TextDataset",
            msg: format!(
                "the {split:?} split (the {share} of {} tokens) has {n} tokens; \
                 block size {block} needs more than {block}",
                self.train.len() + self.val.len()
            ),
        })
    }

    /// Tokens in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.tokens(split).len()
    }

    fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// `batch` random windows: inputs `x` and next-token targets `y`, both `(batch, block)` i64.
    pub fn batch(
        &mut self,
        split: Split,
        batch: usize,
        block: usize,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        self.check_split(split, block)?;
        let data = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        };
        let (mut x, mut y) = (
            Vec::with_capacity(batch * block),
            Vec::with_capacity(batch * block),
        );
        for _ in 0..batch {
            let i = self.rng.gen_range(0..data.len() - block);
            x.extend(data[i..i + block].iter().map(|&t| t as i64));
            y.extend(data[i + 1..i + 1 + block].iter().map(|&t| t as i64));
        }
        Ok((
            Tensor::from_vec(x, [batch, block], device)?,
            Tensor::from_vec(y, [batch, block], device)?,
        ))
    }

    /// The sampler's state (to checkpoint the data position).
    pub fn rng_state(&self) -> ChaCha8Rng {
        self.rng.clone()
    }

    /// Restores a state from [`TextDataset::rng_state`] (to resume at a checkpoint's position).
    pub fn set_rng_state(&mut self, rng: ChaCha8Rng) {
        self.rng = rng;
    }
}
