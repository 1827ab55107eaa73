//! A vector whose elements share no cache line with any other allocation.
//!
//! Why: the runtime builds every process's state on the thread that calls `build`, one process
//! after the other, so the allocator lays process k's small arrays right beside process k+1's.
//! An array a process thread writes all the time (its ready bits, its sent and received
//! counters) could then share a cache line with another process's, and two processes on two
//! cores would pass that line back and forth on every write though they share no data: false
//! sharing. Measured on the 2-core machine with the closed-loop bank workload at N = 64, A/B
//! against the unpadded build: 1.017 and 1.021 (BENCHMARKS.md, "Per-message cost").
//!
//! How, with no `unsafe` (the crate forbids it) and no alignment control: the elements sit in
//! the middle of a larger allocation, with at least one cache line of slack on each side. Any
//! line that holds an element then lies wholly inside the allocation, whatever its address.

use std::ops::{Deref, DerefMut};

/// Bytes in a cache line, on the machines this is tuned for (x86-64, most ARM64). On a machine
/// with 128-byte lines the padding still halves the sharing.
const LINE: usize = 64;

/// A fixed-length array of `T` on cache lines of its own (see the module documentation).
pub(crate) struct OwnLines<T> {
    store: Vec<T>,
    len: usize,
}

impl<T: Clone> OwnLines<T> {
    /// `len` copies of `value` (the slack holds copies too).
    pub(crate) fn new(len: usize, value: T) -> Self {
        OwnLines {
            store: vec![value; len + 2 * Self::margin()],
            len,
        }
    }

    /// A copy of `items`; `filler` fills the slack on each side.
    pub(crate) fn from_slice_with(items: &[T], filler: T) -> Self {
        let margin = Self::margin();
        let mut store = Vec::with_capacity(items.len() + 2 * margin);
        store.extend(std::iter::repeat_n(filler.clone(), margin));
        store.extend_from_slice(items);
        store.extend(std::iter::repeat_n(filler, margin));
        OwnLines {
            store,
            len: items.len(),
        }
    }
}

impl<T> OwnLines<T> {
    /// Elements of slack on each side: enough to fill a line.
    fn margin() -> usize {
        LINE.div_ceil(std::mem::size_of::<T>().max(1))
    }
}

impl<T> Deref for OwnLines<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        let margin = Self::margin();
        &self.store[margin..margin + self.len]
    }
}

impl<T> DerefMut for OwnLines<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        let margin = Self::margin();
        &mut self.store[margin..margin + self.len]
    }
}

/// One element, without building the slice first: the per-message counters are read and
/// written this way, and slicing the store (a checked subtraction and two bounds checks) on
/// every access showed in the instruction counts.
impl<T> std::ops::Index<usize> for OwnLines<T> {
    type Output = T;

    #[inline(always)]
    fn index(&self, i: usize) -> &T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &self.store[Self::margin() + i]
    }
}

impl<T> std::ops::IndexMut<usize> for OwnLines<T> {
    #[inline(always)]
    fn index_mut(&mut self, i: usize) -> &mut T {
        assert!(i < self.len, "index {i} out of {}", self.len);
        &mut self.store[Self::margin() + i]
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for OwnLines<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements are the ones given, and every cache line holding one of them lies inside
    /// the allocation: no other allocation can share it.
    #[test]
    fn elements_sit_on_lines_of_their_own() {
        for len in [0, 1, 3, 8, 17] {
            let items: Vec<u64> = (0..len as u64).collect();
            let mut v = OwnLines::from_slice_with(&items, 0);
            assert_eq!(&*v, &items[..]);
            v.iter_mut().for_each(|x| *x += 1);
            assert_eq!(
                v.iter().sum::<u64>(),
                items.iter().map(|x| x + 1).sum::<u64>()
            );
            if len == 0 {
                continue;
            }
            let start = v.store.as_ptr() as usize;
            let end = start + v.store.len() * 8;
            let first = v.as_ptr() as usize;
            let last = first + len * 8 - 1;
            assert!(
                first / LINE * LINE >= start,
                "first element's line starts inside"
            );
            assert!(
                (last / LINE + 1) * LINE <= end,
                "last element's line ends inside"
            );
        }
        let mut one = OwnLines::from_slice_with(&[5u64, 6, 7], 0);
        one[1] += 10;
        assert_eq!(
            (one[0], one[1], one[2]),
            (5, 16, 7),
            "indexing sees the elements"
        );
        let small: OwnLines<u8> = OwnLines::new(3, 7);
        assert_eq!(&*small, &[7, 7, 7]);
        assert_eq!(OwnLines::<u8>::margin(), 64);
    }

    /// An index past the elements panics, as a slice's would, though the slack is there.
    #[test]
    #[should_panic(expected = "index 3 out of 3")]
    fn indexing_the_slack_panics() {
        let v = OwnLines::new(3, 0u64);
        let _ = v[3];
    }
}
