//! Failures across nodes, with every node a thread of this test process: a link that goes
//! silent without closing (a proxy that stops forwarding), and a slow but alive node, which
//! must not be failed. (A killed node is `cluster_processes.rs`'s: it takes OS processes.)

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{ClusterConfig, Node, NodeBuilder, NodeConfig, NodeKeys};
use chandy_lamport::{Context, Error, Process, ProcessId, SendError, Topology};
use common::PATIENCE;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Token(u64);

/// Keeps two tokens moving to random neighbours; counts what it handles; a `slow` one sleeps
/// in every callback.
struct Mover {
    rng: fastrand::Rng,
    held: u64,
    slow: Duration,
    handled: Arc<AtomicU64>,
}

impl Process for Mover {
    type Message = Token;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, Token>) {
        for _ in 0..2 {
            self.pass(ctx, Token(1));
        }
    }
    fn on_message(&mut self, _: ProcessId, t: Token, ctx: &mut Context<'_, Token>) {
        if !self.slow.is_zero() {
            thread::sleep(self.slow);
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.pass(ctx, t);
    }
    fn record(&self) -> u64 {
        self.held
    }
}

impl Mover {
    /// Passes `t` to a random neighbour; one that has failed hands it back, and another is
    /// tried (after a few, the token is kept).
    fn pass(&mut self, ctx: &mut Context<'_, Token>, mut t: Token) {
        for _ in 0..16 {
            let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
            match ctx.send(to, t) {
                Ok(()) => return,
                Err(e) => t = e.into_message(),
            }
        }
        self.held += t.0;
    }
}

/// A TCP proxy that forwards both ways until frozen, then forwards nothing and closes nothing:
/// a link gone silent, as a cable pulled or a firewall dropping packets. Or until cut: both
/// connections closed, as a peer's kernel resetting them.
struct Proxy {
    address: String,
    frozen: Arc<AtomicBool>,
    /// Bytes a second it forwards each way (`u64::MAX`: as fast as it can).
    rate: Arc<AtomicU64>,
    streams: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to(target: String) -> Proxy {
        Proxy::throttled(target, u64::MAX)
    }

    /// A proxy that forwards at most `rate` bytes a second each way: a slow network.
    fn throttled(target: String, rate: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let frozen = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicU64::new(rate));
        let streams = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (f, held, r) = (frozen.clone(), streams.clone(), rate.clone());
        thread::spawn(move || {
            for inbound in listener.incoming().map_while(Result::ok) {
                let Ok(outbound) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut held = held.lock().unwrap();
                held.push(inbound.try_clone().unwrap());
                held.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let (frozen, rate) = (f.clone(), r.clone());
                    thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        let began = Instant::now();
                        let mut passed = 0u64;
                        loop {
                            // Ahead of the rate: wait until it catches up.
                            let rate = rate.load(Ordering::Relaxed);
                            if rate != u64::MAX {
                                let due = Duration::from_secs_f64(passed as f64 / rate as f64);
                                if let Some(wait) = due.checked_sub(began.elapsed()) {
                                    thread::sleep(wait);
                                }
                            }
                            if frozen.load(Ordering::Acquire) {
                                // Hold both ends open, forward nothing.
                                thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if frozen.load(Ordering::Acquire) {
                                        continue; // dropped on the floor
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    passed += n as u64;
                                }
                            }
                        }
                    });
                }
            }
        });
        Proxy {
            address,
            frozen,
            rate,
            streams,
        }
    }

    /// Forwards as fast as it can from now on.
    fn unthrottle(&self) {
        self.rate.store(u64::MAX, Ordering::Relaxed);
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
    }

    fn cut(&self) {
        for stream in self.streams.lock().unwrap().iter() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Starts three nodes (processes 0, 3 | 1, 4 | 2, 5 on a complete graph of six), each with
/// its own view of the others' addresses: `route(me, peer, address)` says where `me` dials
/// `peer`. Node 1's processes take `slow` per message.
fn three_nodes(
    failure_timeout: Duration,
    slow: Duration,
    route: impl Fn(usize, usize, String) -> String,
) -> (Vec<Node<Mover>>, Arc<AtomicU64>) {
    nodes_of_two(3, failure_timeout, slow, route)
}

/// `three_nodes` for `n` nodes: node k runs processes k and n + k of a complete graph of 2n.
fn nodes_of_two(
    n: usize,
    failure_timeout: Duration,
    slow: Duration,
    route: impl Fn(usize, usize, String) -> String,
) -> (Vec<Node<Mover>>, Arc<AtomicU64>) {
    let placement: Vec<Vec<ProcessId>> = (0..n).map(|k| vec![k, n + k]).collect();
    let (listeners, addresses) = common::listeners(n);
    let keys = NodeKeys::generate(n).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(me, (listener, keys))| {
            let config = ClusterConfig::new(
                (0..n)
                    .map(|k| {
                        let address = route(me, k, addresses[k].clone());
                        NodeConfig::new(address, placement[k].clone())
                    })
                    .collect(),
            );
            let handled = handled.clone();
            thread::spawn(move || {
                Node::builder(Topology::complete(2 * n), config, me)
                    .listener(listener)
                    .keys(keys)
                    .failure_timeout(failure_timeout)
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE)
                    .build(|p| Mover {
                        rng: fastrand::Rng::with_seed(p as u64),
                        held: 0,
                        slow: if me == 1 { slow } else { Duration::ZERO },
                        handled: handled.clone(),
                    })
            })
        })
        .collect();
    let nodes = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    (nodes, handled)
}

/// The link between nodes 0 and 1 goes silent, both ways, without closing: within the failure
/// timeout (and the nine twentieths after it that the survivors take to hear each other) every node
/// decides node 1 failed, the higher end of the one broken link, node 1 included. Node 1's
/// processes count as failed with an error naming the node; sends to them hand the message
/// back; the others keep working.
#[test]
fn a_silent_link_fails_its_higher_end_on_every_node() {
    const TIMEOUT: Duration = Duration::from_millis(600);
    let (nodes, handled, proxies) = three_nodes_proxied_0_1(TIMEOUT);
    for node in &nodes {
        assert!(node.failed_nodes().is_empty());
    }
    let cut = Instant::now();
    for proxy in &proxies {
        proxy.freeze();
    }
    for (k, node) in nodes.iter().enumerate() {
        common::wait_until("every node decides who failed", || {
            !node.failed_nodes().is_empty()
        });
        assert_eq!(node.failed_nodes(), [1], "node {k}'s view");
    }
    let decided = cut.elapsed();
    eprintln!("all three decided node 1 failed {decided:?} after the cut");
    // Within the timeout, the quarter after, and some slack for a loaded machine.
    assert!(decided < TIMEOUT * 4, "{decided:?}");
    // Node 1's processes failed, with an error that names the node.
    let failures = nodes[0].failures();
    assert_eq!(
        failures.iter().map(|f| f.process).collect::<Vec<_>>(),
        [1, 4]
    );
    assert!(
        failures[0].message.contains("node 1 failed"),
        "{failures:?}"
    );
    match nodes[0].snapshot_timeout(3, *PATIENCE) {
        Err(Error::NodeFailed {
            node, processes, ..
        }) => assert_eq!((node, processes), (1, vec![1, 4])),
        other => panic!("{other:?}"),
    }
    let refused = nodes[0]
        .with_process(0, |_, ctx| ctx.send(1, Token(5)))
        .unwrap();
    assert!(matches!(
        refused,
        Err(SendError::Disconnected { to: 1, .. })
    ));
    // The survivors keep working. (The tokens of before may all have gone to node 1 while the
    // link was silent and before the failure was decided: lost with it. Fresh ones.)
    keeps_working(&nodes[0], &handled);
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let (one, two) = (nodes.next().unwrap(), nodes.next().unwrap());
    let two = thread::spawn(move || two.wait_stopped(*PATIENCE));
    let stopped = zero.shutdown().unwrap();
    assert_eq!(stopped.failed_nodes, [1]);
    assert!(
        stopped.final_state().is_none(),
        "a node failed: no final state"
    );
    assert_eq!(two.join().unwrap().unwrap().failed_nodes, [1]);
    // Node 1, cut off from 0 and failed by its own decision, stops on its own.
    assert_eq!(one.shutdown().unwrap().failed_nodes, [1]);
}

/// Node 0 falls silent, its link with node 2 first and its link with node 1 three tenths of the
/// failure timeout later (more than the quarter the survivors once waited, less than the
/// heartbeat and quarter they wait for silence now): the survivors' reads time out that far
/// apart, and each must wait for the other's word. Every survivor decides node 0 alone failed;
/// node 0, cut off, sees both of them as failed, and then itself (alone of three: the
/// membership rule's majority). Before, node 2 decided alone on its one
/// suspicion and failed itself (the higher end of one broken link), and node 1 then failed
/// itself the same way: one silent node stopped all three.
#[test]
fn survivors_that_see_a_node_fall_silent_apart_wait_for_each_other() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let (nodes, _, proxies) = proxied(3, TIMEOUT, |me, peer| me == 0 || peer == 0);
    // By the other end: 2, then 1.
    let freeze = |other: usize| {
        for (_, proxy) in proxies.iter().filter(|((a, b), _)| a + b == other) {
            proxy.freeze();
        }
    };
    // Tokens that go to node 2 once its link is silent are gone, and without tokens the link
    // with node 1 would carry only heartbeats (a fifth of the timeout apart): node 1's last
    // frame from node 0 would be anywhere in the three tenths. New tokens keep it busy to the
    // end, so the survivors' reads time out the whole three tenths apart.
    let cut = Instant::now();
    freeze(2);
    while cut.elapsed() < TIMEOUT * 3 / 10 {
        let _ = nodes[0].with_process(0, |mover, ctx| mover.pass(ctx, Token(1)));
        let _ = nodes[1].with_process(1, |mover, ctx| mover.pass(ctx, Token(1)));
        thread::sleep(Duration::from_millis(2));
    }
    freeze(1);
    for (k, expected) in [(1, vec![0]), (2, vec![0]), (0, vec![0, 1, 2])] {
        common::wait_until("every node decides who failed", || {
            nodes[k].failed_nodes().len() >= expected.len()
        });
        assert_eq!(nodes[k].failed_nodes(), expected, "node {k}'s view");
    }
    eprintln!("decided {:?} after the first cut", cut.elapsed());
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let (one, two) = (nodes.next().unwrap(), nodes.next().unwrap());
    let two = thread::spawn(move || two.wait_stopped(*PATIENCE));
    assert_eq!(one.shutdown().unwrap().failed_nodes, [0]);
    assert_eq!(two.join().unwrap().unwrap().failed_nodes, [0]);
    // Node 0, failed by its own decision, has stopped its processes; its stop says so.
    assert_eq!(zero.shutdown().unwrap().failed_nodes, [0, 1, 2]);
}

/// Node 2's links all go silent at once: nodes 0 and 1 each suspect it when their reads time
/// out, and the second suspicion settles it (rule 1), so they decide as soon as each has the
/// other's word: the failure timeout and moments after, not the timeout and the wait a lone
/// suspicion of silence takes (0.45 of it). Node 2, which hears nobody, waits, and fails
/// itself.
#[test]
fn a_node_cut_off_is_failed_as_soon_as_two_survivors_say_so() {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let (nodes, _, proxies) = proxied(3, TIMEOUT, |me, peer| me == 2 || peer == 2);
    let cut = Instant::now();
    for (_, proxy) in &proxies {
        proxy.freeze();
    }
    for k in [0, 1] {
        common::wait_until("the survivors decide", || {
            !nodes[k].failed_nodes().is_empty()
        });
        assert_eq!(nodes[k].failed_nodes(), [2], "node {k}'s view");
    }
    let decided = cut.elapsed();
    eprintln!("both survivors decided node 2 failed {decided:?} after the cut");
    // The timeout, then at most a quarter of it for a loaded machine: well before the
    // 1.45 timeouts a lone suspicion of silence waits.
    assert!(decided < TIMEOUT * 5 / 4, "{decided:?}");
    common::wait_until("node 2 decides", || !nodes[2].failed_nodes().is_empty());
    assert_eq!(nodes[2].failed_nodes(), [2]);
}

/// Four nodes split in two by the network (every link between {0, 3} and {1, 2} goes silent
/// at once): each side sees the other fail, and the membership rule's majority lets only node
/// 0's half run on; the other half fails itself rather than run on as a second cluster.
#[test]
fn a_cluster_split_in_two_halves_keeps_node_0s_half() {
    const TIMEOUT: Duration = Duration::from_millis(800);
    let side = |k: usize| k == 0 || k == 3;
    let (nodes, handled, proxies) = proxied(4, TIMEOUT, |me, peer| side(me) != side(peer));
    assert_eq!(proxies.len(), 8, "each way of the four links across");
    for (_, proxy) in &proxies {
        proxy.freeze();
    }
    for (k, node) in nodes.iter().enumerate() {
        let expected = if side(k) {
            vec![1, 2]
        } else {
            vec![0, 1, 2, 3]
        };
        common::wait_until("every node decides", || {
            node.failed_nodes().len() >= expected.len()
        });
        assert_eq!(node.failed_nodes(), expected, "node {k}'s view");
    }
    // Node 0's half still works: tokens between its two nodes.
    keeps_working(&nodes[0], &handled);
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let rest: Vec<_> = nodes.collect();
    let three = rest[2].clone();
    let waiting = thread::spawn(move || three.wait_stopped(*PATIENCE));
    assert_eq!(zero.shutdown().unwrap().failed_nodes, [1, 2]);
    assert_eq!(waiting.join().unwrap().unwrap().failed_nodes, [1, 2]);
    for (k, node) in rest.into_iter().take(2).enumerate() {
        assert_eq!(
            node.shutdown().unwrap().failed_nodes,
            [0, 1, 2, 3],
            "node {}",
            k + 1
        );
    }
}

/// Three nodes as `three_nodes`, the link between nodes 0 and 1 through proxies (one each way
/// of dialling), once tokens cross the cluster.
fn three_nodes_proxied_0_1(
    failure_timeout: Duration,
) -> (Vec<Node<Mover>>, Arc<AtomicU64>, Vec<Proxy>) {
    let (nodes, handled, proxies) = proxied(3, failure_timeout, |a, b| a + b == 1);
    (
        nodes,
        handled,
        proxies.into_iter().map(|(_, p)| p).collect(),
    )
}

/// Fresh tokens from process 0 (on `node`) keep moving among the nodes that still run.
fn keeps_working(node: &Node<Mover>, handled: &AtomicU64) {
    let before = handled.load(Ordering::Relaxed);
    node.with_process(0, |mover, ctx| {
        for _ in 0..4 {
            mover.pass(ctx, Token(1));
        }
    })
    .unwrap();
    common::wait_until("the nodes left keep working", || {
        handled.load(Ordering::Relaxed) > before + 50
    });
}

/// A proxy, and the dial it carries: (from, to).
type Dialled = ((usize, usize), Proxy);

/// `n` nodes as `nodes_of_two`, each dial from `me` to `peer` for which `via(me, peer)` holds
/// through a proxy of its own (returned with the pair), once tokens cross the cluster.
fn proxied(
    n: usize,
    failure_timeout: Duration,
    via: impl Fn(usize, usize) -> bool,
) -> (Vec<Node<Mover>>, Arc<AtomicU64>, Vec<Dialled>) {
    let proxies = std::sync::Mutex::new(Vec::new());
    let (nodes, handled) = nodes_of_two(n, failure_timeout, Duration::ZERO, |me, peer, address| {
        if !via(me, peer) {
            return address;
        }
        let proxy = Proxy::to(address);
        let a = proxy.address.clone();
        proxies.lock().unwrap().push(((me, peer), proxy));
        a
    });
    common::wait_until("tokens cross the cluster", || {
        handled.load(Ordering::Relaxed) > 100
    });
    (nodes, handled, proxies.into_inner().unwrap())
}

/// A stop that comes before the failure decision is due (a link closed, and the stop asked for
/// at once, long before a quarter of the failure timeout) still says who failed: the node
/// decides when it stops, from what it knows then.
#[test]
fn a_stop_before_the_decision_still_says_who_failed() {
    const TIMEOUT: Duration = Duration::from_secs(12);
    let (nodes, _, proxies) = three_nodes_proxied_0_1(TIMEOUT);
    for proxy in &proxies {
        proxy.cut();
    }
    common::wait_until("node 0 sees the link closed", || {
        nodes[0]
            .stats()
            .links
            .iter()
            .any(|l| l.node == 1 && l.down.is_some())
    });
    assert!(nodes[0].failed_nodes().is_empty(), "not decided yet");
    let asked = Instant::now();
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let rest: Vec<_> = nodes
        .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE * 2)))
        .collect();
    let stopped = zero.shutdown().unwrap();
    let took = asked.elapsed();
    assert!(
        took < TIMEOUT / 4,
        "the stop took {took:?}: the decision was due before it ended, so this shows nothing"
    );
    assert_eq!(stopped.failed_nodes, [1], "node 0's view");
    for (k, node) in rest.into_iter().enumerate() {
        assert_eq!(
            node.join().unwrap().unwrap().failed_nodes,
            [1],
            "node {}'s view",
            k + 1
        );
    }
}

/// A node that breaks off during the stop, before it has said all it had to, is counted failed
/// by the node that lost it: node 1 is held in its stop (a process busy for seconds) when its
/// link with node 0 is cut. Node 0's result names node 1 in `failed_nodes` as well as in
/// `missing_reports`; node 2, which heard node 1 to the end, fails nobody. Before, the break
/// was only logged: node 0 said `failed_nodes: []`, and counted nothing it had queued for
/// node 1 as lost.
#[test]
fn a_node_that_breaks_off_during_the_stop_is_counted_failed() {
    const TIMEOUT: Duration = Duration::from_secs(12);
    let (nodes, _, proxies) = three_nodes_proxied_0_1(TIMEOUT);
    let busy = nodes[1].clone();
    let holding = thread::spawn(move || {
        busy.with_process(1, |_, _| thread::sleep(Duration::from_secs(3)))
            .unwrap();
    });
    // Node 1's process 1 is in the closure (it handles nothing else meanwhile).
    thread::sleep(Duration::from_millis(200));
    let watch: Vec<Node<Mover>> = nodes.iter().map(Node::clone).collect();
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let rest: Vec<_> = nodes
        .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE * 2)))
        .collect();
    let stopping = thread::spawn(move || zero.shutdown());
    common::wait_until("every node stops", || watch.iter().all(|n| n.is_stopping()));
    for proxy in &proxies {
        proxy.cut();
    }
    let stopped = stopping.join().unwrap().unwrap();
    assert_eq!(stopped.failed_nodes, [1], "node 0's view");
    assert_eq!(stopped.missing_reports(), [1]);
    assert!(stopped.final_state().is_none());
    let one = rest.into_iter().next().unwrap().join().unwrap().unwrap();
    assert_eq!(one.failed_nodes, [0], "node 1's view: the same link");
    holding.join().unwrap();
}

/// The nodes' verdicts can differ at the stop, and when they do, a node with a final state
/// says so: node 0's connection to node 1 goes silent one way just as the cluster stops (node 1
/// still hears the stop, through node 2, and node 0 hears node 1). Node 1 never has node 0's
/// `Finished` nor its report, gives up on node 0 after the failure timeout, and ends with no
/// final state. Node 2 has every report; node 0 has node 1's if node 1's last frames got out on
/// the healthy direction before node 1 closed it (either happens). Every node with a final state
/// names every node without one as `unconfirmed`. Before, such a node reported a clean final
/// state without a word while the others reported failure (found by an outside trial: a bank
/// node held up in its stop exited 0, the others 1).
#[test]
fn a_node_whose_verdict_others_may_not_share_names_them() {
    let (nodes, _, proxies) = proxied(3, Duration::from_secs(1), |a, b| (a, b) == (0, 1));
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let rest: Vec<_> = nodes
        .map(|node| thread::spawn(move || node.wait_stopped(*PATIENCE * 2)))
        .collect();
    for (_, proxy) in &proxies {
        proxy.freeze();
    }
    let mut all = vec![zero.shutdown().unwrap()];
    all.extend(rest.into_iter().map(|r| r.join().unwrap().unwrap()));
    let views = format!("{all:#?}");
    assert!(all[1].final_state().is_none(), "{views}");
    assert_eq!(all[1].failed_nodes, [0], "node 1's view: {views}");
    assert!(all[2].final_state().is_some(), "{views}");
    let without: Vec<usize> = (0..3).filter(|&k| all[k].final_state().is_none()).collect();
    for (k, stopped) in all.iter().enumerate() {
        if stopped.final_state().is_some() {
            assert_eq!(stopped.unconfirmed(), without, "node {k}'s view: {views}");
            assert!(stopped.failed_nodes.is_empty(), "{views}");
        }
    }
    for (_, proxy) in &proxies {
        proxy.cut();
    }
}

/// A node whose callbacks are slow (100 ms each) but whose links carry frames is alive: with a
/// failure timeout of 300 ms, nobody fails it in two seconds of traffic.
#[test]
fn a_slow_node_is_not_a_failed_node() {
    let (nodes, handled) = three_nodes(
        Duration::from_millis(300),
        Duration::from_millis(100),
        |_, _, address| address,
    );
    common::wait_until("tokens cross the cluster", || {
        handled.load(Ordering::Relaxed) > 20
    });
    thread::sleep(Duration::from_secs(2));
    for (k, node) in nodes.iter().enumerate() {
        assert!(
            node.failed_nodes().is_empty(),
            "node {k} failed {:?}",
            node.failed_nodes()
        );
        assert!(node.failures().is_empty());
    }
    // And its snapshots complete, slowly.
    let snapshot = nodes[0].snapshot_timeout(1, *PATIENCE).unwrap();
    snapshot.verify().unwrap();
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let others: Vec<_> = nodes
        .map(|n| thread::spawn(move || n.wait_stopped(*PATIENCE)))
        .collect();
    assert!(zero.shutdown().unwrap().final_state().is_some());
    for other in others {
        other.join().unwrap().unwrap();
    }
}

/// Sends 100 messages of 1 KiB to the other process on every tick (every millisecond): far
/// more than a slow network carries.
struct Flooder {
    got: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    /// How long each message takes the receiver, in microseconds (the test may change it).
    slow_us: Arc<AtomicU64>,
}

impl Process for Flooder {
    type Message = String;
    type State = ();
    fn on_tick(&mut self, ctx: &mut Context<'_, String>) {
        if ctx.id() == 0 {
            self.flood(ctx);
        }
    }
    fn on_message(&mut self, _: ProcessId, m: String, _: &mut Context<'_, String>) {
        let slow = self.slow_us.load(Ordering::Relaxed);
        if slow > 0 {
            thread::sleep(Duration::from_micros(slow));
        }
        self.got.fetch_add(m.len() as u64, Ordering::Relaxed);
    }
    fn record(&self) {}
}

impl Flooder {
    /// 100 messages of 1 KiB to the other process.
    fn flood(&mut self, ctx: &mut Context<'_, String>) {
        let to = ctx.neighbours()[0];
        for _ in 0..100 {
            // A string: one copy to encode (a `Vec<u8>` is a byte at a time).
            ctx.send(to, "x".repeat(1024)).unwrap();
        }
        self.sent.fetch_add(100 * 1024, Ordering::Relaxed);
    }
}

/// What `flood` starts: the nodes, the bytes sent and received so far (live counts), the
/// proxy, and the receiver's time per message (in microseconds, live).
struct Flood {
    nodes: Vec<Node<Flooder>>,
    got: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    _proxy: Proxy,
    slow_us: Arc<AtomicU64>,
}

/// Two nodes, process 0 on node 0 flooding process 1 on node 1 (see `Flooder`), node 0's
/// connection to node 1 through a proxy that carries `rate` bytes a second; `tweak` sets each
/// node's bounds.
fn flood(
    rate: u64,
    slow: Duration,
    tweak: fn(NodeBuilder<Flooder>) -> NodeBuilder<Flooder>,
) -> Flood {
    let (listeners, addresses) = common::listeners(2);
    // Node 0 reaches node 1 through the proxy; node 1 reaches node 0 directly.
    let proxy = Proxy::throttled(addresses[1].clone(), rate);
    let (got, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let slow_us = Arc::new(AtomicU64::new(slow.as_micros() as u64));
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(NodeKeys::generate(2).unwrap())
        .enumerate()
        .map(|(me, (listener, keys))| {
            let to_one = if me == 0 {
                proxy.address.clone()
            } else {
                addresses[1].clone()
            };
            let config = ClusterConfig::new(vec![
                NodeConfig::new(addresses[0].clone(), [0]),
                NodeConfig::new(to_one, [1]),
            ]);
            let (got, sent, slow_us) = (got.clone(), sent.clone(), slow_us.clone());
            thread::spawn(move || {
                let builder = Node::builder(Topology::complete(2), config, me)
                    .listener(listener)
                    .keys(keys)
                    .failure_timeout(Duration::from_secs(1))
                    .tick_interval(Duration::from_millis(1))
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE);
                tweak(builder).build(|_| Flooder {
                    got: got.clone(),
                    sent: sent.clone(),
                    slow_us: slow_us.clone(),
                })
            })
        })
        .collect();
    let nodes = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    Flood {
        nodes,
        got,
        sent,
        _proxy: proxy,
        slow_us,
    }
}

/// Process 0 (node 0) floods process 1 (node 1), which takes 1.5 s a message while `slow`
/// holds; process 2 (node 1) floods process 0: 100 messages of 1 KiB a tick each.
struct BothWays {
    slow: Arc<AtomicBool>,
}

impl Process for BothWays {
    type Message = String;
    type State = ();
    fn on_tick(&mut self, ctx: &mut Context<'_, String>) {
        let to = match ctx.id() {
            0 => 1,
            2 => 0,
            _ => return,
        };
        for _ in 0..100 {
            let _ = ctx.send(to, "x".repeat(1024));
        }
    }
    fn on_message(&mut self, _: ProcessId, _: String, ctx: &mut Context<'_, String>) {
        if ctx.id() == 1 && self.slow.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(1500));
        }
    }
    fn record(&self) {}
}

/// Node 1's process is slow, so node 1's reader holds back and node 0's writer waits on its
/// socket past the failure timeout; meanwhile node 1 sends node 0 all it can over a network
/// that carries 128 KiB/s, so an encrypted message of 64 KiB takes half a second to arrive
/// whole, its frames cut across messages. Node 0 hears node 1 all along, and must not fail
/// it. Before, a writer counted frames decoded, published when a message ended on a frame's
/// end: for seconds nothing moved, and node 0 failed node 1 (found by a review; 3 runs of 3).
#[test]
fn a_slow_node_behind_a_slow_network_is_heard_and_not_failed() {
    let (listeners, addresses) = common::listeners(2);
    // Node 1 reaches node 0 through the slow network; node 0 reaches node 1 directly.
    let proxy = Proxy::throttled(addresses[0].clone(), 128 << 10);
    let slow = Arc::new(AtomicBool::new(true));
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(NodeKeys::generate(2).unwrap())
        .enumerate()
        .map(|(me, (listener, keys))| {
            let to_zero = match me {
                1 => proxy.address.clone(),
                _ => addresses[0].clone(),
            };
            let config = ClusterConfig::new(vec![
                NodeConfig::new(to_zero, [0]),
                NodeConfig::new(addresses[1].clone(), [1, 2]),
            ]);
            let slow = slow.clone();
            thread::spawn(move || {
                Node::builder(Topology::complete(3), config, me)
                    .listener(listener)
                    .keys(keys)
                    .failure_timeout(Duration::from_secs(1))
                    .tick_interval(Duration::from_millis(1))
                    .max_queued(1 << 20)
                    .max_backlog(if me == 1 { 16 } else { 1 << 16 })
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE)
                    .build(|_| BothWays { slow: slow.clone() })
            })
        })
        .collect();
    let nodes: Vec<Node<BothWays>> = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(8) {
        for (k, node) in nodes.iter().enumerate() {
            let links: Vec<_> = node.stats().links.into_iter().map(|l| l.down).collect();
            assert!(
                node.failed_nodes().is_empty(),
                "node {k} decided {:?} failed after {:?}: {links:?}",
                node.failed_nodes(),
                began.elapsed()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    // What the slow network still holds (socket buffers of megabytes) goes at once.
    slow.store(false, Ordering::Relaxed);
    proxy.unthrottle();
    let one = nodes[1].clone();
    let stopping = thread::spawn(move || one.wait_stopped(*PATIENCE * 2));
    let stopped = nodes[0].clone().shutdown().unwrap();
    assert!(stopped.failed_nodes.is_empty());
    stopping.join().unwrap().unwrap();
}

/// Stops both nodes of `flood`. The receiver stops being slow first: the stop travels on the
/// link behind what is already on it, which a slow receiver's node reads only as fast as the
/// process takes it (at 2 ms a message, the thousands in the socket buffers took 22-27 s).
fn stop_flood(flood: Flood) {
    flood.slow_us.store(0, Ordering::Relaxed);
    let nodes = flood.nodes;
    let one = nodes[1].clone();
    let stopping = thread::spawn(move || one.wait_stopped(*PATIENCE * 2));
    let asked = Instant::now();
    nodes[0].clone().shutdown().unwrap();
    stopping.join().unwrap().unwrap();
    eprintln!("the stop: {:?}", asked.elapsed());
}

/// Flow control: a sender far faster than the network to its peer (100 MB/s offered, 2 MB/s
/// carried by a throttling proxy) is held back at the link's bound (1 MiB here): what queues
/// for the link never passes the bound and one batch, whatever the sender offers, and the slow
/// link is not taken for a failed one; a snapshot across it still completes.
#[test]
fn a_slow_network_holds_the_sender_back_not_its_memory() {
    const BOUND: usize = 1 << 20;
    let flooding = flood(2 << 20, Duration::ZERO, |b| b.max_queued(BOUND));
    let (nodes, got) = (&flooding.nodes, &flooding.got);
    let began = Instant::now();
    let mut most = 0;
    // Three seconds at least; longer while the queue has not reached half its bound, as on a
    // machine so loaded that the sender offers less than the network carries (`.ci/run` beside
    // a Miri run on the 2-core machine saw 517,000 bytes in 3 s; alone, 1,137,400).
    while began.elapsed() < Duration::from_secs(3)
        || (most <= BOUND / 2 && began.elapsed() < *PATIENCE)
    {
        most = most.max(nodes[0].stats().links[0].queued);
        thread::sleep(Duration::from_millis(5));
    }
    let carried = got.load(Ordering::Relaxed);
    eprintln!(
        "queued at most {most} bytes; {carried} bytes carried in {:?}",
        began.elapsed()
    );
    // One batch is at most a tick's 100 KiB and their framing.
    assert!(most <= BOUND + (120 << 10), "{most} bytes queued");
    assert!(
        most > BOUND / 2,
        "the sender was never held back ({most} bytes)"
    );
    assert!(carried > 1 << 20, "the link carried {carried} bytes");
    assert!(nodes[0].failed_nodes().is_empty() && nodes[1].failed_nodes().is_empty());
    let asked = Instant::now();
    let snapshot = nodes[1].snapshot_timeout(0, *PATIENCE).unwrap();
    snapshot.verify().unwrap();
    eprintln!("a snapshot across the slow link: {:?}", asked.elapsed());
    stop_flood(flooding);
}

/// Flow control on the receiving side: a process slower than its sender (2 ms a message; the
/// test has the sender send 100 at a time as fast as it can, over a fast link) holds the
/// sender back across the network: the receiving node reads no further once the channel
/// holds its bound (1,000 envelopes here), the sending node's link fills to its bound, and the
/// sender waits. What is sent and not yet taken stays bounded (a few thousand messages, most of
/// them in the kernel's socket buffers; without the bounds, 150,000 and more); and neither node
/// takes the other for failed, though node 1 reads nothing from node 0 for longer than the
/// failure timeout (1 s).
#[test]
fn a_slow_process_holds_its_sender_back_across_the_network() {
    let flooding = flood(u64::MAX, Duration::from_millis(2), |b| {
        b.max_queued(256 << 10).max_backlog(1000)
    });
    let (nodes, got, sent) = (&flooding.nodes, &flooding.got, &flooding.sent);
    let began = Instant::now();
    let mut most = 0;
    // At most 200,000 messages offered: 200 MB, if nothing held the sender back.
    while began.elapsed() < Duration::from_secs(3) && sent.load(Ordering::Relaxed) < 200_000 << 10 {
        nodes[0]
            .with_process_timeout(0, *PATIENCE, |f, ctx| f.flood(ctx))
            .unwrap();
        let ahead = sent.load(Ordering::Relaxed) - got.load(Ordering::Relaxed);
        most = most.max(ahead / 1024);
    }
    let taken = got.load(Ordering::Relaxed) / 1024;
    eprintln!(
        "at most {most} messages sent and not yet taken; {taken} taken, {} sent in 3 s",
        sent.load(Ordering::Relaxed) / 1024
    );
    assert!(most < 20_000, "{most} messages sent and not yet taken");
    assert!(taken > 100, "the receiver took {taken}");
    for node in nodes {
        assert!(node.failed_nodes().is_empty(), "{:?}", node.failed_nodes());
    }
    stop_flood(flooding);
}
