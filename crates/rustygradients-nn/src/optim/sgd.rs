//! Stochastic gradient descent with momentum, dampening, Nesterov and (L2) weight decay, with
//! PyTorch's update rule.

use rustygradients_core::{no_grad, Result, Tensor};

use super::{check_state_count, state_like, Optimizer, ParamGroup, ParamState};

/// SGD's settings (PyTorch's `torch.optim.SGD` arguments; weight decay is per
/// [`ParamGroup`]). The default is plain SGD with `lr` 0.01: no momentum, no dampening, no
/// Nesterov.
#[derive(Debug, Clone, Copy)]
pub struct SgdConfig {
    /// Step size: `p -= lr · update`.
    pub lr: f64,
    /// Momentum factor `μ`: the buffer is `buf = μ · buf + (1 - dampening) · g`, starting as
    /// the first gradient itself. 0 turns momentum off (and no buffers are kept).
    pub momentum: f64,
    /// Damps the new gradient's share of the momentum buffer, as above (not at the first step);
    /// 0 by default.
    pub dampening: f64,
    /// Nesterov momentum: step along `g + μ · buf` instead of `buf` (only with momentum).
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

/// Stochastic gradient descent (PyTorch's `torch.optim.SGD`, same update rule). For each
/// parameter with a gradient `g`: `g += weight_decay · p` (the group's decay), then the
/// momentum of [`SgdConfig`], then `p -= lr · g`, in place. With momentum it keeps one
/// `momentum_buffer` per parameter, which its [`Optimizer::state_dict`] holds.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// use rustygradients_nn::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
/// use rustygradients_nn::{Forward, Linear};
///
/// # fn main() -> rustygradients_core::Result<()> {
/// let model = Linear::new(3, 1, true)?;
/// // PyTorch: SGD(model.parameters(), lr=0.01, momentum=0.9)
/// let cfg = SgdConfig { lr: 0.01, momentum: 0.9, ..Default::default() };
/// let mut opt = Sgd::new(vec![ParamGroup::all(&model, 0.0)], cfg);
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
/// assert_eq!(opt.state_dict()[0].0, "momentum_buffer.weight");
/// # Ok(())
/// # }
/// ```
pub struct Sgd {
    groups: Vec<ParamGroup>,
    cfg: SgdConfig,
    /// Momentum buffers, one per parameter in group order (created at the first step).
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Updates the parameters of `groups` with `cfg`; momentum buffers are created at each
    /// parameter's first step.
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
        let (params, names) = (self.params(), self.param_names());
        check_state_count("Sgd::set_param_states", &states, &params)?;
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
