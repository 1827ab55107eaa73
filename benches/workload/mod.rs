//! The closed-loop bank workload (a bare-channel baseline program's), written three ways so they
//! can be compared in one run: through the runtime, on one crossbeam inbox per thread, and on one
//! crossbeam channel per directed edge with `Select`.
//!
//! N threads pass N*T tokens around at random; each delivery adds the token's amount to the
//! receiver's balance and sends a new random amount to a random neighbour, until the token has
//! made `hops` deliveries; then it is retired. The run ends when the last token is retired.
//! Timed from a start barrier (every thread ready) to the last retirement.

#![allow(dead_code)] // each bench target uses its own part

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
use crossbeam_channel::{unbounded, Receiver, Select, Sender};

pub const INITIAL_BALANCE: u64 = 1_000_000;

/// A token on its way: 16 bytes, as in the baseline (serde for the cluster's benches).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub amount: u64,
    pub hops: u32,
    pub from: u32,
}

/// What every variant shares: a balance, an xorshift generator, the retirement count.
pub struct Teller {
    id: usize,
    n: usize,
    balance: u64,
    rng: u64,
    retired: Arc<AtomicUsize>,
    tokens: usize,
    done: Sender<()>,
}

impl Teller {
    pub fn new(
        id: usize,
        n: usize,
        tokens: usize,
        retired: Arc<AtomicUsize>,
        done: Sender<()>,
    ) -> Self {
        Teller {
            id,
            n,
            balance: INITIAL_BALANCE,
            rng: 0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x2545_F491_4F6C_DD1D),
            retired,
            tokens,
            done,
        }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// A random token from this teller's balance, and a random index among `neighbours`.
    #[inline(always)]
    pub fn token(&mut self, hops: u32, neighbours: usize) -> (usize, Token) {
        let amount = 1 + self.next() % (self.balance / 2).max(1);
        self.balance -= amount;
        let k = (self.next() % neighbours as u64) as usize;
        (
            k,
            Token {
                amount,
                hops,
                from: self.id as u32,
            },
        )
    }

    /// Takes a token in; returns the hops left for the next one, or None if it was retired.
    #[inline(always)]
    pub fn receive(&mut self, t: Token) -> Option<u32> {
        self.balance += t.amount;
        if t.hops > 1 {
            return Some(t.hops - 1);
        }
        if self.retired.fetch_add(1, Ordering::AcqRel) + 1 == self.tokens {
            let _ = self.done.send(());
        }
        None
    }

    /// The balance now.
    pub fn balance(&self) -> u64 {
        self.balance
    }

    /// Index of process `p` among the others (complete graph, increasing order).
    pub fn other(&self, k: usize) -> usize {
        if k >= self.id {
            k + 1
        } else {
            k
        }
    }
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Hops per token so that a run makes about `deliveries` deliveries in total.
pub fn hops_for(n: usize, t: usize, deliveries: u64) -> u32 {
    (deliveries / (n * t) as u64).max(1) as u32
}

// ---------------------------------------------------------------------------------------------
// Through the runtime.

struct RuntimeTeller {
    teller: Teller,
    t: usize,
    hops: u32,
    start: Arc<Barrier>,
    /// Starts a snapshot on each of its ticks (`Snapshots::FromTick`).
    starter: bool,
}

impl Process for RuntimeTeller {
    type Message = Token;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, Token>) {
        self.start.wait();
        for _ in 0..self.t {
            let (k, token) = self.teller.token(self.hops, ctx.neighbours().len());
            let to = ctx.neighbours()[k];
            ctx.send(to, token).unwrap();
        }
    }

    #[inline]
    fn on_message(&mut self, _from: ProcessId, token: Token, ctx: &mut Context<'_, Token>) {
        if let Some(hops) = self.teller.receive(token) {
            let (k, token) = self.teller.token(hops, ctx.neighbours().len());
            let to = ctx.neighbours()[k];
            ctx.send(to, token).unwrap();
        }
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Token>) {
        if self.starter {
            ctx.start_snapshot();
        }
    }

    fn record(&self) -> u64 {
        self.teller.balance
    }
}

/// How snapshots accompany a runtime run.
#[derive(Clone, Copy, Debug)]
pub enum Snapshots {
    /// None.
    Off,
    /// Keep this many running: start a new one whenever fewer are.
    Continuous(usize),
    /// Start one every this often from the main thread (skipping a beat while 4 are still
    /// running).
    Every(Duration),
    /// Start one every this often from process 0's own tick (`tick_interval`, so every process
    /// looks at the clock once per pass of its loop): no thread outside the runtime wakes.
    FromTick(Duration),
    /// None, but the main thread wakes this often (what `Every` costs without its snapshots:
    /// on a machine with few cores a thread waking every millisecond costs every program there
    /// throughput, bare or not).
    WakeOnly(Duration),
    /// None, but every process ticks this often (`tick_interval`): what `FromTick` costs
    /// without its snapshots.
    TickOnly(Duration),
}

/// One closed-loop run through the runtime on the complete graph. Returns the traffic's
/// duration and the latencies of the snapshots taken meanwhile.
pub fn run_runtime(
    n: usize,
    t: usize,
    hops: u32,
    snapshots: Snapshots,
) -> (Duration, Vec<Duration>) {
    let retired = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let (done_tx, done) = unbounded();
    let procs: Vec<RuntimeTeller> = (0..n)
        .map(|id| RuntimeTeller {
            teller: Teller::new(id, n, n * t, retired.clone(), done_tx.clone()),
            t,
            hops,
            start: start.clone(),
            starter: id == 0 && matches!(snapshots, Snapshots::FromTick(_)),
        })
        .collect();
    let mut builder = Runtime::builder(Topology::complete(n));
    if let Snapshots::FromTick(period) | Snapshots::TickOnly(period) = snapshots {
        builder = builder.tick_interval(period);
    }
    let runtime = builder.build(procs).unwrap();
    let events = runtime.subscribe();
    start.wait();
    let began = Instant::now();
    let mut latencies = Vec::new();
    match snapshots {
        Snapshots::Off => done.recv().unwrap(),
        Snapshots::Continuous(k) => {
            // Block (never spin: the main thread would take a core from the processes) until
            // either the traffic is done or a snapshot ends, which makes room for the next.
            for next in 0..k {
                runtime.start_snapshot(next % n).unwrap();
            }
            let mut next = k;
            loop {
                crossbeam_channel::select! {
                    recv(done) -> _ => break,
                    recv(events) -> event => {
                        latencies.push(event.unwrap().outcome.unwrap().latency());
                        runtime.start_snapshot(next % n).unwrap();
                        next += 1;
                    }
                }
            }
        }
        Snapshots::FromTick(_) | Snapshots::TickOnly(_) => done.recv().unwrap(),
        Snapshots::WakeOnly(period) => wait_waking(&done, period),
        Snapshots::Every(period) => {
            let ticks = crossbeam_channel::tick(period);
            let (mut started, mut next) = (0usize, 0usize);
            loop {
                crossbeam_channel::select! {
                    recv(done) -> _ => break,
                    recv(events) -> event => {
                        latencies.push(event.unwrap().outcome.unwrap().latency());
                    }
                    recv(ticks) -> _ => {
                        if started - latencies.len() < 4 {
                            runtime.start_snapshot(next % n).unwrap();
                            started += 1;
                            next += 1;
                        }
                    }
                }
            }
        }
    }
    let elapsed = began.elapsed();
    runtime.shutdown().unwrap();
    if let Snapshots::FromTick(_) = snapshots {
        // One may still be running when the traffic ends: shutdown gives it up.
        let done = events.try_iter().filter_map(|e| e.outcome.ok());
        latencies.extend(done.map(|snapshot| snapshot.latency()));
    }
    (elapsed, latencies)
}

/// Latency of one snapshot on an idle runtime (no traffic) of `n` processes.
pub fn idle_runtime(n: usize) -> Runtime<impl Process<Message = Token, State = u64>> {
    struct Idle;
    impl Process for Idle {
        type Message = Token;
        type State = u64;
        fn on_message(&mut self, _: ProcessId, _: Token, _: &mut Context<'_, Token>) {}
        fn record(&self) -> u64 {
            0
        }
    }
    Runtime::new(Topology::complete(n), (0..n).map(|_| Idle)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Bare crossbeam, no snapshot machinery: the baselines.

/// Runs `body` on `n` threads; times from the start barrier to the last retirement (`done`), as
/// the runtime variant does, then joins.
fn harness(
    n: usize,
    done: Receiver<()>,
    body: impl Fn(usize, &Barrier) + Send + Sync + 'static,
) -> Duration {
    harness_woken(n, done, None, body)
}

/// `harness`, the main thread waking every `wake` while it waits (as it must to start a
/// snapshot every so often): what those wake-ups alone cost a program with no snapshots.
fn harness_woken(
    n: usize,
    done: Receiver<()>,
    wake: Option<Duration>,
    body: impl Fn(usize, &Barrier) + Send + Sync + 'static,
) -> Duration {
    let body = Arc::new(body);
    let start = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|id| {
            let body = body.clone();
            let start = start.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || body(id, &start))
                .unwrap()
        })
        .collect();
    start.wait();
    let began = Instant::now();
    match wake {
        None => done.recv().unwrap(),
        Some(period) => wait_waking(&done, period),
    }
    let elapsed = began.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    elapsed
}

/// Blocks until `done`, waking every `period` meanwhile and doing nothing with it.
fn wait_waking(done: &Receiver<()>, period: Duration) {
    let ticks = crossbeam_channel::tick(period);
    loop {
        crossbeam_channel::select! {
            recv(done) -> _ => break,
            recv(ticks) -> _ => {}
        }
    }
}

/// One crossbeam inbox per thread (messages carry the sender): the single-inbox baseline.
pub fn run_inbox(n: usize, t: usize, hops: u32) -> Duration {
    let retired = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = unbounded();
    let (txs, rxs): (Vec<Sender<Token>>, Vec<Receiver<Token>>) =
        (0..n).map(|_| unbounded()).unzip();
    let rxs = Arc::new(rxs);
    let stop = Token {
        amount: 0,
        hops: u32::MAX,
        from: 0,
    };
    harness(n, done, move |id, start| {
        let mut me = Teller::new(id, n, n * t, retired.clone(), done_tx.clone());
        start.wait();
        for _ in 0..t {
            let (k, token) = me.token(hops, n - 1);
            txs[me.other(k)].send(token).unwrap();
        }
        while let Ok(token) = rxs[id].recv() {
            if token.hops == u32::MAX {
                break;
            }
            match me.receive(token) {
                Some(h) => {
                    let (k, token) = me.token(h, n - 1);
                    txs[me.other(k)].send(token).unwrap();
                }
                None if me.retired.load(Ordering::Acquire) == me.tokens => {
                    for (p, tx) in txs.iter().enumerate() {
                        if p != id {
                            let _ = tx.send(stop);
                        }
                    }
                    break;
                }
                None => {}
            }
        }
    })
}

/// One crossbeam channel per directed edge, `Select::ready` over the incoming ones: the
/// channel-per-edge baseline (the design the runtime keeps, without its wake-up scheme).
pub fn run_edge_select(n: usize, t: usize, hops: u32) -> Duration {
    let retired = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = unbounded();
    // txs[i][k]: i's channel to its k-th other; rxs[j]: j's incoming, by source order.
    let mut txs: Vec<Vec<Sender<Token>>> = (0..n).map(|_| Vec::new()).collect();
    let mut rxs: Vec<Vec<Receiver<Token>>> = (0..n).map(|_| Vec::new()).collect();
    for (i, out) in txs.iter_mut().enumerate() {
        for (j, inc) in rxs.iter_mut().enumerate() {
            if i != j {
                let (tx, rx) = unbounded();
                out.push(tx);
                inc.push(rx);
            }
        }
    }
    let txs = Arc::new(txs);
    let rxs = Arc::new(std::sync::Mutex::new(
        rxs.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let stop = Token {
        amount: 0,
        hops: u32::MAX,
        from: 0,
    };
    harness(n, done, move |id, start| {
        let inc = rxs.lock().unwrap()[id].take().unwrap();
        let out = &txs[id];
        let mut me = Teller::new(id, n, n * t, retired.clone(), done_tx.clone());
        let mut sel = Select::new();
        for r in &inc {
            sel.recv(r);
        }
        start.wait();
        for _ in 0..t {
            let (k, token) = me.token(hops, n - 1);
            out[k].send(token).unwrap();
        }
        loop {
            let i = sel.ready();
            let Ok(token) = inc[i].try_recv() else {
                continue;
            };
            if token.hops == u32::MAX {
                break;
            }
            match me.receive(token) {
                Some(h) => {
                    let (k, token) = me.token(h, n - 1);
                    out[k].send(token).unwrap();
                }
                None if me.retired.load(Ordering::Acquire) == me.tokens => {
                    for tx in out {
                        let _ = tx.send(stop);
                    }
                    break;
                }
                None => {}
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The fairest bare rival: one channel per edge, a per-receiver ready bitmap, and the runtime's
// own idle schedule (the baseline program's `edge-bitmap-tuned` variant).

/// Bit 63 of each bitmap word: the owner is (about to be) parked.
const SLEEPING: u64 = 1 << 63;
const WORD_BITS: usize = 63;
/// Bitmap words per thread: up to 252 threads.
const WORDS: usize = 4;
/// Messages taken from one edge per visit, as the runtime's event loop takes.
const BATCH: u32 = 32;

/// One thread's ready bitmap, on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Bitmap([std::sync::atomic::AtomicU64; WORDS]);

/// The ready bitmaps of a set of threads, and the threads, to unpark: the doorbell of the
/// runtime's event loop, written bare. A sender sets a bit of the receiver's bitmap with one
/// `fetch_or` and unparks it only if it sleeps; the receiver takes a word's bits with one `swap`
/// (clearing them before it drains what they name, so that a ring after the drain is not lost).
/// What each bit names is the user's: a channel per edge here, also an inbox in
/// `cluster_ratio`'s `bare edges`.
pub struct Bells {
    bitmaps: Vec<Bitmap>,
    threads: Vec<std::sync::OnceLock<thread::Thread>>,
}

impl Bells {
    /// The bitmaps of `n` threads, up to `WORD_BITS * WORDS` bits each.
    pub fn new(n: usize) -> Self {
        Bells {
            bitmaps: (0..n).map(|_| Bitmap::default()).collect(),
            threads: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// Thread `me` is the calling thread: call before anything can ring it.
    pub fn register(&self, me: usize) {
        let _ = self.threads[me].set(thread::current());
    }

    /// Sets bit `bit` of thread `to`, and unparks it if it sleeps.
    #[inline]
    pub fn ring(&self, to: usize, bit: usize) {
        let prev =
            self.bitmaps[to].0[bit / WORD_BITS].fetch_or(1 << (bit % WORD_BITS), Ordering::AcqRel);
        if prev & SLEEPING != 0 {
            self.threads[to].get().expect("registered").unpark();
        }
    }

    /// The bits rung in word `w` of thread `me`'s bitmap since it last took them.
    #[inline]
    pub fn take(&self, me: usize, w: usize) -> u64 {
        let word = &self.bitmaps[me].0[w];
        if word.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        word.swap(0, Ordering::AcqRel) & !SLEEPING
    }

    /// Waits until something rings thread `me` (the first `words` words of its bitmap):
    /// `spin_rounds` rounds of spinning (round `k` spins `2^k` times), then `yields` yields,
    /// each after a look, then parked.
    #[cold]
    pub fn wait(&self, me: usize, words: usize, spin_rounds: u32, yields: u32) {
        let set = &self.bitmaps[me].0;
        let has = || (0..words).any(|w| set[w].load(Ordering::Relaxed) != 0);
        for step in 0..spin_rounds + yields {
            if has() {
                return;
            }
            if step < spin_rounds {
                for _ in 0..1u32 << step {
                    std::hint::spin_loop();
                }
            } else {
                thread::yield_now();
            }
        }
        for w in 0..words {
            if set[w]
                .compare_exchange(0, SLEEPING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                for u in set.iter().take(w) {
                    u.fetch_and(!SLEEPING, Ordering::AcqRel);
                }
                return;
            }
        }
        loop {
            thread::park();
            if (0..words).any(|w| set[w].load(Ordering::Acquire) & !SLEEPING != 0) {
                return;
            }
        }
    }
}

/// One thread of the tuned bare program: senders per destination, receivers per source (by
/// process id; its own slot empty), and the ready bitmaps of all.
struct BitmapEnd<T> {
    me: usize,
    words: usize,
    out: Vec<Option<Sender<T>>>,
    inc: Vec<Option<Receiver<T>>>,
    bells: Arc<Bells>,
    local: [u64; WORDS],
    again: [u64; WORDS],
    /// Messages sent so far, by destination (counted only for numbered messages).
    sent: Vec<std::cell::Cell<u64>>,
    /// Idle schedule: spin rounds `0..=spins` (2^k spins each), then `yields` yields, then park.
    spins: u32,
    yields: u32,
}

/// What the tuned bare program puts on a channel: the token alone, or the token with its
/// number on the channel (what the runtime's envelope carries for the exact cut check).
pub trait Carried: Send + 'static {
    /// Whether the sender counts its messages per destination (as the runtime does: the sent
    /// counters a snapshot records); `wrap` is given the count.
    const NUMBERED: bool;
    /// `token`, the `seq`-th message on its channel.
    fn wrap(token: Token, seq: u64) -> Self;
    /// The token.
    fn token(self) -> Token;
}

impl Carried for Token {
    const NUMBERED: bool = false;
    #[inline(always)]
    fn wrap(token: Token, _: u64) -> Self {
        token
    }
    #[inline(always)]
    fn token(self) -> Token {
        self
    }
}

/// The token alone, but counted per destination by the sender (the count is not sent): what
/// the counting costs apart from carrying the number.
pub struct Counted(Token);

impl Carried for Counted {
    const NUMBERED: bool = true;
    #[inline(always)]
    fn wrap(token: Token, _: u64) -> Self {
        Counted(token)
    }
    #[inline(always)]
    fn token(self) -> Token {
        self.0
    }
}

/// A token with its number on its channel: 24 bytes, as the runtime's envelope.
pub struct Numbered {
    seq: std::num::NonZeroU64,
    token: Token,
}

impl Carried for Numbered {
    const NUMBERED: bool = true;
    #[inline(always)]
    fn wrap(token: Token, seq: u64) -> Self {
        Numbered {
            seq: std::num::NonZeroU64::MIN.saturating_add(seq),
            token,
        }
    }
    #[inline(always)]
    fn token(self) -> Token {
        std::hint::black_box(self.seq);
        self.token
    }
}

impl<T: Carried> BitmapEnd<T> {
    /// Sends `token` to `to`, numbered if `T` is.
    #[inline]
    fn post(&self, to: usize, token: Token) {
        let seq = if T::NUMBERED {
            let seq = self.sent[to].get() + 1;
            self.sent[to].set(seq);
            seq
        } else {
            0
        };
        self.send(to, T::wrap(token, seq));
    }

    #[inline]
    fn send(&self, to: usize, token: T) {
        let _ = self.out[to].as_ref().expect("a neighbour").send(token);
        self.bells.ring(to, self.me);
    }

    #[inline]
    fn pop_local(&mut self) -> Option<usize> {
        for w in 0..self.words {
            let b = self.local[w];
            if b != 0 {
                self.local[w] = b & (b - 1);
                return Some(w * WORD_BITS + b.trailing_zeros() as usize);
            }
        }
        None
    }

    #[inline]
    fn refill(&mut self) -> bool {
        let mut any = 0;
        let words = self.again.iter_mut().zip(&mut self.local);
        for (w, (again, local)) in words.take(self.words).enumerate() {
            let b = std::mem::take(again) | self.bells.take(self.me, w);
            *local = b;
            any |= b;
        }
        any != 0
    }

    /// Spin rounds `0..=spins`, as the field says: `spins + 1` of them.
    #[cold]
    fn wait(&self) {
        self.bells
            .wait(self.me, self.words, self.spins + 1, self.yields);
    }
}

/// The tuned bare program: a channel per directed edge, a ready bitmap per thread (the sender
/// sets its edge's bit and unparks the receiver only if it sleeps; the receiver takes all ready
/// edges with one swap per word and drains each up to 32 messages), and the runtime's idle
/// schedule (no spinning and 3 yields when threads outnumber cores, else crossbeam's 6 and 4).
pub fn run_edge_bitmap_tuned(n: usize, t: usize, hops: u32) -> Duration {
    run_bitmap::<Token>(n, t, hops, None)
}

/// The tuned bare program with its main thread waking every `period` (`harness_woken`).
pub fn run_edge_bitmap_tuned_woken(n: usize, t: usize, hops: u32, period: Duration) -> Duration {
    run_bitmap::<Token>(n, t, hops, Some(period))
}

/// The same, each message carrying its number on its channel (24 bytes, as the runtime's
/// envelope): how much of the runtime's cost is carrying that number.
pub fn run_edge_bitmap_tuned_numbered(n: usize, t: usize, hops: u32) -> Duration {
    run_bitmap::<Numbered>(n, t, hops, None)
}

/// The same, each sender counting its messages per destination without sending the count
/// (`Counted`).
pub fn run_edge_bitmap_tuned_counted(n: usize, t: usize, hops: u32) -> Duration {
    run_bitmap::<Counted>(n, t, hops, None)
}

fn run_bitmap<T: Carried>(n: usize, t: usize, hops: u32, wake: Option<Duration>) -> Duration {
    assert!(n <= WORD_BITS * WORDS);
    let retired = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = unbounded();
    let mut out: Vec<Vec<Option<Sender<T>>>> = (0..n).map(|_| vec![None; n]).collect();
    let mut inc: Vec<Vec<Option<Receiver<T>>>> = (0..n).map(|_| vec![None; n]).collect();
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let (tx, rx) = unbounded();
            out[i][j] = Some(tx);
            inc[j][i] = Some(rx);
        }
    }
    let ends = Arc::new(std::sync::Mutex::new(
        out.into_iter().zip(inc).map(Some).collect::<Vec<_>>(),
    ));
    let bells = Arc::new(Bells::new(n));
    let cores = thread::available_parallelism().map_or(1, |c| c.get());
    let (spins, yields) = if n > cores { (0, 3) } else { (6, 4) };
    let stop = Token {
        amount: 0,
        hops: u32::MAX,
        from: 0,
    };
    harness_woken(n, done, wake, move |id, start| {
        let (out, inc) = ends.lock().unwrap()[id].take().unwrap();
        bells.register(id);
        let mut end = BitmapEnd {
            me: id,
            words: n.div_ceil(WORD_BITS),
            out,
            inc,
            bells: bells.clone(),
            local: [0; WORDS],
            again: [0; WORDS],
            sent: (0..n).map(|_| std::cell::Cell::new(0)).collect(),
            spins,
            yields,
        };
        let mut me = Teller::new(id, n, n * t, retired.clone(), done_tx.clone());
        // Every thread registers before any can send (the barrier), so an unpark finds it.
        start.wait();
        for _ in 0..t {
            let (k, token) = me.token(hops, n - 1);
            end.post(me.other(k), token);
        }
        loop {
            let Some(from) = end.pop_local() else {
                if !end.refill() {
                    end.wait();
                }
                continue;
            };
            let rx = end.inc[from].as_ref().expect("an incoming edge");
            let mut budget = BATCH;
            let mut finished = false;
            while budget > 0 {
                let Ok(token) = rx.try_recv() else {
                    break;
                };
                let token = token.token();
                budget -= 1;
                if token.hops == u32::MAX {
                    finished = true;
                    break;
                }
                match me.receive(token) {
                    Some(h) => {
                        let (k, token) = me.token(h, n - 1);
                        end.post(me.other(k), token);
                    }
                    None if me.retired.load(Ordering::Acquire) == me.tokens => {
                        for p in (0..n).filter(|&p| p != id) {
                            end.post(p, stop);
                        }
                        finished = true;
                        break;
                    }
                    None => {}
                }
            }
            if finished {
                break;
            }
            if budget == 0 {
                // The batch ran out: serve the other edges first, then this one again.
                end.again[from / WORD_BITS] |= 1 << (from % WORD_BITS);
            }
        }
    })
}
