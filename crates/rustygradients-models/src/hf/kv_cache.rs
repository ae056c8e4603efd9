//! A preallocated key/value cache: per layer one `(batch, kv_heads, capacity, head_dim)` buffer
//! for keys and one for values. Each forward writes its new positions in place and attends over
//! the filled prefix, so a generated token costs one position of work, not the whole sequence.

use rustygradients_core::{no_grad, DType, Device, Error, Result, Tensor};

/// Keys and values of every layer for the positions processed so far.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Room for `capacity` positions of `batch` sequences in each of `layers` layers, allocated
    /// once on `device`.
    pub fn new(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        dtype: DType,
        device: Device,
    ) -> Result<KvCache> {
        let shape = [batch, kv_heads, capacity, head_dim];
        let layers = (0..layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences per batch.
    pub fn batch(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[0])
    }

    /// Checks that `t` more positions fit.
    pub fn check_room(&self, t: usize) -> Result<()> {
        if self.len + t > self.capacity {
            return Err(Error::InvalidArgument {
                op: "KvCache",
                msg: format!(
                    "{} cached + {t} new positions exceed its capacity of {}",
                    self.len, self.capacity
                ),
            });
        }
        Ok(())
    }

    /// Writes `k`, `v` (`(batch, kv_heads, t, head_dim)`) of `layer` after the cached positions
    /// and returns every position's keys and values so far (views of the buffers). Call
    /// [`advance`](KvCache::advance) once all layers have appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dims()[2];
        self.check_room(t)?;
        let (kc, vc) = self
            .layers
            .get(layer)
            .ok_or_else(|| Error::InvalidArgument {
                op: "KvCache::append",
                msg: format!("layer {layer} of {}", self.layers.len()),
            })?;
        no_grad(|| {
            kc.narrow(2, self.len, t)?.copy_(k)?;
            vc.narrow(2, self.len, t)?.copy_(v)?;
            Ok((
                kc.narrow(2, 0, self.len + t)?,
                vc.narrow(2, 0, self.len + t)?,
            ))
        })
    }

    /// Marks `t` more positions as filled.
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
