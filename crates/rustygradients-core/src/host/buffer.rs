//! The memory behind a CPU storage: an owned vector, or elements borrowed in place from shared
//! bytes (a memory-mapped file, say) without a copy. Writing to borrowed elements first copies
//! them into a vector of their own (copy on write), so a mapped file is never modified.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::WithDType;

/// Bytes that many buffers may borrow from at once.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The elements of one host buffer (see [`crate::HostBuffer`]).
pub enum HostBuf<T> {
    /// Elements in a vector of their own.
    Owned(Vec<T>),
    /// `len` elements of `T` starting `offset` bytes into `bytes` (aligned for `T`, checked
    /// by [`HostBuf::borrowed`]).
    Borrowed {
        /// The bytes borrowed from.
        bytes: SharedBytes,
        /// Where the elements start, in bytes.
        offset: usize,
        /// How many elements.
        len: usize,
        /// The element type.
        _t: PhantomData<T>,
    },
}

impl<T: WithDType> HostBuf<T> {
    /// Borrows `len` elements at byte `offset` of `bytes`, or `None` when they lie outside the
    /// bytes or are not aligned for `T` (the caller copies then).
    pub fn borrowed(bytes: SharedBytes, offset: usize, len: usize) -> Option<HostBuf<T>> {
        let size = std::mem::size_of::<T>();
        let end = len.checked_mul(size)?.checked_add(offset)?;
        let all = (*bytes).as_ref();
        let region = all.get(offset..end)?;
        if region.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return None;
        }
        Some(HostBuf::Borrowed {
            bytes,
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// True when the elements are borrowed, not owned.
    pub fn is_borrowed(&self) -> bool {
        matches!(self, HostBuf::Borrowed { .. })
    }
}

impl<T: WithDType> Deref for HostBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            HostBuf::Owned(v) => v,
            HostBuf::Borrowed {
                bytes, offset, len, ..
            } => {
                let all = (**bytes).as_ref();
                let p = all[*offset..*offset + len * std::mem::size_of::<T>()].as_ptr();
                // SAFETY: `borrowed` checked that this range lies inside the bytes and is
                // aligned for `T`; the bytes are immutable and kept alive by the `Arc` for as
                // long as `self`; every element type of this crate (f32, f64, f16, bf16, i64,
                // u32, u8) is plain data for which any bit pattern is a valid value.
                unsafe { std::slice::from_raw_parts(p.cast::<T>(), *len) }
            }
        }
    }
}

impl<T: WithDType> DerefMut for HostBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.is_borrowed() {
            *self = HostBuf::Owned(self.to_vec());
        }
        match self {
            HostBuf::Owned(v) => v,
            HostBuf::Borrowed { .. } => unreachable!("replaced by an owned copy just above"),
        }
    }
}

impl<T: WithDType> From<Vec<T>> for HostBuf<T> {
    fn from(v: Vec<T>) -> Self {
        HostBuf::Owned(v)
    }
}

impl<T: WithDType> Clone for HostBuf<T> {
    fn clone(&self) -> Self {
        match self {
            HostBuf::Owned(v) => HostBuf::Owned(v.clone()),
            HostBuf::Borrowed {
                bytes, offset, len, ..
            } => HostBuf::Borrowed {
                bytes: bytes.clone(),
                offset: *offset,
                len: *len,
                _t: PhantomData,
            },
        }
    }
}

impl<T: WithDType> std::fmt::Debug for HostBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_borrowed() {
            "borrowed"
        } else {
            "owned"
        };
        write!(f, "HostBuf({kind}, {} elements)", self.len())
    }
}
