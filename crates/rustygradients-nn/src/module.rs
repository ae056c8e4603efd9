//! The [`Module`] trait: a forward pass plus an ordered walk over named parameters, which gives
//! `named_parameters`, parameter counts, checkpoints with PyTorch names, and train/eval mode.

use rustygradients_core::{Result, Tensor};

/// What a parameter is, so optimizers can pick defaults (e.g. no weight decay on biases, norms
/// and embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A matrix that multiplies activations (`Linear.weight`).
    Weight,
    Bias,
    /// A normalisation scale or shift.
    Norm,
    Embedding,
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join_name(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A layer or model.
pub trait Module {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Calls `f(name, parameter, kind)` for every parameter in a fixed order, names prefixed by
    /// `prefix` in PyTorch's dotted style.
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind));

    /// Switches dropout and the like between training and evaluation behaviour.
    fn set_training(&self, _training: bool) {}

    /// Parameters with their dotted names, in a fixed order (PyTorch's `named_parameters`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit_parameters("", &mut |n, t, _| out.push((n.to_string(), t.clone())));
        out
    }

    /// Parameters in the order of [`Module::named_parameters`].
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Total number of parameter elements.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_parameters("", &mut |_, t, _| n += t.elem_count());
        n
    }

    /// Training mode (dropout active).
    fn train(&self) {
        self.set_training(true)
    }

    /// Evaluation mode (dropout off).
    fn eval(&self) {
        self.set_training(false)
    }
}
