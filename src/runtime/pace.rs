//! How long one visit of the event loop to one channel may last: at most [`BATCH`] envelopes,
//! and no longer than a time budget once the callbacks turn out to be slow, with no clock read
//! on the fast path.
//!
//! A visit takes envelopes from its channel one by one. On the fast path it reads no clock for
//! its first [`UNTIMED`] envelopes (under load nearly every visit ends before that); from the
//! [`UNTIMED`]-th on it reads the clock after each, and ends once [`VISIT_BUDGET`] has passed
//! since its first read. A visit that ran over the budget tells the process its callbacks are
//! slow: from then on its visits read the clock from their start and end once the budget has
//! passed since then, so a visit of callbacks slower than the budget is one callback, not
//! [`UNTIMED`] + 1. The process goes back to the fast path once [`UNTIMED`] envelopes in a row
//! took less than the budget together. A marker visit between two slow ones says nothing about
//! the callbacks (it runs none), and does not end the slow mode by itself: one envelope is not
//! a streak. Nor does running out of work: a slow process that waits for its next message is
//! as slow when it comes (and a process that idles between messages pays two clock reads a
//! visit, which an idle process can afford).
//!
//! Pure: the caller reads the clock and passes the times in, so the rules are tested with
//! made-up times.

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

/// What one process has learnt of its callbacks' pace.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// A visit ran over its budget, and no streak of fast envelopes since.
    slow: bool,
    /// While slow: envelopes in a row, over visits, since the last visit that ran over.
    streak: usize,
    /// While slow: when that streak's first visit began.
    streak_began: Option<Instant>,
}

/// One visit to one channel.
#[derive(Debug)]
pub(crate) struct Visit {
    /// The envelope from which the visit reads the clock after each (1: all of them).
    untimed: usize,
    /// Its first clock read: when the budget started.
    began: Option<Instant>,
    /// Its latest clock read.
    clock: Option<Instant>,
    /// It ended because its budget ran out.
    over: bool,
    /// It ended with work possibly left (its batch or its budget ran out): visit again.
    pub(crate) more: bool,
}

impl Pace {
    /// Starts a visit. `now` is called (the clock read) only when the callbacks are slow.
    #[inline]
    pub(crate) fn visit(&self, now: impl FnOnce() -> Instant) -> Visit {
        if self.slow {
            let now = now();
            Visit {
                untimed: 1,
                began: Some(now),
                clock: Some(now),
                over: false,
                more: false,
            }
        } else {
            Visit {
                untimed: UNTIMED,
                began: None,
                clock: None,
                over: false,
                more: false,
            }
        }
    }

    /// The visit has ended, having taken `taken` envelopes.
    #[inline]
    pub(crate) fn done(&mut self, visit: &Visit, taken: usize) {
        if visit.over {
            self.slow = true;
            self.streak = 0;
            self.streak_began = None;
        } else if self.slow && taken > 0 {
            self.streak += taken;
            let began = *self
                .streak_began
                .get_or_insert(visit.began.expect("read at the start"));
            if self.streak >= UNTIMED {
                let took = visit.clock.expect("read after each").duration_since(began);
                if took < VISIT_BUDGET {
                    // Fast again: back to the path that reads no clock.
                    *self = Pace::default();
                } else {
                    self.streak = 0;
                    self.streak_began = None;
                }
            }
        }
    }

    /// Whether visits read the clock from their start.
    #[cfg(test)]
    fn is_slow(&self) -> bool {
        self.slow
    }
}

impl Visit {
    /// The visit has just taken its `taken`-th envelope (from 1); `now` reads the clock. Whether
    /// it must end here because its budget is spent. Reads no clock before the
    /// [`UNTIMED`]-th envelope on the fast path.
    #[inline]
    pub(crate) fn spent(&mut self, taken: usize, now: impl FnOnce() -> Instant) -> bool {
        if taken < self.untimed {
            return false;
        }
        let now = now();
        self.clock = Some(now);
        let began = *self.began.get_or_insert(now);
        self.over = now.duration_since(began) >= VISIT_BUDGET;
        if self.over {
            self.more = true;
        }
        self.over
    }

    /// The latest clock read of the visit, if it read the clock (the event loop saves one for
    /// its ticks).
    #[inline]
    pub(crate) fn clock(&self) -> Option<Instant> {
        self.clock
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
        let mut reads = 0;
        let mut v = pace.visit(|| {
            reads += 1;
            at(*t)
        });
        let mut taken = 0;
        for &cost in costs.iter().take(BATCH) {
            *t += cost;
            taken += 1;
            if v.spent(taken, || at(*t)) {
                break;
            }
        }
        if taken == BATCH {
            v.more = true;
        }
        pace.done(&v, taken);
        taken
    }

    #[test]
    fn fast_callbacks_read_no_clock_before_the_untimed_th() {
        let pace = Pace::default();
        let mut v = pace.visit(|| panic!("no clock at the start on the fast path"));
        for taken in 1..UNTIMED {
            assert!(!v.spent(taken, || panic!("no clock before the {UNTIMED}th envelope")));
        }
        assert!(v.clock().is_none());
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
