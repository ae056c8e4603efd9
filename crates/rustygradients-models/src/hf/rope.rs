//! Rotary position embedding (RoPE) as Llama applies it: each head's two halves are rotated by
//! `position × θ^(-2i/d)`, with the frequencies optionally rescaled (`linear`, `llama3`).

use rustygradients_core::{DType, Device, Result, Tensor};

use super::config::{RopeConfig, RopeScaling};

/// The inverse frequencies of a head of width `dim` (`dim / 2` of them), rescaled as configured.
/// Computed in f32 like transformers, so that angles match it bit for bit.
pub fn inv_freq(cfg: &RopeConfig, dim: usize) -> Vec<f32> {
    let base: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / (cfg.theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    match cfg.scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => base
            .iter()
            .map(|&f| {
                let f = f as f64;
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                let v = if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                };
                v as f32
            })
            .collect(),
    }
}

/// The rotation of one model's heads.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    dim: usize,
}

impl Rope {
    /// RoPE for heads of width `dim` (even).
    pub fn new(cfg: &RopeConfig, dim: usize) -> Rope {
        Rope {
            inv_freq: inv_freq(cfg, dim),
            dim,
        }
    }

    /// `cos` and `sin` of the angles at `positions` (`batch × t` of them, row-major), each
    /// `(batch, 1, t, dim)` with the half-width pattern repeated (`cat(freqs, freqs)`).
    pub fn tables(
        &self,
        positions: &[i64],
        batch: usize,
        t: usize,
        dtype: DType,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * self.dim);
        let mut sin = Vec::with_capacity(positions.len() * self.dim);
        for &p in positions {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        debug_assert_eq!(cos.len(), batch * t * 2 * half);
        let shape = [batch, 1, t, self.dim];
        let c = Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?;
        let s = Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?;
        Ok((c, s))
    }

    /// Rotates `x` (`(batch, heads, t, dim)`) by the tables of [`tables`](Rope::tables):
    /// `x·cos + rotate_half(x)·sin`, where `rotate_half(x) = cat(-x₂, x₁)`.
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = self.dim / 2;
        let x1 = x.narrow(3, 0, half)?;
        let x2 = x.narrow(3, half, half)?;
        let rotated = Tensor::cat(&[x2.neg()?, x1], 3)?;
        x.mul(cos)?.add(&rotated.mul(sin)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = RopeConfig {
            theta: 500000.0,
            scaling: RopeScaling::None,
        };
        let scaled = RopeConfig {
            theta: 500000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        };
        let (a, b) = (inv_freq(&plain, 128), inv_freq(&scaled, 128));
        assert_eq!(a[0], b[0]);
        assert!((b[63] - a[63] / 8.0).abs() <= 1e-12 * a[63].abs().max(1e-30));
        // Between the two wavelengths the value lies between the kept and the divided one.
        let mid = a
            .iter()
            .zip(&b)
            .position(|(x, y)| y < x && *y > x / 8.0)
            .expect("a smoothed frequency");
        assert!(mid > 0 && mid < 63);
    }
}
