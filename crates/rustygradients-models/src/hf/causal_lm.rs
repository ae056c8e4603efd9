//! What generation needs from a decoder-only model: one forward step over new tokens that
//! reads and extends a [`KvCache`].

use rustygradients_core::{DType, Device, Error, Result, Tensor};

use super::kv_cache::KvCache;
use super::layers::{Norm, Proj};

/// New tokens for every sequence of a batch: `batch × len` ids, row-major, left-padded so
/// that the sequences end together.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Token ids, `batch × len` (padding positions hold any valid id).
    pub ids: Vec<i64>,
    /// Each token's position in its own sequence (padding ahead of a sequence does not count).
    pub positions: Vec<i64>,
    /// Sequences.
    pub batch: usize,
    /// New positions per sequence.
    pub len: usize,
    /// Per sequence, how many cache positions from the start are padding (never attended to).
    pub pad: Vec<usize>,
    /// Only the last position's logits are needed (generation); else every position's.
    pub last_only: bool,
}

impl Step {
    /// Checks the sizes agree and the ids are in `0..vocab`.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let n = self.batch * self.len;
        if self.batch == 0
            || self.len == 0
            || self.ids.len() != n
            || self.positions.len() != n
            || self.pad.len() != self.batch
        {
            return Err(Error::InvalidArgument {
                op: "Step",
                msg: format!(
                    "batch {} × len {} needs that many ids ({}) and positions ({}) and one pad count per sequence ({})",
                    self.batch,
                    self.len,
                    self.ids.len(),
                    self.positions.len(),
                    self.pad.len()
                ),
            });
        }
        if let Some(&bad) = self.ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
            return Err(Error::IndexOutOfRange {
                op: "Step",
                index: bad,
                size: vocab,
            });
        }
        Ok(())
    }

    /// The logits a decoder returns for this step from its last hidden states `x`
    /// (`(batch, len, hidden)`): the final norm and the output head, over the last position only
    /// when `last_only` (then `(batch, vocab)`), else over all (`(batch, len, vocab)`).
    pub(crate) fn logits(
        &self,
        x: &Tensor,
        norm: &Norm,
        head: &Proj,
        vocab: usize,
    ) -> Result<Tensor> {
        if !self.last_only {
            return head.forward(&norm.forward(x)?);
        }
        let last = x.narrow(1, self.len - 1, 1)?;
        head.forward(&norm.forward(&last)?)?
            .reshape([self.batch, vocab])
    }

    /// The ids as a `(batch, len)` tensor.
    pub fn ids_tensor(&self, device: Device) -> Result<Tensor> {
        Tensor::from_vec(self.ids.clone(), [self.batch, self.len], device)
    }
}

/// A decoder-only language model that generates with a KV-cache.
pub trait CausalLm {
    /// Rows of the output logits.
    fn vocab_size(&self) -> usize;
    /// The longest sequence it can read (learned positions); `None` when positions are
    /// computed (RoPE) and any length works.
    fn max_positions(&self) -> Option<usize>;
    /// Tokens that end a sequence, from its config.
    fn eos_token_ids(&self) -> Vec<u32>;
    /// Where its weights are.
    fn device(&self) -> Device;
    /// The dtype it computes in.
    fn dtype(&self) -> DType;
    /// An empty cache for `batch` sequences of up to `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache>;
    /// Runs `step`'s tokens after what `cache` holds and appends their keys and values.
    /// Returns float logits `(batch, vocab)` for the last position when `step.last_only`, else
    /// `(batch, len, vocab)`.
    fn forward(&self, step: &Step, cache: &mut KvCache) -> Result<Tensor>;
}
