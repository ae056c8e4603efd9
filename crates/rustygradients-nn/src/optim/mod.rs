//! Optimizers and what drives them: parameter groups, gradient clipping, learning-rate schedules.
//! Updates are written into the parameters in place (`Tensor::copy_`), so every module holding a
//! parameter sees the new values.

mod adam;
mod clip;
mod scaler;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamState, AdamW, AdamWConfig};
pub use clip::{
    clip_grad_coef, clip_grad_norm, clip_grad_norm_tensor, grad_norm, grad_norm_tensor,
};
pub use scaler::GradScaler;
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use rustygradients_core::{Result, Tensor};

use crate::{Module, ParamKind};

/// Parameters that share hyper-parameters (PyTorch's param groups), with their names (which key
/// the optimizer's state dict).
///
/// ```
/// use rustygradients_nn::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
/// use rustygradients_nn::{Linear, Module};
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let model = Linear::new(3, 1, true)?;
/// // PyTorch: SGD([{"params": [weight], "weight_decay": 1e-4}, {"params": [bias]}], lr=0.1)
/// let mut named = model.named_parameters();
/// let bias = named.pop().unwrap();
/// let groups = vec![ParamGroup::new(named, 1e-4), ParamGroup::new(vec![bias], 0.0)];
/// let opt = Sgd::new(groups, SgdConfig { lr: 0.1, ..Default::default() });
/// assert_eq!(opt.param_names(), ["weight", "bias"]);
///
/// // One group for the whole model:
/// let all = ParamGroup::all(&model, 0.0);
/// assert_eq!((all.names.len(), all.params.len()), (2, 2));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ParamGroup {
    /// The parameters (handles to the model's own tensors, which the optimizer updates in
    /// place).
    pub params: Vec<Tensor>,
    /// One name per parameter, as [`Module::named_parameters`] gives them.
    pub names: Vec<String>,
    /// This group's weight decay, 0 for none: an L2 term `weight_decay · p` added to the
    /// gradient by [`Sgd`] and [`Adam`]; with [`AdamW`], a decoupled shrink of the weights by
    /// `1 - lr · weight_decay` each step.
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

/// Two groups: weight matrices decay by `weight_decay`; biases, norms and embeddings do not
/// (by each parameter's [`ParamKind`], nanoGPT's split). Either group may be empty.
///
/// ```
/// use rustygradients_nn::optim::decay_groups;
/// use rustygradients_nn::{Embedding, LayerNorm, Linear, Module};
///
/// #[derive(Module)]
/// struct Net {
///     wte: Embedding,
///     ln: LayerNorm,
///     head: Linear,
/// }
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let net = Net {
///     wte: Embedding::new(10, 4)?,
///     ln: LayerNorm::new(4, true)?,
///     head: Linear::new(4, 10, true)?,
/// };
/// let groups = decay_groups(&net, 0.1);
/// assert_eq!(groups[0].names, ["head.weight"]);
/// assert_eq!(groups[0].weight_decay, 0.1);
/// assert_eq!(groups[1].names, ["wte.weight", "ln.weight", "ln.bias", "head.bias"]);
/// assert_eq!(groups[1].weight_decay, 0.0);
/// # Ok(())
/// # }
/// ```
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
    /// [`Optimizer::step`] as if every gradient were first multiplied by `grad_scale`, a
    /// one-element float tensor on the parameters' device (read there): gradient clipping's
    /// coefficient from [`clip_grad_coef`], applied without scaling the gradients themselves,
    /// which are left as they are. Adam and AdamW apply it inside their fused update, with no
    /// pass over the gradients of its own; other optimizers step on scaled copies.
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// use rustygradients_nn::optim::{clip_grad_coef, Optimizer, ParamGroup, Sgd, SgdConfig};
    /// use rustygradients_nn::Linear;
    ///
    /// # fn main() -> rustygradients_core::Result<()> {
    /// let model = Linear::new(2, 1, false)?;
    /// let mut opt = Sgd::new(vec![ParamGroup::all(&model, 0.0)], SgdConfig { lr: 1.0, ..Default::default() });
    /// let w = opt.params()[0].clone();
    /// let before = w.to_vec::<f32>()?;
    /// w.set_grad(Some(Tensor::from_vec(vec![3.0f32, 4.0], &[1, 2], Device::Cpu)?))?;
    /// // The norm is 5: clipped to 1, each gradient is multiplied by 1/5.
    /// let (norm, coef) = clip_grad_coef(&opt.params(), 1.0)?.unwrap();
    /// assert_eq!(norm.item()?, 5.0);
    /// opt.step_scaled(&coef)?;
    /// let after = w.to_vec::<f32>()?;
    /// assert!((before[0] - after[0] - 0.6).abs() < 1e-5 && (before[1] - after[1] - 0.8).abs() < 1e-5);
    /// assert_eq!(w.grad().unwrap().to_vec::<f32>()?, [3.0, 4.0]);
    /// # Ok(())
    /// # }
    /// ```
    fn step_scaled(&mut self, grad_scale: &Tensor) -> Result<()> {
        let params = self.params();
        let grads: Vec<Option<Tensor>> = params.iter().map(Tensor::grad).collect();
        let scaled = rustygradients_core::no_grad(|| {
            let c = grad_scale.detach().reshape(())?;
            for (p, g) in params.iter().zip(&grads) {
                if let Some(g) = g {
                    p.set_grad(Some(g.mul(&c.to_dtype(g.dtype())?)?))?;
                }
            }
            self.step()
        });
        for (p, g) in params.iter().zip(grads) {
            p.set_grad(g)?;
        }
        scaled
    }
    /// The learning rate the next [`Optimizer::step`] uses (one for all groups).
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate of every following step, e.g. from an [`LrSchedule`] before each
    /// step (PyTorch: assigning `group["lr"]` in every group).
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
    /// into an optimizer built afresh for the same model. The tensors are the state itself, not
    /// copies; a parameter not yet updated has no entry.
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// use rustygradients_nn::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
    /// use rustygradients_nn::{Forward, Linear};
    ///
    /// # fn main() -> rustygradients_core::Result<()> {
    /// let model = Linear::new(3, 1, true)?;
    /// let cfg = SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() };
    /// let mut opt = Sgd::new(vec![ParamGroup::all(&model, 0.0)], cfg);
    /// assert!(opt.state_dict().is_empty()); // no buffers before the first step
    ///
    /// model.forward(&Tensor::ones([8, 3], DType::F32, Device::Cpu)?)?.mean_all()?.backward()?;
    /// opt.step()?;
    /// let keys: Vec<String> = opt.state_dict().into_iter().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["momentum_buffer.weight", "momentum_buffer.bias"]);
    /// # Ok(())
    /// # }
    /// ```
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
    /// fresh. Nothing changes unless everything checks out. The tensors are copied (onto each
    /// parameter's device and dtype), so `dict` is not shared with the optimizer.
    ///
    /// A fresh optimizer continuing another's run (as after a restart):
    ///
    /// ```
    /// use rustygradients_core::{DType, Device, Tensor};
    /// use rustygradients_nn::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
    /// use rustygradients_nn::{Forward, Linear, Module};
    ///
    /// # fn main() -> rustygradients_core::Result<()> {
    /// let model = Linear::new(3, 1, true)?;
    /// let x = Tensor::ones([8, 3], DType::F32, Device::Cpu)?;
    /// let mut opt = Adam::new(vec![ParamGroup::all(&model, 0.0)], AdamConfig::adam(1e-2));
    /// for _ in 0..2 {
    ///     opt.zero_grad();
    ///     model.forward(&x)?.sqr()?.mean_all()?.backward()?;
    ///     opt.step()?;
    /// }
    /// let saved = opt.state_dict();
    ///
    /// let mut resumed = Adam::new(vec![ParamGroup::all(&model, 0.0)], AdamConfig::adam(1e-2));
    /// resumed.load_state_dict(&saved)?;
    /// let restored = resumed.state_dict();
    /// assert_eq!(restored.len(), saved.len()); // exp_avg, exp_avg_sq, step per parameter
    /// for ((name, a), (same, b)) in saved.iter().zip(&restored) {
    ///     assert_eq!(name, same);
    ///     let values = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec::<f64>();
    ///     assert_eq!(values(a)?, values(b)?);
    /// }
    /// let step = &restored.iter().find(|(n, _)| n == "step.weight").unwrap().1;
    /// assert_eq!(step.to_vec::<i64>()?, [2]);
    ///
    /// // A name that matches no parameter is refused, and nothing changes.
    /// let bad = vec![("exp_avg.nope".to_string(), model.weight.clone())];
    /// assert!(resumed.load_state_dict(&bad).is_err());
    /// # Ok(())
    /// # }
    /// ```
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

/// Checks that `set_param_states` got one state per parameter.
pub(crate) fn check_state_count(
    op: &'static str,
    states: &[ParamState],
    params: &[Tensor],
) -> Result<()> {
    if states.len() != params.len() {
        return Err(rustygradients_core::Error::InvalidArgument {
            op,
            msg: format!("{} states for {} parameters", states.len(), params.len()),
        });
    }
    Ok(())
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
