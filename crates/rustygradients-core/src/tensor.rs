//! [`Tensor`]: the one tensor type. A cheap handle (`Arc`) to shared storage seen through a
//! [`Layout`], with the op that produced it when autograd is recording.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::host::HostBuffer;
use crate::op::{Op, SavedVersions, Slot};
use crate::storage::Storage;
use crate::{grad_mode, DType, Device, Error, Layout, Result, Shape, WithDType};

/// Identifies a tensor node in the autograd graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// Memory shared by a tensor and all its views, with PyTorch's version counter: every in-place
/// write (anything that takes [`Tensor::storage_mut`]) bumps it, so autograd can tell when a
/// tensor it saved for backward has changed since.
pub(crate) struct StorageCell {
    data: RwLock<Storage>,
    version: AtomicU64,
    /// Autocast's half-precision copy of this (f32 parameter's) memory, when it keeps one (see
    /// [`Tensor::autocast_half`]).
    shadow: Mutex<Option<Shadow>>,
}

/// A half-precision copy of a storage: valid while the source is at `source_version` and the
/// copy itself at `own_version` (nothing wrote either since the copy was made).
pub(crate) struct Shadow {
    cell: Arc<StorageCell>,
    source_version: u64,
    own_version: u64,
}

/// A tensor's place in the autograd graph, shared by the tensor and by the ops that read it.
pub(crate) struct Node {
    id: TensorId,
    /// The recorded op; taken (freeing the graph) by `backward`.
    pub(crate) op: Mutex<Option<Op>>,
    /// The versions of the tensors the op's gradient rule reads, as they were when it was
    /// recorded (empty when no op was recorded).
    pub(crate) saved: SavedVersions,
    /// True when an op was recorded at creation (the tensor is an interior graph node).
    pub(crate) in_graph: bool,
    requires_grad: AtomicBool,
    pub(crate) grad: Mutex<Option<Tensor>>,
}

pub(crate) struct TensorInner {
    pub(crate) node: Arc<Node>,
    /// The memory; `None` for the stand-in an op keeps for an input whose values its gradient
    /// rule never reads (see [`Tensor::ghost`]), so that the graph does not keep every
    /// intermediate activation alive until `backward`.
    storage: Option<Arc<StorageCell>>,
    layout: Layout,
    dtype: DType,
    device: Device,
}

/// An n-dimensional array on a device, with reverse-mode autograd.
///
/// Cloning is cheap and shares data. Views (`reshape`, `permute`, `narrow`, `expand`, ...) share
/// storage with their source.
///
/// ```
/// use rustygradients_core::{DType, Device, Tensor};
/// let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2], Device::Cpu)?;
/// let b = a.t()?.matmul(&a)?;
/// assert_eq!(b.to_vec::<f32>()?, vec![10., 14., 14., 20.]);
/// # Ok::<(), rustygradients_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

impl Drop for Node {
    /// Unwinds long graphs iteratively: dropping the end of a 100k-op chain must not recurse.
    fn drop(&mut self) {
        let Some(op) = self.op.get_mut().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut stack = op.into_inputs();
        while let Some(t) = stack.pop() {
            let Ok(inner) = Arc::try_unwrap(t.0) else {
                continue;
            };
            let Ok(mut node) = Arc::try_unwrap(inner.node) else {
                continue;
            };
            if let Some(op) = node.op.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                stack.extend(op.into_inputs());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tensor {
    /// A new tensor over fresh storage, recording `op` when autograd needs it.
    pub(crate) fn from_storage(
        storage: Storage,
        shape: impl Into<Shape>,
        op: Option<Op>,
    ) -> Tensor {
        let cell = StorageCell {
            data: RwLock::new(storage),
            version: AtomicU64::new(0),
            shadow: Mutex::new(None),
        };
        Self::build(Arc::new(cell), Layout::contiguous(shape), op)
    }

    /// A view sharing this tensor's storage.
    pub(crate) fn view_with(&self, layout: Layout, op: Option<Op>) -> Tensor {
        Self::build(self.cell().clone(), layout, op)
    }

    fn build(storage: Arc<StorageCell>, layout: Layout, op: Option<Op>) -> Tensor {
        let op = op.filter(|op| {
            grad_mode::is_grad_enabled() && op.inputs().iter().any(|t| t.is_tracked())
        });
        let saved = op.as_ref().map_or(SavedVersions::NONE, |op| {
            op.save_versions(storage.version.load(Ordering::Acquire))
        });
        // Inputs whose values the rule never reads are kept as stand-ins without memory.
        let op = op.map(Op::without_unread_data);
        let (dtype, device) = {
            let s = storage.data.read().unwrap_or_else(|e| e.into_inner());
            (s.dtype(), s.device())
        };
        Tensor(Arc::new(TensorInner {
            node: Arc::new(Node {
                id: TensorId::next(),
                in_graph: op.is_some(),
                op: Mutex::new(op),
                saved,
                requires_grad: AtomicBool::new(false),
                grad: Mutex::new(None),
            }),
            storage: Some(storage),
            layout,
            dtype,
            device,
        }))
    }

    /// The same graph node (id, op, gradient) with the same shape, dtype and device, but no
    /// memory: what a recorded op keeps for an input its gradient rule only needs the shape
    /// of. Its values cannot be read.
    pub(crate) fn ghost(&self) -> Tensor {
        Tensor(Arc::new(TensorInner {
            node: self.0.node.clone(),
            storage: None,
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device,
        }))
    }

    /// The name of the op that recorded this tensor for autograd (PyTorch's `grad_fn`), such
    /// as `"linear"` or `"feed_forward"`; `None` for leaves, tensors made without gradient
    /// tracking, and once `backward` has freed the graph.
    ///
    /// ```
    /// use rustygradients_core::{Device, Tensor};
    /// let x = Tensor::ones([2], rustygradients_core::DType::F32, Device::Cpu)?.requires_grad_(true)?;
    /// assert_eq!(x.grad_fn(), None);
    /// assert_eq!(x.exp()?.grad_fn(), Some("exp"));
    /// # Ok::<(), rustygradients_core::Error>(())
    /// ```
    pub fn grad_fn(&self) -> Option<&'static str> {
        let op = self.0.node.op.lock().unwrap_or_else(|e| e.into_inner());
        op.as_ref().map(Op::name)
    }

    /// The f32 tensor this half tensor was cast from (autocast's copy of a master weight),
    /// when that is the op that made it and the source takes gradients: a rule may then hand
    /// the source its gradient in f32 directly, skipping the cast's backward.
    pub(crate) fn cast_source(&self) -> Option<Tensor> {
        let op = self.0.node.op.lock().unwrap_or_else(|e| e.into_inner());
        match op.as_ref() {
            Some(Op::ToDType(src))
                if src.dtype() == DType::F32
                    && matches!(self.dtype(), DType::BF16 | DType::F16)
                    && src.is_tracked() =>
            {
                Some(src.clone())
            }
            _ => None,
        }
    }

    /// This tensor's valid half-precision shadow (see [`StorageCell::shadow`]) as a tensor of
    /// this shape with no graph history; a stale one is dropped.
    pub(crate) fn shadow(&self) -> Option<Tensor> {
        let cell = self.cell();
        let mut slot = cell.shadow.lock().unwrap_or_else(|e| e.into_inner());
        let s = slot.as_ref()?;
        let valid = s.source_version == cell.version.load(Ordering::Acquire)
            && s.own_version == s.cell.version.load(Ordering::Acquire);
        if !valid {
            *slot = None;
            return None;
        }
        let layout = Layout::contiguous(self.shape().clone());
        Some(Self::build(s.cell.clone(), layout, None))
    }

    /// Keeps `half` (a fresh half-precision copy of all of this tensor's memory, or the
    /// shadow just rewritten from it) as this tensor's shadow, valid at both current versions.
    pub(crate) fn set_shadow(&self, half: &Tensor) {
        let cell = self.cell();
        let shadow = Shadow {
            cell: half.cell().clone(),
            source_version: cell.version.load(Ordering::Acquire),
            own_version: half.version(),
        };
        *cell.shadow.lock().unwrap_or_else(|e| e.into_inner()) = Some(shadow);
    }

    /// The tensor this one is a view of, when a view op (permute, reshape, narrow: ops that
    /// always share their input's memory) made it. The op may keep only a stand-in of it
    /// ([`Tensor::ghost`]); the handle returned has the memory, which is this tensor's.
    pub(crate) fn view_source(&self) -> Option<Tensor> {
        let op = self.0.node.op.lock().unwrap_or_else(|e| e.into_inner());
        let src = match op.as_ref()? {
            Op::Permute(x, _) | Op::Reshape(x) | Op::Narrow(x, ..) => x,
            _ => return None,
        };
        Some(Tensor(Arc::new(TensorInner {
            node: src.0.node.clone(),
            storage: Some(self.cell().clone()),
            layout: src.0.layout.clone(),
            dtype: src.0.dtype,
            device: src.0.device,
        })))
    }

    /// True when the op that made this tensor reads its values in backward.
    pub(crate) fn rule_reads_own_output(&self) -> bool {
        let op = self.0.node.op.lock().unwrap_or_else(|e| e.into_inner());
        op.as_ref().is_some_and(Op::reads_output)
    }

    /// The storage cell; every tensor a caller can reach has one (ghosts live only inside
    /// recorded ops, and gradient rules read only the inputs they listed as saved).
    fn cell(&self) -> &Arc<StorageCell> {
        self.0
            .storage
            .as_ref()
            .expect("a gradient rule read an input it did not list in Op::for_each_saved")
    }

    /// This tensor's node in the autograd graph: clones of the handle share it, while every view
    /// or op result gets a new one.
    pub fn id(&self) -> TensorId {
        self.0.node.id
    }
    /// The sizes of the dims (PyTorch's `shape`).
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    /// The sizes of the dims as a slice (PyTorch's `size()`).
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    /// Number of dims; 0 for a scalar (PyTorch's `dim()`).
    pub fn rank(&self) -> usize {
        self.shape().rank()
    }
    /// Number of elements (PyTorch's `numel()`).
    pub fn elem_count(&self) -> usize {
        self.shape().elem_count()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// The device holding the storage.
    pub fn device(&self) -> Device {
        self.0.device
    }
    /// How the elements sit in the storage: shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// The step in storage, in elements, between neighbours along each dim (PyTorch's
    /// `stride()`); 0 on broadcast dims.
    pub fn stride(&self) -> &[usize] {
        self.0.layout.strides()
    }
    /// True when the elements are laid out row-major without gaps (PyTorch's
    /// `is_contiguous()`); the offset may be non-zero and size-1 dims may have any stride.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of one dim (negative counts from the end).
    pub fn dim(&self, d: impl crate::Dim) -> Result<usize> {
        Ok(self.dims()[d.resolve(self.shape(), "dim")?])
    }

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.cell().data.read().unwrap_or_else(|e| e.into_inner())
    }
    /// Write access for an in-place update. Bumps the storage's version (see
    /// [`Tensor::version`]): every in-place write goes through here, so none can slip past the
    /// saved-tensor check of `backward`.
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let cell = self.cell();
        let guard = cell.data.write().unwrap_or_else(|e| e.into_inner());
        cell.version.fetch_add(1, Ordering::AcqRel);
        guard
    }
    /// How many in-place writes this tensor's storage has seen (PyTorch's `_version`). Views
    /// share their source's counter. Autograd records it for every tensor a gradient rule will
    /// read, and `backward` fails if it has changed since.
    pub fn version(&self) -> u64 {
        self.cell().version.load(Ordering::Acquire)
    }
    /// Fails, naming the op and the tensor, when a tensor this node's gradient rule reads was
    /// modified in place after the op was recorded. `inputs` are `op.inputs()`.
    pub(crate) fn check_saved_versions(&self, op: &Op, inputs: &[&Tensor]) -> Result<()> {
        for (slot, saved) in self.0.node.saved.iter() {
            let t = match slot {
                Slot::Input(i) => inputs[i as usize],
                Slot::Output => self,
            };
            let now = t.version();
            if now != saved {
                return Err(Error::Backward(format!(
                    "a tensor of shape {} saved by {} was modified in place after it was used \
                     (version {now}, saved at version {saved}); compute the forward pass again \
                     after the in-place change, or modify a copy instead",
                    t.shape(),
                    op.name()
                )));
            }
        }
        Ok(())
    }
    /// Contiguous, from offset 0, over every element of its storage.
    pub(crate) fn owns_storage(&self) -> bool {
        self.is_contiguous()
            && self.layout().offset() == 0
            && self.storage().elem_len() == self.elem_count()
    }
    /// True when nothing but this handle can see this tensor's memory, which it covers
    /// contiguously, so it may be updated in place.
    pub(crate) fn exclusively_owned(&self) -> bool {
        Arc::strong_count(&self.0) == 1
            && Arc::strong_count(self.cell()) == 1
            && self.owns_storage()
    }
    /// A contiguous copy in fresh storage, with no graph history.
    pub(crate) fn force_copy(&self) -> Result<Tensor> {
        self.detach().copy()
    }
    /// The same values in new memory of its own (PyTorch's `clone()`; [`Clone`] on `Tensor`
    /// only copies the handle). Gradients flow back through the copy.
    pub fn copy(&self) -> Result<Tensor> {
        let s = self.storage().copy_strided(self.layout())?;
        Ok(Tensor::from_storage(
            s,
            self.shape().clone(),
            Some(Op::Copy(self.clone())),
        ))
    }
    /// True when the elements are read in place from shared bytes (see
    /// [`Tensor::from_shared_bytes`]) rather than held in memory of their own.
    pub fn is_borrowed(&self) -> bool {
        self.storage().is_borrowed()
    }
    /// Identifies this tensor's memory: equal for views of the same storage.
    pub(crate) fn storage_id(&self) -> usize {
        Arc::as_ptr(self.cell()) as usize
    }
    /// True when `self` and `other` are views of the same memory.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(self.cell(), other.cell())
    }

    // ---- autograd state -------------------------------------------------------------------

    /// True for leaves that collect gradients.
    pub fn requires_grad(&self) -> bool {
        self.0.node.requires_grad.load(Ordering::Relaxed)
    }
    /// True when gradients flow through this tensor (a grad-requiring leaf or a recorded op).
    pub fn is_tracked(&self) -> bool {
        self.requires_grad() || self.0.node.in_graph
    }
    /// True when no op was recorded for this tensor.
    pub fn is_leaf(&self) -> bool {
        !self.0.node.in_graph
    }
    /// Marks a leaf as collecting gradients (PyTorch's `requires_grad_`); returns the same tensor.
    pub fn requires_grad_(self, flag: bool) -> Result<Tensor> {
        if !self.is_leaf() {
            return Err(Error::Backward(
                "requires_grad_ can only be set on leaf tensors; use detach() first".into(),
            ));
        }
        if flag && !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "requires_grad_",
                got: self.dtype(),
                expected: "a floating-point dtype (only floats have gradients)",
            });
        }
        self.0.node.requires_grad.store(flag, Ordering::Relaxed);
        Ok(self)
    }
    /// The gradient accumulated on this leaf by `backward`, if any.
    pub fn grad(&self) -> Option<Tensor> {
        lock(&self.0.node.grad).clone()
    }
    pub(crate) fn set_grad_unchecked(&self, g: Option<Tensor>) {
        *lock(&self.0.node.grad) = g;
    }
    /// Replaces the accumulated gradient (e.g. after clipping); it must match shape, dtype and
    /// device.
    pub fn set_grad(&self, g: Option<Tensor>) -> Result<()> {
        if let Some(g) = &g {
            if g.shape() != self.shape() || g.dtype() != self.dtype() || g.device() != self.device()
            {
                return Err(Error::InvalidArgument {
                    op: "set_grad",
                    msg: format!(
                        "gradient {} {:?} {} does not match tensor {} {:?} {}",
                        g.shape(),
                        g.dtype(),
                        g.device(),
                        self.shape(),
                        self.dtype(),
                        self.device()
                    ),
                });
            }
        }
        self.set_grad_unchecked(g.map(|g| g.detach()));
        Ok(())
    }
    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        self.set_grad_unchecked(None);
    }
    /// Overwrites this tensor's elements with `src`'s, in place (as PyTorch's `copy_` under
    /// `no_grad`): how optimizers update parameters. Views of the same storage see the change.
    /// Fails on tensors produced by a recorded op, whose values a pending backward may need.
    /// Bumps the storage's [`version`](Tensor::version): a graph recorded before the change
    /// that reads these values fails at `backward` instead of giving wrong gradients (update
    /// parameters after `backward`, then record a new graph, as every training loop does).
    pub fn copy_(&self, src: &Tensor) -> Result<()> {
        let op = "copy_";
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().clone(),
                rhs: src.shape().clone(),
            });
        }
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: src.dtype(),
            });
        }
        if !self.is_leaf() {
            return Err(Error::Backward(
                "copy_ needs a leaf tensor (its values may be needed by backward)".into(),
            ));
        }
        // Reading and writing one storage at once would deadlock its lock: stage the source.
        if self.same_storage(src) {
            let staged = src.storage().copy_strided(src.layout())?;
            let l = Layout::contiguous(src.shape().clone());
            return staged.copy_into(&l, &mut self.storage_mut(), self.layout());
        }
        let s = src.storage();
        s.copy_into(src.layout(), &mut self.storage_mut(), self.layout())
    }

    /// The same data with no graph history and no gradient requirement.
    pub fn detach(&self) -> Tensor {
        self.view_with(self.layout().clone(), None)
    }

    // ---- host data ------------------------------------------------------------------------

    /// Host copy of the elements in row-major order; `T` must be the tensor's dtype.
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            });
        }
        self.storage().to_vec(self.layout())
    }

    /// Every element converted to f64, row-major (for tests, printing and metrics).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.storage().to_vec(self.layout())
    }

    /// The elements, row-major, in a host buffer of the tensor's dtype (for writing files).
    /// Only the elements the tensor shows are copied, not the rest of its storage.
    pub fn to_host(&self) -> Result<HostBuffer> {
        self.storage().to_host(self.layout())
    }

    /// The value of a one-element tensor; `T` must be the tensor's dtype.
    pub fn to_scalar<T: WithDType>(&self) -> Result<T> {
        if self.elem_count() != 1 {
            return Err(Error::InvalidShape {
                op: "to_scalar",
                msg: "expected exactly one element".into(),
                shape: self.shape().clone(),
            });
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The value of a one-element tensor as f64, whatever its dtype (PyTorch's `item()`).
    pub fn item(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::InvalidShape {
                op: "item",
                msg: "expected exactly one element".into(),
                shape: self.shape().clone(),
            });
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// A copy on `device` (the same tensor if it is already there). Gradients flow back.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let storage = self.storage().to_device(self.layout(), device)?;
        Ok(Tensor::from_storage(
            storage,
            self.shape().clone(),
            Some(Op::ToDevice(self.clone())),
        ))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[id={:?}, shape={}, dtype={}, device={}]",
            self.id(),
            self.shape(),
            self.dtype().as_str(),
            self.device()
        )
    }
}
