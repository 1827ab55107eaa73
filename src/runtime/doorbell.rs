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

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Instant;

use sync::{AtomicBool, AtomicU64, OnceLock, Thread};

/// What the protocol synchronises with: std's primitives, or loom's when the crate is built with
/// `--cfg loom` (`.ci/loom.sh`), so that loom sees, and permutes, every atomic access, park and
/// unpark. Without `cfg(loom)` these are plain re-exports of std: the code compiles exactly as
/// if it named std directly. With it, a doorbell works only inside `loom::model`, so such a
/// build runs the `loom_tests` below and nothing else.
mod sync {
    #[cfg(not(loom))]
    pub(super) use std::{
        hint::spin_loop,
        sync::atomic::{AtomicBool, AtomicU64},
        sync::OnceLock,
        thread::{current, park, park_timeout, yield_now, Thread},
    };

    #[cfg(loom)]
    pub(super) use loom::{
        hint::spin_loop,
        sync::atomic::{AtomicBool, AtomicU64},
        thread::{current, park, yield_now, Thread},
    };

    /// Loom has no timed park, and a deadline makes the model depend on the clock: only
    /// `wait(None, ..)` is modelled.
    #[cfg(loom)]
    pub(super) fn park_timeout(_: std::time::Duration) {
        unreachable!("the loom models only wait without a deadline")
    }

    /// `std::sync::OnceLock` as loom sees it (loom has none, and the crate forbids `unsafe`, so
    /// no loom cell): the value sits in a std `OnceLock`, but whether a thread may see it is
    /// decided by a loom atomic with the same Release/Acquire as std's. So loom checks the
    /// claim that a sender that sees `SLEEPING` also sees the registered thread: if it did not,
    /// `get` would say `None`, the unpark would be skipped, and the model would deadlock.
    #[cfg(loom)]
    pub(super) struct OnceLock<T> {
        ready: AtomicBool,
        value: std::sync::OnceLock<T>,
    }

    #[cfg(loom)]
    impl<T> OnceLock<T> {
        /// An empty cell.
        pub(super) fn new() -> Self {
            OnceLock {
                ready: AtomicBool::new(false),
                value: std::sync::OnceLock::new(),
            }
        }

        /// Sets the value once. Only the owner thread calls it, so two `set`s never race.
        pub(super) fn set(&self, value: T) -> Result<(), T> {
            self.value.set(value)?;
            self.ready.store(true, std::sync::atomic::Ordering::Release);
            Ok(())
        }

        /// The value, if its `set` is visible to this thread.
        pub(super) fn get(&self) -> Option<&T> {
            if self.ready.load(std::sync::atomic::Ordering::Acquire) {
                self.value.get()
            } else {
                None
            }
        }
    }
}

/// Bit 63 of every word: the owner is (about to be) parked.
const SLEEPING: u64 = 1 << 63;
/// Channel bits per word.
pub(crate) const BITS: usize = 63;
const WORDS_PER_LINE: usize = 8;

/// Eight words in one cache line, so a process's bitmap does not share lines with others.
#[repr(align(64))]
#[derive(Default)]
struct Line([AtomicU64; WORDS_PER_LINE]);

/// Where one channel's bit is in its receiver's doorbell: worked out once, when the runtime is
/// wired, so a ring is one `fetch_or` with no division (a bit number is split by 63, not a
/// power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BitPlace {
    word: u32,
    shift: u8,
}

impl BitPlace {
    /// The place of channel bit `bit`.
    pub(crate) fn of(bit: usize) -> Self {
        BitPlace {
            word: u32::try_from(bit / BITS).expect("fewer than 2^32 words of channels"),
            shift: (bit % BITS) as u8,
        }
    }
}

/// One process's ready bitmap and the thread to wake.
///
/// Laid out for the sender: the first eight words (503 channels, every process in all but the
/// largest systems) sit inline at the start of the struct, on their own line, so a ring is one
/// access at a fixed offset with no pointer to follow; `closed`, read on every send, is on the
/// next line, which only changes when the owner fails, so it stays shared in every cache. (The
/// first layout, a boxed slice of lines behind the struct, cost each send a dependent load.)
/// `repr(C)` keeps the fields in this order, so the layout described is the one compiled.
#[repr(C, align(64))]
pub(crate) struct Doorbell {
    first: Line,
    /// Words from the ninth on, for processes with more than 503 incoming channels.
    more: Box<[Line]>,
    words: usize,
    thread: OnceLock<Thread>,
    /// The owner has stopped (or panicked): senders get their message back.
    closed: AtomicBool,
}

impl Doorbell {
    /// A doorbell with `bits` bits (`0..bits`).
    pub(crate) fn new(bits: usize) -> Self {
        let words = bits.div_ceil(BITS).max(1);
        Doorbell {
            first: Line::default(),
            more: (0..words
                .saturating_sub(WORDS_PER_LINE)
                .div_ceil(WORDS_PER_LINE))
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
        match w.checked_sub(WORDS_PER_LINE) {
            None => &self.first.0[w],
            Some(w) => &self.more[w / WORDS_PER_LINE].0[w % WORDS_PER_LINE],
        }
    }

    /// Called by the owning thread before anything can make it sleep.
    pub(crate) fn register_current_thread(&self) {
        let _ = self.thread.set(sync::current());
    }

    /// Marks `bit` ready and wakes the owner if it sleeps. Call after the push.
    #[inline]
    pub(crate) fn ring(&self, bit: usize) {
        self.ring_at(BitPlace::of(bit));
    }

    /// [`ring`](Doorbell::ring) with the bit's place worked out beforehand.
    #[inline(always)]
    pub(crate) fn ring_at(&self, place: BitPlace) {
        let prev = self
            .word(place.word as usize)
            .fetch_or(1 << place.shift, Ordering::AcqRel);
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

    /// Inline, with the first word apart: an idle thread asks this before each of its yields
    /// (`wait`), and a process with up to 61 incoming channels has a doorbell of one word. As
    /// a loop over the words it cost a process thread's wait about 40 instructions a yield
    /// (callgrind, 3 nodes x 16).
    #[inline(always)]
    fn any_ready(&self, ordering: Ordering) -> bool {
        self.first.0[0].load(ordering) & !SLEEPING != 0
            || (1..self.words).any(|w| self.word(w).load(ordering) & !SLEEPING != 0)
    }

    /// Waits until some bit is set, or until `deadline`. May return early (spuriously).
    ///
    /// Spins, then yields, then parks, as `backoff` says (see [`Backoff`]).
    #[cold]
    pub(crate) fn wait(&self, deadline: Option<Instant>, backoff: Backoff) {
        for step in 0..backoff.spin_rounds {
            if self.any_ready(Ordering::Relaxed) {
                return;
            }
            for _ in 0..1u32 << step {
                sync::spin_loop();
            }
        }
        for _ in 0..backoff.yields {
            if self.any_ready(Ordering::Relaxed) {
                return;
            }
            sync::yield_now();
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
                None => sync::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    sync::park_timeout(deadline - now);
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

/// How many times an idle process thread of the in-process runtime yields before it parks
/// when the threads outnumber the cores (see [`Backoff`]).
const RUNTIME_YIELDS: u32 = 3;

/// How many times an idle thread of a cluster node yields before it parks when the node's
/// threads (its processes, a writer and a reader per peer) outnumber the cores; the in-process
/// runtime yields [`RUNTIME_YIELDS`] times.
///
/// Why more on a node: there, a process that parks is mostly woken by a link's reader, for
/// what one decrypted message brought, and the next message is often moments away; each park
/// costs the reader a futex wake and the process a switch back. Measured on a 2-core machine
/// (BENCHMARKS.md, ninth cluster round), medians of alternating runs of the same build: the
/// cluster's CPU per delivery fell by 7-26% with 32 yields instead of 3 (2 nodes of 4
/// processes: 2,020 to 1,565 ns; 3 of 4: 2,505 to 1,950; 2 of 16: 970 to 720; 3 of 16: 1,120 to
/// 1,040), and the runs spread far less; 24, 48, 96 and 192 yields measured alike. In process the
/// same change measured nothing beyond the noise (`ratio`, `bank`), so the runtime keeps its 3.
/// The cost is the idle case: a thread with nothing to do and nothing else to run spends its
/// yields on system calls before it parks, about 0.4 us each on that machine, some 12 us of
/// CPU per idle spell.
#[cfg(feature = "cluster")]
pub(crate) const NODE_YIELDS: u32 = 32;

/// How long an idle thread looks for work before it parks: `spin_rounds` rounds of spinning
/// (round `k` spins `2^k` times), then `yields` calls to `thread::yield_now`, each after a look
/// at the bitmap (and a last look as it moves to sleeping).
///
/// Why two schedules (the measurements are in BENCHMARKS.md, "Why the runtime beats the bare
/// programs", and its ninth cluster round): with no more busy threads than cores, crossbeam's
/// schedule (7 spin rounds, 4 yields: its `SPIN_LIMIT` of 6 counts rounds from 0) is best,
/// since a ping-pong between two processes lives on the spinning. With more threads than cores,
/// an idle thread that spins holds a core another thread has work for, so it only yields, with
/// no `pause` at all. (Spinning 3 rounds there, as this once did, is 15 `pause` instructions,
/// which cost a few hundred cycles each on recent x86 cores; the one `pause` left after that,
/// from a schedule that counted its spin rounds from 0 to 0, was 13% of the wait's own samples
/// at 3 nodes x 16, BENCHMARKS.md, fourteenth round.) It yields [`RUNTIME_YIELDS`] times in
/// process, `NODE_YIELDS` times on a cluster node, before it parks: each yield hands the core
/// to a thread with work, which may bring this one work before it parks, and a park costs both
/// sides a system call and a switch (a futex wake for the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    spin_rounds: u32,
    yields: u32,
}

impl Backoff {
    /// The schedule for `threads` busy threads of the in-process runtime on this machine.
    pub(crate) fn for_threads(threads: usize) -> Self {
        Self::for_threads_yielding(threads, RUNTIME_YIELDS)
    }

    /// The schedule for `threads` busy threads of a cluster node on this machine: the same,
    /// but [`NODE_YIELDS`] yields when they outnumber the cores.
    #[cfg(feature = "cluster")]
    pub(crate) fn for_node_threads(threads: usize) -> Self {
        Self::for_threads_yielding(threads, NODE_YIELDS)
    }

    /// Crossbeam's schedule with no more threads than cores; else `yields` yields, no spins.
    fn for_threads_yielding(threads: usize, yields: u32) -> Self {
        let cores = thread::available_parallelism().map_or(1, |c| c.get());
        if threads <= cores {
            Backoff {
                spin_rounds: 7,
                yields: 4,
            }
        } else {
            Backoff {
                spin_rounds: 0,
                yields,
            }
        }
    }
}

/// Sets `bit` in a local bitmap copy.
#[inline]
pub(crate) fn set_bit(bits: &mut [u64], bit: usize) {
    bits[bit / BITS] |= 1 << (bit % BITS);
}

/// The bits set in a local bitmap copy, lowest first.
#[cfg(any(test, feature = "cluster"))]
#[inline]
pub(crate) fn set_bits(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(w, &word)| {
        let mut rest = word;
        std::iter::from_fn(move || {
            (rest != 0).then(|| {
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                w * BITS + bit
            })
        })
    })
}

/// Whether `bit` is set in a local bitmap copy.
#[cfg(feature = "cluster")]
#[inline]
pub(crate) fn test_bit(bits: &[u64], bit: usize) -> bool {
    bits[bit / BITS] >> (bit % BITS) & 1 == 1
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// `set_bits` names every bit set, lowest first, across words of `BITS` bits each, and
    /// nothing for empty words; `set_bit` and `test_bit` agree with it.
    #[cfg(feature = "cluster")]
    #[test]
    fn set_bits_names_each_bit_set_in_order_across_words() {
        let want = [0, 1, 3, 62, BITS, BITS + 61, 3 * BITS + 7];
        let mut bits = vec![0u64; 4];
        for &b in want.iter().rev() {
            set_bit(&mut bits, b);
        }
        assert_eq!(set_bits(&bits).collect::<Vec<_>>(), want);
        assert!((0..4 * BITS).all(|b| test_bit(&bits, b) == want.contains(&b)));
        assert_eq!(set_bits(&[0, 0]).count(), 0);
    }

    /// More threads than cores: no spinning in either schedule, and a cluster node yields
    /// longer before it parks than the in-process runtime; one thread (never more than the
    /// cores) spins as crossbeam does in both.
    #[test]
    fn a_node_waits_longer_than_the_runtime_only_when_threads_outnumber_cores() {
        let crowded = usize::MAX;
        assert_eq!(
            Backoff::for_threads(crowded),
            Backoff {
                spin_rounds: 0,
                yields: RUNTIME_YIELDS
            }
        );
        let spinning = Backoff {
            spin_rounds: 7,
            yields: 4,
        };
        assert_eq!(Backoff::for_threads(1), spinning);
        #[cfg(feature = "cluster")]
        {
            assert_eq!(
                Backoff::for_node_threads(crowded),
                Backoff {
                    spin_rounds: 0,
                    yields: NODE_YIELDS
                }
            );
            const { assert!(NODE_YIELDS > RUNTIME_YIELDS) };
            assert_eq!(Backoff::for_node_threads(1), spinning);
        }
    }

    /// Past the first eight words (503 channels) the bits live in the boxed lines: the
    /// boundary on both sides, the last bit, and a place worked out ahead of time.
    #[test]
    fn bits_round_trip_past_the_inline_line() {
        let bell = Doorbell::new(1200);
        assert_eq!(bell.words(), 20);
        let bits = [0, 502, 503, 504, 566, 567, 1007, 1008, 1199];
        for bit in bits {
            bell.ring_at(BitPlace::of(bit));
        }
        let mut local = vec![0; bell.words()];
        assert!(bell.take(&mut local));
        let mut got = Vec::new();
        for b in set_bits(&local) {
            got.push(b);
        }
        assert_eq!(got, bits);
    }

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
        for b in set_bits(&local) {
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
                        bell.wait(None, Backoff::for_threads(2));
                    }
                    for b in set_bits(&local) {
                        seen |= 1 << b;
                    }
                    local.fill(0);
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
            Backoff::for_threads(1),
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}

/// The wake-up protocol model-checked with loom: every interleaving of a few threads ringing,
/// taking, sleeping and closing (all of them: the models are kept small enough that no
/// `LOOM_MAX_PREEMPTIONS` bound is needed, and all five take about a second unoptimised).
/// A lost wake-up leaves the owner parked with nobody left to unpark it, which loom reports as a
/// deadlock (a panic), so each model simply runs the owner until it has everything it must get.
///
/// Run with `.ci/loom.sh` (`RUSTFLAGS="--cfg loom" cargo test --lib loom_tests`, in its own
/// target directory).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU32;
    // std's `Arc`, not loom's: the reference count is not part of the protocol, and a loom
    // `Arc` dropped while loom unwinds from a deadlock it found panics again and aborts the
    // test binary (so the `should_panic` test below could not see the first panic).
    use std::sync::Arc;

    /// Park as soon as the bitmap is empty: the spin and yield rounds only re-read it, and
    /// fewer steps keep the models small.
    const PARK_AT_ONCE: Backoff = Backoff {
        spin_rounds: 0,
        yields: 0,
    };

    /// How the owner takes its bits.
    #[derive(Clone, Copy)]
    enum Take {
        /// `Doorbell::take`: the bits are cleared (one `swap`) before their channels are drained.
        ClearThenDrain,
        /// The deliberate bug: read the bits, drain, and only then clear them. A push and ring
        /// that land between the drain and the clear are wiped out.
        DrainThenClear,
    }

    /// One process's doorbell and incoming channels. A channel is modelled by the count of
    /// messages pushed on it: a push is a Release increment (crossbeam's send publishes the
    /// message with Release), a drain an Acquire load (a `try_recv` that finds it). That is no
    /// stronger than the real channel, so it cannot hide a missing ordering in the doorbell.
    struct Process {
        bell: Doorbell,
        /// (bit, messages pushed so far) per channel.
        chans: Vec<(usize, AtomicU32)>,
    }

    impl Process {
        /// A process with `bits` doorbell bits and one channel on each of `chan_bits`.
        fn new(bits: usize, chan_bits: &[usize]) -> Arc<Self> {
            Arc::new(Process {
                bell: Doorbell::new(bits),
                chans: chan_bits.iter().map(|&b| (b, AtomicU32::new(0))).collect(),
            })
        }

        /// What `EdgeOutbox::push` does: hand the message back if the owner is closed, else
        /// push and then ring. Returns whether it was pushed.
        fn send(&self, chan: usize) -> bool {
            if self.bell.is_closed() {
                return false;
            }
            let (bit, pushed) = &self.chans[chan];
            pushed.fetch_add(1, Ordering::Release);
            self.bell.ring(*bit);
            true
        }

        /// Drains the channel on `bit` into `got` (everything pushed that this thread sees).
        fn drain(&self, bit: usize, got: &mut [u32]) {
            let c = self.chans.iter().position(|(b, _)| *b == bit).unwrap();
            got[c] = self.chans[c].1.load(Ordering::Acquire);
        }

        /// One pass of the event loop (event_loop.rs `Worker::run`): take the ready bits and
        /// drain their channels; returns whether any bit was taken. The caller waits if not.
        fn pass(&self, take: Take, got: &mut [u32]) -> bool {
            match take {
                Take::ClearThenDrain => {
                    let mut local = vec![0; self.bell.words()];
                    let worked = self.bell.take(&mut local);
                    for bit in set_bits(&local) {
                        self.drain(bit, got);
                    }
                    worked
                }
                Take::DrainThenClear => {
                    let mut worked = false;
                    for w in 0..self.bell.words() {
                        let word = self.bell.word(w);
                        let bits = word.load(Ordering::Acquire) & !SLEEPING;
                        let mut local = vec![0; self.bell.words()];
                        local[w] = bits;
                        for bit in set_bits(&local) {
                            self.drain(bit, got);
                        }
                        word.fetch_and(!(bits | SLEEPING), Ordering::AcqRel);
                        worked |= bits != 0;
                    }
                    worked
                }
            }
        }

        /// The owner's thread: register, then loop (take and drain; wait when nothing was
        /// taken) until `done` says it has what it must get. Returns what it received.
        fn run_owner(&self, take: Take, done: impl Fn(&[u32]) -> bool) -> Vec<u32> {
            self.bell.register_current_thread();
            let mut got = vec![0; self.chans.len()];
            while !done(&got) {
                if !self.pass(take, &mut got) {
                    self.bell.wait(None, PARK_AT_ONCE);
                }
            }
            got
        }
    }

    /// One sender pushes and rings twice (the second push can land while the owner drains
    /// the first, or while it goes to sleep) while the owner takes, drains and sleeps: the owner
    /// always ends up with both messages.
    fn one_sender(take: Take) {
        loom::model(move || {
            let p = Process::new(1, &[0]);
            let owner = {
                let p = p.clone();
                loom::thread::spawn(move || p.run_owner(take, |got| got[0] == 2))
            };
            assert!(p.send(0));
            assert!(p.send(0));
            assert_eq!(owner.join().unwrap(), [2]);
        });
    }

    #[test]
    fn loom_one_sender_no_lost_wakeup() {
        one_sender(Take::ClearThenDrain);
    }

    /// The teeth: clearing the bit after the drain instead of before loses a wake-up, and loom
    /// must find the interleaving (it panics with "deadlock; threads = ..."). This runs on every
    /// CI run, so a model that became too weak to catch it would fail here.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_catches_clearing_after_the_drain() {
        one_sender(Take::DrainThenClear);
    }

    /// Two senders on bits in different words (0 and 63): the owner's compare-exchange of word 0
    /// to `SLEEPING` can succeed while word 1's fails (and is undone), and each sender sees
    /// `SLEEPING` or not on its own word. The owner always gets both messages.
    #[test]
    fn loom_two_senders_on_two_words_no_lost_wakeup() {
        loom::model(|| {
            let p = Process::new(BITS + 1, &[0, BITS]);
            assert_eq!(p.bell.words(), 2);
            let owner = {
                let p = p.clone();
                loom::thread::spawn(move || p.run_owner(Take::ClearThenDrain, |got| got == [1, 1]))
            };
            let second = {
                let p = p.clone();
                loom::thread::spawn(move || assert!(p.send(1)))
            };
            assert!(p.send(0));
            second.join().unwrap();
            assert_eq!(owner.join().unwrap(), [1, 1]);
        });
    }

    /// A stop request (a push on the control channel, whose bit comes after the incoming
    /// channels', then a ring: `Shared::control`) racing with a message on the incoming channel
    /// and with the owner going to sleep: the owner always wakes and stops.
    #[test]
    fn loom_stop_wakes_a_sleeping_owner() {
        loom::model(|| {
            // Bit 0: the one incoming channel; bit 1: the control channel.
            let p = Process::new(2, &[0, 1]);
            let owner = {
                let p = p.clone();
                loom::thread::spawn(move || p.run_owner(Take::ClearThenDrain, |got| got[1] == 1))
            };
            let sender = {
                let p = p.clone();
                loom::thread::spawn(move || assert!(p.send(0)))
            };
            assert!(p.send(1));
            let got = owner.join().unwrap();
            sender.join().unwrap();
            // The stop was seen; the message was received or is still on the channel.
            assert_eq!(got[1], 1);
            assert!(got[0] <= p.chans[0].1.load(Ordering::Acquire));
        });
    }

    /// A sender pushing twice racing with the owner closing its doorbell (a process that
    /// panicked: `Shared::process_failed`), then shutdown draining what is left on the channel
    /// (its undelivered messages). Each message is handed back to the sender, or received by
    /// the owner, or found by shutdown: never none of these, and never two.
    #[test]
    fn loom_send_racing_close_is_delivered_or_handed_back() {
        loom::model(|| {
            let p = Process::new(1, &[0]);
            let owner = {
                let p = p.clone();
                loom::thread::spawn(move || {
                    p.bell.register_current_thread();
                    let mut got = [0];
                    // It works while it can, then fails and closes.
                    p.pass(Take::ClearThenDrain, &mut got);
                    p.bell.close();
                    got[0]
                })
            };
            let pushed = u32::from(p.send(0)) + u32::from(p.send(0));
            let handed_back = 2 - pushed;
            let received = owner.join().unwrap();
            // Shutdown runs after every process thread is joined, and the channels live until
            // then: what is on a channel and was not received is reported as undelivered.
            let on_channel = p.chans[0].1.load(Ordering::Acquire);
            let undelivered = on_channel - received;
            assert_eq!(received + undelivered + handed_back, 2);
            assert_eq!(on_channel, pushed);
            // Once a send sees the doorbell closed, it never pushes again.
            assert!(pushed == 2 || p.bell.is_closed());
        });
    }
}
