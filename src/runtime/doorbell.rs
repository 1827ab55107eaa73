//! How a process thread learns which of its channels has work without scanning them all.
//!
//! Each process owns a ready bitmap: one bit per incoming channel plus one for its control
//! channel. A sender pushes onto the channel, then sets the channel's bit with one `fetch_or`;
//! if the word it changed says the owner sleeps, it unparks the owner. The owner takes every set
//! bit with one `swap(0)` per word and drains those channels. So a delivery costs O(1) whatever
//! the number of incoming channels, where `crossbeam_channel::Select` costs O(incoming) per
//! delivery (BENCHMARKS.md compares the two).
//!
//! Lost-wakeup argument (each point is a bug if done the other way):
//! - The owner clears a bit *before* draining its channel, with a read-modify-write. A push that
//!   lands after the drain's last `try_recv` therefore finds the bit clear and sets it again.
//! - To sleep, the owner moves every word from 0 to `SLEEPING` with a compare-exchange; a failing
//!   one means a bit arrived, and it does not sleep. A sender whose `fetch_or` lands after that
//!   sees `SLEEPING` and unparks; one that lands before makes the compare-exchange fail.
//! - `park`/`unpark` keep a token, so an unpark that comes before the `park` is not lost.
//! - The owner registers its `Thread` before it can ever set `SLEEPING`, so a sender that sees
//!   `SLEEPING` always finds the thread to unpark.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::Instant;

/// Bit 63 of every word: the owner is (about to be) parked.
const SLEEPING: u64 = 1 << 63;
/// Channel bits per word.
const BITS: usize = 63;
const WORDS_PER_LINE: usize = 8;

/// Eight words in one cache line, so a process's bitmap does not share lines with others.
#[repr(align(64))]
#[derive(Default)]
struct Line([AtomicU64; WORDS_PER_LINE]);

/// One process's ready bitmap and the thread to wake.
pub(crate) struct Doorbell {
    lines: Box<[Line]>,
    words: usize,
    thread: OnceLock<Thread>,
    /// The owner has stopped (or panicked): senders get their message back. Beside `lines`, so
    /// checking it on every send costs no extra cache miss.
    closed: AtomicBool,
}

impl Doorbell {
    /// A doorbell with `bits` bits (`0..bits`).
    pub(crate) fn new(bits: usize) -> Self {
        let words = bits.div_ceil(BITS).max(1);
        Doorbell {
            lines: (0..words.div_ceil(WORDS_PER_LINE))
                .map(|_| Line::default())
                .collect(),
            words,
            thread: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// The owner takes no more messages.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the owner takes no more messages.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Words needed for the owner's local copies of the bitmap.
    pub(crate) fn words(&self) -> usize {
        self.words
    }

    #[inline]
    fn word(&self, w: usize) -> &AtomicU64 {
        &self.lines[w / WORDS_PER_LINE].0[w % WORDS_PER_LINE]
    }

    /// Called by the owning thread before anything can make it sleep.
    pub(crate) fn register_current_thread(&self) {
        let _ = self.thread.set(thread::current());
    }

    /// Marks `bit` ready and wakes the owner if it sleeps. Call after the push.
    #[inline]
    pub(crate) fn ring(&self, bit: usize) {
        let prev = self
            .word(bit / BITS)
            .fetch_or(1 << (bit % BITS), Ordering::AcqRel);
        if prev & SLEEPING != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    /// Takes every ready bit, OR-ing them into `into` (one word per entry); clears `SLEEPING`
    /// too. Returns whether any bit was taken.
    #[inline]
    pub(crate) fn take(&self, into: &mut [u64]) -> bool {
        let mut any = 0;
        for (w, slot) in into.iter_mut().enumerate() {
            let word = self.word(w);
            if word.load(Ordering::Relaxed) != 0 {
                let bits = word.swap(0, Ordering::AcqRel) & !SLEEPING;
                *slot |= bits;
                any |= bits;
            }
        }
        any != 0
    }

    fn any_ready(&self, ordering: Ordering) -> bool {
        (0..self.words).any(|w| self.word(w).load(ordering) & !SLEEPING != 0)
    }

    /// Waits until some bit is set, or until `deadline`. May return early (spuriously).
    ///
    /// Spins, then yields, then parks, as `backoff` says (see [`Backoff`]).
    #[cold]
    pub(crate) fn wait(&self, deadline: Option<Instant>, backoff: Backoff) {
        for step in 0..=backoff.spins + backoff.yields {
            if self.any_ready(Ordering::Relaxed) {
                return;
            }
            if step <= backoff.spins {
                for _ in 0..1u32 << step {
                    std::hint::spin_loop();
                }
            } else {
                thread::yield_now();
            }
        }
        for w in 0..self.words {
            if self
                .word(w)
                .compare_exchange(0, SLEEPING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                // Work arrived: undo what was set and go on.
                for u in 0..w {
                    self.word(u).fetch_and(!SLEEPING, Ordering::AcqRel);
                }
                return;
            }
        }
        loop {
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    thread::park_timeout(deadline - now);
                }
            }
            if self.any_ready(Ordering::Acquire) {
                break;
            }
        }
        // The next `take` clears SLEEPING where a bit arrived; clear it everywhere so senders
        // stop unparking a thread that is awake.
        for w in 0..self.words {
            self.word(w).fetch_and(!SLEEPING, Ordering::AcqRel);
        }
    }
}

/// How long an idle process looks for work before it parks: spin rounds `0..=spins` (round `k`
/// spins `2^k` times), then `yields` calls to `thread::yield_now`.
///
/// Why two schedules (the measurements are in BENCHMARKS.md, "Why the runtime beats the bare
/// programs"): with no more processes than cores, crossbeam's schedule (6 spin rounds, 4
/// yields) is best, since a ping-pong between two processes lives on the spinning. With more
/// processes than cores, idle threads that keep spinning and yielding take the cores from the
/// ones that have work, so (3, 3) is used; no spinning at all (park at once) is worse still,
/// since every message then costs the sender a futex wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    spins: u32,
    yields: u32,
}

impl Backoff {
    /// The schedule for `processes` threads on this machine.
    pub(crate) fn for_processes(processes: usize) -> Self {
        let cores = thread::available_parallelism().map_or(1, |c| c.get());
        if processes <= cores {
            Backoff {
                spins: 6,
                yields: 4,
            }
        } else {
            Backoff {
                spins: 3,
                yields: 3,
            }
        }
    }
}

/// Iterates the set bits of a local bitmap copy, lowest first, clearing each as it goes.
#[inline]
pub(crate) fn pop_bit(bits: &mut [u64]) -> Option<usize> {
    for (w, word) in bits.iter_mut().enumerate() {
        if *word != 0 {
            let bit = word.trailing_zeros() as usize;
            *word &= *word - 1;
            return Some(w * BITS + bit);
        }
    }
    None
}

/// Sets `bit` in a local bitmap copy.
#[inline]
pub(crate) fn set_bit(bits: &mut [u64], bit: usize) {
    bits[bit / BITS] |= 1 << (bit % BITS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn bits_round_trip_across_words() {
        let bell = Doorbell::new(200);
        assert_eq!(bell.words(), 4);
        for bit in [0, 62, 63, 126, 199] {
            bell.ring(bit);
        }
        let mut local = vec![0; bell.words()];
        assert!(bell.take(&mut local));
        let mut got = Vec::new();
        while let Some(b) = pop_bit(&mut local) {
            got.push(b);
        }
        assert_eq!(got, [0, 62, 63, 126, 199]);
        assert!(!bell.take(&mut local));
    }

    #[test]
    fn ring_wakes_a_parked_owner() {
        let bell = Arc::new(Doorbell::new(3));
        let owner = {
            let bell = bell.clone();
            thread::spawn(move || {
                bell.register_current_thread();
                let mut local = vec![0; bell.words()];
                let mut seen = 0;
                while seen != 0b111 {
                    if !bell.take(&mut local) {
                        bell.wait(None, Backoff::for_processes(2));
                    }
                    while let Some(b) = pop_bit(&mut local) {
                        seen |= 1 << b;
                    }
                }
            })
        };
        for bit in 0..3 {
            thread::sleep(Duration::from_millis(20));
            bell.ring(bit);
        }
        owner.join().unwrap();
    }

    #[test]
    fn wait_returns_at_the_deadline() {
        let bell = Doorbell::new(1);
        bell.register_current_thread();
        let start = Instant::now();
        bell.wait(
            Some(start + Duration::from_millis(30)),
            Backoff::for_processes(1),
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
