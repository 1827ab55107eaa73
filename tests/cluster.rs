//! The cluster driver, with every node a thread of this test process, each with its own
//! listener on 127.0.0.1 (port 0: the system picks a free one). The same checks as in process:
//! every snapshot a consistent cut, money conserved, the final state after the stop exact.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use chandy_lamport::cluster::{
    ClusterConfig, ClusterError, Node, NodeBuilder, NodeConfig, NodeKeys, NodeProcess,
};
use chandy_lamport::{Context, Error, Process, ProcessId, SendError, SnapshotId, Topology};
use common::PATIENCE;
use serde::{Deserialize, Serialize};

/// A bank branch whose transfers cross nodes: keeps `in_flight` transfers moving to random
/// neighbours.
#[derive(Debug)]
struct Branch {
    balance: u64,
    in_flight: u64,
    rng: fastrand::Rng,
    delivered: Arc<AtomicU64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Transfer(u64);

impl Branch {
    fn new(id: ProcessId, seed: u64, delivered: Arc<AtomicU64>) -> Self {
        Branch {
            balance: 1000,
            in_flight: 3,
            rng: fastrand::Rng::with_seed(seed ^ (id as u64).wrapping_mul(0x9E37_79B9)),
            delivered,
        }
    }

    fn pay(&mut self, ctx: &mut Context<'_, Transfer>) {
        let amount = self.rng.u64(0..=self.balance);
        let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
        self.balance -= amount;
        if let Err(e) = ctx.send(to, Transfer(amount)) {
            self.balance += e.into_message().0;
        }
    }
}

impl Process for Branch {
    type Message = Transfer;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, Transfer>) {
        for _ in 0..self.in_flight {
            self.pay(ctx);
        }
    }

    fn on_message(&mut self, _: ProcessId, t: Transfer, ctx: &mut Context<'_, Transfer>) {
        self.balance += t.0;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.pay(ctx);
    }

    fn record(&self) -> u64 {
        self.balance
    }
}

/// Starts a cluster running `topology` with node `k` running `placement[k]`, every node a
/// thread here; `make(node, id)` builds each node's processes.
fn start<P: NodeProcess>(
    topology: &Topology,
    placement: &[Vec<ProcessId>],
    make: impl Fn(usize, ProcessId) -> P + Clone + Send + 'static,
) -> Vec<Node<P>> {
    start_with(topology, placement, |b| b, make)
}

/// `start`, with `tweak` applied to every node's builder.
fn start_with<P: NodeProcess>(
    topology: &Topology,
    placement: &[Vec<ProcessId>],
    tweak: fn(NodeBuilder<P>) -> NodeBuilder<P>,
    make: impl Fn(usize, ProcessId) -> P + Clone + Send + 'static,
) -> Vec<Node<P>> {
    common::start_nodes(topology, placement, tweak, make)
}

/// A listener on 127.0.0.1 (a port the system picks) and fresh keys for each node of
/// `placement`, and the cluster's configuration with those addresses.
fn listen(placement: &[Vec<ProcessId>]) -> (Vec<(TcpListener, NodeKeys)>, ClusterConfig) {
    let (config, listeners) = ClusterConfig::on_localhost(placement.iter().cloned()).unwrap();
    let keys = NodeKeys::generate(placement.len()).unwrap();
    (listeners.into_iter().zip(keys).collect(), config)
}

/// A bank over `placement`; takes snapshots from every node with initiators on every node,
/// checks each, stops the cluster from node `stopper`, and checks every node's final state.
fn bank_over(topology: Topology, placement: &[Vec<ProcessId>], stopper: usize) {
    let (seed, _guard) = common::seed("cluster bank");
    let n = topology.processes();
    let delivered = Arc::new(AtomicU64::new(0));
    let nodes = {
        let delivered = delivered.clone();
        start(&topology, placement, move |_, p| {
            Branch::new(p, seed, delivered.clone())
        })
    };
    common::wait_until("transfers cross the cluster", || {
        delivered.load(Ordering::Relaxed) > 200
    });
    let total = 1000 * n as u64;
    for (k, node) in nodes.iter().enumerate() {
        let tickets: Vec<_> = (0..n).map(|p| node.start_snapshot(p).unwrap()).collect();
        for ticket in tickets {
            let snapshot = ticket
                .wait_timeout(*PATIENCE)
                .unwrap_or_else(|e| panic!("node {k}, initiator {}: {e}", ticket.initiator()));
            snapshot.verify().unwrap();
            assert_eq!(snapshot.total(|b| *b, |t| t.0), total);
            assert_eq!(snapshot.initiator, ticket.initiator());
            // Every transfer is in a branch's hands only inside a callback: all are in flight.
            assert_eq!(snapshot.in_flight().count() as u64, 3 * n as u64);
            assert!(snapshot.completed_at >= snapshot.started_at);
        }
    }
    // Nothing is left behind once every snapshot has ended.
    for node in &nodes {
        common::wait_until("no snapshot state left on a node", || {
            node.stats().is_idle()
        });
    }
    let mut nodes: Vec<Option<Node<Branch>>> = nodes.into_iter().map(Some).collect();
    let stopping = nodes[stopper].take().unwrap();
    let waiting: Vec<_> = nodes
        .into_iter()
        .flatten()
        .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE)))
        .collect();
    let mut results = vec![stopping.shutdown_with(b"all good".to_vec()).unwrap()];
    results.extend(waiting.into_iter().map(|w| w.join().unwrap().unwrap()));
    for stopped in &results {
        assert_eq!(stopped.note, b"all good");
        assert!(stopped.failures.is_empty());
        let last = stopped.final_state().expect("every node reported");
        last.verify().unwrap();
        assert_eq!(last.total(|b| *b, |t| t.0), total);
        // The final state's balances are the processes handed back, node by node.
        for (p, process) in stopped.local.processes.iter().enumerate() {
            if let Some(branch) = process {
                assert_eq!(last.states[p], branch.balance);
            }
        }
    }
}

#[test]
fn a_bank_on_three_nodes_snapshots_exactly_from_every_node() {
    bank_over(
        Topology::complete(6),
        &[vec![0, 3], vec![1, 4], vec![2, 5]],
        1,
    );
}

/// Every process's record time is on the clock of the node that delivers the snapshot, whatever
/// its own node's clock says: with nodes started 300 ms apart (each node counts its times from
/// its own start), snapshots started on every process and asked for on every node each have
/// every state recorded between their start and their end there. Sent as it was on the
/// sender's clock, a remote part's time was off by as much as the two nodes' starts were apart.
#[test]
fn record_times_are_on_the_clock_of_the_node_that_delivers_the_snapshot() {
    let (seed, _guard) = common::seed("record times");
    let topology = Topology::complete(6);
    let placement = [vec![0, 1], vec![2, 3], vec![4, 5]];
    let delivered = Arc::new(AtomicU64::new(0));
    let nodes = {
        let delivered = delivered.clone();
        let make = move |_, p| Branch::new(p, seed, delivered.clone());
        common::start_nodes_apart(
            &topology,
            &placement,
            |b| b,
            make,
            Duration::from_millis(300),
        )
    };
    common::wait_until("transfers cross the cluster", || {
        delivered.load(Ordering::Relaxed) > 200
    });
    for (k, node) in nodes.iter().enumerate() {
        for initiator in 0..topology.processes() {
            let snapshot = node.snapshot_timeout(initiator, *PATIENCE).unwrap();
            snapshot.verify().unwrap();
            assert_eq!(snapshot.recorded_at.len(), topology.processes());
            let cost = snapshot.cost();
            for (p, &at) in snapshot.recorded_at.iter().enumerate() {
                assert!(
                    snapshot.started_at <= at && at <= snapshot.completed_at,
                    "asked on node {k}, initiator {initiator}: process {p} recorded at {at:?}, \
                     outside the snapshot's {:?} to {:?}",
                    snapshot.started_at,
                    snapshot.completed_at
                );
                assert!(cost.recorded_after[p] <= cost.latency);
            }
        }
    }
    let mut nodes = nodes.into_iter();
    let first = nodes.next().unwrap();
    let waiting: Vec<_> = nodes
        .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE)))
        .collect();
    first.shutdown().unwrap();
    for w in waiting {
        w.join().unwrap().unwrap();
    }
}

#[test]
fn a_process_alone_on_its_node_and_a_node_without_an_internal_channel() {
    // Ring of 5: node 0 runs 0 and 2, which share no channel; node 2 runs 4 alone.
    bank_over(Topology::ring(5), &[vec![0, 2], vec![1, 3], vec![4]], 0);
}

#[test]
fn a_node_of_more_processes_than_a_doorbell_word_holds() {
    // 67 processes on node 0: its links' doorbells take two words (63 bits each), the case
    // where the link's writer must not let `Finished` pass a process's last frames.
    let big: Vec<ProcessId> = (0..67).collect();
    bank_over(Topology::ring(70), &[big, vec![67, 68, 69]], 1);
}

#[test]
fn one_node_runs_everything() {
    bank_over(Topology::star(4), &[vec![0, 1, 2, 3]], 0);
}

#[test]
fn two_nodes_on_a_one_way_ring() {
    let ring = Topology::from_edges(4, [(0, 1), (1, 2), (2, 3), (3, 0)]);
    bank_over(ring, &[vec![0, 2], vec![1, 3]], 1);
}

/// A process that starts a snapshot from its own code when told to, and says which.
struct Starter {
    started: crossbeam_channel::Sender<(SnapshotId, ProcessId)>,
}

impl Process for Starter {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, m: u64, ctx: &mut Context<'_, u64>) {
        if m == 1 {
            let id = ctx.start_snapshot();
            self.started.send((id, ctx.id())).unwrap();
        }
    }
    fn record(&self) -> u64 {
        7
    }
}

#[test]
fn a_snapshot_started_by_process_code_on_one_node_is_awaited_on_another() {
    let (started_tx, started) = crossbeam_channel::unbounded();
    let nodes = start(
        &Topology::complete(3),
        &[vec![0], vec![1, 2]],
        move |_, _| Starter {
            started: started_tx.clone(),
        },
    );
    // Process 2 (node 1) is held inside a callback, so the snapshot cannot complete before
    // node 1 has asked to watch it.
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let hold = nodes[1].with_process_timeout(2, Duration::from_millis(1), move |_, _| {
        entered_tx.send(()).unwrap();
        let _ = held.recv_timeout(*PATIENCE);
    });
    assert_eq!(hold.unwrap_err(), Error::Timeout);
    entered.recv_timeout(*PATIENCE).unwrap();
    // Node 0's process 0 is told (by process 1, on node 1) to start one; node 1 waits for it.
    let subscribed = nodes[0].subscribe();
    nodes[1]
        .with_process(1, |_, ctx| ctx.send(0, 1).unwrap())
        .unwrap();
    let (id, initiator) = started.recv_timeout(*PATIENCE).unwrap();
    assert_eq!(initiator, 0);
    // No wait for node 0 to begin it: the id is registered there before it leaves the
    // callback, so a watch sent at once from another node finds it.
    let ticket = nodes[1].watch_snapshot(id, initiator).unwrap();
    assert!(
        ticket.try_get().is_none(),
        "process 2 is held: it cannot be complete"
    );
    // Process 2's part goes to node 0 on the same link as the watch, after it (FIFO).
    drop(release);
    let snapshot = ticket.wait_timeout(*PATIENCE).unwrap();
    assert_eq!(snapshot.id, id);
    assert_eq!(snapshot.states, [7, 7, 7]);
    snapshot.verify().unwrap();
    // The initiator's node's subscribers saw it too.
    let event = subscribed.recv_timeout(*PATIENCE).unwrap();
    assert_eq!(event.id, id);
    // A snapshot nobody runs is unknown, whichever node is asked.
    let unknown = SnapshotId::random();
    assert_eq!(
        nodes[1]
            .watch_snapshot(unknown, 0)
            .unwrap()
            .wait_timeout(*PATIENCE),
        Err(Error::UnknownSnapshot(unknown))
    );
    nodes[0].clone().shutdown().unwrap();
    for node in &nodes[1..] {
        node.wait_stopped(*PATIENCE).unwrap();
    }
}

/// A message that serde cannot encode, to a process on another node, is the sender's error.
#[derive(Clone, Debug)]
struct Stubborn;

impl Serialize for Stubborn {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this message refuses to be encoded",
        ))
    }
}

impl<'de> Deserialize<'de> for Stubborn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|()| Stubborn)
    }
}

struct Sender;

impl Process for Sender {
    type Message = Stubborn;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: Stubborn, _: &mut Context<'_, Stubborn>) {}
    fn record(&self) {}
}

#[test]
fn a_message_that_cannot_be_encoded_is_the_senders_error() {
    let nodes = start(&Topology::complete(3), &[vec![0, 1], vec![2]], |_, _| {
        Sender
    });
    let (local, remote) = nodes[0]
        .with_process(0, |_, ctx| (ctx.send(1, Stubborn), ctx.send(2, Stubborn)))
        .unwrap();
    // To a process on the same node nothing is encoded: it goes.
    assert!(local.is_ok());
    match remote {
        Err(SendError::Unencodable {
            from: 0,
            to: 2,
            reason,
            ..
        }) => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
    nodes[0].clone().shutdown().unwrap();
}

#[test]
fn handles_refuse_what_they_cannot_do_with_typed_errors() {
    let nodes = start(&Topology::ring(3), &[vec![0], vec![1, 2]], |_, _| Sender);
    assert_eq!(
        nodes[0].with_process(1, |_, _| ()).unwrap_err(),
        Error::Cluster("process 1 runs on node 1, not on this node (0)".into())
    );
    assert_eq!(
        nodes[0].start_snapshot(3).unwrap_err(),
        Error::NoSuchProcess {
            process: 3,
            processes: 3
        }
    );
    assert!(matches!(
        nodes[1].wait_stopped(Duration::from_millis(10)),
        Err(ClusterError::WaitTimeout)
    ));
    nodes[1].clone().shutdown().unwrap();
    nodes[0].wait_stopped(*PATIENCE).unwrap();
    // Only one caller gets a node's result.
    assert!(matches!(
        nodes[0].wait_stopped(*PATIENCE),
        Err(ClusterError::Stopped)
    ));
}

/// Two nodes that would run different topologies refuse each other, saying what differs.
#[test]
fn nodes_that_disagree_are_refused_saying_what_differs() {
    let (config, listeners) = ClusterConfig::on_localhost([[0, 2], [1, 3]]).unwrap();
    let topologies = [Topology::complete(4), Topology::ring(4)];
    let keys = NodeKeys::generate(2).unwrap();
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(topologies)
        .zip(keys)
        .enumerate()
        .map(|(k, ((listener, topology), keys))| {
            let config = config.clone();
            thread::spawn(move || {
                Node::builder(topology, config, k)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(Duration::from_secs(5))
                    .build(|_| Sender)
                    .map(drop)
            })
        })
        .collect();
    for (k, build) in builds.into_iter().enumerate() {
        match build.join().unwrap() {
            Err(ClusterError::Mismatch { node, message }) => {
                assert_eq!(node, 1 - k);
                // Whoever refused whom, the words pair each node with its own topology (12
                // channels for node 0's complete graph, 8 for node 1's ring): the refused
                // node prints the refuser's message, so "ours" and "theirs" would read wrong.
                assert!(
                    message.contains("12 channels on node 0, 8 on node 1")
                        || message.contains("8 channels on node 1, 12 on node 0"),
                    "{message}"
                );
            }
            other => panic!("node {k}: {other:?}"),
        }
    }
}

/// A node that never starts is named once the deadline has passed.
#[test]
fn a_node_that_never_answers_is_named_after_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // A node that is stuck: its port is bound (so no other test can take it, as could happen
    // to a port let go) and the kernel accepts connections, but nothing ever answers.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = stuck.local_addr().unwrap().to_string();
    let config = ClusterConfig::new(vec![
        NodeConfig::new(listener.local_addr().unwrap().to_string(), [0]),
        NodeConfig::new(nowhere, [1]),
    ]);
    let began = std::time::Instant::now();
    let e = Node::builder(Topology::complete(2), config, 0)
        .listener(listener)
        .keys(NodeKeys::generate(2).unwrap().remove(0))
        .connect_timeout(Duration::from_millis(500))
        .build(|_| Sender)
        .unwrap_err();
    match &e {
        ClusterError::Unreachable { nodes, detail, .. } => {
            assert_eq!(nodes, &[1]);
            assert!(detail.contains("node 1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("node 1 never answered"), "{e}");
    assert!(began.elapsed() < *PATIENCE);
    drop(stuck);
}

/// A node index the file does not have, and an address that cannot be bound, are typed
/// errors, not panics.
#[test]
fn a_missing_node_and_an_address_in_use_are_typed_errors() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = held.local_addr().unwrap().to_string();
    let config = ClusterConfig::new(vec![
        NodeConfig::new(in_use.clone(), [0]),
        NodeConfig::new("127.0.0.1:1", [1]),
    ]);
    assert_eq!(
        Node::builder(Topology::complete(2), config.clone(), 5)
            .build(|_| Sender)
            .unwrap_err(),
        ClusterError::NoSuchNode { node: 5, nodes: 2 }
    );
    // Without keys, nothing starts.
    assert_eq!(
        Node::builder(Topology::complete(2), config.clone(), 0)
            .build(|_| Sender)
            .unwrap_err(),
        ClusterError::NoKeys
    );
    match Node::builder(Topology::complete(2), config, 0)
        .keys(NodeKeys::generate(2).unwrap().remove(0))
        .build(|_| Sender)
    {
        Err(ClusterError::Bind {
            node: 0, address, ..
        }) => assert_eq!(address, in_use),
        other => panic!("{other:?}"),
    }
}

/// A cluster restarts from a snapshot taken across its nodes: every node restores its own
/// processes and the channels into them, later snapshots verify exactly and keep the money;
/// nodes that would restore from different snapshots refuse each other.
#[test]
fn a_cluster_restarts_from_a_snapshot_and_refuses_two_different_ones() {
    let topology = Topology::complete(5);
    let placement = [vec![0, 3], vec![1, 4], vec![2]];
    let delivered = Arc::new(AtomicU64::new(0));
    let nodes = {
        let delivered = delivered.clone();
        start(&topology, &placement, move |_, p| {
            Branch::new(p, 11, delivered.clone())
        })
    };
    common::wait_until("transfers cross the cluster", || {
        delivered.load(Ordering::Relaxed) > 100
    });
    let first = nodes[2].snapshot_timeout(4, *PATIENCE).unwrap();
    common::wait_until("more transfers", || delivered.load(Ordering::Relaxed) > 300);
    let second = nodes[0].snapshot_timeout(1, *PATIENCE).unwrap();
    assert_ne!(first.states, second.states);
    nodes[0].clone().shutdown().unwrap();
    for node in &nodes[1..] {
        node.wait_stopped(*PATIENCE).unwrap();
    }
    drop(nodes);

    // Every node restores from `first`: a cluster that goes on where the cut left it.
    let saved = Arc::new((*first).clone());
    let restored = restore(
        &topology,
        &placement,
        &[saved.clone(), saved.clone(), saved.clone()],
    )
    .into_iter()
    .map(Result::unwrap)
    .collect::<Vec<_>>();
    for initiator in 0..5 {
        let snapshot = restored[initiator % 3]
            .snapshot_timeout(initiator, *PATIENCE)
            .unwrap();
        snapshot.verify().unwrap();
        assert_eq!(snapshot.total(|b| *b, |t| t.0), 5000);
        // The channels' counters went on from the checkpoint's.
        for (after, before) in snapshot.channels.iter().zip(&first.channels) {
            assert!(after.sent >= before.sent && after.received >= before.received);
        }
    }
    restored[1].clone().shutdown().unwrap();

    // Node 2 would restore from another snapshot: refused, saying so.
    let results = restore(
        &topology,
        &placement,
        &[saved.clone(), saved, Arc::new((*second).clone())],
    );
    let mut refusals = 0;
    for result in results {
        match result {
            Err(ClusterError::Mismatch { message, .. }) => {
                assert!(message.contains("checkpoint"), "{message}");
                refusals += 1;
            }
            Err(ClusterError::Unreachable { .. } | ClusterError::NotReady { .. }) => {}
            Ok(_) => panic!("a node started from a different checkpoint than its peers"),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(refusals >= 1);
}

/// A checkpoint of processes 0 and 1 in `states`, with nothing in flight: channel 0 -> 1 has
/// carried `sent[0]` messages and 1 -> 0 `sent[1]`, every one received.
fn quiet_checkpoint<S>(states: Vec<S>, sent: [u64; 2]) -> chandy_lamport::GlobalSnapshot<u64, S> {
    use chandy_lamport::{Channel, ChannelSnapshot};
    let channel = |from, to, sent| ChannelSnapshot::<u64> {
        channel: Channel::new(from, to),
        sent,
        received: sent,
        messages: vec![],
    };
    chandy_lamport::GlobalSnapshot {
        id: SnapshotId::random(),
        initiator: 0,
        started_at: Duration::ZERO,
        completed_at: Duration::ZERO,
        recorded_at: vec![Duration::ZERO; 2],
        states,
        channels: vec![channel(0, 1, sent[0]), channel(1, 0, sent[1])],
    }
}

/// A process whose state is a hash map: encoded, its entries come in each process's own order.
struct Ledger(std::collections::HashMap<u64, u64>);

impl Process for Ledger {
    type Message = u64;
    type State = std::collections::HashMap<u64, u64>;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) -> Self::State {
        self.0.clone()
    }
}

/// Nodes restoring from one checkpoint file agree that it is the same checkpoint, whatever the
/// states hold. Before, the check encoded each node's decoded copy again, and a hash map in a
/// state encodes in each process's own order: every node had its own fingerprint, and the
/// cluster refused itself.
#[test]
fn nodes_restoring_one_checkpoint_file_of_hash_maps_agree() {
    use chandy_lamport::GlobalSnapshot;
    let map: std::collections::HashMap<u64, u64> = (0..64).map(|k| (k, k * 10)).collect();
    let snapshot = quiet_checkpoint(vec![map.clone(), map], [0, 0]);
    let dir = std::env::temp_dir().join(format!("cl-hashmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("checkpoint.json");
    chandy_lamport::checkpoint::save(&file, &snapshot).unwrap();
    let (listeners, config) = listen(&[vec![0], vec![1]]);
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, (listener, keys))| {
            let (config, file) = (config.clone(), file.clone());
            thread::spawn(move || {
                // Each node reads the file itself, as on its own machine.
                let from: GlobalSnapshot<u64, std::collections::HashMap<u64, u64>> =
                    chandy_lamport::checkpoint::load(&file).unwrap();
                Node::builder(Topology::complete(2), config, k)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE)
                    .restore(&from, |_, state: &std::collections::HashMap<u64, u64>| {
                        Ledger(state.clone())
                    })
            })
        })
        .collect();
    let nodes: Vec<_> = builds
        .into_iter()
        .map(|b| {
            b.join()
                .unwrap()
                .expect("every node restores from one file")
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let again = nodes[1].snapshot_timeout(0, *PATIENCE).unwrap();
    again.verify().unwrap();
    assert_eq!(again.states[1].len(), 64);
}

type Saved = Arc<chandy_lamport::GlobalSnapshot<Transfer, u64>>;

/// Starts a cluster like `start`, each node restoring from its own snapshot of `from`.
fn restore(
    topology: &Topology,
    placement: &[Vec<ProcessId>],
    from: &[Saved],
) -> Vec<Result<Node<Branch>, ClusterError>> {
    let (listeners, config) = listen(placement);
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(from.iter().cloned())
        .enumerate()
        .map(|(k, ((listener, keys), snapshot))| {
            let (topology, config) = (topology.clone(), config.clone());
            thread::spawn(move || {
                let delivered = Arc::new(AtomicU64::new(0));
                Node::builder(topology, config, k)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(Duration::from_secs(5))
                    .stop_timeout(*PATIENCE)
                    .restore(&snapshot, |p, balance| Branch {
                        balance: *balance,
                        in_flight: 0,
                        ..Branch::new(p, 12, delivered.clone())
                    })
            })
        })
        .collect();
    builds.into_iter().map(|b| b.join().unwrap()).collect()
}

/// Keeps a large state and sends large messages: with a frame limit of 256 bytes, every part,
/// every message to another node and the final report go in pieces.
struct Hoarder {
    data: Vec<u8>,
    got: Arc<AtomicU64>,
}

impl Process for Hoarder {
    type Message = Vec<u8>;
    type State = Vec<u8>;
    fn on_message(&mut self, _: ProcessId, m: Vec<u8>, _: &mut Context<'_, Vec<u8>>) {
        assert!(m.iter().all(|&b| b == 3), "a message came back changed");
        self.got.fetch_add(m.len() as u64, Ordering::Relaxed);
    }
    fn record(&self) -> Vec<u8> {
        self.data.clone()
    }
}

/// Honest traffic never trips the frame limit: what is longer goes in pieces under it.
#[test]
fn parts_messages_and_reports_longer_than_the_frame_limit_go_in_pieces() {
    let got = Arc::new(AtomicU64::new(0));
    let nodes = start_with(
        &Topology::complete(4),
        &[vec![0, 1], vec![2, 3]],
        |b| b.max_frame(256),
        {
            let got = got.clone();
            move |_, p| Hoarder {
                data: vec![p as u8; 20_000],
                got: got.clone(),
            }
        },
    );
    nodes[0]
        .with_process(0, |_, ctx| ctx.send(2, vec![3; 10_000]).unwrap())
        .unwrap();
    common::wait_until("the long message arrives", || {
        got.load(Ordering::Relaxed) == 10_000
    });
    for initiator in 0..4 {
        let snapshot = nodes[1].snapshot_timeout(initiator, *PATIENCE).unwrap();
        snapshot.verify().unwrap();
        for p in 0..4 {
            assert_eq!(snapshot.states[p], vec![p as u8; 20_000]);
        }
    }
    let stopping = thread::spawn({
        let one = nodes[1].clone();
        move || one.wait_stopped(*PATIENCE)
    });
    let stopped = nodes[0].clone().shutdown().unwrap();
    let final_state = stopped.final_state().expect("both nodes reported");
    assert_eq!(final_state.states[3], vec![3u8; 20_000]);
    stopping.join().unwrap().unwrap();
}

/// Records a state over the cluster's whole-frame limit while `big` is set (process 1 only).
struct Big {
    big: Arc<std::sync::atomic::AtomicBool>,
    me: ProcessId,
}

impl Process for Big {
    type Message = u8;
    type State = Vec<u8>;
    fn on_message(&mut self, _: ProcessId, _: u8, _: &mut Context<'_, u8>) {}
    fn record(&self) -> Vec<u8> {
        if self.me == 1 && self.big.load(Ordering::Relaxed) {
            vec![7; 10_000]
        } else {
            vec![1; 8]
        }
    }
}

/// A part that cannot be sent (over the whole-frame limit) fails its snapshot, and only it:
/// the part's node says so, the initiator's node fails the snapshot at once, and the markers
/// and parts of it still on their way are dropped there. Before, a late part made a process of
/// the initiator's node panic ("no snapshot ... is being collected"), or a late marker got the
/// honest node that sent it failed; and a node that relays parts (node 2) held the snapshot for
/// good if the initiator's node stopped sending its markers.
#[test]
fn a_part_that_cannot_be_sent_fails_its_snapshot_and_nothing_else() {
    let big = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let nodes = start_with(
        &Topology::complete(3),
        &[vec![0], vec![1], vec![2]],
        |b| {
            b.max_frame_total(4096)
                .failure_timeout(Duration::from_millis(400))
        },
        {
            let big = big.clone();
            move |_, me| Big {
                big: big.clone(),
                me,
            }
        },
    );
    for _ in 0..5 {
        let outcome = nodes[0].snapshot_timeout(0, *PATIENCE);
        match outcome {
            Err(Error::Cluster(message)) => {
                assert!(message.contains("part of process 1"), "{message}");
            }
            other => panic!("the snapshot fails, saying which part: {other:?}"),
        }
    }
    // Long enough for a wrong decision (failure timeout 400 ms) to have been made.
    thread::sleep(Duration::from_millis(1500));
    big.store(false, Ordering::Relaxed);
    for (k, node) in nodes.iter().enumerate() {
        assert_eq!(node.failures(), [], "node {k}: no process failed");
        assert_eq!(node.failed_nodes(), Vec::<usize>::new(), "node {k}");
        common::wait_until("every node lets go of the failed snapshots", || {
            node.stats().is_idle()
        });
    }
    nodes[0]
        .snapshot_timeout(0, *PATIENCE)
        .unwrap()
        .verify()
        .unwrap();
}

/// Waits at its first message until the test opens its gate: a snapshot started meanwhile
/// stays in flight.
struct Gated(crossbeam_channel::Receiver<()>);

impl Process for Gated {
    type Message = u8;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: u8, _: &mut Context<'_, u8>) {
        let _ = self.0.recv_timeout(*PATIENCE);
    }
    fn record(&self) {}
}

/// The in-flight limit counts the snapshots started from a node, whoever watches them. Before,
/// another node watching one of node 0's snapshots took it out of node 0's count (so node 0
/// could start one more than its limit), and counted it against the watcher, which had started
/// none.
#[test]
fn a_watch_from_another_node_moves_no_snapshot_between_limits() {
    let (open, gate) = crossbeam_channel::unbounded();
    let nodes = start_with(
        &Topology::complete(2),
        &[vec![0], vec![1]],
        |b| b.max_snapshots_in_flight(1),
        move |_, _| Gated(gate.clone()),
    );
    // Process 1 waits at the gate: a snapshot started now cannot end until it opens.
    nodes[0]
        .with_process(0, |_, ctx| ctx.send(1, 0).unwrap())
        .unwrap();
    let first = nodes[0].start_snapshot(0).unwrap();
    assert!(matches!(
        nodes[0].start_snapshot(0),
        Err(Error::TooManySnapshots { limit: 1 })
    ));
    let watched = nodes[1].watch_snapshot(first.id(), 0).unwrap();
    // A second watch of it from the same node: node 0 sends the outcome there once, for both.
    let again = nodes[1].watch_snapshot(first.id(), 0).unwrap();
    common::wait_until("node 0 hears of the watch", || {
        nodes[0].stats().assembling_for_others == 1
    });
    let second = nodes[0].start_snapshot(0);
    assert!(
        matches!(second, Err(Error::TooManySnapshots { limit: 1 })),
        "node 0 is at its limit whoever watches: {second:?}"
    );
    let own = nodes[1].start_snapshot(1);
    assert!(own.is_ok(), "node 1 started none, yet: {own:?}");
    for _ in 0..4 {
        open.send(()).unwrap();
    }
    for pending in [first, watched, again, own.unwrap()] {
        pending.wait_timeout(*PATIENCE).unwrap().verify().unwrap();
    }
}

/// A parcel: a unique id. Every parcel exists once, held by a courier or on a channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Parcel(u64);

/// Holds some parcels, passes others on at random; its state is the ids it holds.
struct Courier {
    held: Vec<u64>,
    rng: fastrand::Rng,
    fresh: bool,
    handled: Arc<AtomicU64>,
}

impl Process for Courier {
    type Message = Parcel;
    type State = Vec<u64>;
    fn on_start(&mut self, ctx: &mut Context<'_, Parcel>) {
        if self.fresh {
            while self.held.len() > 1 {
                self.pass_one(ctx);
            }
        }
    }
    fn on_message(&mut self, _: ProcessId, parcel: Parcel, ctx: &mut Context<'_, Parcel>) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.held.push(parcel.0);
        self.pass_one(ctx);
    }
    fn record(&self) -> Vec<u64> {
        self.held.clone()
    }
}

impl Courier {
    fn pass_one(&mut self, ctx: &mut Context<'_, Parcel>) {
        let k = self.rng.usize(..self.held.len());
        let id = self.held.swap_remove(k);
        let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
        if let Err(e) = ctx.send(to, Parcel(id)) {
            self.held.push(e.into_message().0);
        }
    }
}

/// Every id of `0..ids` once in `snapshot`, held or in flight: none lost, none twice.
fn each_parcel_once(snapshot: &chandy_lamport::GlobalSnapshot<Parcel, Vec<u64>>, ids: u64) {
    snapshot.verify().unwrap();
    let mut all: Vec<u64> = snapshot.states.iter().flatten().copied().collect();
    all.extend(snapshot.in_flight().map(|(_, p)| p.0));
    all.sort_unstable();
    assert_eq!(all, (0..ids).collect::<Vec<_>>(), "each parcel once");
}

/// After a restart from a checkpoint (saved to a file and read back on every node), every
/// message the checkpoint recorded in flight is delivered once: no parcel lost, none twice,
/// in every snapshot after the restart and in the final state.
#[test]
fn after_a_restart_each_message_recorded_in_flight_arrives_exactly_once() {
    const PER: u64 = 5;
    let topology = Topology::complete(6);
    let placement = [vec![0, 3], vec![1, 4], vec![2, 5]];
    let ids = PER * 6;
    let handled = Arc::new(AtomicU64::new(0));
    let courier = {
        let handled = handled.clone();
        move |held: Vec<u64>, p: ProcessId, fresh: bool| Courier {
            held,
            rng: fastrand::Rng::with_seed(p as u64 + if fresh { 0 } else { 99 }),
            fresh,
            handled: handled.clone(),
        }
    };
    let nodes = {
        let courier = courier.clone();
        start(&topology, &placement, move |_, p| {
            let p64 = p as u64;
            courier((p64 * PER..(p64 + 1) * PER).collect(), p, true)
        })
    };
    common::wait_until("parcels cross the cluster", || {
        handled.load(Ordering::Relaxed) > 1000
    });
    // A snapshot with parcels in flight on channels between nodes.
    let saved = loop {
        let snapshot = nodes[1].snapshot_timeout(4, *PATIENCE).unwrap();
        each_parcel_once(&snapshot, ids);
        if snapshot.in_flight().count() >= 3 {
            break snapshot;
        }
    };
    let dir = std::env::temp_dir().join(format!("parcels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("checkpoint.json");
    chandy_lamport::checkpoint::save(&file, &*saved).unwrap();
    nodes[0].clone().shutdown().unwrap();
    for node in &nodes[1..] {
        node.wait_stopped(*PATIENCE).unwrap();
    }
    drop(nodes);

    let (listeners, config) = listen(&placement);
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, (listener, keys))| {
            let (topology, config, file) = (topology.clone(), config.clone(), file.clone());
            let courier = courier.clone();
            thread::spawn(move || {
                let from = chandy_lamport::checkpoint::load(&file).unwrap();
                Node::builder(topology, config, k)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE)
                    .restore(&from, |p, held: &Vec<u64>| courier(held.clone(), p, false))
            })
        })
        .collect();
    let restored: Vec<_> = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    let before = handled.load(Ordering::Relaxed);
    common::wait_until("parcels move again", || {
        handled.load(Ordering::Relaxed) > before + 1000
    });
    for initiator in 0..6 {
        let snapshot = restored[initiator % 3]
            .snapshot_timeout(initiator, *PATIENCE)
            .unwrap();
        each_parcel_once(&snapshot, ids);
    }
    let others: Vec<_> = restored[1..]
        .iter()
        .map(|n| {
            let n = n.clone();
            thread::spawn(move || n.wait_stopped(*PATIENCE))
        })
        .collect();
    let stopped = restored[0].clone().shutdown().unwrap();
    each_parcel_once(stopped.final_state().unwrap(), ids);
    for other in others {
        other.join().unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts what it is sent.
struct Tally(Arc<AtomicU64>);

impl Process for Tally {
    type Message = u64;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn record(&self) {}
}

/// Batching, counted at the socket: a burst of 10,000 messages to another node takes at most
/// 100 `write` calls, and a lone message goes at once, in one.
#[test]
fn a_burst_goes_in_few_writes_and_a_lone_message_in_one() {
    let got = Arc::new(AtomicU64::new(0));
    let nodes = {
        let got = got.clone();
        start(&Topology::complete(2), &[vec![0], vec![1]], move |_, _| {
            Tally(got.clone())
        })
    };
    let link = || nodes[0].stats().links[0].clone();
    let before = link();
    nodes[0]
        .with_process(0, |_, ctx| {
            for i in 0..10_000 {
                ctx.send(1, i).unwrap();
            }
        })
        .unwrap();
    common::wait_until("the burst arrives", || {
        got.load(Ordering::Relaxed) == 10_000
    });
    let after = link();
    let writes = after.writes - before.writes;
    eprintln!(
        "10,000 messages: {writes} writes, {} bytes",
        after.bytes - before.bytes
    );
    assert!((1..=100).contains(&writes), "{writes} writes");
    assert!(
        after.bytes - before.bytes >= 10_000,
        "every message is bytes on the wire"
    );
    let before = link();
    nodes[0]
        .with_process(0, |_, ctx| ctx.send(1, 7).unwrap())
        .unwrap();
    common::wait_until("the lone message arrives", || {
        got.load(Ordering::Relaxed) == 10_001
    });
    // One write; a heartbeat may fall in between (every fifth of the failure timeout, 3 s).
    let writes = link().writes - before.writes;
    assert!((1..=2).contains(&writes), "{writes} writes");
    nodes[0].clone().shutdown().unwrap();
}

/// A snapshot's markers to another node go as one frame per process and node, not one per
/// channel: 32 processes on each of two nodes of complete(64) put a marker on 1,024 channels
/// from node 0 to node 1, at least 16 bytes each (the snapshot's id) if framed one by one;
/// in runs, 32 frames. With the processes placed in blocks, and dealt out in turn (so that a
/// process's channels to the other node are not numbered one after another). Idle, so that
/// nothing else crosses but heartbeats.
#[test]
fn a_snapshots_markers_to_a_node_go_in_one_frame_per_process() {
    let blocks: Vec<Vec<ProcessId>> = vec![(0..32).collect(), (32..64).collect()];
    let dealt: Vec<Vec<ProcessId>> = (0..2).map(|k| (k..64).step_by(2).collect()).collect();
    for placement in [blocks, dealt] {
        let got = Arc::new(AtomicU64::new(0));
        let nodes = start(&Topology::complete(64), &placement, move |_, _| {
            Tally(got.clone())
        });
        let link = || nodes[0].stats().links[0].clone();
        let before = link();
        nodes[0]
            .snapshot_timeout(placement[0][0], Duration::from_secs(30))
            .unwrap()
            .verify()
            .unwrap();
        let bytes = link().bytes - before.bytes;
        eprintln!("1,024 markers from node 0 to node 1: {bytes} bytes");
        assert!(
            bytes < 4096,
            "{bytes} bytes for 1,024 markers, {placement:?}"
        );
        // Each run is still taken as a marker on every one of its channels.
        nodes[1]
            .snapshot_timeout(placement[1][7], Duration::from_secs(30))
            .unwrap()
            .verify()
            .unwrap();
        nodes[0].clone().shutdown().unwrap();
    }
}

/// Durations too long to add to the clock (`Duration::MAX`) mean "as long as it takes" on a
/// cluster too. Before, such a connect timeout panicked in start-up, such a stop timeout
/// aborted the process in the stop, such a failure timeout panicked in the link writers, such a
/// tick interval failed every process, and `wait_stopped(MAX)` panicked.
#[test]
fn huge_durations_wait_as_long_as_it_takes() {
    let nodes = start_with(
        &Topology::ring(3),
        &[vec![0], vec![1, 2]],
        |b| {
            b.connect_timeout(Duration::MAX)
                .stop_timeout(Duration::MAX)
                .failure_timeout(Duration::MAX)
                .tick_interval(Duration::MAX)
        },
        |_, _| Sender,
    );
    nodes[0]
        .snapshot_timeout(1, Duration::MAX)
        .unwrap()
        .verify()
        .unwrap();
    assert!(nodes[1].failures().is_empty());
    let stopped = nodes[1].clone().shutdown().unwrap();
    assert!(stopped.final_state().is_some());
    nodes[0].wait_stopped(Duration::MAX).unwrap();
}

/// A process whose `record` takes 3 s once told to: the node's final report, made in the
/// stop, waits for it.
struct SlowRecord {
    slow: Arc<std::sync::atomic::AtomicBool>,
}

impl Process for SlowRecord {
    type Message = u64;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) {
        if self.slow.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_secs(3));
        }
    }
}

/// `shutdown` waits at most twice the stop timeout in all, the drop of the handle it consumes
/// included. Before, the drop waited twice the stop timeout again: four times in all.
#[test]
fn shutdown_waits_at_most_twice_the_stop_timeout_in_all() {
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut nodes = {
        let slow = slow.clone();
        start_with(
            &Topology::ring(2),
            &[vec![0, 1]],
            |b| b.stop_timeout(Duration::from_secs(1)),
            move |_, _| SlowRecord { slow: slow.clone() },
        )
    };
    // The only handle: its drop, at the end of `shutdown`, stops the node too.
    let node = nodes.pop().unwrap();
    slow.store(true, Ordering::SeqCst);
    let began = std::time::Instant::now();
    assert_eq!(node.shutdown().err(), Some(ClusterError::WaitTimeout));
    let took = began.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// The cluster's blocking calls made on one of the node's own process threads are refused at
/// once, as the runtime's are, and take nothing: no snapshot is started, the node's result is
/// still there for a later `shutdown`. Before, `shutdown` there waited out the stop timeout
/// (the stop waits for that very thread) and then failed, handing out the node's result as
/// that failure; `snapshot` started the snapshot before refusing to wait for it.
#[test]
fn blocking_calls_on_a_process_thread_of_a_node_are_refused() {
    let nodes = start_with(
        &Topology::ring(3),
        &[vec![0], vec![1, 2]],
        |b| b.stop_timeout(Duration::from_secs(2)),
        |_, _| Sender,
    );
    let inner = nodes[1].clone();
    let (snapshot, idle, timed, waited, stopped) = nodes[1]
        .with_process(1, move |_, _| {
            let snapshot = inner.snapshot(2).map(|_| ());
            let idle = inner.stats().is_idle();
            let timed = inner.snapshot_timeout(0, *PATIENCE).map(|_| ());
            let waited = inner.wait_stopped(Duration::from_secs(1)).map(|_| ());
            let stopped = inner.clone().shutdown().map(|_| ());
            (snapshot, idle, timed, waited, stopped)
        })
        .unwrap();
    let no = Error::WouldDeadlock { process: 1 };
    assert_eq!(snapshot, Err(no.clone()));
    assert!(idle, "a refused snapshot was started");
    assert_eq!(timed, Err(no.clone()));
    assert_eq!(waited, Err(ClusterError::Processes(no.clone())));
    assert_eq!(stopped, Err(ClusterError::Processes(no)));
    // Nothing was stopped or taken: the node stops from outside, with its result.
    assert!(!nodes[1].is_stopping());
    nodes[1].clone().shutdown().unwrap();
    nodes[0].wait_stopped(*PATIENCE).unwrap();
}

/// A thread name prefix no thread can have is refused before any thread starts, as the
/// runtime refuses it (before: a panic in the standard library's thread builder).
#[test]
fn a_thread_name_with_a_nul_byte_is_refused() {
    let (mut listeners, config) = listen(&[vec![0, 1]]);
    let (listener, keys) = listeners.pop().unwrap();
    let result = Node::builder(Topology::complete(2), config, 0)
        .listener(listener)
        .keys(keys)
        .thread_name("a\0b")
        .build(|_| Sender);
    assert_eq!(
        result.err(),
        Some(ClusterError::Build(
            chandy_lamport::BuildError::ThreadName {
                prefix: "a\0b".into()
            }
        ))
    );
}

/// A checkpoint whose channel has numbered `u64::MAX` messages (only a forged or corrupt file
/// holds one) is refused with a typed error. Before, checking it overflowed, and so did the
/// number of the channel's next message.
#[test]
fn a_checkpoint_whose_counter_is_full_is_refused() {
    use chandy_lamport::{BuildError, Channel, RestoreError};
    use std::collections::HashMap;
    let snapshot = quiet_checkpoint(vec![HashMap::new(), HashMap::new()], [u64::MAX, 0]);
    let (mut listeners, config) = listen(&[vec![0, 1]]);
    let (listener, keys) = listeners.pop().unwrap();
    let result = Node::builder(Topology::complete(2), config, 0)
        .listener(listener)
        .keys(keys)
        .restore(&snapshot, |_, state: &HashMap<u64, u64>| {
            Ledger(state.clone())
        });
    assert_eq!(
        result.err(),
        Some(ClusterError::Build(BuildError::Restore(
            RestoreError::CounterFull(Channel::new(0, 1))
        )))
    );
}
