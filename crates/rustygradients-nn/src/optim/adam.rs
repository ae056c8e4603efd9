//! Adam and AdamW. With `decoupled_weight_decay` (AdamW) the decay shrinks the weights directly;
//! without it (Adam) the decay is added to the gradient as an L2 term. PyTorch's update rule.

use rustygradients_core::{no_grad, AdamHyper, Result, Tensor};

use super::{Optimizer, ParamGroup};

#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// AdamW when true.
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// PyTorch's `AdamW` defaults with the given learning rate.
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            decoupled_weight_decay: true,
        }
    }
    /// Checks each hyperparameter, naming the first out of range (NaN never passes).
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (
                "lr",
                self.lr,
                self.lr >= 0.0 && self.lr.is_finite(),
                "a finite number >= 0",
            ),
            (
                "beta1",
                self.beta1,
                (0.0..1.0).contains(&self.beta1),
                "in [0, 1)",
            ),
            (
                "beta2",
                self.beta2,
                (0.0..1.0).contains(&self.beta2),
                "in [0, 1)",
            ),
            (
                "eps",
                self.eps,
                self.eps > 0.0 && self.eps.is_finite(),
                "a finite number > 0",
            ),
        ];
        match checks.iter().find(|c| !c.2) {
            Some((name, v, _, want)) => Err(rustygradients_core::Error::InvalidArgument {
                op: "AdamConfig",
                msg: format!("{name} {v} must be {want}"),
            }),
            None => Ok(()),
        }
    }
    /// PyTorch's `Adam` defaults with the given learning rate.
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            decoupled_weight_decay: false,
            ..Self::adamw(lr)
        }
    }
}

/// Per-parameter state: first and second moments and the number of updates applied.
#[derive(Clone)]
pub struct AdamState {
    pub m: Tensor,
    pub v: Tensor,
    pub step: u64,
}

pub struct Adam {
    groups: Vec<ParamGroup>,
    pub cfg: AdamConfig,
    state: Vec<Option<AdamState>>,
}

impl Adam {
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Self {
        let n = groups.iter().map(|g| g.params.len()).sum();
        Adam {
            groups,
            cfg,
            state: vec![None; n],
        }
    }

    /// The moments of each parameter, in group order (`None` before its first update).
    pub fn state(&self) -> &[Option<AdamState>] {
        &self.state
    }

    /// Restores state taken from [`Adam::state`] (for exact resume). The moments are copied,
    /// so the optimizer owns the memory it updates in place.
    pub fn set_state(&mut self, state: Vec<Option<AdamState>>) -> Result<()> {
        if state.len() != self.state.len() {
            return Err(rustygradients_core::Error::InvalidArgument {
                op: "Adam::set_state",
                msg: format!("{} states for {} parameters", state.len(), self.state.len()),
            });
        }
        self.state = state
            .into_iter()
            .map(|s| {
                s.map(|s| {
                    Ok(AdamState {
                        m: s.m.copy()?,
                        v: s.v.copy()?,
                        step: s.step,
                    })
                })
                .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let c = self.cfg;
        c.validate()?;
        no_grad(|| {
            let mut slot = 0;
            for group in &self.groups {
                for p in &group.params {
                    let i = slot;
                    slot += 1;
                    let Some(g) = p.grad() else { continue };
                    let st = match self.state[i].take() {
                        Some(s) => s,
                        None => AdamState {
                            m: p.zeros_like()?,
                            v: p.zeros_like()?,
                            step: 0,
                        },
                    };
                    let step = st.step + 1;
                    // One fused pass over parameter, gradient and moments, in place.
                    p.adam_step_(
                        &g,
                        &st.m,
                        &st.v,
                        AdamHyper {
                            lr: c.lr,
                            beta1: c.beta1,
                            beta2: c.beta2,
                            eps: c.eps,
                            weight_decay: group.weight_decay,
                            decoupled: c.decoupled_weight_decay,
                            step,
                        },
                    )?;
                    self.state[i] = Some(AdamState { step, ..st });
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
}
