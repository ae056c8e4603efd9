//! Choosing the next token from logits: temperature, then top-k, then top-p (nucleus) filtering,
//! then a draw from a seeded generator. Temperature 0 picks the most likely token.

use rand::Rng;
use rustygradients_core::{Error, Result};

/// How [`sample`] picks a token; the default is temperature 0.8, top-k 200, no top-p.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens; 0 picks the
    /// most likely token. Finite and `>= 0`.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (at least 1); `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`, in `(0, 1]`;
    /// `None` keeps all.
    pub top_p: Option<f64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 0.8,
            top_k: Some(200),
            top_p: None,
        }
    }
}

impl SamplingConfig {
    /// Checks each setting, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidArgument {
                op: "SamplingConfig",
                msg,
            })
        };
        // `!(x >= 0)` is true for NaN too.
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature {} must be a finite number >= 0 (0 picks the most likely token)",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return bad("top_k 0 must be at least 1 (None keeps every token)".into());
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad(format!("top_p {p} must be in (0, 1]"));
            }
        }
        Ok(())
    }
}

/// The index of the next token given one row of logits (one per vocabulary entry), drawn from
/// `rng`. Empty logits or an invalid `cfg` (see [`SamplingConfig::validate`]) are an error.
///
/// ```
/// use rand::SeedableRng;
/// use rustygradients_models::sampling::{sample, SamplingConfig};
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let greedy = SamplingConfig { temperature: 0.0, top_k: None, top_p: None };
/// assert_eq!(sample(&[0.1, 2.0, -1.0], &greedy, &mut rng)?, 1);
/// let top1 = SamplingConfig { top_k: Some(1), ..SamplingConfig::default() };
/// assert_eq!(sample(&[0.1, 2.0, -1.0], &top1, &mut rng)?, 1);
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
pub fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut impl Rng) -> Result<usize> {
    if logits.is_empty() {
        return Err(Error::InvalidArgument {
            op: "sample",
            msg: "no logits".into(),
        });
    }
    cfg.validate()?;
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > logits[b] { i } else { b })
    };
    if cfg.temperature == 0.0 {
        return Ok(argmax());
    }
    // Candidates sorted by logit, most likely first.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = cfg.top_k {
        order.truncate(k.min(order.len()));
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / cfg.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = cfg.top_p {
        // Keep the smallest prefix whose mass reaches top_p.
        let mut acc = 0.0;
        let keep = probs.iter().position(|&p| {
            acc += p;
            acc >= top_p
        });
        let keep = keep.map_or(probs.len(), |i| i + 1);
        order.truncate(keep);
        probs.truncate(keep);
        let t: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= t);
    }
    let mut u = rng.gen::<f64>();
    for (i, &p) in probs.iter().enumerate() {
        if u < p {
            return Ok(order[i]);
        }
        u -= p;
    }
    Ok(order[probs.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn filters_and_draws() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let logits = [0.0f32, 5.0, 1.0, 4.9];
        let greedy = SamplingConfig {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        };
        assert_eq!(sample(&logits, &greedy, &mut rng).unwrap(), 1);
        let top1 = SamplingConfig {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
        };
        assert!((0..50).all(|_| sample(&logits, &top1, &mut rng).unwrap() == 1));
        let top2 = SamplingConfig {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let draws: Vec<usize> = (0..200)
            .map(|_| sample(&logits, &top2, &mut rng).unwrap())
            .collect();
        assert!(
            draws.iter().all(|&d| d == 1 || d == 3) && draws.contains(&3) && draws.contains(&1)
        );
        let nucleus = SamplingConfig {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.5),
        };
        assert!((0..50).all(|_| sample(&logits, &nucleus, &mut rng).unwrap() == 1));
        assert!(sample(
            &logits,
            &SamplingConfig {
                temperature: -1.0,
                top_k: None,
                top_p: None
            },
            &mut rng
        )
        .is_err());
    }
}
