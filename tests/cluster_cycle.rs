//! Flow control around a cycle of nodes: three nodes each flooding the next, every receiver
//! slower than its sender.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{ClusterConfig, Node, NodeBuilder, NodeConfig, NodeKeys};
use chandy_lamport::{Context, Process, ProcessId, Topology};

/// Sends 50 messages of 4 KiB to its one neighbour every tick; takes 1 ms a message.
struct SlowFlood {
    sent: Arc<AtomicU64>,
    got: Arc<AtomicU64>,
}

impl Process for SlowFlood {
    type Message = Vec<u8>;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, _: Vec<u8>, _: &mut Context<'_, Vec<u8>>) {
        thread::sleep(Duration::from_millis(1));
        self.got.fetch_add(1, Ordering::Relaxed);
    }
    fn on_tick(&mut self, ctx: &mut Context<'_, Vec<u8>>) {
        let to = ctx.neighbours()[0];
        for _ in 0..50 {
            if ctx.send(to, vec![7; 4096]).is_err() {
                return;
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn record(&self) -> u64 {
        0
    }
}

/// Three nodes, one process each, in a directed ring 0 -> 1 -> 2 -> 0, built as `configure`
/// says; with the counts of messages sent and taken.
fn ring(
    configure: fn(NodeBuilder<SlowFlood>) -> NodeBuilder<SlowFlood>,
) -> (Vec<Node<SlowFlood>>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let (listeners, addresses) = common::listeners(3);
    let config = ClusterConfig::new(
        (0..3)
            .map(|k| NodeConfig::new(addresses[k].clone(), [k]))
            .collect(),
    );
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(NodeKeys::generate(3).unwrap())
        .enumerate()
        .map(|(me, (listener, keys))| {
            let (config, sent, got) = (config.clone(), sent.clone(), got.clone());
            thread::spawn(move || {
                configure(Node::builder(
                    Topology::from_edges(3, [(0, 1), (1, 2), (2, 0)]),
                    config,
                    me,
                ))
                .listener(listener)
                .keys(keys)
                .connect_timeout(*common::PATIENCE)
                .build(move |_| SlowFlood {
                    sent: sent.clone(),
                    got: got.clone(),
                })
            })
        })
        .collect();
    let nodes = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    (nodes, sent, got)
}

/// Three nodes in a directed ring, each process flooding the next (50 messages of 4 KiB a
/// millisecond) and every receiver slower (1 ms a message), with small bounds: every reader
/// holds back, every process waits for room, and each writer's peer is still heard (its
/// heartbeats come on the other connection), so nothing is failed and nothing moves. Bounded
/// memory and no loss leave no way out of that (see `NodeBuilder::max_backlog`); what the
/// cluster owes is that the stall is not silent and the stop ends it cleanly. Before: no word
/// of it anywhere, and the stop (after 7-35 s) failed all six links as silent, every node
/// taking the others for failed with their reports missing: a writer sealed a whole round
/// (the final report, megabytes) before writing any of it, and the peer heard nothing for
/// longer than the failure timeout (found by a review).
#[test]
fn nodes_holding_each_other_back_in_a_cycle_say_so_and_stop_cleanly() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (nodes, sent, got) = ring(|b| {
        b.max_queued(64 << 10)
            .max_backlog(16)
            .tick_interval(Duration::from_millis(1))
            .failure_timeout(Duration::from_secs(2))
            .stop_timeout(Duration::from_secs(60))
    });
    // Every node shows its link to the next stalled past the failure timeout.
    let began = Instant::now();
    let stalled = |n: &Node<SlowFlood>| {
        n.stats()
            .links
            .iter()
            .any(|l| l.stalled_for >= Some(Duration::from_secs(2)))
    };
    while !nodes.iter().all(stalled) {
        assert!(
            began.elapsed() < *common::PATIENCE,
            "no stall shown: {:?}",
            nodes.iter().map(|n| n.stats().links).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "all stalled after {:?}: {} sent, {} taken",
        began.elapsed(),
        sent.load(Ordering::Relaxed),
        got.load(Ordering::Relaxed)
    );
    for node in &nodes {
        assert!(node.failed_nodes().is_empty(), "{:?}", node.failed_nodes());
    }
    // The stop ends it: every node stops, none is taken for failed, every report comes.
    let asked = Instant::now();
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let others: Vec<_> = nodes
        .map(|n| thread::spawn(move || n.wait_stopped(Duration::from_secs(120))))
        .collect();
    let mut results = vec![zero.shutdown()];
    results.extend(others.into_iter().map(|o| o.join().unwrap()));
    eprintln!("the stop: {:?}", asked.elapsed());
    for (k, result) in results.into_iter().enumerate() {
        let stopped = result.unwrap_or_else(|e| panic!("node {k}: {e}"));
        assert_eq!(
            (stopped.failed_nodes.clone(), stopped.missing_reports()),
            (vec![], &[][..]),
            "node {k}"
        );
        stopped.final_state().unwrap().verify().unwrap();
    }
}
