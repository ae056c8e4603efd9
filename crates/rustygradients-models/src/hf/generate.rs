//! Text generation with a [`KvCache`](super::KvCache): the prompt is run once, then one position per new token.
//! Greedy or sampled (temperature, top-k, top-p), a repetition penalty, stop tokens, and
//! batches of prompts of different lengths (left-padded, each with its own positions).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustygradients_core::{DType, Error, Result};

use super::causal_lm::{CausalLm, Step};
use crate::sampling::{sample, SamplingConfig};

/// How [`generate`] continues prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// New tokens per sequence, at most (fewer when a stop token comes).
    pub max_new_tokens: usize,
    /// Temperature (0: greedy), top-k and top-p.
    pub sampling: SamplingConfig,
    /// Divides positive logits and multiplies negative ones of every token already in the
    /// sequence (prompt included), as transformers does; 1 turns it off.
    pub repetition_penalty: f64,
    /// Seed of sequence 0's generator; sequence `i` uses `seed + i`, so a batch draws what each
    /// prompt alone would with that seed.
    pub seed: u64,
    /// Tokens that end a sequence (kept as its last token).
    pub stop_tokens: Vec<u32>,
    /// Reuse keys and values from a KV-cache (the normal way); `false` recomputes the whole
    /// sequence for every token (a reference for tests).
    pub use_cache: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            repetition_penalty: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
            use_cache: true,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens with no stop tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerationConfig {
            max_new_tokens,
            sampling: SamplingConfig {
                temperature: 0.0,
                top_k: None,
                top_p: None,
            },
            ..Default::default()
        }
    }
}

/// Applies transformers' repetition penalty to `logits` for every token in `seen`.
fn penalize(logits: &mut [f32], seen: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let p = penalty as f32;
    let mut done = vec![false; logits.len()];
    for &t in seen {
        let t = t as usize;
        if t < logits.len() && !done[t] {
            done[t] = true;
            logits[t] = if logits[t] < 0.0 {
                logits[t] * p
            } else {
                logits[t] / p
            };
        }
    }
}

/// Continues each of `prompts` (token ids) and returns the new tokens of each. `on_token(i,
/// id)` is called as sequence `i` gets each token (to stream it); an error it returns stops
/// generation.
pub fn generate<M: CausalLm + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    cfg: &GenerationConfig,
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<Vec<u32>>> {
    let bad = |msg: String| {
        Err(Error::InvalidArgument {
            op: "generate",
            msg,
        })
    };
    cfg.sampling.validate()?;
    if !(cfg.repetition_penalty > 0.0 && cfg.repetition_penalty.is_finite()) {
        return bad(format!(
            "repetition_penalty {} must be a finite number > 0",
            cfg.repetition_penalty
        ));
    }
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return bad("every prompt needs at least one token".into());
    }
    let vocab = model.vocab_size();
    if let Some(&t) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::IndexOutOfRange {
            op: "generate (prompt)",
            index: t as i64,
            size: vocab,
        });
    }
    let batch = prompts.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); batch];
    if cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    // The last new token is sampled, never fed back.
    let fed = longest + cfg.max_new_tokens - 1;
    if let Some(limit) = model.max_positions() {
        if fed > limit {
            return bad(format!(
                "a prompt of {longest} tokens + {} new tokens needs {fed} positions, but the model reads at most {limit}",
                cfg.max_new_tokens
            ));
        }
    }
    let pad: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    // Every sequence, left-padded to the same length, grows by one token per step.
    let mut seqs: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pad)
        .map(|(p, &n)| std::iter::repeat_n(0, n).chain(p.iter().copied()).collect())
        .collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..batch)
        .map(|i| ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(i as u64)))
        .collect();
    let mut done = vec![false; batch];
    let mut cache = if cfg.use_cache {
        Some(model.new_cache(batch, fed)?)
    } else {
        None
    };
    for _ in 0..cfg.max_new_tokens {
        let total = seqs[0].len();
        // With a cache, only what it lacks; without, the whole sequence again.
        let from = cache.as_ref().map_or(0, |c| c.len());
        let len = total - from;
        let step = Step {
            ids: seqs
                .iter()
                .flat_map(|s| s[from..].iter().map(|&t| t as i64))
                .collect(),
            positions: pad
                .iter()
                .flat_map(|&p| (from..total).map(move |j| j.saturating_sub(p) as i64))
                .collect(),
            batch,
            len,
            pad: pad.clone(),
            last_only: true,
        };
        let logits = match cache.as_mut() {
            Some(c) => model.forward(&step, c)?,
            None => model.forward(&step, &mut model.new_cache(batch, total)?)?,
        };
        let logits = logits.to_dtype(DType::F32)?.to_vec::<f32>()?;
        for (i, row) in logits.chunks(vocab).enumerate() {
            let next = if done[i] {
                // Finished sequences keep feeding their last token; nothing is read from them.
                *seqs[i].last().unwrap_or(&0)
            } else {
                let mut row = row.to_vec();
                penalize(&mut row, &seqs[i][pad[i]..], cfg.repetition_penalty);
                let t = sample(&row, &cfg.sampling, &mut rngs[i])? as u32;
                out[i].push(t);
                on_token(i, t)?;
                done[i] = cfg.stop_tokens.contains(&t);
                t
            };
            seqs[i].push(next);
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut l = [2.0f32, -2.0, 1.0];
        penalize(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0]);
    }
}
