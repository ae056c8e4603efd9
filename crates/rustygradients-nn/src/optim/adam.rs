//! Adam and AdamW. With `decoupled_weight_decay` (AdamW) the decay shrinks the weights directly;
//! without it (Adam) the decay is added to the gradient as an L2 term. PyTorch's update rule.

use rustygradients_core::{no_grad, AdamHyper, Error, Result, Tensor};

use super::{check_state_count, state_like, Optimizer, ParamGroup, ParamState};

/// [`Adam`]'s hyperparameters (weight decay is per [`ParamGroup`]); [`AdamConfig::adam`] and
/// [`AdamConfig::adamw`] give PyTorch's defaults. Checked at every step
/// ([`AdamConfig::validate`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    /// Step size, finite and `>= 0` (PyTorch's default 1e-3).
    pub lr: f64,
    /// Decay of the running mean of gradients, in `[0, 1)`: PyTorch's `betas[0]`, 0.9.
    pub beta1: f64,
    /// Decay of the running mean of squared gradients, in `[0, 1)`: PyTorch's `betas[1]`,
    /// 0.999.
    pub beta2: f64,
    /// Added to the denominator, `sqrt(v̂) + eps`; finite and `> 0` (PyTorch's 1e-8).
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
    /// Running mean of the gradients (PyTorch's `exp_avg`), the parameter's shape.
    pub m: Tensor,
    /// Running mean of the squared gradients (`exp_avg_sq`), the parameter's shape.
    pub v: Tensor,
    /// Updates applied to the parameter (`step`), which sets the bias corrections.
    pub step: u64,
}

/// Adam (PyTorch's `torch.optim.Adam`, same update rule), or AdamW with
/// `cfg.decoupled_weight_decay` (see also [`AdamW`]). Each group's weight decay is added to the
/// gradient as an L2 term (Adam) or shrinks the weights directly (AdamW). One fused in-place
/// pass per parameter; per-parameter state `exp_avg`, `exp_avg_sq` and `step`.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::{Adam, AdamConfig, Optimizer, ParamGroup};
/// use rustygradients_nn::{Forward, Linear};
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let model = Linear::new(3, 1, true)?;
/// // PyTorch: Adam(model.parameters(), lr=0.1, betas=(0.9, 0.99))
/// let cfg = AdamConfig { beta2: 0.99, ..AdamConfig::adam(0.1) };
/// let mut opt = Adam::new(vec![ParamGroup::all(&model, 0.0)], cfg);
/// let x = Tensor::ones([8, 3], DType::F32, Device::Cpu)?;
/// // Mean squared distance of the outputs from 10.
/// let loss = || model.forward(&x)?.sub_scalar(10.0)?.sqr()?.mean_all();
/// let first = loss()?.item()?;
/// for _ in 0..5 {
///     opt.zero_grad();
///     loss()?.backward()?;
///     opt.step()?;
/// }
/// assert!(loss()?.item()? < first);
/// // The settings can change between steps; a bad one fails the next step.
/// opt.cfg.beta1 = 1.0;
/// assert!(opt.step().is_err());
/// # Ok(())
/// # }
/// ```
pub struct Adam {
    groups: Vec<ParamGroup>,
    /// The hyperparameters, read at every step (so they may change between steps;
    /// [`Optimizer::set_learning_rate`] sets `lr`).
    pub cfg: AdamConfig,
    state: Vec<Option<AdamState>>,
}

impl Adam {
    /// Updates the parameters of `groups` with `cfg`; each parameter's state is created at its
    /// first step.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Self {
        let n = groups.iter().map(|g| g.params.len()).sum();
        Adam {
            groups,
            cfg,
            state: vec![None; n],
        }
    }
}

impl Adam {
    /// The update, with every gradient read multiplied by `grad_scale` when given.
    fn update(&mut self, grad_scale: Option<&Tensor>) -> Result<()> {
        let c = self.cfg;
        c.validate()?;
        // Checked before any state advances.
        if let Some(s) = grad_scale {
            let device = self
                .groups
                .iter()
                .flat_map(|g| &g.params)
                .next()
                .map(Tensor::device);
            if s.elem_count() != 1
                || !s.dtype().is_float()
                || device.is_some_and(|d| d != s.device())
            {
                return Err(Error::InvalidArgument {
                    op: "Adam::step_scaled",
                    msg: format!(
                        "the gradient scale must be one float on the parameters' device, not \
                         shape {} of {:?} on {}",
                        s.shape(),
                        s.dtype(),
                        s.device()
                    ),
                });
            }
        }
        no_grad(|| {
            // Every parameter with a gradient advances its state; then one batched update per
            // (group, step count): a GPU updates 32 parameters per kernel launch.
            let mut slot = 0;
            for group in &self.groups {
                // (step count, [(state slot, parameter, gradient)]).
                type Batch<'a> = (u64, Vec<(usize, &'a Tensor, Tensor)>);
                let mut batches: Vec<Batch> = Vec::new();
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
                    self.state[i] = Some(AdamState { step, ..st });
                    match batches.iter_mut().find(|(s, _)| *s == step) {
                        Some((_, b)) => b.push((i, p, g)),
                        None => batches.push((step, vec![(i, p, g)])),
                    }
                }
                for (step, batch) in &batches {
                    let items: Vec<_> = batch
                        .iter()
                        .map(|(i, p, g)| {
                            let st = self.state[*i].as_ref().expect("state set just above");
                            (*p, g, &st.m, &st.v)
                        })
                        .collect();
                    Tensor::adam_step_many(
                        &items,
                        AdamHyper {
                            lr: c.lr,
                            beta1: c.beta1,
                            beta2: c.beta2,
                            eps: c.eps,
                            weight_decay: group.weight_decay,
                            decoupled: c.decoupled_weight_decay,
                            step: *step,
                        },
                        grad_scale,
                    )?;
                }
            }
            Ok(())
        })
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        self.update(None)
    }
    fn step_scaled(&mut self, grad_scale: &Tensor) -> Result<()> {
        self.update(Some(grad_scale))
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
    /// PyTorch's names: the moments and the update count (an i64 scalar).
    fn state_keys(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq", "step"]
    }
    fn param_state(&self, i: usize) -> ParamState {
        match &self.state[i] {
            None => Vec::new(),
            Some(s) => vec![
                ("exp_avg", s.m.clone()),
                ("exp_avg_sq", s.v.clone()),
                (
                    "step",
                    Tensor::scalar(s.step as i64, rustygradients_core::Device::Cpu)
                        .expect("a scalar on the CPU"),
                ),
            ],
        }
    }
    fn set_param_states(&mut self, states: Vec<ParamState>) -> Result<()> {
        let (params, names) = (self.params(), self.param_names());
        check_state_count("Adam::set_param_states", &states, &params)?;
        let mut new = Vec::with_capacity(states.len());
        for ((st, p), name) in states.into_iter().zip(&params).zip(&names) {
            if st.is_empty() {
                new.push(None);
                continue;
            }
            let get = |key: &str| {
                st.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, t)| t)
                    .ok_or_else(|| {
                        rustygradients_core::Error::format(
                            "Adam load_state_dict",
                            format!("{name}: no {key}"),
                        )
                    })
            };
            let step = get("step")?
                .to_dtype(rustygradients_core::DType::I64)?
                .to_vec::<i64>()?;
            let [step] = step[..] else {
                return Err(rustygradients_core::Error::format(
                    "Adam load_state_dict",
                    format!("step.{name}: expected one value"),
                ));
            };
            new.push(Some(AdamState {
                m: state_like(p, get("exp_avg")?, name, "exp_avg")?,
                v: state_like(p, get("exp_avg_sq")?, name, "exp_avg_sq")?,
                step: u64::try_from(step).map_err(|_| {
                    rustygradients_core::Error::format(
                        "Adam load_state_dict",
                        format!("step.{name} is negative"),
                    )
                })?,
            }));
        }
        self.state = new;
        Ok(())
    }
}

/// AdamW (PyTorch's `torch.optim.AdamW`): Adam with the weight decay applied to the weights
/// directly, `weight_decay` in its config.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::{AdamW, AdamWConfig, Optimizer};
/// use rustygradients_nn::{Forward, Linear, Module};
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let model = Linear::new(3, 1, true)?;
/// // Weight matrices decay by 0.1; biases, norms and embeddings do not.
/// let mut opt = AdamW::new(&model, AdamWConfig { lr: 1e-2, weight_decay: 0.1, ..Default::default() });
/// let x = Tensor::ones([8, 3], DType::F32, Device::Cpu)?;
/// for _ in 0..3 {
///     opt.zero_grad();
///     model.forward(&x)?.sqr()?.mean_all()?.backward()?;
///     opt.step()?;
/// }
/// // The state is keyed by parameter name, for checkpoints.
/// assert!(opt.state_dict().iter().any(|(k, _)| k == "exp_avg.weight"));
/// # Ok(())
/// # }
/// ```
pub struct AdamW {
    inner: Adam,
}

/// AdamW's settings; the default is PyTorch's (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight
/// decay 0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Step size; 1e-3 by default.
    pub lr: f64,
    /// Decay of the running mean of gradients (PyTorch's `betas[0]`); 0.9 by default.
    pub beta1: f64,
    /// Decay of the running mean of squared gradients (`betas[1]`); 0.999 by default.
    pub beta2: f64,
    /// Added to the denominator, `sqrt(v̂) + eps`; 1e-8 by default.
    pub eps: f64,
    /// Decoupled decay: each step multiplies a decayed weight by `1 - lr · weight_decay`;
    /// 0.01 by default. [`AdamW::new`] applies it to weight matrices only.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// These settings with learning rate `lr`.
    pub fn with_lr(self, lr: f64) -> Self {
        AdamWConfig { lr, ..self }
    }
    /// These settings with weight decay `weight_decay`.
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        AdamWConfig {
            weight_decay,
            ..self
        }
    }
}

impl AdamW {
    /// Every parameter of `model`: weight matrices decay by `cfg.weight_decay`, biases, norms
    /// and embeddings do not (see [`super::decay_groups`]).
    pub fn new(model: &dyn crate::Module, cfg: AdamWConfig) -> Self {
        Self::with_groups(super::decay_groups(model, cfg.weight_decay), cfg)
    }

    /// Explicit groups, each with its own weight decay (`cfg.weight_decay` is not used).
    pub fn with_groups(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Self {
        AdamW {
            inner: Adam::new(
                groups,
                AdamConfig {
                    lr: cfg.lr,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: cfg.eps,
                    decoupled_weight_decay: true,
                },
            ),
        }
    }
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        self.inner.step()
    }
    fn step_scaled(&mut self, grad_scale: &Tensor) -> Result<()> {
        self.inner.step_scaled(grad_scale)
    }
    fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }
    fn groups(&self) -> &[ParamGroup] {
        self.inner.groups()
    }
    fn state_keys(&self) -> &'static [&'static str] {
        self.inner.state_keys()
    }
    fn param_state(&self, i: usize) -> ParamState {
        self.inner.param_state(i)
    }
    fn set_param_states(&mut self, states: Vec<ParamState>) -> Result<()> {
        self.inner.set_param_states(states)
    }
}
