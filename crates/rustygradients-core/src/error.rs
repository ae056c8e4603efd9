//! The one error type of RustyGradients: every failure names the op and the shapes, dtypes,
//! devices or indices involved.

use crate::{DType, Device, Shape};

/// Everything that can go wrong in a tensor operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch between {lhs} and {rhs}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Shape,
        rhs: Shape,
    },
    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    BroadcastIncompatible {
        op: &'static str,
        lhs: Shape,
        rhs: Shape,
    },
    #[error("{op}: dim {dim} is out of range for a tensor of shape {shape}")]
    DimOutOfRange {
        op: &'static str,
        dim: i64,
        shape: Shape,
    },
    #[error("{op}: dim {dim} appears more than once")]
    DuplicateDim { op: &'static str, dim: usize },
    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    #[error("{op}: dtype {got:?} is not supported ({expected})")]
    UnsupportedDType {
        op: &'static str,
        got: DType,
        expected: &'static str,
    },
    #[error("{op}: device mismatch, {lhs:?} vs {rhs:?}")]
    DeviceMismatch {
        op: &'static str,
        lhs: Device,
        rhs: Device,
    },
    #[error("{op}: index {index} is out of range for size {size}")]
    IndexOutOfRange {
        op: &'static str,
        index: i64,
        size: usize,
    },
    #[error("{op}: {len} elements cannot have shape {shape}")]
    ElementCountMismatch {
        op: &'static str,
        len: usize,
        shape: Shape,
    },
    #[error("{op}: {msg} (shape {shape})")]
    InvalidShape {
        op: &'static str,
        msg: String,
        shape: Shape,
    },
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    #[error("{op}: tensor of shape {shape} is empty")]
    EmptyTensor { op: &'static str, shape: Shape },
    #[error("{op}: a non-contiguous tensor of shape {shape} (strides {strides:?}) cannot be viewed as {target}; call contiguous() or reshape()")]
    NotContiguous {
        op: &'static str,
        shape: Shape,
        strides: Vec<usize>,
        target: Shape,
    },
    #[error("backward: {0}")]
    Backward(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or document that does not have the expected format.
    #[error("{what}: {msg}")]
    Format { what: String, msg: String },
    #[error("device {device:?} is not available: {msg}")]
    DeviceUnavailable { device: Device, msg: String },
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
