//! Where a layer's weight values live: a vector the layer owns, or a read-only byte buffer shared
//! with others (a memory-mapped checkpoint), viewed in place without a copy.

// Shared views are made only by the safetensors reader.
#![cfg_attr(not(feature = "safetensors"), allow(dead_code))]

use crate::scalar::Real;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Bytes that can be shared between threads and viewed as a slice (for example
/// `memmap2::Mmap`).
pub(crate) type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A layer's weight values.
#[derive(Clone)]
pub(crate) enum Storage<T> {
    /// Values the layer owns.
    Owned(Vec<T>),
    /// `len` values of `T` at byte `offset` of `bytes`, viewed in place.
    Shared { bytes: SharedBytes, offset: usize, len: usize, _values: PhantomData<T> },
}

impl<T: Real> Storage<T> {
    /// A view of `len` little-endian `T` values at byte `offset` of `bytes`, or `None` when they
    /// cannot be viewed in place: out of bounds, misaligned for `T`, or a big-endian target.
    pub(crate) fn shared(bytes: SharedBytes, offset: usize, len: usize) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        let end = len.checked_mul(size)?.checked_add(offset)?;
        let slice = (*bytes).as_ref().get(offset..end)?;
        let aligned = (slice.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
        (cfg!(target_endian = "little") && aligned).then_some(Self::Shared { bytes, offset, len, _values: PhantomData })
    }
}

impl<T> Storage<T> {
    /// The values.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Self::Owned(v) => v,
            Self::Shared { bytes, offset, len, .. } => {
                let b = &(**bytes).as_ref()[*offset..*offset + len * std::mem::size_of::<T>()];
                // SAFETY: checked in `shared`, the only constructor of this variant: the bytes
                // are in bounds and aligned for `T`, and the target is little-endian, as the
                // bytes are. `T` is f32 or f64 there (`Real` is sealed), for which every bit
                // pattern is a value. The buffer is read-only and kept alive by the `Arc` as
                // long as this borrow.
                unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<T>(), *len) }
            }
        }
    }

    /// The owned vector, if the values are owned (for reuse as a buffer).
    pub(crate) fn into_owned(self) -> Option<Vec<T>> {
        match self {
            Self::Owned(v) => Some(v),
            Self::Shared { .. } => None,
        }
    }
}

impl<T: Clone> Storage<T> {
    /// The values as a vector: the owned one, or a copy of a shared view.
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            Self::Owned(v) => v,
            shared @ Self::Shared { .. } => shared.as_slice().to_vec(),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Storage<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl<T: PartialEq> PartialEq for Storage<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_views_check_bounds_and_alignment() {
        let values = [1.5f32, -2.0, 3.25];
        let mut bytes: Vec<u8> = vec![0; 4];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        bytes.push(0);
        let owner: SharedBytes = Arc::new(bytes);
        // A `Vec<u8>` allocation is in practice at least 8-aligned; the misaligned case is
        // then offset 5.
        if ((*owner).as_ref().as_ptr() as usize).is_multiple_of(4) {
            let s = Storage::<f32>::shared(owner.clone(), 4, 3).expect("aligned, in bounds");
            assert_eq!(s.as_slice(), &values);
            assert_eq!(s.clone().into_vec(), values.to_vec());
            assert!(s.into_owned().is_none());
            assert!(Storage::<f32>::shared(owner.clone(), 5, 3).is_none(), "misaligned");
        }
        assert!(Storage::<f32>::shared(owner.clone(), 4, 4).is_none(), "out of bounds");
        assert!(Storage::<f32>::shared(owner, usize::MAX, 2).is_none(), "overflow");
    }
}
