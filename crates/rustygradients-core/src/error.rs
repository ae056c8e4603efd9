//! The one error type of RustyGradients: every failure names the op and the shapes, dtypes,
//! devices or indices involved.

use crate::{DType, Device, Shape};

/// Everything that can go wrong in a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must be equal are not (matmul's inner dims, a gradient or target against
    /// its tensor, an in-place copy's source and destination, ...).
    #[error("{op}: shape mismatch between {lhs} and {rhs}")]
    ShapeMismatch {
        /// The operation that failed.
        op: &'static str,
        /// The shape of the first operand (the tensor written to, for in-place ops).
        lhs: Shape,
        /// The shape of the second operand.
        rhs: Shape,
    },
    /// Two shapes that NumPy's rule cannot broadcast together (aligned from the right, each pair
    /// of sizes must be equal or contain a 1).
    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    BroadcastIncompatible {
        /// The operation that failed.
        op: &'static str,
        /// The first shape (the source, for `broadcast_to`/`expand`).
        lhs: Shape,
        /// The second shape (the target, for `broadcast_to`/`expand`).
        rhs: Shape,
    },
    /// A dim argument outside `-rank..rank`.
    #[error("{op}: dim {dim} is out of range for a tensor of shape {shape}")]
    DimOutOfRange {
        /// The operation that failed.
        op: &'static str,
        /// The dim as given (negative counts from the end).
        dim: i64,
        /// The shape it was resolved against.
        shape: Shape,
    },
    /// A set of dims that names one dim twice (after resolving negative dims).
    #[error("{op}: dim {dim} appears more than once")]
    DuplicateDim {
        /// The operation that failed.
        op: &'static str,
        /// The repeated dim, resolved.
        dim: usize,
    },
    /// Operands whose dtypes must match do not; nothing converts implicitly.
    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch {
        /// The operation that failed.
        op: &'static str,
        /// The dtype of the first operand.
        lhs: DType,
        /// The dtype of the second operand.
        rhs: DType,
    },
    /// An op that does not accept this dtype (float math on integers, a non-`u8` mask, ...).
    #[error("{op}: dtype {got:?} is not supported ({expected})")]
    UnsupportedDType {
        /// The operation that failed.
        op: &'static str,
        /// The dtype it was given.
        got: DType,
        /// What it accepts, in words.
        expected: &'static str,
    },
    /// Operands on different devices; nothing moves implicitly (use `to_device`).
    #[error("{op}: device mismatch, {lhs:?} vs {rhs:?}")]
    DeviceMismatch {
        /// The operation that failed.
        op: &'static str,
        /// The device of the first operand.
        lhs: Device,
        /// The first device that differs from it.
        rhs: Device,
    },
    /// An index (or class target) outside `0..size`.
    #[error("{op}: index {index} is out of range for size {size}")]
    IndexOutOfRange {
        /// The operation that failed.
        op: &'static str,
        /// The offending index, as given.
        index: i64,
        /// The size of the indexed dim (the number of classes, for `cross_entropy`).
        size: usize,
    },
    /// A number of elements that does not fit the requested shape (`from_vec`, `view`,
    /// `reshape`).
    #[error("{op}: {len} elements cannot have shape {shape}")]
    ElementCountMismatch {
        /// The operation that failed.
        op: &'static str,
        /// The number of elements supplied.
        len: usize,
        /// The shape requested.
        shape: Shape,
    },
    /// A shape the op cannot work with (too few or too many dims, too few elements, ...); the
    /// message says what it needs.
    #[error("{op}: {msg} (shape {shape})")]
    InvalidShape {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong.
        msg: String,
        /// The offending shape.
        shape: Shape,
    },
    /// Any other bad argument (a zero step, `min > max`, a size too large to allocate, ...).
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// `max`, `min`, `argmax` or `argmin` over a dim of size 0, which has no answer (a sum of
    /// nothing is 0 and does not fail).
    #[error("{op}: tensor of shape {shape} is empty")]
    EmptyTensor {
        /// The operation that failed.
        op: &'static str,
        /// The shape of the tensor reduced.
        shape: Shape,
    },
    /// A view (or a kernel that needs contiguous rows) over strides that cannot show the elements
    /// as `target` without a copy.
    #[error("{op}: a non-contiguous tensor of shape {shape} (strides {strides:?}) cannot be viewed as {target}; call contiguous() or reshape()")]
    NotContiguous {
        /// The operation that failed.
        op: &'static str,
        /// The tensor's shape.
        shape: Shape,
        /// The tensor's strides, in elements.
        strides: Vec<usize>,
        /// The shape asked for.
        target: Shape,
    },
    /// Autograd cannot proceed: `backward` on a non-scalar output or on a tensor outside the
    /// graph, a graph already freed by an earlier `backward`, a saved tensor modified in place
    /// since it was recorded, or an in-place write (`copy_`, `requires_grad_`, `adam_step_`) to a
    /// tensor that is not a leaf. The message says which.
    #[error("backward: {0}")]
    Backward(String),
    /// Reading or writing a file failed (see [`Error::io`]).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or document that does not have the expected format.
    #[error("{what}: {msg}")]
    Format {
        /// What was being read (a file, a section of one).
        what: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A device that cannot be used: a CUDA device in a build without the `cuda` feature, on a
    /// machine without the CUDA driver, or with an ordinal past the last GPU.
    #[error("device {device} is not available: {msg}")]
    DeviceUnavailable {
        /// The device asked for.
        device: Device,
        /// Why it is unavailable.
        msg: String,
    },
    /// The GPU driver, cuBLAS or the NVRTC kernel compiler reported a failure.
    #[error("{op} on {device}: {msg}")]
    Backend {
        /// The operation that failed.
        op: &'static str,
        /// The device it ran on.
        device: Device,
        /// What the library reported, with the sizes involved.
        msg: String,
    },
    /// A device allocation failed for lack of memory.
    #[error(
        "{op} on {device}: out of memory allocating {bytes} bytes ({free} of {total} bytes free)"
    )]
    OutOfMemory {
        /// The operation that allocated.
        op: &'static str,
        /// The device.
        device: Device,
        /// The size asked for.
        bytes: usize,
        /// Free device memory when it failed, as the driver reports it.
        free: usize,
        /// Total device memory.
        total: usize,
    },
}

impl Error {
    /// An I/O error that names the file.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    /// A format error that names what was being read.
    pub fn format(what: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Format {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// The result type of the library.
pub type Result<T> = std::result::Result<T, Error>;
