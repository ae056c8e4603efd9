//! Optimizers and what drives them: parameter groups, gradient clipping, learning-rate schedules.
//! Updates are written into the parameters in place (`Tensor::copy_`), so every module holding a
//! parameter sees the new values.

mod adam;
mod clip;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamState};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use rustygradients_core::{Result, Tensor};

use crate::{Module, ParamKind};

/// Parameters that share hyper-parameters (PyTorch's param groups).
#[derive(Clone)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub weight_decay: f64,
}

/// Two groups: weight matrices decay by `weight_decay`; biases, norms and embeddings do not.
pub fn decay_groups(model: &dyn Module, weight_decay: f64) -> Vec<ParamGroup> {
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    model.visit_parameters("", &mut |_, p, kind| match kind {
        ParamKind::Weight => decay.push(p.clone()),
        _ => no_decay.push(p.clone()),
    });
    vec![
        ParamGroup {
            params: decay,
            weight_decay,
        },
        ParamGroup {
            params: no_decay,
            weight_decay: 0.0,
        },
    ]
}

/// What every optimizer offers.
pub trait Optimizer {
    /// Applies one update from the parameters' accumulated gradients (params without one are
    /// skipped).
    fn step(&mut self) -> Result<()>;
    fn learning_rate(&self) -> f64;
    fn set_learning_rate(&mut self, lr: f64);
    /// The parameter groups this optimizer updates.
    fn groups(&self) -> &[ParamGroup];
    /// Every parameter, in group order.
    fn params(&self) -> Vec<Tensor> {
        self.groups()
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }
    /// Forgets every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }
}
