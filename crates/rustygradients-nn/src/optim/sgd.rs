//! Stochastic gradient descent with momentum, dampening, Nesterov and (L2) weight decay, with
//! PyTorch's update rule.

use rustygradients_core::{no_grad, Result, Tensor};

use super::{state_like, Optimizer, ParamGroup, ParamState};

#[derive(Debug, Clone, Copy)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-2,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }
}

pub struct Sgd {
    groups: Vec<ParamGroup>,
    cfg: SgdConfig,
    /// Momentum buffers, one per parameter in group order (created at the first step).
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Self {
        let n = groups.iter().map(|g| g.params.len()).sum();
        Sgd {
            groups,
            cfg,
            buffers: vec![None; n],
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        no_grad(|| {
            let mut i = 0;
            for group in &self.groups {
                for p in &group.params {
                    let slot = i;
                    i += 1;
                    let Some(mut g) = p.grad() else { continue };
                    if group.weight_decay != 0.0 {
                        g = g.add(&p.mul_scalar(group.weight_decay)?)?;
                    }
                    if c.momentum != 0.0 {
                        let buf = match &self.buffers[slot] {
                            Some(b) => b
                                .mul_scalar(c.momentum)?
                                .add(&g.mul_scalar(1.0 - c.dampening)?)?,
                            None => g.clone(),
                        };
                        g = if c.nesterov {
                            g.add(&buf.mul_scalar(c.momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.buffers[slot] = Some(buf);
                    }
                    p.copy_(&p.sub(&g.mul_scalar(c.lr)?)?)?;
                }
            }
            Ok(())
        })
    }
    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
    fn state_keys(&self) -> &'static [&'static str] {
        &["momentum_buffer"]
    }
    fn param_state(&self, i: usize) -> ParamState {
        self.buffers[i]
            .iter()
            .map(|b| ("momentum_buffer", b.clone()))
            .collect()
    }
    fn set_param_states(&mut self, states: Vec<ParamState>) -> Result<()> {
        let params = self.params();
        let names = self.param_names();
        if states.len() != params.len() {
            return Err(rustygradients_core::Error::InvalidArgument {
                op: "Sgd::set_param_states",
                msg: format!("{} states for {} parameters", states.len(), params.len()),
            });
        }
        let mut new = Vec::with_capacity(states.len());
        for ((st, p), name) in states.iter().zip(&params).zip(&names) {
            new.push(match st.first() {
                None => None,
                Some((key, t)) => Some(state_like(p, t, name, key)?),
            });
        }
        self.buffers = new;
        Ok(())
    }
}
