//! Matrix products with `torch.matmul`'s rules: 1-D operands are promoted and the added dim
//! removed afterwards; batch dims broadcast.

use crate::op::Op;
use crate::{Error, Result, Shape, Tensor};

impl Tensor {
    /// Matrix product (`torch.matmul` semantics).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let op = "matmul";
        if crate::autocast_dtype().is_some() {
            let (a, b) = (self.autocast_half()?, rhs.autocast_half()?);
            if a.dtype() != self.dtype() || b.dtype() != rhs.dtype() {
                return a.matmul(&b);
            }
        }
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: rhs.dtype(),
            });
        }
        if self.device() != rhs.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device(),
                rhs: rhs.device(),
            });
        }
        match (self.rank(), rhs.rank()) {
            (0, _) | (_, 0) => Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: rhs.shape().clone(),
            }),
            (1, 1) => self.unsqueeze(0)?.matmul(&rhs.unsqueeze(1)?)?.reshape(()),
            (1, _) => self.unsqueeze(0)?.matmul(rhs)?.squeeze(-2),
            (_, 1) => self.matmul(&rhs.unsqueeze(1)?)?.squeeze(-1),
            // A batch of rows times one matrix (every Linear layer): fold the batch into the rows
            // and make one large GEMM instead of a GEMM per batch entry. The backward pass then
            // yields the weight gradient directly, with no sum over a broadcast batch.
            (ra, 2) if ra > 2 => {
                let (da, n) = (self.dims(), rhs.dims()[1]);
                let (m, k) = (da[..ra - 1].iter().product::<usize>(), da[ra - 1]);
                if k != rhs.dims()[0] {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: self.shape().clone(),
                        rhs: rhs.shape().clone(),
                    });
                }
                let mut out = da[..ra - 1].to_vec();
                out.push(n);
                self.reshape([m, k])?.matmul(rhs)?.reshape(out)
            }
            (ra, rb) => {
                let (da, db) = (self.dims(), rhs.dims());
                let (m, k, k2, n) = (da[ra - 2], da[ra - 1], db[rb - 2], db[rb - 1]);
                if k != k2 {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: self.shape().clone(),
                        rhs: rhs.shape().clone(),
                    });
                }
                let batch_a = Shape::new(da[..ra - 2].to_vec());
                let batch_b = Shape::new(db[..rb - 2].to_vec());
                let batch =
                    batch_a
                        .broadcast_with(&batch_b, op)
                        .map_err(|_| Error::ShapeMismatch {
                            op,
                            lhs: self.shape().clone(),
                            rhs: rhs.shape().clone(),
                        })?;
                let with = |r: usize, c: usize| {
                    let mut d = batch.dims().to_vec();
                    d.extend([r, c]);
                    Shape::new(d)
                };
                let a = self.broadcast_to(with(m, k))?;
                let b = rhs.broadcast_to(with(k, n))?;
                let s = a.storage().matmul(a.layout(), &b.storage(), b.layout())?;
                Ok(Tensor::from_storage(
                    s,
                    with(m, n),
                    Some(Op::Matmul(a.clone(), b.clone())),
                ))
            }
        }
    }
}
