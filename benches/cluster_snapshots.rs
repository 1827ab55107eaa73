//! Snapshots across three nodes (threads of this process on 127.0.0.1), measured two ways:
//! `cargo bench --bench cluster_snapshots [-- ROUNDS]` (default 5).
//!
//! 1. **Latency beside the round trip**: the bank's traffic runs (4 processes per node, each
//!    keeping 4 transfers moving); node 0 takes 200 snapshots one after another, initiators on
//!    every node, and between them times a round trip between a process on node 0 and one on
//!    node 1 (a message there and its answer back, through the same links). A snapshot needs at
//!    least a marker hop and a hop for the parts, so about one round trip is its floor.
//! 2. **Many in flight**: K snapshots started at once from node 0 (initiators on every node)
//!    on an idle cluster, timed to the last one's completion; seconds per snapshot at K = 500
//!    and K = 10,000 (the work per snapshot should not grow with how many are in flight).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::Node;
use chandy_lamport::{Context, Process, ProcessId, Topology};
use crossbeam_channel::{bounded, Sender};
use serde::{Deserialize, Serialize};

mod local_cluster;
mod workload;

use workload::median;

const NODES: usize = 3;
const PER: usize = 4;
const N: usize = NODES * PER;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Msg {
    Transfer(u64),
    Ping,
    Pong,
}

/// A branch that keeps `busy` transfers moving; process 0 answers pings' pongs to `pongs`.
struct Branch {
    rng: fastrand::Rng,
    busy: usize,
    balance: u64,
    pongs: Arc<Mutex<Option<Sender<()>>>>,
}

impl Process for Branch {
    type Message = Msg;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, Msg>) {
        for _ in 0..self.busy {
            self.pay(ctx, 1);
        }
    }
    fn on_message(&mut self, from: ProcessId, m: Msg, ctx: &mut Context<'_, Msg>) {
        match m {
            Msg::Transfer(amount) => self.pay(ctx, amount),
            Msg::Ping => ctx.send(from, Msg::Pong).unwrap(),
            Msg::Pong => {
                if let Some(tx) = &*self.pongs.lock().unwrap() {
                    let _ = tx.send(());
                }
            }
        }
    }
    fn record(&self) -> u64 {
        self.balance
    }
}

impl Branch {
    fn pay(&mut self, ctx: &mut Context<'_, Msg>, amount: u64) {
        let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
        ctx.send(to, Msg::Transfer(amount)).unwrap();
    }
}

/// Three nodes of `PER` branches each (node k: processes k, k+3, ...), each keeping `busy`
/// transfers moving.
fn cluster(busy: usize, pongs: &Arc<Mutex<Option<Sender<()>>>>) -> Vec<Node<Branch>> {
    let placement: Vec<Vec<usize>> = (0..NODES)
        .map(|k| (0..N).filter(|p| p % NODES == k).collect())
        .collect();
    let pongs = pongs.clone();
    local_cluster::start(
        &Topology::complete(N),
        &placement,
        |b| b.max_snapshots_in_flight(20_000),
        move |p| Branch {
            rng: fastrand::Rng::with_seed(p as u64),
            busy,
            balance: 0,
            pongs: pongs.clone(),
        },
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Snapshot latencies and round trips, interleaved, under the bank's traffic.
fn latency_beside_round_trip() -> (Vec<Duration>, Vec<Duration>) {
    let pongs = Arc::new(Mutex::new(None));
    let nodes = cluster(4, &pongs);
    let (tx, rx) = bounded(1);
    *pongs.lock().unwrap() = Some(tx);
    thread::sleep(Duration::from_millis(200));
    let (mut latencies, mut trips) = (Vec::new(), Vec::new());
    for k in 0..200 {
        let snapshot = nodes[0]
            .snapshot_timeout(k % N, Duration::from_secs(30))
            .unwrap();
        latencies.push(snapshot.latency());
        // Process 0 (node 0) pings process 1 (node 1), which answers.
        let sent = Instant::now();
        nodes[0]
            .with_process(0, |_, ctx| ctx.send(1, Msg::Ping).unwrap())
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
        trips.push(sent.elapsed());
    }
    local_cluster::stop(nodes);
    latencies.sort();
    trips.sort();
    (latencies, trips)
}

/// Seconds per snapshot with `k` started at once on an idle cluster.
fn in_flight(k: usize) -> f64 {
    let nodes = cluster(0, &Arc::new(Mutex::new(None)));
    let began = Instant::now();
    let tickets: Vec<_> = (0..k)
        .map(|i| nodes[0].start_snapshot(i % N).unwrap())
        .collect();
    for t in tickets {
        t.wait_timeout(Duration::from_secs(120)).unwrap();
    }
    let took = began.elapsed().as_secs_f64();
    local_cluster::stop(nodes);
    took / k as f64
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (mut p50s, mut p99s, mut trip50s, mut trip99s) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (latencies, trips) = latency_beside_round_trip();
        p50s.push(us(percentile(&latencies, 50)));
        p99s.push(us(percentile(&latencies, 99)));
        trip50s.push(us(percentile(&trips, 50)));
        trip99s.push(us(percentile(&trips, 99)));
    }
    println!(
        "3 nodes x {PER}, under load: snapshot latency p50 {:.0} us, p99 {:.0} us; round trip \
         node 0 -> 1 -> 0 p50 {:.0} us, p99 {:.0} us (medians of {rounds} runs of 200)",
        median(p50s),
        median(p99s),
        median(trip50s),
        median(trip99s)
    );
    let (mut few, mut many) = (vec![], vec![]);
    for _ in 0..rounds {
        few.push(in_flight(500));
        many.push(in_flight(10_000));
    }
    let (few, many) = (median(few), median(many));
    println!(
        "3 nodes x {PER}, idle: {:.1} us per snapshot with 500 in flight, {:.1} us with 10,000 \
         ({:.2} x)",
        few * 1e6,
        many * 1e6,
        many / few
    );
}
