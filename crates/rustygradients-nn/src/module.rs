//! The [`Module`] trait: a model's structure — its parameters and child modules, each named —
//! from which come PyTorch-named parameters, state dicts, save/load and train/eval mode. The
//! forward pass is [`Forward`] (or any method of the user's own).
//!
//! `#[derive(Module)]` writes [`Module::visit`] from a struct's fields, so a model never lists
//! its parameters by hand and train/eval reaches every descendant:
//!
//! ```
//! use rustygradients_core::{DType, Device, Result, Tensor};
//! use rustygradients_nn::{Dropout, Forward, Linear, Module};
//!
//! #[derive(Module)]
//! struct Net {
//!     hidden: Linear,
//!     drop: Dropout,
//!     out: Linear,
//! }
//!
//! impl Forward for Net {
//!     fn forward(&self, x: &Tensor) -> Result<Tensor> {
//!         self.out.forward(&self.drop.forward(&self.hidden.forward(x)?.relu()?)?)
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let (dt, dev) = (DType::F32, Device::Cpu);
//! let net = Net {
//!     hidden: Linear::new(2, 8, true)?,
//!     drop: Dropout::new(0.5),
//!     out: Linear::new(8, 3, true)?,
//! };
//! let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]);
//! net.eval(); // reaches `drop` without a line of forwarding code
//! let x = Tensor::ones([4, 2], dt, dev)?;
//! assert_eq!(net.forward(&x)?.to_vec::<f32>()?, net.forward(&x)?.to_vec::<f32>()?);
//! # Ok(())
//! # }
//! ```

use rustygradients_core::{Error, Result, Tensor};

/// What a parameter is, so optimizers can pick defaults (e.g. no weight decay on biases, norms
/// and embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A matrix that multiplies activations (`Linear.weight`).
    Weight,
    /// An additive bias (the derive's default for a field named `bias`).
    Bias,
    /// A normalisation scale or shift.
    Norm,
    /// An embedding table (`Embedding.weight`).
    Embedding,
}

/// `prefix.name`, or `name` when the prefix is empty.
pub fn join_name(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => prefix.to_string(),
        _ => format!("{prefix}.{name}"),
    }
}

/// What [`Module::visit`] reports: each direct parameter and each direct child, by name.
pub trait Visitor {
    /// A parameter of the visited module, `name` relative to it (`weight`, `h.0` for a `Vec`
    /// element), with its kind.
    fn param(&mut self, name: &str, tensor: &Tensor, kind: ParamKind);
    /// A child module, `name` relative to the visited one (`attn`); a visitor that walks the
    /// whole tree calls `module.visit(self)` with the name as a prefix.
    fn child(&mut self, name: &str, module: &dyn Module);
}

/// What [`Module::visit_mut`] reports: each direct parameter, to replace, and each direct child.
pub trait VisitorMut {
    /// A parameter, which the visitor may replace with a new tensor (as [`Module::to`] does);
    /// named and kinded as in [`Visitor::param`].
    fn param(&mut self, name: &str, tensor: &mut Tensor, kind: ParamKind);
    /// A child module, mutably; a visitor that walks the whole tree calls
    /// `module.visit_mut(self)`.
    fn child(&mut self, name: &str, module: &mut dyn Module);
}

/// A layer or model: named parameters and children. Derive it (`#[derive(Module)]`); write it by
/// hand only for a layer with a state of its own (as [`crate::Dropout`] has).
pub trait Module {
    /// Reports every direct parameter and child in a fixed order (what the derive writes).
    fn visit(&self, visitor: &mut dyn Visitor);

    /// [`Module::visit`] with mutable access, to replace parameters (what the derive writes; a
    /// hand-written module without parameters or children may keep this default, which visits
    /// nothing).
    fn visit_mut(&mut self, _visitor: &mut dyn VisitorMut) {}

    /// Moves every parameter to `device` and converts the floating-point ones to `dtype`, as
    /// PyTorch's `module.to(device, dtype)`: build a model once, then place it. The new tensors
    /// are fresh leaves that require grad (gradients and optimizer state do not move: create the
    /// optimizer after this).
    fn to(
        &mut self,
        device: rustygradients_core::Device,
        dtype: rustygradients_core::DType,
    ) -> Result<()> {
        let mut mover = Placer {
            device,
            dtype: Some(dtype),
            prefix: String::new(),
            error: None,
        };
        self.visit_mut(&mut mover);
        mover.finish(&self.named_parameters())
    }

    /// Moves every parameter to `device`, keeping its dtype (PyTorch's `module.to(device)`),
    /// e.g. `model.to_device(Device::Cuda(0))?`. As with [`Module::to`], create the optimizer
    /// afterwards.
    fn to_device(&mut self, device: rustygradients_core::Device) -> Result<()> {
        let mut mover = Placer {
            device,
            dtype: None,
            prefix: String::new(),
            error: None,
        };
        self.visit_mut(&mut mover);
        mover.finish(&self.named_parameters())
    }

    /// This module's own train/eval switch (dropout has one); children are switched by
    /// [`Module::set_training`], which every module gets.
    fn set_own_training(&self, _training: bool) {}

    /// Switches this module and every descendant between training and evaluation behaviour.
    fn set_training(&self, training: bool) {
        struct Children(bool);
        impl Visitor for Children {
            fn param(&mut self, _: &str, _: &Tensor, _: ParamKind) {}
            fn child(&mut self, _: &str, m: &dyn Module) {
                m.set_training(self.0)
            }
        }
        self.set_own_training(training);
        self.visit(&mut Children(training));
    }

    /// Calls `f(name, parameter, kind)` for every parameter of this module and its descendants
    /// in a fixed order, names prefixed by `prefix` in PyTorch's dotted style.
    fn visit_parameters(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, ParamKind)) {
        struct Walk<'a> {
            prefix: &'a str,
            f: &'a mut dyn FnMut(&str, &Tensor, ParamKind),
        }
        impl Visitor for Walk<'_> {
            fn param(&mut self, name: &str, t: &Tensor, kind: ParamKind) {
                (self.f)(&join_name(self.prefix, name), t, kind)
            }
            fn child(&mut self, name: &str, m: &dyn Module) {
                m.visit_parameters(&join_name(self.prefix, name), self.f)
            }
        }
        self.visit(&mut Walk { prefix, f });
    }

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

    /// Every parameter by name, in a fixed order: PyTorch's `state_dict()` (the tensors are
    /// the parameters themselves, not copies).
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.named_parameters()
    }

    /// Copies `dict`'s tensors into the parameters of the same names (converting dtype and
    /// device as needed). Every shape must match. With `strict`, a parameter missing from
    /// `dict` or a tensor in `dict` that the module lacks is an error naming it; otherwise
    /// both are listed in the returned report. Everything is checked before anything is
    /// copied, so a failed load leaves the module as it was.
    fn load_state_dict(&self, dict: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
        let report = self.check_state_dict(dict, strict)?;
        let by_name: std::collections::HashMap<&str, &Tensor> =
            dict.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, p) in self.named_parameters() {
            if let Some(src) = by_name.get(name.as_str()) {
                p.copy_(&src.to_dtype(p.dtype())?.to_device(p.device())?)?;
            }
        }
        Ok(report)
    }

    /// The checks of [`Module::load_state_dict`] without the copy: what it would report, or the
    /// error it would give.
    fn check_state_dict(&self, dict: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
        let what = "load_state_dict";
        let by_name: std::collections::HashMap<&str, &Tensor> =
            dict.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let params = self.named_parameters();
        let known: std::collections::HashSet<&str> =
            params.iter().map(|(n, _)| n.as_str()).collect();
        let mut report = LoadReport::default();
        for (name, _) in dict {
            if !known.contains(name.as_str()) {
                if strict {
                    return Err(Error::format(
                        what,
                        format!("unexpected tensor {name}: the module has no such parameter"),
                    ));
                }
                report.unexpected.push(name.clone());
            }
        }
        for (name, p) in &params {
            let Some(src) = by_name.get(name.as_str()) else {
                if strict {
                    return Err(Error::format(what, format!("missing tensor {name}")));
                }
                report.missing.push(name.clone());
                continue;
            };
            if src.shape() != p.shape() {
                return Err(Error::format(
                    what,
                    format!(
                        "{name}: shape {} in the state dict, {} in the module",
                        src.shape(),
                        p.shape()
                    ),
                ));
            }
        }
        Ok(report)
    }

    /// Saves [`Module::state_dict`] as a safetensors file (PyTorch-compatible names; the file
    /// carries a checksum of every tensor).
    fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        let meta = [("format".to_string(), "pt".to_string())].into();
        rustygradients_io::save_safetensors(path, &self.state_dict(), Some(meta))
    }

    /// Loads a safetensors file written by [`Module::save`] (or PyTorch) into the parameters,
    /// strictly: every parameter present with its shape, nothing extra.
    fn load(&self, path: impl AsRef<std::path::Path>) -> Result<()>
    where
        Self: Sized,
    {
        let path = path.as_ref();
        let file = rustygradients_io::SafetensorsFile::open(path)?;
        let (tensors, _) = file.load_all(rustygradients_core::Device::Cpu)?;
        self.load_state_dict(&tensors, true)
            .map_err(|e| Error::format(path.display().to_string(), e.to_string()))?;
        Ok(())
    }
}

/// What a non-strict [`Module::load_state_dict`] did not match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters the state dict did not have (left as they were).
    pub missing: Vec<String>,
    /// State-dict tensors the module has no parameter for (ignored).
    pub unexpected: Vec<String>,
}

/// A module with a one-tensor forward pass (layers; models may have their own signatures).
pub trait Forward: Module {
    /// Applies the layer to `x` (PyTorch's `module(x)`); the shapes are each layer's own, e.g.
    /// [`crate::Linear`] maps `(…, in_features)` to `(…, out_features)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn visit(&self, visitor: &mut dyn Visitor) {
        (**self).visit(visitor)
    }
    fn visit_mut(&mut self, visitor: &mut dyn VisitorMut) {
        (**self).visit_mut(visitor)
    }
    fn set_own_training(&self, training: bool) {
        (**self).set_own_training(training)
    }
    fn set_training(&self, training: bool) {
        (**self).set_training(training)
    }
}

impl<M: Forward + ?Sized> Forward for Box<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
}

/// How `#[derive(Module)]` visits one field: a tensor is a parameter, a module a child, and a
/// `Vec`, `Option` or array visits its elements (`name.0`, `name.1`, …). Numbers, `bool` and
/// `String` are nothing; other non-module fields take `#[module(skip)]`.
pub trait ModuleField {
    /// Reports this field, named `name`, to `visitor`: [`Visitor::param`] for a tensor (with
    /// `kind`, which only tensors use), [`Visitor::child`] for a module, each element under
    /// `name.i` for a collection, nothing for a plain value.
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor);
    /// [`ModuleField::visit_field`] with mutable access, for [`Module::visit_mut`].
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut);
}

impl ModuleField for Tensor {
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor) {
        visitor.param(name, self, kind)
    }
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut) {
        visitor.param(name, self, kind)
    }
}

impl<M: Module> ModuleField for M {
    fn visit_field(&self, name: &str, _: ParamKind, visitor: &mut dyn Visitor) {
        visitor.child(name, self)
    }
    fn visit_field_mut(&mut self, name: &str, _: ParamKind, visitor: &mut dyn VisitorMut) {
        visitor.child(name, self)
    }
}

impl<T: ModuleField> ModuleField for Vec<T> {
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor) {
        self.as_slice().visit_field(name, kind, visitor)
    }
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut) {
        self.as_mut_slice().visit_field_mut(name, kind, visitor)
    }
}

impl<T: ModuleField, const N: usize> ModuleField for [T; N] {
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor) {
        self.as_slice().visit_field(name, kind, visitor)
    }
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut) {
        self.as_mut_slice().visit_field_mut(name, kind, visitor)
    }
}

impl<T: ModuleField> ModuleField for [T] {
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor) {
        for (i, x) in self.iter().enumerate() {
            x.visit_field(&join_name(name, &i.to_string()), kind, visitor);
        }
    }
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut) {
        for (i, x) in self.iter_mut().enumerate() {
            x.visit_field_mut(&join_name(name, &i.to_string()), kind, visitor);
        }
    }
}

impl<T: ModuleField> ModuleField for Option<T> {
    fn visit_field(&self, name: &str, kind: ParamKind, visitor: &mut dyn Visitor) {
        if let Some(x) = self {
            x.visit_field(name, kind, visitor)
        }
    }
    fn visit_field_mut(&mut self, name: &str, kind: ParamKind, visitor: &mut dyn VisitorMut) {
        if let Some(x) = self {
            x.visit_field_mut(name, kind, visitor)
        }
    }
}

macro_rules! plain_fields {
    ($($t:ty),*) => {$(
        impl ModuleField for $t {
            fn visit_field(&self, _: &str, _: ParamKind, _: &mut dyn Visitor) {}
            fn visit_field_mut(&mut self, _: &str, _: ParamKind, _: &mut dyn VisitorMut) {}
        }
    )*};
}
plain_fields!(bool, u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, String);

/// Moves parameters for [`Module::to`] and [`Module::to_device`].
struct Placer {
    device: rustygradients_core::Device,
    /// The dtype floating-point parameters get (`None`: keep theirs).
    dtype: Option<rustygradients_core::DType>,
    prefix: String,
    error: Option<Error>,
}

impl Placer {
    fn target_dtype(&self, t: &Tensor) -> rustygradients_core::DType {
        match self.dtype {
            Some(d) if t.dtype().is_float() => d,
            _ => t.dtype(),
        }
    }

    /// The first error met, or one naming a parameter left behind by a hand-written module
    /// that kept the default `visit_mut`.
    fn finish(self, params: &[(String, Tensor)]) -> Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Some((name, t)) = params
            .iter()
            .find(|(_, t)| t.device() != self.device || self.target_dtype(t) != t.dtype())
        {
            return Err(Error::format(
                "Module::to",
                format!(
                    "{name} is still {:?} on {} (its module does not implement visit_mut)",
                    t.dtype(),
                    t.device()
                ),
            ));
        }
        Ok(())
    }
}

impl VisitorMut for Placer {
    fn param(&mut self, name: &str, t: &mut Tensor, _: ParamKind) {
        if self.error.is_some() {
            return;
        }
        let dtype = self.target_dtype(t);
        if t.device() == self.device && t.dtype() == dtype {
            return;
        }
        let moved = rustygradients_core::no_grad(|| t.to_dtype(dtype)?.to_device(self.device))
            .and_then(|m| m.requires_grad_(t.requires_grad()));
        match moved {
            Ok(m) => *t = m,
            Err(e) => {
                self.error = Some(Error::format(
                    "Module::to",
                    format!("{}: {e}", join_name(&self.prefix, name)),
                ))
            }
        }
    }
    fn child(&mut self, name: &str, m: &mut dyn Module) {
        if self.error.is_some() {
            return;
        }
        let outer = std::mem::take(&mut self.prefix);
        self.prefix = join_name(&outer, name);
        m.visit_mut(self);
        self.prefix = outer;
    }
}
