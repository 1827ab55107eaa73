//! A slow process must not hold a snapshot across nodes any more than in process: what a
//! process receives from other nodes comes through one inbox, in arrival order, and a marker
//! there must not wait behind another channel's whole backlog. Once a visit of the inbox is cut
//! (its callbacks are slow), the rest is sorted by channel and the channels are visited in
//! turn, as in process (`tests/fairness.rs`). Nor may a slow process hold back what it sends
//! to other nodes: a node hands a process's frames to its links once per round of visits under
//! load, but at once after a visit whose callbacks were slow.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::Node;
use chandy_lamport::{Context, Process, ProcessId, Topology};
use common::PATIENCE;

/// The slow process's cost per message: far above the visit's time budget (100 us), so its
/// visits take one message once it is known to be slow.
const SLOW: Duration = Duration::from_millis(2);

/// Tokens process 0 keeps queued at the slow process: each comes back to 0 and goes straight
/// back, so they all wait at the slow one, on one channel, in its inbox or parked.
const TOKENS: u64 = 200;

/// Process 0 feeds process 1 (slow), which sends each token back; process 2 sends nothing but
/// markers. Process 1's state is how many messages it has handled.
struct Feeder {
    handled: u64,
    at_slow: Arc<AtomicU64>,
}

impl Process for Feeder {
    type Message = u64;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        if ctx.id() == 0 {
            for token in 0..TOKENS {
                ctx.send(1, token).unwrap();
            }
        }
    }

    fn on_message(&mut self, from: ProcessId, token: u64, ctx: &mut Context<'_, u64>) {
        if ctx.id() == 1 {
            thread::sleep(SLOW);
            self.handled += 1;
            self.at_slow.store(self.handled, Ordering::Relaxed);
        }
        ctx.send(if ctx.id() == 1 { from } else { 1 }, token)
            .unwrap();
    }

    fn record(&self) -> u64 {
        self.handled
    }
}

/// On a ring of 3, process 1 (alone on node 1) has channels in from 0 and from 2, both from
/// node 0, so both come through its inbox. The marker from 2 arrives behind up to `TOKENS`
/// tokens of 0->1; process 1 records its state when it takes that marker (it is its first:
/// the one on 0->1 is behind the tokens). So the state it records, less the messages it had
/// handled when the snapshot began, is how many callbacks the marker waited for. Delivered in
/// arrival order that would be about `TOKENS`; sorted by channel, a visit or two of 0->1 (one
/// message each), plus what ran while the marker crossed from node 0. Asserted loosely (a
/// tenth of `TOKENS`) for a loaded 2-core machine; every snapshot is also verified.
#[test]
fn a_marker_from_another_node_does_not_wait_behind_another_channels_backlog() {
    let topology = Topology::ring(3);
    let placement = [vec![0, 2], vec![1]];
    let at_slow = Arc::new(AtomicU64::new(0));
    let at_slow_for_nodes = at_slow.clone();
    let nodes = start(topology, &placement, move |_| Feeder {
        handled: 0,
        at_slow: at_slow_for_nodes.clone(),
    });
    // Past the first visits, which take several messages before the clock says they are slow.
    common::wait_until("the slow process has handled some tokens", || {
        at_slow.load(Ordering::Relaxed) > 20
    });
    let mut waits = Vec::new();
    for round in 0..5 {
        let before = at_slow.load(Ordering::Relaxed);
        let snapshot = nodes[0]
            .start_snapshot(2)
            .unwrap()
            .wait_timeout(*PATIENCE)
            .unwrap_or_else(|e| panic!("snapshot {round}: {e}"));
        snapshot.verify().unwrap();
        // Every token is on a channel or in a callback's hands: in flight, whatever the cut.
        assert_eq!(snapshot.in_flight().count() as u64, TOKENS);
        waits.push(snapshot.states[1] - before);
    }
    eprintln!("callbacks the marker from 2 waited for at 1: {waits:?}");
    for (round, &waited) in waits.iter().enumerate() {
        assert!(
            waited <= TOKENS / 10,
            "snapshot {round}: the marker on 2->1 waited for {waited} callbacks behind 0->1's \
             backlog of up to {TOKENS} (all waits: {waits:?})"
        );
    }
    stop(nodes);
}

/// Starts one node per entry of `placement` on 127.0.0.1, each running `make`'s processes.
fn start<P>(
    topology: Topology,
    placement: &[Vec<ProcessId>],
    make: impl Fn(ProcessId) -> P + Clone + Send + 'static,
) -> Vec<Node<P>>
where
    P: Process<State = u64, Message = u64>,
{
    common::start_nodes(&topology, placement, |b| b, move |_, p| make(p))
}

/// Stops the cluster from its first node; every node's stop must be clean and its final state
/// exact.
fn stop<P>(nodes: Vec<Node<P>>)
where
    P: Process<State = u64, Message = u64>,
{
    let stopping = thread::spawn({
        let mut nodes = nodes.into_iter();
        let first = nodes.next().unwrap();
        let rest: Vec<_> = nodes.collect();
        move || {
            let waiting: Vec<_> = rest
                .into_iter()
                .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE)))
                .collect();
            let mut results = vec![first.shutdown_with(Vec::new())];
            results.extend(waiting.into_iter().map(|w| w.join().unwrap()));
            results
        }
    });
    for stopped in stopping.join().unwrap() {
        let stopped = stopped.unwrap();
        assert!(stopped.failures.is_empty());
        stopped
            .final_state()
            .expect("every node reported")
            .verify()
            .unwrap();
    }
}

/// Each echo's callback at the slow process: well over the visit's time budget.
const ECHO_SLOW: Duration = Duration::from_millis(5);

/// Processes on node 0 that each send echoes to the slow process on node 1 (its last).
const SENDERS: usize = 8;

/// Echoes each sender sends at once.
const ECHOES_EACH: usize = 5;

/// When each echo left the slow process (its callback's send) and when it came back.
#[derive(Default)]
struct EchoTimes {
    sent: Vec<Option<Instant>>,
    back: Vec<Option<Instant>>,
}

/// Every sender sends `ECHOES_EACH` numbered messages to the slow process, on another node,
/// which takes `ECHO_SLOW` over each and sends it back to its sender.
struct Echo {
    times: Arc<Mutex<EchoTimes>>,
}

impl Process for Echo {
    type Message = u64;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        let me = ctx.id();
        if me < SENDERS {
            for k in 0..ECHOES_EACH {
                ctx.send(SENDERS, (me * ECHOES_EACH + k) as u64).unwrap();
            }
        }
    }

    fn on_message(&mut self, from: ProcessId, k: u64, ctx: &mut Context<'_, u64>) {
        if ctx.id() == SENDERS {
            thread::sleep(ECHO_SLOW);
            ctx.send(from, k).unwrap();
            self.times.lock().unwrap().sent[k as usize] = Some(Instant::now());
        } else {
            self.times.lock().unwrap().back[k as usize] = Some(Instant::now());
        }
    }

    fn record(&self) -> u64 {
        0
    }
}

/// A process whose callbacks are slow must not hold what it sends to another node behind its
/// later callbacks: once its visits read the clock, each visit's frames go when it ends. The
/// slow process here has a channel from each of 8 senders, all busy, so a round of its visits
/// is 8 of them (one callback each, once it knows it is slow). Held for the round, or for 8
/// envelopes, as fast visits' frames are, an echo would wait for up to 7 more callbacks of
/// 5 ms before it left. So past the first 16 echoes (the slow process's first visit reads
/// no clock for 8 callbacks), the median time from an echo's send to its arrival back must
/// be under one slow callback; held, it would be about 3.5 of them.
#[test]
fn a_slow_process_sends_to_other_nodes_after_each_slow_visit_not_later() {
    let echoes = SENDERS * ECHOES_EACH;
    let times = Arc::new(Mutex::new(EchoTimes {
        sent: vec![None; echoes],
        back: vec![None; echoes],
    }));
    let for_nodes = times.clone();
    let edges = (0..SENDERS).flat_map(|k| [(k, SENDERS), (SENDERS, k)]);
    let topology = Topology::from_edges(SENDERS + 1, edges);
    let placement = [(0..SENDERS).collect(), vec![SENDERS]];
    let nodes = start(topology, &placement, move |_| Echo {
        times: for_nodes.clone(),
    });
    common::wait_until("every echo is back", || {
        times.lock().unwrap().back.iter().all(Option::is_some)
    });
    stop(nodes);
    let times = times.lock().unwrap();
    let mut by_send: Vec<(Instant, Instant)> = (0..echoes)
        .map(|k| (times.sent[k].unwrap(), times.back[k].unwrap()))
        .collect();
    by_send.sort();
    let mut delays: Vec<Duration> = by_send[16..]
        .iter()
        // The echo is sent before its time is noted: it may be back first, by a hair.
        .map(|&(sent, back)| back.saturating_duration_since(sent))
        .collect();
    delays.sort();
    let median = delays[delays.len() / 2];
    eprintln!("echo delays from the slow process back to its senders: {delays:?}");
    assert!(
        median < ECHO_SLOW,
        "an echo took {median:?} (median) from the slow process's send to its arrival, more \
         than one of its {ECHO_SLOW:?} callbacks: its frames were held behind later callbacks \
         (all: {delays:?})"
    );
}
