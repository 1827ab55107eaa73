//! The order in which a process's event loop visits its ready channels (its incoming channels
//! and its control channel), so that no ready channel waits long for the others.
//!
//! The algorithm allows any order across channels (it needs each served, FIFO within each), so
//! the order is about how long a marker can wait: a marker that arrives alone on a quiet
//! channel must not sit behind a busy one. The loop works in rounds. A round starts by taking
//! the doorbell's bits (the channels that received something since the last take), then visits
//! each channel of its plan once. The plan of the next round is
//!
//! 1. the channels that became ready and were not visited in this round, lowest bit first; then
//! 2. the channels visited in this round that are ready again (their visit ended with work
//!    left, or something new arrived), in this round's order.
//!
//! Why this order: a channel X that becomes ready while the loop is in round R is visited in
//! R + 1 at the latest, and before it the loop visits only what is left of round R and the
//! channels of R + 1 planned ahead of X. A channel visited in what was left of R comes after X
//! in R + 1: if X was not visited in R, X is in the first group and that channel in the second;
//! if X was visited in R, it was before that channel in R, and the second group keeps R's
//! order. So between X becoming ready and X's visit, every other channel is visited at most
//! once (counting the visit under way when X became ready). Serving the lowest bit first every
//! round, as the loop used to, let a busy low channel be visited twice (the rest of its visit,
//! then again first in the next round) while a marker waited alone on a higher one; with
//! callbacks of 20 ms that held a snapshot for 2.5 s (issue 23).
//!
//! Cost: a round builds its plan from two bitmaps and the last plan (a few instructions per
//! visit); the arrays are written every round, so they live on cache lines of their own.

use crate::own_lines::OwnLines;
use crate::runtime::doorbell::{set_bit, BITS};

/// A plan's entry: a channel's word and bit in the bitmaps, packed as `word * 64 + bit` (a
/// shift, where the channel's number, `word * 63 + bit`, would need a division by 63 to test
/// its bit). For the one-word bitmaps of all but the largest systems it is the channel's number.
#[inline]
fn pack(word: usize, bit: u32) -> u32 {
    (word as u32) << 6 | bit
}

/// A plan entry's word and bit.
#[inline]
fn unpack(entry: u32) -> (usize, u32) {
    ((entry >> 6) as usize, entry & 63)
}

/// The bitmaps' places in `Rotation::bitmaps` (the third, `visited`, is set by `plan` only).
const FRESH: usize = 0;
const AGAIN: usize = 2;

/// One process's visit order (see the module documentation).
pub(crate) struct Rotation {
    /// Words per bitmap (as the doorbell's).
    words: usize,
    /// Three bitmaps, `words` each: `fresh` (taken from the doorbell for the next round),
    /// `visited` (the channels of the current plan), `again` (visited this round, work left).
    bitmaps: OwnLines<u64>,
    /// The current round's plan: `plan[..len]`, packed entries (see `pack`).
    plan: OwnLines<u32>,
    len: usize,
    /// The next round's plan, being built.
    next: OwnLines<u32>,
}

impl Rotation {
    /// A rotation over `bits` channels whose bitmaps have `words` words (the doorbell's).
    pub(crate) fn new(bits: usize, words: usize) -> Self {
        Rotation {
            words,
            bitmaps: OwnLines::new(3 * words, 0),
            plan: OwnLines::new(bits, 0),
            len: 0,
            next: OwnLines::new(bits, 0),
        }
    }

    /// Where the doorbell's bits go before [`plan`](Rotation::plan) (OR-ed in).
    #[inline]
    pub(crate) fn fresh(&mut self) -> &mut [u64] {
        &mut (*self.bitmaps)[..self.words]
    }

    /// Starts a round from what is fresh and what the last round left; returns how many visits
    /// it has. Every visit must be made (or the loop ended) before the next `plan`.
    #[inline]
    pub(crate) fn plan(&mut self) -> usize {
        if self.words == 1 {
            return self.plan_one_word();
        }
        self.plan_words()
    }

    /// [`plan`](Rotation::plan) for up to 63 channels (all but the largest systems), on three
    /// words in registers: no loop over words, no clearing, no division to find a bit.
    #[inline]
    fn plan_one_word(&mut self) -> usize {
        // Each array as a slice once: indexed through `OwnLines`, every access checked the
        // index twice (callgrind put that at about half of this function's instructions).
        let bitmaps = &mut (*self.bitmaps)[..3];
        let (fresh, visited) = (bitmaps[0], bitmaps[1]);
        let ready = fresh | bitmaps[2];
        let next: &mut [u32] = &mut self.next;
        let mut len = 0;
        let mut waited = fresh & !visited;
        while waited != 0 {
            next[len] = waited.trailing_zeros();
            waited &= waited - 1;
            len += 1;
        }
        if ready & visited != 0 {
            let plan: &[u32] = &self.plan;
            for &bit in &plan[..self.len] {
                if ready >> bit & 1 == 1 {
                    next[len] = bit;
                    len += 1;
                }
            }
        }
        // The next plan's channels: the fresh ones, and those left with work (`again` holds
        // only channels of this plan).
        bitmaps[0] = 0;
        bitmaps[1] = ready;
        bitmaps[2] = 0;
        std::mem::swap(&mut self.plan, &mut self.next);
        self.len = len;
        len
    }

    /// [`plan`](Rotation::plan) for any number of channels.
    #[inline(never)]
    fn plan_words(&mut self) -> usize {
        let words = self.words;
        let (fresh, rest) = self.bitmaps.split_at_mut(words);
        let (visited, again) = rest.split_at_mut(words);
        let mut len = 0;
        // 1. Ready, and not visited in the round just ended: lowest bit first.
        for w in 0..words {
            let mut bits = fresh[w] & !visited[w];
            while bits != 0 {
                self.next[len] = pack(w, bits.trailing_zeros());
                bits &= bits - 1;
                len += 1;
            }
        }
        // 2. Visited in the round just ended and ready again: in that round's order. (`again`
        // holds only channels of that round, so the ready ones are `fresh | again`.)
        let mut any_again = false;
        for w in 0..words {
            again[w] |= fresh[w];
            any_again |= again[w] & visited[w] != 0;
        }
        if any_again {
            for k in 0..self.len {
                let entry = self.plan[k];
                let (w, b) = unpack(entry);
                if again[w] >> b & 1 == 1 {
                    self.next[len] = entry;
                    len += 1;
                }
            }
        }
        // The next round's channels are the ready ones. One pass over the words, writing three
        // arrays, so no call to `memset` per array per round.
        for w in 0..words {
            visited[w] = again[w];
            fresh[w] = 0;
            again[w] = 0;
        }
        std::mem::swap(&mut self.plan, &mut self.next);
        self.len = len;
        len
    }

    /// The channel of this round's `k`-th visit.
    #[inline]
    pub(crate) fn visit(&self, k: usize) -> usize {
        let (w, b) = unpack(self.plan[k]);
        w * BITS + b as usize
    }

    /// Work has come for `bit` other than through the doorbell (envelopes sorted out of a
    /// process's inbox from other nodes, `remote_inbox.rs`): as a ring, it goes in the next
    /// plan.
    #[inline]
    pub(crate) fn arrived(&mut self, bit: usize) {
        self.set(FRESH, bit);
    }

    /// The visit to `bit` ended with work left: it goes in the next round, behind the channels
    /// that have waited.
    #[inline]
    pub(crate) fn again(&mut self, bit: usize) {
        self.set(AGAIN, bit);
    }

    /// Sets `bit` in bitmap `map` (`FRESH` or `AGAIN`).
    #[inline]
    fn set(&mut self, map: usize, bit: usize) {
        let words = self.words;
        if words == 1 {
            self.bitmaps[map] |= 1 << bit;
        } else {
            set_bit(&mut (*self.bitmaps)[map * words..(map + 1) * words], bit);
        }
    }

    /// Whether some visit of this round left work (the loop must not sleep).
    #[cfg(test)]
    fn has_again(&self) -> bool {
        (*self.bitmaps)[2 * self.words..].iter().any(|&w| w != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rotation(bits: usize) -> Rotation {
        Rotation::new(bits, bits.div_ceil(BITS).max(1))
    }

    fn round(r: &mut Rotation) -> Vec<usize> {
        let n = r.plan();
        (0..n).map(|k| r.visit(k)).collect()
    }

    #[test]
    fn fresh_channels_go_ahead_of_those_visited_last_round() {
        let mut r = rotation(4);
        for b in [0, 2, 3] {
            set_bit(r.fresh(), b);
        }
        assert_eq!(round(&mut r), [0, 2, 3]);
        // 0 and 3 ran out of batch; 1 became ready; 2 is ready again.
        r.again(0);
        r.again(3);
        set_bit(r.fresh(), 1);
        set_bit(r.fresh(), 2);
        assert_eq!(round(&mut r), [1, 0, 2, 3]);
        // Nothing more: the next round is empty, and the loop may sleep.
        assert!(!r.has_again());
        assert_eq!(round(&mut r), Vec::<usize>::new());
    }

    #[test]
    fn bits_past_the_first_word_keep_their_numbers() {
        let mut r = rotation(200);
        for b in [199, 0, 63, 62, 126] {
            set_bit(r.fresh(), b);
        }
        assert_eq!(round(&mut r), [0, 62, 63, 126, 199]);
        r.again(126);
        set_bit(r.fresh(), 5);
        assert_eq!(round(&mut r), [5, 126]);
    }

    /// `arrived` during a round is as a ring before the next: in the next plan, ahead of the
    /// channels left with work, in one word and past it.
    #[test]
    fn work_that_arrives_during_a_round_is_fresh_in_the_next() {
        for (bits, late) in [(4, 3), (200, 150)] {
            let mut r = rotation(bits);
            set_bit(r.fresh(), 0);
            set_bit(r.fresh(), 1);
            assert_eq!(round(&mut r), [0, 1]);
            r.again(0);
            r.arrived(late);
            r.arrived(1);
            assert_eq!(round(&mut r), [late, 0, 1], "{bits} bits");
        }
    }

    /// The bound the event loop's docs state, checked against a model of the loop: a channel
    /// that becomes ready at any moment (during any visit, or between rounds) and stays ready
    /// is visited before any other channel has been visited twice, counting the visit under way
    /// when it became ready.
    fn check_bound(bits: usize, script: Vec<(u64, u64, usize)>) -> Result<(), TestCaseError> {
        let mut r = rotation(bits);
        // Channels ready now (in the doorbell or left over) and visits since each became
        // ready: `waiting[x]` counts other channels' visits while `x` waits.
        let mut waiting: Vec<Option<Vec<u32>>> = vec![None; bits];
        let mut doorbell = vec![false; bits];
        let mask = |m: u64| (0..bits).filter(move |b| m >> (b % 64) & 1 == 1);
        for (arrive, left_work, when) in script {
            // Some channels become ready now, before the round starts.
            for b in mask(arrive) {
                doorbell[b] = true;
                waiting[b].get_or_insert_with(|| vec![0; bits]);
            }
            for (b, rung) in doorbell.iter_mut().enumerate() {
                if std::mem::take(rung) {
                    set_bit(r.fresh(), b);
                }
            }
            let visits = round(&mut r);
            for (k, &v) in visits.iter().enumerate() {
                // `v` is visited: whoever waits counts it; `v` itself stops waiting.
                waiting[v] = None;
                for (x, w) in waiting.iter_mut().enumerate() {
                    if let Some(w) = w {
                        w[v] += 1;
                        prop_assert!(w[v] <= 1, "channel {x} waited for two visits of {v}");
                    }
                }
                // During the `when`-th visit, more channels become ready (the one being
                // visited's visit counts as one for them).
                let mut rang_itself = false;
                if k == when % visits.len().max(1) {
                    for b in mask(arrive.rotate_left(7)) {
                        if b == v {
                            // Rung again during its own visit: ready once the visit ends.
                            doorbell[b] = true;
                            rang_itself = true;
                        } else if !doorbell[b] {
                            doorbell[b] = true;
                            waiting[b].get_or_insert_with(|| {
                                let mut w = vec![0; bits];
                                w[v] = 1;
                                w
                            });
                        }
                    }
                }
                if left_work >> (v % 64) & 1 == 1 {
                    r.again(v);
                    waiting[v] = Some(vec![0; bits]);
                }
                if rang_itself {
                    waiting[v].get_or_insert_with(|| vec![0; bits]);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn a_ready_channel_waits_for_at_most_one_visit_of_each_other(
            bits in 1usize..12,
            script in proptest::collection::vec((any::<u64>(), any::<u64>(), 0usize..12), 1..40),
        ) {
            check_bound(bits, script)?;
        }
    }
}
