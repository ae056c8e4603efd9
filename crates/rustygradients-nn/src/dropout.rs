//! Dropout that follows the module's train/eval mode.

use std::sync::atomic::{AtomicBool, Ordering};

use rustygradients_core::{Result, Tensor};

use crate::{Forward, Module, Visitor};

/// Dropout (PyTorch's `nn.Dropout`): in training mode, zeroes each element with probability
/// `p` and scales the rest by `1/(1-p)`; in eval mode, the identity. The mask comes from the
/// global seeded generator. No parameters.
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1]` (0 turns dropout off; a value outside is
    /// an error at the forward pass).
    pub p: f64,
    training: AtomicBool,
}

impl Dropout {
    /// Starts in training mode, as PyTorch modules do.
    pub fn new(p: f64) -> Self {
        Dropout {
            p,
            training: AtomicBool::new(true),
        }
    }
    /// True in training mode (the default), when dropout applies; set through
    /// [`Module::train`], [`Module::eval`] or [`Module::set_training`] on any ancestor.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
    /// True when this dropout passes its input through unchanged: `p` is 0 or the module is
    /// in eval mode.
    pub fn is_identity(&self) -> bool {
        self.p == 0.0 || !self.is_training()
    }
}

/// No parameters; a train/eval switch of its own.
impl Clone for Dropout {
    /// The same probability and the same mode at the time of the clone.
    fn clone(&self) -> Self {
        Dropout {
            p: self.p,
            training: AtomicBool::new(self.is_training()),
        }
    }
}

impl Module for Dropout {
    fn visit(&self, _: &mut dyn Visitor) {}
    fn set_own_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed)
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.dropout(self.p, self.is_training())
    }
}
