//! How long one visit of the event loop to one channel may last: at most [`BATCH`] envelopes,
//! and no longer than a time budget once the callbacks turn out to be slow, with no clock read
//! on the fast path.
//!
//! A visit takes envelopes from its channel one by one. On the fast path it reads no clock for
//! its first [`UNTIMED`] envelopes (under load nearly every visit ends before that); from the
//! [`UNTIMED`]-th on it reads the clock after each that may have taken long (any but a marker
//! that only closes a channel), and ends once [`VISIT_BUDGET`] has passed since its first
//! read. A visit that ran over the budget tells the process its callbacks are
//! slow: from then on its visits read the clock from their start and end once the budget has
//! passed since then, so a visit of callbacks slower than the budget is one callback, not
//! [`UNTIMED`] + 1. The process goes back to the fast path once [`UNTIMED`] envelopes in a row
//! took less than the budget together. A marker visit between two slow ones says nothing about
//! the callbacks (it runs none), and does not end the slow mode by itself: one envelope is not
//! a streak. Nor does running out of work: a slow process that waits for its next message is
//! as slow when it comes (and a process that idles between messages pays two clock reads a
//! visit, which an idle process can afford).
//!
//! Pure: the caller passes the clock in, so the rules are tested with made-up times.

use std::time::{Duration, Instant};

/// Envelopes taken from one channel in one visit, at most, before the loop visits the others:
/// with the time budget, bounds how long one busy channel holds the rest (and the control
/// channel) back.
pub(crate) const BATCH: usize = 32;

/// Envelopes a visit takes before it looks at the clock, on the fast path.
///
/// Why 8: the fast path must read no clock. Under load a visit is short: the closed-loop bank
/// workload (T = 4 in flight per process) takes on average 2.8 envelopes a visit at N = 4, 1.3
/// at N = 16 and 1.1 at N = 64; 0.75% of its envelopes come 8th or later in their visit at
/// N = 4 (none at 16 and 64), where 26% come 4th or later (a histogram of visit sizes over
/// 2,000,000 deliveries; BENCHMARKS.md, "Fair service of channels"). So at 8 a clock read is
/// rare enough not to show, and the first visit of slow callbacks still ends after 9 of them.
pub(crate) const UNTIMED: usize = 8;

/// How long the callbacks of one visit may take, counted from its first clock read, before the
/// visit ends and the loop moves on to the next ready channel.
///
/// 100 µs: far above what 32 fast callbacks take (about 10 µs in the bank), so it never cuts a
/// batch of fast work short, and far below what makes a marker wait visibly. BENCHMARKS.md
/// ("Fair service of channels") has the measurements behind the choice.
pub(crate) const VISIT_BUDGET: Duration = Duration::from_micros(100);

/// What one process has learnt of its callbacks' pace, and the visit under way.
///
/// The visit's own state lives here rather than in a value per visit: on the fast path a visit
/// costs a store to start, a compare per envelope and a test to end.
#[derive(Debug)]
pub(crate) struct Pace {
    /// A visit ran over its budget, and no streak of fast envelopes since.
    slow: bool,
    /// While slow: envelopes in a row, over visits, since the last visit that ran over.
    streak: usize,
    /// While slow: when that streak's first visit began.
    streak_began: Option<Instant>,
    /// The visit under way reads the clock after its `untimed`-th envelope and each later one.
    untimed: usize,
    /// Its first clock read: when its budget started.
    began: Option<Instant>,
    /// It ran over its budget.
    over: bool,
    /// The latest clock read of any visit, until the loop takes it (for its ticks).
    clock: Option<Instant>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            slow: false,
            streak: 0,
            streak_began: None,
            untimed: UNTIMED,
            began: None,
            over: false,
            clock: None,
        }
    }
}

impl Pace {
    /// Starts a visit. `now` is called (the clock read) only when the callbacks are slow.
    #[inline]
    pub(crate) fn begin(&mut self, now: impl FnOnce() -> Instant) {
        if self.slow {
            let now = now();
            self.untimed = 1;
            self.began = Some(now);
            self.clock = Some(now);
        }
    }

    /// The number of envelopes from which the visit under way must ask
    /// [`must_end`](Pace::must_end) after each: the event loop compares its count with this,
    /// one compare an envelope, and asks nothing more before (so on the fast path its loop is
    /// the loop it would be with no budget at all).
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.untimed
    }

    /// The visit has taken its `taken`-th envelope, at least [`limit`](Pace::limit), which may
    /// have taken long if `weighty` (`Host::on_envelope`); `now` reads the clock. Whether it must
    /// end here: its batch is full, or its budget is spent. Out of line: the event loop's one
    /// call site of crossbeam's `try_recv` and of the host's delivery must stay small enough to
    /// be inlined.
    ///
    /// A marker that only closes a channel reads no clock: it runs no application code and
    /// hands nothing in, a few hundred nanoseconds of the rules, and the budget is there for
    /// work that may be slow (callbacks; a part handed in, which may assemble a global
    /// snapshot). Why it matters: while a snapshot runs, markers come in bunches
    /// (a process of 3 nodes x 16 gets 47 at once, 32 of them through its inbox from other
    /// nodes), so visits past [`UNTIMED`] envelopes are common, and each such envelope read the
    /// clock: 100 snapshots took the event loops from 18,266 clock reads to 131,351
    /// (callgrind, BENCHMARKS.md, nineteenth round).
    #[inline(never)]
    pub(crate) fn must_end(
        &mut self,
        taken: usize,
        weighty: bool,
        now: impl FnOnce() -> Instant,
    ) -> bool {
        taken >= BATCH || (weighty && self.check(now()))
    }

    /// As the event loop asks after each envelope (`deliver_from`): whether the visit must end
    /// after its `taken`-th envelope (from 1), which may have taken long if `weighty`. Reads no
    /// clock before the [`UNTIMED`]-th envelope on the fast path.
    #[cfg(test)]
    fn ends_after(&mut self, taken: usize, weighty: bool, now: impl FnOnce() -> Instant) -> bool {
        taken >= self.limit() && self.must_end(taken, weighty, now)
    }

    /// Past the untimed envelopes: the clock says `now`.
    #[inline(never)]
    fn check(&mut self, now: Instant) -> bool {
        self.clock = Some(now);
        let began = *self.began.get_or_insert(now);
        self.over = now.duration_since(began) >= VISIT_BUDGET;
        self.over
    }

    /// The visit has ended, having taken `taken` envelopes. Whether it ran over its budget
    /// (then its channel may hold more: visit it again).
    #[inline]
    pub(crate) fn end(&mut self, taken: usize) -> bool {
        if self.began.is_none() && !self.slow {
            return false;
        }
        self.end_timed(taken)
    }

    /// The end of a visit that read the clock: learn from it, and reset for the next.
    #[inline(never)]
    fn end_timed(&mut self, taken: usize) -> bool {
        let over = self.over;
        if over {
            self.slow = true;
            self.streak = 0;
            self.streak_began = None;
        } else if self.slow && taken > 0 {
            self.streak += taken;
            let began = *self.streak_began.get_or_insert(
                self.began
                    .expect("a slow visit reads the clock at its start"),
            );
            if self.streak >= UNTIMED {
                let took = self
                    .clock
                    .expect("a slow visit reads the clock after each envelope")
                    .duration_since(began);
                if took < VISIT_BUDGET {
                    // Fast again: back to the path that reads no clock.
                    self.slow = false;
                }
                self.streak = 0;
                self.streak_began = None;
            }
        }
        self.untimed = if self.slow { 1 } else { UNTIMED };
        self.began = None;
        self.over = false;
        over
    }

    /// Whether the visit under way has read the clock: its callbacks are slow, or it has
    /// taken [`UNTIMED`] envelopes (which may have been slow).
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.slow || self.began.is_some()
    }

    /// The latest clock read of a visit since the last call, if any (the event loop's ticks
    /// use it instead of reading the clock again).
    #[inline]
    pub(crate) fn take_clock(&mut self) -> Option<Instant> {
        self.clock.take()
    }

    /// Whether visits read the clock from their start.
    #[cfg(test)]
    fn is_slow(&self) -> bool {
        self.slow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up clock: `at(us)` is `us` microseconds after an arbitrary start.
    fn clock() -> impl Fn(u64) -> Instant {
        let zero = Instant::now();
        move |us| zero + Duration::from_micros(us)
    }

    /// Runs one visit of envelopes taking `costs` microseconds each, starting at `*t`, until
    /// it ends; returns how many it took.
    fn visit(pace: &mut Pace, at: &impl Fn(u64) -> Instant, t: &mut u64, costs: &[u64]) -> usize {
        pace.begin(|| at(*t));
        let mut taken = 0;
        for &cost in costs.iter().take(BATCH) {
            *t += cost;
            taken += 1;
            if pace.ends_after(taken, true, || at(*t)) {
                break;
            }
        }
        pace.end(taken);
        taken
    }

    #[test]
    fn fast_callbacks_read_no_clock_before_the_untimed_th() {
        let mut pace = Pace::default();
        pace.begin(|| panic!("no clock at the start on the fast path"));
        for taken in 1..UNTIMED {
            assert!(!pace.ends_after(taken, true, || {
                panic!("no clock before the {UNTIMED}th envelope")
            }));
        }
        assert!(!pace.end(UNTIMED - 1));
        assert!(pace.take_clock().is_none());
    }

    #[test]
    fn markers_that_only_close_a_channel_read_no_clock_and_end_the_visit_at_its_batch() {
        let (at, mut pace) = (clock(), Pace::default());
        pace.begin(|| panic!("no clock at the start on the fast path"));
        for taken in 1..BATCH {
            assert!(!pace.ends_after(taken, false, || panic!("no clock for a marker")));
        }
        assert!(pace.ends_after(BATCH, false, || panic!("no clock for a marker")));
        assert!(!pace.end(BATCH), "not over its budget: it read no clock");
        // Past the untimed envelopes, a callback reads the clock, and a slow one ends the
        // visit; markers after the first read (the budget started) read none.
        pace.begin(|| panic!("no clock at the start on the fast path"));
        for taken in 1..=UNTIMED + 2 {
            assert!(!pace.ends_after(taken, false, || panic!("no clock for a marker")));
        }
        assert!(!pace.ends_after(UNTIMED + 3, true, || at(0)));
        assert!(!pace.ends_after(UNTIMED + 4, false, || panic!("no clock for a marker")));
        assert!(pace.ends_after(UNTIMED + 5, true, || at(20_000)));
        assert!(pace.end(UNTIMED + 5));
        assert!(pace.is_slow());
    }

    #[test]
    fn a_batch_of_fast_callbacks_is_never_cut_by_the_budget() {
        let (at, mut t, mut pace) = (clock(), 0, Pace::default());
        assert_eq!(visit(&mut pace, &at, &mut t, &[1; 40]), BATCH);
        assert!(!pace.is_slow());
    }

    #[test]
    fn slow_callbacks_end_the_first_visit_after_untimed_plus_one_then_after_one() {
        let (at, mut t, mut pace) = (clock(), 0, Pace::default());
        let slow = [20_000; 40];
        assert_eq!(visit(&mut pace, &at, &mut t, &slow), UNTIMED + 1);
        assert!(pace.is_slow());
        for _ in 0..5 {
            assert_eq!(visit(&mut pace, &at, &mut t, &slow), 1);
        }
        // A marker alone on another channel (fast, one envelope) does not end the slow mode.
        assert_eq!(visit(&mut pace, &at, &mut t, &[0]), 1);
        assert!(pace.is_slow());
        assert_eq!(visit(&mut pace, &at, &mut t, &slow), 1);
    }

    #[test]
    fn callbacks_about_the_budget_take_two_per_visit() {
        let (at, mut t, mut pace) = (clock(), 0, Pace::default());
        let medium = [60; 40];
        visit(&mut pace, &at, &mut t, &medium);
        assert!(pace.is_slow());
        assert_eq!(visit(&mut pace, &at, &mut t, &medium), 2);
    }

    #[test]
    fn fast_again_after_a_streak_of_fast_envelopes() {
        let (at, mut t, mut pace) = (clock(), 0, Pace::default());
        visit(&mut pace, &at, &mut t, &[20_000; 40]);
        assert!(pace.is_slow());
        // Short visits of fast envelopes: slow until eight in a row took under the budget.
        for k in 1..=4 {
            visit(&mut pace, &at, &mut t, &[1, 1]);
            assert_eq!(pace.is_slow(), k < 4, "after {} fast envelopes", 2 * k);
        }
        visit(&mut pace, &at, &mut t, &[20_000; 40]);
        assert!(pace.is_slow());
    }

    #[test]
    fn a_streak_spread_over_more_than_the_budget_does_not_count() {
        let (at, mut t, mut pace) = (clock(), 0, Pace::default());
        visit(&mut pace, &at, &mut t, &[20_000; 40]);
        // Eight envelopes of 30 µs in visits of one: fast each, but 240 µs together.
        for _ in 0..8 {
            visit(&mut pace, &at, &mut t, &[30]);
        }
        assert!(pace.is_slow());
    }
}
