//! Start-up across nodes, with every node a thread of this test process: nodes that finish
//! connecting at different times, a node started again while the others wait for it, and a
//! node that cannot reach a third. Every node starts its processes, and its failure timeout,
//! only once every node is connected to every other, and a restarted node is let in.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{
    ClusterConfig, ClusterError, Node, NodeBuilder, NodeConfig, NodeKeys,
};
use chandy_lamport::{Context, Process, ProcessId, Topology};

/// A process that does nothing: only the links' heartbeats cross the network.
struct Quiet;

impl Process for Quiet {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) -> u64 {
        0
    }
}

/// One process a node, node k at `route(k)`.
fn config(nodes: usize, route: impl Fn(usize) -> String) -> ClusterConfig {
    ClusterConfig::new((0..nodes).map(|k| NodeConfig::new(route(k), [k])).collect())
}

/// Forwards what `a` and `b` say to each other, each way on a thread of its own, from
/// `from` on; each way ends when its sender closes.
fn forward(a: TcpStream, b: TcpStream, from: Instant) {
    let ways = [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)];
    for (mut from_side, mut to) in ways {
        thread::spawn(move || {
            thread::sleep(from.saturating_duration_since(Instant::now()));
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from_side.read(&mut buf) {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

/// A proxy to `target`: each connection, made at once, is handed to `carry` with the
/// connection to `target`. Returns its address.
fn proxy(target: String, carry: impl Fn(TcpStream, TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for inbound in listener.incoming().map_while(Result::ok) {
            if let Ok(outbound) = TcpStream::connect(&target) {
                carry(inbound, outbound);
            }
        }
    });
    address
}

/// A proxy to `target` that, on each connection, forwards nothing for `delay` and then
/// everything: a network slow to carry a handshake (start-up allows one 5 s).
fn slow_to_start(target: String, delay: Duration) -> String {
    proxy(target, move |a, b| forward(a, b, Instant::now() + delay))
}

/// A proxy to `target` that closes every connection at once until `opens`, then forwards: a
/// route that comes up late (a firewall rule, a host name published late).
fn opens_late(target: String, opens: Instant) -> String {
    proxy(target, move |a, b| {
        if Instant::now() >= opens {
            forward(a, b, Instant::now());
        }
    })
}

/// Node `me` of three, listening on `listener`, reaching node k at `route(k)`, with its key
/// of `keys` and a failure timeout of 1 s.
fn node(
    me: usize,
    listener: TcpListener,
    keys: &[NodeKeys],
    route: impl Fn(usize) -> String,
) -> NodeBuilder<Quiet> {
    Node::builder(Topology::complete(3), config(3, route), me)
        .listener(listener)
        .keys(keys[me].clone())
        .failure_timeout(Duration::from_secs(1))
}

/// Builds `node` on a thread of its own.
fn spawn(node: NodeBuilder<Quiet>) -> JoinHandle<Result<Node<Quiet>, ClusterError>> {
    thread::spawn(move || node.build(|_| Quiet))
}

/// Starts three nodes (`node`), each on a thread of its own, node 1 reaching node 2 where
/// `detour` says, given node 2's address (every other connection goes to the node's address),
/// with `tweak` applied to every builder: what each build returned, and when it returned.
fn three_with_a_detour(
    detour: impl FnOnce(&str) -> String,
    tweak: fn(NodeBuilder<Quiet>) -> NodeBuilder<Quiet>,
) -> Vec<(Result<Node<Quiet>, ClusterError>, Instant)> {
    let (listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let one_to_two = detour(&addresses[2]);
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| {
            let route = |k: usize| match (me, k) {
                (1, 2) => one_to_two.clone(),
                _ => addresses[k].clone(),
            };
            let node = tweak(node(me, listener, &keys, route));
            thread::spawn(move || (node.build(|_| Quiet), Instant::now()))
        })
        .collect();
    builds.into_iter().map(|b| b.join().unwrap()).collect()
}

/// The nodes that `builds` started, in order; a build that failed fails the test, naming it.
fn started(builds: [JoinHandle<Result<Node<Quiet>, ClusterError>>; 3]) -> Vec<Node<Quiet>> {
    let joined = builds.into_iter().map(|b| b.join().unwrap());
    let nodes = joined
        .enumerate()
        .map(|(k, built)| built.unwrap_or_else(|e| panic!("node {k}: {e}")));
    nodes.collect()
}

/// Node 1's connection to node 2 takes 2 s to get through its handshake, twice the failure
/// timeout. Node 0 is connected to both others at once; nodes 1 and 2 are still connecting,
/// with nothing sent to node 0 yet. Before start-up waited for every node to be connected to
/// every other, node 0 started its failure clocks at once, suspected both after 1 s of
/// silence, and the rules failed all three ("node 0 decided [0, 1, 2] failed").
#[test]
fn a_node_connected_first_waits_for_the_others_to_be_connected() {
    let built = three_with_a_detour(
        |two| slow_to_start(two.to_string(), Duration::from_secs(2)),
        |b| b.connect_timeout(*common::PATIENCE),
    );
    let started: Vec<Instant> = built.iter().map(|(_, at)| *at).collect();
    let nodes: Vec<Node<Quiet>> = built.into_iter().map(|(n, _)| n.unwrap()).collect();
    // Every node started when the last connection was made, not when its own were.
    let first = started.iter().min().unwrap();
    let last = started.iter().max().unwrap();
    assert!(
        last.duration_since(*first) < Duration::from_millis(500),
        "nodes started {:?} apart",
        last.duration_since(*first)
    );
    // Two failure timeouts and a half of running: nobody is suspected.
    thread::sleep(Duration::from_millis(2500));
    for (k, node) in nodes.iter().enumerate() {
        assert!(
            node.failed_nodes().is_empty(),
            "node {k} decided {:?} failed; its links: {:?}",
            node.failed_nodes(),
            node.stats()
                .links
                .iter()
                .map(|l| &l.down)
                .collect::<Vec<_>>()
        );
    }
    nodes[0].clone().shutdown().unwrap();
}

/// Node 1 gives up its first start (node 2 is not up within its 1 s) after it connected to and
/// from node 0, and is started again on the same address, as an operator or a supervisor
/// would. Node 0 lets the new start in, in place of the old one's dead connections, and
/// connects to it again. Before, node 0 refused the new start as "already connected", which
/// node 1 reported as the two disagreeing, and node 0 went on with the dead connections.
#[test]
fn a_node_started_again_while_the_others_wait_is_let_in() {
    let (mut listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let start = |me: usize, listener: TcpListener, timeout: Duration| {
        let node = node(me, listener, &keys, |k| addresses[k].clone());
        spawn(node.connect_timeout(timeout))
    };
    let two = listeners.pop().unwrap();
    let one = listeners.pop().unwrap();
    let zero = start(0, listeners.pop().unwrap(), *common::PATIENCE);
    let first_try = start(1, one, Duration::from_secs(1)).join().unwrap();
    match first_try {
        // (Node 0 too, if its handshake did not get through in that second.)
        Err(ClusterError::Unreachable { nodes, .. }) => assert!(nodes.contains(&2)),
        Err(other) => panic!("node 1's first start: {other}"),
        Ok(_) => panic!("node 1 started without node 2"),
    }
    let again = TcpListener::bind(&addresses[1]).unwrap();
    let one = start(1, again, *common::PATIENCE);
    let two = start(2, two, *common::PATIENCE);
    let nodes = started([zero, one, two]);
    thread::sleep(Duration::from_millis(2500));
    for (k, node) in nodes.iter().enumerate() {
        assert!(
            node.failed_nodes().is_empty(),
            "node {k} decided {:?} failed",
            node.failed_nodes()
        );
    }
    nodes[0].clone().shutdown().unwrap();
}

/// Node 1 cannot reach node 2 (its file gives node 2 an address where nobody answers), while
/// node 0 is connected to and from both. Node 0 does not start: it waits for the others to
/// say they are connected to every node, and gives up when they give up, naming them. Before,
/// node 0 started its processes alone and, after the failure timeout, decided all three nodes
/// failed, itself included: its message pointed at the one node that was fine.
#[test]
fn a_node_that_cannot_reach_a_third_keeps_the_others_from_starting() {
    // Bound and never accepted: connections hang in the handshake until the deadline.
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = stuck.local_addr().unwrap().to_string();
    let began = Instant::now();
    let results: Vec<_> =
        three_with_a_detour(|_| nowhere, |b| b.connect_timeout(Duration::from_secs(3)))
            .into_iter()
            .map(|(result, _)| result)
            .collect();
    for (k, result) in results.iter().enumerate() {
        assert!(result.is_err(), "node {k} started");
    }
    match &results[0] {
        Err(e @ ClusterError::NotReady { nodes, detail, .. }) => {
            assert!(nodes.contains(&1), "{nodes:?}");
            assert!(detail.contains("node 1"), "{detail}");
            assert!(
                e.to_string().contains("never got connected to every node"),
                "{e}"
            );
        }
        other => panic!("node 0: {:?}", other.as_ref().err()),
    }
    // Node 0 gave up when the others did (3 s, and a handshake's 5 s at most), not later.
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    drop(stuck);
}

/// Something else answers at node 1's address (another program on the port: it accepts and
/// says garbage) while nodes 0 and 2 start; then it goes and node 1 starts there. Nodes 0 and
/// 2 retry past the stranger, as past a port nobody listens on. Before, each gave up at once
/// with "node 1 and this node disagree: not a chandy-lamport cluster connection".
#[test]
fn a_stranger_at_a_nodes_address_is_retried_past() {
    let (mut listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let start = |me: usize, listener: TcpListener| {
        let node = node(me, listener, &keys, |k| addresses[k].clone());
        spawn(node.connect_timeout(*common::PATIENCE))
    };
    let two = start(2, listeners.pop().unwrap());
    let held = listeners.pop().unwrap();
    let zero = start(0, listeners.pop().unwrap());
    // The stranger, on node 1's listener, for a second.
    held.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    let mut answered = 0;
    while Instant::now() < until {
        match held.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.write_all(&[0x5a; 200]);
                answered += 1;
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    assert!(answered > 0, "nobody called at node 1's address");
    drop(held);
    let one = start(1, TcpListener::bind(&addresses[1]).unwrap());
    let nodes = started([zero, one, two]);
    nodes[0].clone().shutdown().unwrap();
}

/// A host that does not resolve (yet: on real machines a name may be published only once its
/// machine is up) is retried until the deadline, then named with why; a malformed address is
/// the file's error at once. Before, an unresolvable host was refused at once as a bad address.
#[test]
fn an_unresolvable_host_is_retried_and_a_malformed_address_refused_at_once() {
    let (mut listeners, addresses) = common::listeners(1);
    let keys = NodeKeys::generate(2).unwrap();
    let build = |other: &str, listener: TcpListener| {
        let config = ClusterConfig::new(vec![
            NodeConfig::new(addresses[0].clone(), [0]),
            NodeConfig::new(other, [1]),
        ]);
        Node::builder(Topology::complete(2), config, 0)
            .listener(listener)
            .keys(keys[0].clone())
            .connect_timeout(Duration::from_millis(700))
            .build(|_| Quiet)
    };
    let began = Instant::now();
    // `.invalid` never resolves (RFC 2606).
    match build("no-such-host.invalid:7101", listeners.pop().unwrap()) {
        Err(ClusterError::Unreachable { nodes, detail, .. }) => {
            assert_eq!(nodes, [1]);
            assert!(detail.contains("cannot resolve it"), "{detail}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("started without node 1"),
    }
    assert!(
        began.elapsed() >= Duration::from_millis(700),
        "gave up early"
    );
    let began = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    match build("127.0.0.1", listener) {
        Err(ClusterError::BadAddress { node: 1, .. }) => {}
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("started without node 1"),
    }
    assert!(began.elapsed() < Duration::from_millis(700), "not at once");
}

/// Nodes whose application settings differ (`NodeBuilder::settings`: for the bank, a node
/// started with another initial balance, which made every snapshot look like money lost) are
/// refused, each told both settings.
#[test]
fn nodes_with_other_settings_are_refused_saying_both() {
    two_refused_saying(
        |me, node| node.settings(format!("--initial-balance {}", 1000 * (me + 1))),
        &[
            "application settings",
            "\"--initial-balance 1000\" on node 0",
            "\"--initial-balance 2000\" on node 1",
        ],
    );
}

/// Nodes whose failure timeouts differ are refused: each sends an idle link a heartbeat every
/// fifth of its own timeout, so a node with a timeout under a fifth of a peer's failed that
/// healthy peer within a second of the start (found by an outside trial, with the bank's
/// `--failure-timeout 0.5` on one node and 3 on the others).
#[test]
fn nodes_with_other_failure_timeouts_are_refused_saying_both() {
    two_refused_saying(
        |me, node| node.failure_timeout(Duration::from_millis(500 * (me as u64 + 1))),
        &["failure timeout", "500ms on node 0", "1s on node 1"],
    );
}

/// Two nodes, each built as `tweak` says: both are refused, with every one of `said` in the
/// message.
fn two_refused_saying(tweak: fn(usize, NodeBuilder<Quiet>) -> NodeBuilder<Quiet>, said: &[&str]) {
    let (listeners, addresses) = common::listeners(2);
    let keys = NodeKeys::generate(2).unwrap();
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| {
            let (config, keys) = (config(2, |k| addresses[k].clone()), keys[me].clone());
            thread::spawn(move || {
                let node = Node::builder(Topology::complete(2), config, me)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(*common::PATIENCE);
                tweak(me, node).build(|_| Quiet).map(drop)
            })
        })
        .collect();
    for (k, build) in builds.into_iter().enumerate() {
        match build.join().unwrap() {
            Err(ClusterError::Mismatch { message, .. }) => {
                assert!(said.iter().all(|s| message.contains(s)), "{message}")
            }
            other => panic!("node {k}: {other:?}"),
        }
    }
}

/// Node 2 is started with other settings than nodes 0 and 1, and its connections with node 1
/// carry nothing for 700 ms, both ways: node 2 meets node 0 first, and the two refuse each
/// other. Node 2 lets the handshakes it has under way end before it gives up, so node 1 meets
/// node 2's settings as well and gives up at once, saying what differs. Before, node 2 cut them
/// as it gave up, and node 1, which had met neither node 2's settings nor node 0's refusal,
/// waited out its connect timeout, then blamed node 2's silence (found by an outside trial of
/// the bank on three nodes: "node 1: gave up after 30.0 s: node 2 never answered").
#[test]
fn a_third_node_meets_the_settings_of_a_node_that_gives_up() {
    let (listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let one_to_two = slow_to_start(addresses[2].clone(), Duration::from_millis(700));
    let two_to_one = slow_to_start(addresses[1].clone(), Duration::from_millis(700));
    let builds: Vec<JoinHandle<_>> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| {
            let route = |k: usize| match (me, k) {
                (1, 2) => one_to_two.clone(),
                (2, 1) => two_to_one.clone(),
                _ => addresses[k].clone(),
            };
            let settings = if me == 2 {
                "--initial-balance 500"
            } else {
                "--initial-balance 1000"
            };
            let node = node(me, listener, &keys, route).settings(settings);
            spawn(node.connect_timeout(*common::PATIENCE))
        })
        .collect();
    for (k, build) in builds.into_iter().enumerate() {
        match build.join().unwrap() {
            Err(ClusterError::Mismatch { node, message }) => {
                assert!(
                    message.contains("application settings"),
                    "node {k}: {message}"
                );
                if k != 2 {
                    assert_eq!(node, 2, "node {k}: {message}");
                }
            }
            Err(e) => panic!("node {k}: {e}"),
            Ok(_) => panic!("node {k} started"),
        }
    }
}

/// Node 2 is connected to and from both others at once and tells them it is ready; node 0's
/// route to node 1 comes up only after 6.5 s, past node 2's own deadline (1 s) and the 5 s
/// more it gives the others once connected. Node 2 has told both it is ready, so it waits on
/// for them: they may act on it. Before, node 2 gave up at 5 s while nodes 0 and 1, finding
/// its `Ready` in their sockets, started without it ("Ok", "Ok", "Err(gave up after 5.2
/// s...)") and ran with dead connections to it.
#[test]
fn a_node_that_said_it_is_ready_waits_for_the_others() {
    let (listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let opens = Instant::now() + Duration::from_millis(6500);
    let zero_to_one = opens_late(addresses[1].clone(), opens);
    let builds: Vec<JoinHandle<_>> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| {
            let route = |k: usize| match (me, k) {
                (0, 1) => zero_to_one.clone(),
                _ => addresses[k].clone(),
            };
            let timeout = Duration::from_secs(if me == 2 { 1 } else { 20 });
            spawn(node(me, listener, &keys, route).connect_timeout(timeout))
        })
        .collect();
    let nodes = started(builds.try_into().unwrap());
    nodes[0].clone().shutdown().unwrap();
}

/// Node 1's first start gives up (node 2 is not up within its 1 s) while node 0's connection
/// to it is still in its handshake (node 0's route to node 1 carries nothing for 2.5 s); node
/// 1 is started again at once on the same address, in this process (a supervisor), and node
/// 2 is started. Before, the first start's welcome outlived it and welcomed node 0 in its
/// name at 2.5 s; node 0 took that connection, to a start that was gone, for the newer one
/// and dropped the new start's: nobody started ("node 0: gave up after 10.0 s: node 1 never
/// answered ...").
#[test]
fn a_start_that_gave_up_welcomes_nobody_after() {
    let (mut listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let zero_to_one = slow_to_start(addresses[1].clone(), Duration::from_millis(2500));
    let start = |me: usize, listener: TcpListener, timeout: Duration| {
        let route = |k: usize| match (me, k) {
            (0, 1) => zero_to_one.clone(),
            _ => addresses[k].clone(),
        };
        spawn(node(me, listener, &keys, route).connect_timeout(timeout))
    };
    let two = listeners.pop().unwrap();
    let one = listeners.pop().unwrap();
    let zero = start(0, listeners.pop().unwrap(), Duration::from_secs(10));
    let first_try = start(1, one, Duration::from_secs(1)).join().unwrap();
    assert!(first_try.is_err(), "node 1 started without node 2");
    let one = start(
        1,
        TcpListener::bind(&addresses[1]).unwrap(),
        Duration::from_secs(10),
    );
    let two = start(2, two, Duration::from_secs(10));
    let nodes = started([zero, one, two]);
    nodes[0].clone().shutdown().unwrap();
}

/// Node 1 is started with other settings: it and node 0 fail at once (node 2 not up yet).
/// The operator mends node 1 and starts all three again, in this process. Before, the first
/// starts' dials to node 2 outlived them, and went on dialling with their hellos until their
/// deadline: node 2 met the settings of a start that was gone and refused it ("node 2: node 1
/// and this node disagree: application settings: ..."), and the others then gave up on node 2.
#[test]
fn a_start_that_gave_up_dials_nobody_after() {
    let (mut listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    drop(listeners.pop()); // node 2 is not up yet: its port is free again
    let start = |me: usize, listener: TcpListener, settings: &str| {
        let node = node(me, listener, &keys, |k| addresses[k].clone());
        spawn(
            node.connect_timeout(Duration::from_secs(10))
                .settings(settings),
        )
    };
    let one = listeners.pop().unwrap();
    let zero = start(0, listeners.pop().unwrap(), "good");
    let one = start(1, one, "bad");
    for (k, first_try) in [zero, one].into_iter().enumerate() {
        match first_try.join().unwrap() {
            Err(ClusterError::Mismatch { .. }) => {}
            Err(e) => panic!("node {k}'s first start: {e}"),
            Ok(_) => panic!("node {k} started"),
        }
    }
    // All three, right this time: node 2 first, the others a moment later.
    let two = start(2, TcpListener::bind(&addresses[2]).unwrap(), "good");
    thread::sleep(Duration::from_millis(300));
    let zero = start(0, TcpListener::bind(&addresses[0]).unwrap(), "good");
    let one = start(1, TcpListener::bind(&addresses[1]).unwrap(), "good");
    let nodes = started([zero, one, two]);
    nodes[0].clone().shutdown().unwrap();
}

/// A node started while the cluster runs (a node started again after it failed, or after the
/// others started without it) is told at once that the cluster is running without it, and the
/// cluster runs on untouched. Before, the nodes stopped listening once started: the latecomer
/// met refused connections until its connect timeout, then said the running nodes "never
/// answered".
#[test]
fn a_node_started_while_the_cluster_runs_is_told_so_at_once() {
    let (listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let start = |me: usize, listener: TcpListener| {
        let node = node(me, listener, &keys, |k| addresses[k].clone());
        spawn(node.connect_timeout(*common::PATIENCE))
    };
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| start(me, listener))
        .collect();
    let nodes = started(builds.try_into().unwrap());
    // Node 2 again, listening elsewhere (the running node 2 holds its address).
    let began = Instant::now();
    let late = start(2, TcpListener::bind("127.0.0.1:0").unwrap());
    match late.join().unwrap() {
        Err(e @ ClusterError::Running { node: 0 | 1 }) => {
            assert!(
                e.to_string().contains("does not join a running cluster"),
                "{e}"
            );
        }
        Err(other) => panic!("the latecomer was told: {other}"),
        Ok(_) => panic!("a second node 2 joined the running cluster"),
    }
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let snapshot = nodes[0].snapshot_timeout(2, *common::PATIENCE).unwrap();
    snapshot.verify().unwrap();
    for (k, node) in nodes.iter().enumerate() {
        assert!(
            node.failed_nodes().is_empty(),
            "node {k}: {:?}",
            node.failed_nodes()
        );
    }
    nodes[0].clone().shutdown().unwrap();
    for node in &nodes[1..] {
        node.wait_stopped(*common::PATIENCE).unwrap();
    }
    // Stopped, a node lets go of its port.
    for address in &addresses {
        TcpListener::bind(address).unwrap();
    }
}

#[cfg(target_os = "linux")]
extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
}

/// Connects to `address` and closes with a reset, not a goodbye (`SO_LINGER` of 0: what a
/// port scanner or a crashed client leaves behind).
#[cfg(target_os = "linux")]
fn reset_connection(address: &str) {
    use std::os::fd::AsRawFd;
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    if let Ok(stream) = TcpStream::connect(address) {
        let linger: [i32; 2] = [1, 0];
        // SAFETY: a valid socket, and a `struct linger` (two ints) of the length given.
        unsafe {
            setsockopt(
                stream.as_raw_fd(),
                SOL_SOCKET,
                SO_LINGER,
                linger.as_ptr(),
                8,
            )
        };
    }
}

/// A stranger resetting connections to the running nodes as fast as it can does not keep them
/// from telling a latecomer that the cluster runs. Before, the nodes asked each connection
/// for its peer's address after taking it; a reset one has none, and each cost them a pause
/// of 50 ms: the latecomer waited out its connect timeout ("nodes [0, 1] never answered").
#[cfg(target_os = "linux")]
#[test]
fn a_stranger_resetting_connections_does_not_silence_the_running_nodes() {
    let (listeners, addresses) = common::listeners(3);
    let keys = NodeKeys::generate(3).unwrap();
    let start = |me: usize, listener: TcpListener, timeout: Duration| {
        let node = node(me, listener, &keys, |k| addresses[k].clone());
        spawn(node.connect_timeout(timeout))
    };
    let builds: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(me, listener)| start(me, listener, *common::PATIENCE))
        .collect();
    let nodes = started(builds.try_into().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stranger = {
        let (stop, targets) = (stop.clone(), addresses[..2].to_vec());
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for target in &targets {
                    reset_connection(target);
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    let late = start(
        2,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Duration::from_secs(8),
    );
    let told = late.join().unwrap();
    let took = began.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stranger.join().unwrap();
    match told {
        Err(ClusterError::Running { .. }) if took < Duration::from_secs(5) => {}
        Err(e) => panic!("the latecomer was told, after {took:?}: {e}"),
        Ok(_) => panic!("a second node 2 joined the running cluster"),
    }
    nodes[0].clone().shutdown().unwrap();
}
