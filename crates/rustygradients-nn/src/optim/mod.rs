//! Optimizers and what drives them: parameter groups, gradient clipping, learning-rate schedules.
//! Updates are written into the parameters in place (`Tensor::copy_`), so every module holding a
//! parameter sees the new values.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamState, AdamW, AdamWConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use rustygradients_core::{Result, Tensor};

use crate::{Module, ParamKind};

/// Parameters that share hyper-parameters (PyTorch's param groups), with their names (which key
/// the optimizer's state dict).
#[derive(Clone)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    /// One name per parameter, as [`Module::named_parameters`] gives them.
    pub names: Vec<String>,
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group of named parameters.
    pub fn new(named: Vec<(String, Tensor)>, weight_decay: f64) -> Self {
        let (names, params) = named.into_iter().unzip();
        ParamGroup {
            params,
            names,
            weight_decay,
        }
    }

    /// Every parameter of `model`, with one weight decay.
    pub fn all(model: &dyn Module, weight_decay: f64) -> Self {
        Self::new(model.named_parameters(), weight_decay)
    }
}

/// Two groups: weight matrices decay by `weight_decay`; biases, norms and embeddings do not.
pub fn decay_groups(model: &dyn Module, weight_decay: f64) -> Vec<ParamGroup> {
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    model.visit_parameters("", &mut |name, p, kind| {
        let entry = (name.to_string(), p.clone());
        match kind {
            ParamKind::Weight => decay.push(entry),
            _ => no_decay.push(entry),
        }
    });
    vec![
        ParamGroup::new(decay, weight_decay),
        ParamGroup::new(no_decay, 0.0),
    ]
}

/// One parameter's optimizer state: named tensors (`exp_avg`, `momentum_buffer`, …).
pub type ParamState = Vec<(&'static str, Tensor)>;

/// What every optimizer offers.
pub trait Optimizer {
    /// Applies one update from the parameters' accumulated gradients (params without one are
    /// skipped).
    fn step(&mut self) -> Result<()>;
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
    /// The parameter groups this optimizer updates.
    fn groups(&self) -> &[ParamGroup];
    /// The names of the per-parameter state tensors this optimizer keeps.
    fn state_keys(&self) -> &'static [&'static str];
    /// The state of the `i`-th parameter (in group order); empty before its first update.
    fn param_state(&self, i: usize) -> ParamState;
    /// Replaces every parameter's state (one entry per parameter, in group order, each empty or
    /// holding every key of [`Optimizer::state_keys`]); checks all of it before changing any.
    fn set_param_states(&mut self, states: Vec<ParamState>) -> Result<()>;

    /// Every parameter, in group order.
    fn params(&self) -> Vec<Tensor> {
        self.groups()
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }
    /// Every parameter's name, in group order.
    fn param_names(&self) -> Vec<String> {
        self.groups()
            .iter()
            .flat_map(|g| g.names.iter().cloned())
            .collect()
    }
    /// Forgets every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }

    /// The state as named tensors, keyed `<state>.<parameter name>`
    /// (`exp_avg.h.0.attn.c_attn.weight`): it survives a reordering of the groups, and loads
    /// into an optimizer built afresh for the same model.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, name) in self.param_names().iter().enumerate() {
            for (key, t) in self.param_state(i) {
                out.push((format!("{key}.{name}"), t));
            }
        }
        out
    }

    /// Restores a [`Optimizer::state_dict`]. A name that matches no parameter, or a parameter
    /// with only part of its state, is an error naming it; parameters absent from `dict` start
    /// fresh. Nothing changes unless everything checks out.
    fn load_state_dict(&mut self, dict: &[(String, Tensor)]) -> Result<()> {
        let names = self.param_names();
        let index: std::collections::HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let keys = self.state_keys();
        let mut states: Vec<ParamState> = vec![Vec::new(); names.len()];
        for (full, t) in dict {
            let found = keys.iter().find_map(|k| {
                let param = full.strip_prefix(k)?.strip_prefix('.')?;
                Some((*k, *index.get(param)?))
            });
            let Some((key, i)) = found else {
                return Err(rustygradients_core::Error::format(
                    "optimizer load_state_dict",
                    format!(
                        "{full}: not <state>.<parameter> for a state in {keys:?} and a \
                         parameter of this optimizer"
                    ),
                ));
            };
            states[i].push((key, t.clone()));
        }
        for (i, st) in states.iter().enumerate() {
            if !st.is_empty() && st.len() != keys.len() {
                let have: Vec<&str> = st.iter().map(|(k, _)| *k).collect();
                return Err(rustygradients_core::Error::format(
                    "optimizer load_state_dict",
                    format!("{}: has state {have:?}, needs all of {keys:?}", names[i]),
                ));
            }
        }
        self.set_param_states(states)
    }
}

/// Checks that a state tensor fits its parameter (same shape) and makes an owned copy on the
/// parameter's device and dtype (what an optimizer updates in place).
pub(crate) fn state_like(param: &Tensor, t: &Tensor, name: &str, key: &str) -> Result<Tensor> {
    if t.shape() != param.shape() {
        return Err(rustygradients_core::Error::format(
            "optimizer load_state_dict",
            format!(
                "{key}.{name}: shape {} but the parameter is {}",
                t.shape(),
                param.shape()
            ),
        ));
    }
    t.to_dtype(param.dtype())?.to_device(param.device())?.copy()
}
