//! Multi-head attention over cached keys and values, with grouped-query heads and a mask:
//! what the HuggingFace families share once their projections have produced q, k and v.

use rustygradients_core::{Device, Error, Result, Tensor};

/// `softmax(q·kᵀ·scale, masked)·v` for `q` `(batch, heads, t, d)` and `k`, `v`
/// `(batch, kv_heads, s, d)`, where each group of `heads / kv_heads` query heads shares one key
/// and value head (no copies of k and v are made). `mask` is `u8` `(batch, 1, t, s)`, non-zero
/// where a key is hidden from a query. Returns `(batch, heads, t, d)`.
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, d) = dims4(q, "attend q")?;
    let (bk, hkv, s, dk) = dims4(k, "attend k")?;
    if bk != b || dk != d || h % hkv != 0 || v.dims()[..3] != k.dims()[..3] {
        return Err(Error::ShapeMismatch {
            op: "attend",
            lhs: q.shape().clone(),
            rhs: k.shape().clone(),
        });
    }
    let dv = v.dims()[3];
    let g = h / hkv;
    // Query heads h = kv·g + j: the g heads of one kv head are adjacent rows of one matrix.
    let q = q.mul_scalar(scale)?.reshape([b, hkv, g * t, d])?;
    let mut scores = q.matmul(&k.transpose(2, 3)?)?;
    if let Some(m) = mask {
        scores = scores
            .reshape([b, hkv, g, t, s])?
            .masked_fill(&m.reshape([b, 1, 1, t, s])?, f64::NEG_INFINITY)?
            .reshape([b, hkv, g * t, s])?;
    }
    scores.softmax(-1)?.matmul(v)?.reshape([b, h, t, dv])
}

fn dims4(x: &Tensor, what: &'static str) -> Result<(usize, usize, usize, usize)> {
    match *x.dims() {
        [a, b, c, d] => Ok((a, b, c, d)),
        _ => Err(Error::InvalidShape {
            op: what,
            msg: "needs (batch, heads, positions, head_dim)".into(),
            shape: x.shape().clone(),
        }),
    }
}

/// Which keys each query of a step may see, as a `u8` mask `(batch, 1, t, start + t)` (non-zero:
/// hidden), or `None` when every query sees every key up to itself with nothing to hide (one new
/// position, no padding, no window).
///
/// Query `i` (cache position `start + i`) of sequence `b` sees key `j` when
/// `pad[b] <= j <= start + i` and, with a sliding window `w`, `start + i - j < w`. A padding
/// query sees itself, so that no row of scores is empty (its output is never read).
pub fn step_mask(
    pad: &[usize],
    start: usize,
    t: usize,
    causal: bool,
    window: Option<usize>,
    device: Device,
) -> Result<Option<Tensor>> {
    let s = start + t;
    let b = pad.len();
    let trivial =
        pad.iter().all(|&p| p == 0) && (t == 1 || !causal) && window.is_none_or(|w| w >= s);
    if trivial {
        return Ok(None);
    }
    let mut m = vec![0u8; b * t * s];
    for (bi, &p) in pad.iter().enumerate() {
        for i in 0..t {
            let q = start + i;
            let row = &mut m[(bi * t + i) * s..(bi * t + i + 1) * s];
            for (j, cell) in row.iter_mut().enumerate() {
                let visible = j >= p && (!causal || j <= q) && window.is_none_or(|w| q < j + w);
                *cell = u8::from(!(visible || j == q));
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, [b, 1, t, s], device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_future_padding_and_far_keys() {
        let m = step_mask(&[0, 2], 1, 3, true, None, Device::Cpu)
            .unwrap()
            .unwrap();
        let v = m.to_vec::<u8>().unwrap();
        // Sequence 0, query 0 (position 1) sees keys 0, 1.
        assert_eq!(&v[0..4], &[0, 0, 1, 1]);
        // Sequence 1 is padded at keys 0, 1: query 0 (position 1, itself padding) sees itself.
        assert_eq!(&v[12..16], &[1, 0, 1, 1]);
        // Its query 2 (position 3) sees keys 2, 3.
        assert_eq!(&v[20..24], &[1, 1, 0, 0]);
        let w = step_mask(&[0], 3, 1, true, Some(2), Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(w.to_vec::<u8>().unwrap(), [1, 1, 0, 0]);
        assert!(step_mask(&[0, 0], 5, 1, true, None, Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn grouped_heads_match_repeated_heads() {
        let q = Tensor::randn([2, 4, 3, 5], rustygradients_core::DType::F64, Device::Cpu).unwrap();
        let k = Tensor::randn([2, 2, 6, 5], rustygradients_core::DType::F64, Device::Cpu).unwrap();
        let v = Tensor::randn([2, 2, 6, 5], rustygradients_core::DType::F64, Device::Cpu).unwrap();
        let mask = step_mask(&[0, 1], 3, 3, true, None, Device::Cpu).unwrap();
        let out = attend(&q, &k, &v, mask.as_ref(), 0.3).unwrap();
        // Reference: every query head against its own copy of the shared kv head.
        let rep = |x: &Tensor| {
            let parts: Vec<Tensor> = (0..4).map(|h| x.narrow(1, h / 2, 1).unwrap()).collect();
            Tensor::cat(&parts, 1).unwrap()
        };
        let (k4, v4) = (rep(&k), rep(&v));
        let scores = q
            .matmul(&k4.transpose(2, 3).unwrap())
            .unwrap()
            .mul_scalar(0.3)
            .unwrap();
        let scores = scores
            .masked_fill(mask.as_ref().unwrap(), f64::NEG_INFINITY)
            .unwrap();
        let want = scores.softmax(-1).unwrap().matmul(&v4).unwrap();
        let (a, b) = (out.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12));
    }
}
