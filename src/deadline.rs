//! Timeouts turned into deadlines without overflow.
//!
//! Every timeout the crate takes is the caller's `Duration`, and `Duration::MAX` (or anything
//! past what an `Instant` can hold) is a fair way to say "wait as long as it takes". Adding
//! such a timeout to `Instant::now()` panics ("overflow when adding duration to instant"), and
//! in a `Drop` that aborts the process. So every deadline is made here, one way: a timeout is
//! capped at [`FOREVER`], a century, which no run outlives, and only then added.

use std::time::{Duration, Instant};

/// The longest wait a deadline stands for: a century. Longer timeouts wait this long, which is
/// the same as waiting for ever; an `Instant` can hold it on every platform std supports.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The instant `timeout` from now, or the furthest an `Instant` can hold towards it (never less
/// than a century from now on the platforms std supports). Never panics.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    later(Instant::now(), timeout)
}

/// `at + wait`, capped at [`FOREVER`] and at what an `Instant` can hold.
pub(crate) fn later(at: Instant, wait: Duration) -> Instant {
    let mut wait = wait.min(FOREVER);
    loop {
        if let Some(deadline) = at.checked_add(wait) {
            return deadline;
        }
        // Only on a platform whose `Instant` cannot hold a century: the furthest it can. Halving
        // ends, since `at + 0` always fits.
        wait /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_is_a_far_deadline_not_a_panic() {
        let now = Instant::now();
        let far = deadline_after(Duration::MAX);
        assert!(far >= now + FOREVER);
        assert_eq!(later(now, Duration::MAX), now + FOREVER);
    }

    #[test]
    fn an_ordinary_timeout_is_kept() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }
}
