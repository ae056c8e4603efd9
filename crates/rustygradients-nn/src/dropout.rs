//! Dropout that follows the module's train/eval mode.

use std::sync::atomic::{AtomicBool, Ordering};

use rustygradients_core::{Result, Tensor};

use crate::{Forward, Module, Visitor};

pub struct Dropout {
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
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

/// No parameters; a train/eval switch of its own.
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
