//! Fused optimizer updates: one pass over a parameter, its gradient and its state, in place,
//! instead of a dozen elementwise ops that each allocate a parameter-sized tensor.

use rayon::prelude::*;

use super::strided::{simd, CHUNK, PAR_MIN};
use super::HostBuffer;
use crate::backend::AdamHyper;
use crate::{Error, FloatDType, Result};

/// PyTorch's Adam/AdamW step for one element, in f64.
#[inline(always)]
fn adam_elem<T: FloatDType>(p: &mut T, m: &mut T, v: &mut T, g: T, k: &AdamConsts) {
    let (mut pf, mut gf) = (p.to_f64(), g.to_f64());
    if k.decoupled {
        pf *= k.decay;
    } else {
        gf += k.weight_decay * pf;
    }
    let mf = k.beta1 * m.to_f64() + (1.0 - k.beta1) * gf;
    let vf = k.beta2 * v.to_f64() + (1.0 - k.beta2) * gf * gf;
    let denom = vf.sqrt() / k.bc2_sqrt + k.eps;
    *p = T::from_f64(pf - k.step_size * mf / denom);
    *m = T::from_f64(mf);
    *v = T::from_f64(vf);
}

/// The per-step constants, computed once.
struct AdamConsts {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    decay: f64,
    step_size: f64,
    bc2_sqrt: f64,
}

fn run<T: FloatDType>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], h: AdamHyper) {
    let step = h.step.max(1) as i32;
    let k = AdamConsts {
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        decoupled: h.decoupled,
        decay: 1.0 - h.lr * h.weight_decay,
        step_size: h.lr / (1.0 - h.beta1.powi(step)),
        bc2_sqrt: (1.0 - h.beta2.powi(step)).sqrt(),
    };
    let chunk = |p: &mut [T], m: &mut [T], v: &mut [T], g: &[T]| {
        simd(|| {
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                adam_elem(p, m, v, g, &k);
            }
        })
    };
    if p.len() >= PAR_MIN {
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| chunk(p, m, v, g));
    } else {
        chunk(p, m, v, g);
    }
}

pub(crate) fn adam_step(
    p: &mut HostBuffer,
    m: &mut HostBuffer,
    v: &mut HostBuffer,
    g: &HostBuffer,
    h: AdamHyper,
) -> Result<()> {
    let op = "adam_step_";
    let n = p.len();
    if m.len() != n || v.len() != n || g.len() != n {
        return Err(Error::InvalidArgument {
            op,
            msg: format!(
                "parameter, moments and gradient differ in length: {n}, {}, {}, {}",
                m.len(),
                v.len(),
                g.len()
            ),
        });
    }
    match (p, m, v, g) {
        (HostBuffer::F32(p), HostBuffer::F32(m), HostBuffer::F32(v), HostBuffer::F32(g)) => {
            run(p, m, v, g, h)
        }
        (HostBuffer::F64(p), HostBuffer::F64(m), HostBuffer::F64(v), HostBuffer::F64(g)) => {
            run(p, m, v, g, h)
        }
        (HostBuffer::F16(p), HostBuffer::F16(m), HostBuffer::F16(v), HostBuffer::F16(g)) => {
            run(p, m, v, g, h)
        }
        (HostBuffer::BF16(p), HostBuffer::BF16(m), HostBuffer::BF16(v), HostBuffer::BF16(g)) => {
            run(p, m, v, g, h)
        }
        (p, ..) => {
            return Err(Error::UnsupportedDType {
                op,
                got: p.dtype(),
                expected: "one floating-point dtype for parameter, moments and gradient",
            })
        }
    }
    Ok(())
}
