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

/// A token on its way: 16 bytes, as in the baseline.
#[derive(Clone, Copy, Debug)]
pub struct Token {
    pub amount: u64,
    pub hops: u32,
    pub from: u32,
}

/// What every variant shares: a balance, an xorshift generator, the retirement count.
struct Teller {
    id: usize,
    n: usize,
    balance: u64,
    rng: u64,
    retired: Arc<AtomicUsize>,
    tokens: usize,
    done: Sender<()>,
}

impl Teller {
    fn new(
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
    fn token(&mut self, hops: u32, neighbours: usize) -> (usize, Token) {
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
    fn receive(&mut self, t: Token) -> Option<u32> {
        self.balance += t.amount;
        if t.hops > 1 {
            return Some(t.hops - 1);
        }
        if self.retired.fetch_add(1, Ordering::AcqRel) + 1 == self.tokens {
            let _ = self.done.send(());
        }
        None
    }

    /// Index of process `p` among the others (complete graph, increasing order).
    fn other(&self, k: usize) -> usize {
        if k >= self.id {
            k + 1
        } else {
            k
        }
    }
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
    /// Start one every this often (skipping a beat while 4 are still running).
    Every(Duration),
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
        })
        .collect();
    let runtime = Runtime::new(Topology::complete(n), procs).unwrap();
    start.wait();
    let began = Instant::now();
    let mut latencies = Vec::new();
    match snapshots {
        Snapshots::Off => done.recv().unwrap(),
        Snapshots::Continuous(k) => {
            // Block (never spin: the main thread would take a core from the processes) until
            // either the traffic is done or a snapshot ends, which makes room for the next.
            let events = runtime.subscribe();
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
        Snapshots::Every(period) => {
            let events = runtime.subscribe();
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
    done.recv().unwrap();
    let elapsed = began.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    elapsed
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
