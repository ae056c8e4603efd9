//! Modules applied one after another; children are named `0`, `1`, ... as in PyTorch.

use rustygradients_core::{Result, Tensor};

use crate::{Forward, Module, Visitor, VisitorMut};

/// Layers applied in order, each one's output the next one's input (PyTorch's
/// `nn.Sequential`). Its children are named `0`, `1`, …, so parameters are `0.weight`,
/// `2.bias`, … as in PyTorch.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Forward>>,
}

impl Sequential {
    /// No layers yet (the identity until one is appended).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer (builder style).
    pub fn append(mut self, layer: impl Forward + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
    /// Appends a function as a parameter-free layer, e.g. `.append_fn(|x| x.relu())`.
    pub fn append_fn(self, f: impl Fn(&Tensor) -> Result<Tensor> + 'static) -> Self {
        self.append(FnLayer(f))
    }
    /// The number of layers, function layers included.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// True when no layer has been appended.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Children named `0`, `1`, … (PyTorch's names for a `Sequential`'s layers).
impl Module for Sequential {
    fn visit(&self, visitor: &mut dyn Visitor) {
        for (i, l) in self.layers.iter().enumerate() {
            visitor.child(&i.to_string(), l);
        }
    }
    fn visit_mut(&mut self, visitor: &mut dyn VisitorMut) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            visitor.child(&i.to_string(), l);
        }
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for l in &self.layers {
            y = l.forward(&y)?;
        }
        Ok(y)
    }
}

/// A function as a layer without parameters (see [`Sequential::append_fn`]).
pub struct FnLayer<F>(pub F);

impl<F> Module for FnLayer<F> {
    fn visit(&self, _: &mut dyn Visitor) {}
}

impl<F: Fn(&Tensor) -> Result<Tensor>> Forward for FnLayer<F> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (self.0)(x)
    }
}
