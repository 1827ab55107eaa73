//! Where each open recording of one incoming channel began, kept in order so the oldest is at
//! hand without a scan.
//!
//! A recording of a channel begins at the channel's arrival count at that moment, and that count
//! never goes down: recordings begin in increasing order of their start, so a new one always
//! goes at the back. They end in any order (each snapshot's marker comes when it comes), so an
//! ending one is found by binary search. Entries whose count falls to zero are removed once
//! they reach the front. The front is then always the oldest open start, which is what the
//! channel's log must keep.
//!
//! Costs, for k recordings open on the channel: begin O(1), end O(log k) plus the zero entries
//! popped (each pushed once, so O(1) amortised), oldest O(1). Space: one entry per distinct start
//! between the oldest open one and now; distinct starts are distinct arrival counts, so there
//! are at most as many as the channel's log holds messages, plus one.

use std::collections::VecDeque;

/// The open recordings of one channel, by start (see the module documentation).
///
/// The oldest start is kept inline and the later ones in a deque on the heap, allocated the
/// first time two starts are open at once (snapshots overlapping on this channel). With one
/// snapshot at a time, the common case, a first marker's opening of each channel and each
/// marker's closing of one touch only these 24 bytes, which sit with the rest of the channel's
/// hot state (`Recorder`): a deque for all of them put each channel's entries on a line of
/// their own, a cache miss a channel at both ends of a recording (a quarter of what 100
/// snapshots added to the misses of the marker rules' own code in callgrind's cache
/// simulation, BENCHMARKS.md, twenty-second round).
#[derive(Debug, Default)]
pub(crate) struct OpenStarts {
    /// The oldest open start; meaningless while `front_open` is 0.
    front_start: u64,
    /// Recordings open from `front_start`; 0: none at all (and `later` is empty).
    front_open: u32,
    /// (start, recordings open from that start) after the front, starts strictly increasing;
    /// a count may fall to zero and wait there until the front passes it.
    ///
    /// Boxed although a deque is on the heap already: a deque's own header is 32 bytes, and
    /// boxed it is 8, which keeps a channel's hot state at two channels a cache line.
    #[allow(clippy::box_collection)]
    later: Option<Box<VecDeque<(u64, u32)>>>,
}

impl OpenStarts {
    /// Whether no recording of the channel is open.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.front_open == 0
    }

    /// The start of the oldest open recording.
    #[inline]
    pub(crate) fn oldest(&self) -> Option<u64> {
        (self.front_open > 0).then_some(self.front_start)
    }

    /// A recording begins at arrival count `start`, which is at least every start seen before.
    #[inline]
    pub(crate) fn begin(&mut self, start: u64) {
        if self.front_open == 0 {
            debug_assert!(self.later.as_ref().is_none_or(|l| l.is_empty()));
            self.front_start = start;
            self.front_open = 1;
            return;
        }
        self.begin_behind(start);
    }

    /// [`begin`](OpenStarts::begin) with recordings already open: counted with the newest
    /// start if it is the same, else a new one at the back.
    #[inline(never)]
    fn begin_behind(&mut self, start: u64) {
        let (last, open) = match self.later.as_deref_mut().and_then(VecDeque::back_mut) {
            Some((last, open)) => (*last, open),
            None => (self.front_start, &mut self.front_open),
        };
        if last == start {
            *open += 1;
            return;
        }
        debug_assert!(last < start, "starts go up");
        self.later_mut().push_back((start, 1));
    }

    /// The deque of later starts, allocated on first use and kept (emptied) from then on.
    fn later_mut(&mut self) -> &mut VecDeque<(u64, u32)> {
        self.later.get_or_insert_with(Box::default)
    }

    /// A recording that began at `start` ends. Returns false (and changes nothing) if no open
    /// recording began there.
    ///
    /// Inline for the common case, the oldest ending (with one snapshot at a time, always): no
    /// search, and no call on every marker.
    #[inline]
    pub(crate) fn end(&mut self, start: u64) -> bool {
        if self.front_open > 0 && self.front_start == start {
            self.front_open -= 1;
            if self.front_open == 0 && self.later.is_some() {
                self.advance_front();
            }
            return true;
        }
        self.end_later(start)
    }

    /// [`end`](OpenStarts::end) of a recording other than the oldest: the front keeps its
    /// count, so nothing moves (the entry that falls to zero waits behind it).
    #[inline(never)]
    fn end_later(&mut self, start: u64) -> bool {
        let Some(later) = self.later.as_deref_mut() else {
            return false;
        };
        let Ok(at) = later.binary_search_by_key(&start, |&(s, _)| s) else {
            return false;
        };
        let open = &mut later[at].1;
        if *open == 0 {
            return false;
        }
        *open -= 1;
        true
    }

    /// The front's last recording ended: the first later start still open becomes the front,
    /// and the ended ones before it go.
    #[inline(never)]
    fn advance_front(&mut self) {
        let Some(later) = self.later.as_deref_mut() else {
            return;
        };
        while let Some((start, open)) = later.pop_front() {
            if open > 0 {
                self.front_start = start;
                self.front_open = open;
                return;
            }
        }
    }

    /// Whether the deque of later starts was never needed (for tests).
    #[cfg(test)]
    pub(crate) fn later_unallocated(&self) -> bool {
        self.later.is_none()
    }

    /// Entries held (for tests of the space bound): the front, if open, and every later
    /// start, ended or not.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        usize::from(self.front_open > 0) + self.later.as_ref().map_or(0, |l| l.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_is_the_front_whatever_order_recordings_end_in() {
        let mut s = OpenStarts::default();
        assert!(s.is_empty());
        for start in [0, 0, 3, 5, 5, 9] {
            s.begin(start);
        }
        assert_eq!(s.oldest(), Some(0));
        assert!(s.end(5));
        assert!(s.end(0));
        assert_eq!(s.oldest(), Some(0), "one recording from 0 is still open");
        assert!(s.end(0));
        assert_eq!(s.oldest(), Some(3));
        assert!(s.end(9));
        assert_eq!(s.oldest(), Some(3), "ending a later one leaves the oldest");
        assert!(s.end(3));
        assert_eq!(s.oldest(), Some(5));
        assert_eq!(s.entries(), 2, "the ended 9 waits behind 5 until 5 goes");
        assert!(s.end(5));
        assert!(s.is_empty());
        assert_eq!(s.oldest(), None);
        assert_eq!(s.entries(), 0);
    }

    #[test]
    fn ending_what_never_began_changes_nothing() {
        let mut s = OpenStarts::default();
        assert!(!s.end(1));
        s.begin(2);
        s.begin(4);
        assert!(!s.end(3));
        assert!(s.end(4));
        assert!(
            !s.end(4),
            "already ended, kept as a zero entry behind the front"
        );
        assert_eq!(s.oldest(), Some(2));
    }

    #[test]
    fn a_zero_entry_in_the_middle_can_open_again_at_the_back() {
        let mut s = OpenStarts::default();
        s.begin(1);
        s.begin(7);
        assert!(s.end(7));
        s.begin(7);
        assert!(s.end(1));
        assert_eq!(s.oldest(), Some(7));
        assert!(s.end(7));
        assert!(s.is_empty());
    }

    #[test]
    fn matches_a_plain_multiset_on_random_runs() {
        // The oracle is the obvious one: a list of open starts, min by scanning.
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..if cfg!(miri) { 10 } else { 200 } {
            let mut s = OpenStarts::default();
            let mut oracle: Vec<u64> = Vec::new();
            let mut now = 0u64;
            for _ in 0..300 {
                match next() % 3 {
                    0 => now += next() % 3,
                    1 => {
                        s.begin(now);
                        oracle.push(now);
                    }
                    _ if !oracle.is_empty() => {
                        let k = (next() % oracle.len() as u64) as usize;
                        let start = oracle.swap_remove(k);
                        assert!(s.end(start), "round {round}");
                    }
                    _ => {}
                }
                assert_eq!(s.oldest(), oracle.iter().min().copied(), "round {round}");
                assert_eq!(s.is_empty(), oracle.is_empty());
            }
        }
    }
}
