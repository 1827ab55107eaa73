//! The cluster against a bare TCP program doing the same work, alternating run by run in one
//! process (as `ratio.rs` does for the runtime): `cargo bench --bench cluster_ratio [-- ROUNDS
//! [--only VARIANT,...] [--sizes NODESxPER,...] [--threads]]` (default 9 rounds; sizes 2x4,
//! 2x16, 3x4, 3x16: nodes x processes per node, every node a set of threads of this process on
//! 127.0.0.1). Prints each variant's median deliveries per second (with the middle half of the
//! runs) and CPU time per delivery (every thread of the process, over the timed section), and
//! the ratios: of the medians of rates, the median of each round's own ratio with the middle
//! half of those and an interval that holds that median with 95% confidence (from 6 rounds;
//! for issue 22's two targets, `cluster / bare` and `cluster 100 / cluster`, with the verdict
//! on 0.9: met when the interval is at or above it, inside, or missed), and of CPU per
//! delivery. `--threads` adds a line with each variant's CPU per
//! delivery by kind of thread (processes, links' readers and writers, other), from the threads'
//! own counts: an account of where the time goes that perf's sampling does not disturb; and a
//! line with how many times a delivery each kind was put on a CPU (with more threads than
//! cores, the switches of threads).
//!
//! The workload is the bank's closed loop: every process keeps `IN_FLIGHT` tokens moving, each
//! delivery sends the next hop to a random process of the complete graph (so with N nodes a
//! share (N-1)/N of the hops cross nodes), until the token has made its hops. Timed from every
//! process ready (all nodes connected) to the last token retired.
//!
//! `bare` is the best plain program for that work we could write: one thread per process with
//! a crossbeam inbox; one TCP connection per ordered pair of nodes (`TCP_NODELAY`), encrypted
//! with the same Noise protocol as the cluster, a writer thread per connection that takes
//! everything queued and writes it in one go when woken (so it coalesces under load and writes
//! a lone frame at once), then yields once before it looks again (as the cluster's writer
//! does: what the processes add meanwhile joins the next write), a reader thread per
//! connection; each hop framed as the cluster frames a message (a length, then postcard of the
//! channel, the message's number and the token), and written as fast as the cluster writes its
//! frames (`encode_frame`); a process hands what it encoded for a node to that node's writer
//! once per drained inbox. No snapshots, markers, doorbells or runtime.
//! `bare edges`, run only when named in `--only`, is the same program with the mission's
//! channels: a crossbeam channel per directed edge within a node and a ready bitmap per process
//! (the event loop's doorbell, bare), beside one inbox a process for what the readers bring
//! (as the cluster's). Beside `bare`, it says what that design costs by itself; `cluster /
//! bare edges` is then the runtime's and the links' own cost.
//! `cluster` is the crate's cluster with no snapshots; `cluster 100` takes 100 snapshots during
//! the run, one after another. With both, the line ends with what a snapshot cost: CPU per
//! snapshot, and per marker against a delivery. A snapshot puts a marker on every channel
//! (n(n-1) in the complete graph: 2,256 at 3 x 16, against the 10,000 deliveries between two
//! of the 100 snapshots), and each is delivered as a message is, so `cluster 100 / cluster` is
//! about 1 / (1 + markers per delivery x a marker's share of a delivery). `runtime`, run only
//! when named in `--only`, is the in-process runtime with all the processes and no network at
//! all: beside `bare` and `cluster` at one node (`--sizes 1x16`), it says how much of a gap is
//! the event loop's and how much the links'.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
use crossbeam_channel::{unbounded, Receiver, Sender};
mod local_cluster;
mod workload;

use workload::{median, Bells, Teller, Token as Hop};

const DELIVERIES: u64 = 1_000_000;
const IN_FLIGHT: usize = 4;
/// Issue 22's target for `cluster / bare` and for `cluster 100 / cluster`: met with confidence
/// when the interval of the rounds' median ratio lies at or above it.
const TARGET: f64 = 0.9;

/// Snapshots taken during a run of the `cluster 100` variant.
const SNAPSHOTS: usize = 100;

// ---------------------------------------------------------------------------------------------
// The cluster.

struct ClusterTeller {
    teller: Teller,
    hops: u32,
    start: Arc<Barrier>,
}

impl Process for ClusterTeller {
    type Message = Hop;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, Hop>) {
        self.start.wait();
        for _ in 0..IN_FLIGHT {
            let (k, hop) = self.teller.token(self.hops, ctx.neighbours().len());
            ctx.send(ctx.neighbours()[k], hop).unwrap();
        }
    }
    fn on_message(&mut self, _: ProcessId, t: Hop, ctx: &mut Context<'_, Hop>) {
        if let Some(hops) = self.teller.receive(t) {
            let (k, hop) = self.teller.token(hops, ctx.neighbours().len());
            ctx.send(ctx.neighbours()[k], hop).unwrap();
        }
    }
    fn record(&self) -> u64 {
        self.teller.balance()
    }
}

/// One run of the cluster: `nodes` nodes of `per` processes; `snapshots` taken one after
/// another during it. Returns the traffic's duration and the CPU time it took.
fn run_cluster(nodes: usize, per: usize, hops: u32, snapshots: usize) -> Timed {
    let n = nodes * per;
    let retired = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let (done_tx, done) = unbounded();
    let placement: Vec<Vec<usize>> = (0..nodes)
        .map(|k| (k * per..(k + 1) * per).collect())
        .collect();
    let nodes = {
        let start = start.clone();
        local_cluster::start(
            &Topology::complete(n),
            &placement,
            |b| b,
            move |p| ClusterTeller {
                teller: Teller::new(p, n, n * IN_FLIGHT, retired.clone(), done_tx.clone()),
                hops,
                start: start.clone(),
            },
        )
    };
    start.wait();
    let began = Began::now();
    for k in 0..snapshots {
        if done.try_recv().is_ok() {
            eprintln!("cluster: the traffic ended after {k} of {snapshots} snapshots");
            let took = began.end();
            local_cluster::stop(nodes);
            return took;
        }
        nodes[k % nodes.len()]
            .snapshot_timeout(k % n, Duration::from_secs(30))
            .unwrap()
            .verify()
            .unwrap();
    }
    done.recv().unwrap();
    let took = began.end();
    local_cluster::stop(nodes);
    took
}

/// The same processes in the in-process runtime, all of them (`nodes * per`), no network.
fn run_in_process(nodes: usize, per: usize, hops: u32) -> Timed {
    let n = nodes * per;
    let retired = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let (done_tx, done) = unbounded();
    let processes: Vec<ClusterTeller> = (0..n)
        .map(|p| ClusterTeller {
            teller: Teller::new(p, n, n * IN_FLIGHT, retired.clone(), done_tx.clone()),
            hops,
            start: start.clone(),
        })
        .collect();
    let runtime = Runtime::builder(Topology::complete(n))
        .build(processes)
        .unwrap();
    start.wait();
    let began = Began::now();
    done.recv().unwrap();
    let took = began.end();
    runtime.shutdown().unwrap();
    took
}

// ---------------------------------------------------------------------------------------------
// The bare program.

const NOISE: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
/// Plaintext per Noise message: 65,535 less the tag.
const PLAIN: usize = 65_535 - 16;

/// What a process hands a link's writer, and the writer's wake-up.
struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
    closing: AtomicBool,
}

/// The bytes queued for a link, and whether its writer sleeps (woken only then: a notify is a
/// system call).
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    sleeping: bool,
}

/// What goes into a process's inbox.
enum Item {
    Hop(Hop),
    Stop,
}

/// A Noise builder with the cluster's resolvers (`keys::noise_builder`, private to the crate):
/// the cipher from `ring`, the rest from snow's default resolver. The bare program encrypts as
/// the cluster does.
fn noise_builder() -> snow::Builder<'static> {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    snow::Builder::with_resolver(NOISE.parse().unwrap(), Box::new(resolver))
}

/// One side of a Noise XX handshake with a fresh key pair.
fn noise(initiator: bool) -> snow::HandshakeState {
    let key = noise_builder().generate_keypair().unwrap();
    let builder = noise_builder().local_private_key(&key.private).unwrap();
    if initiator {
        builder.build_initiator().unwrap()
    } else {
        builder.build_responder().unwrap()
    }
}

/// Both ends of a Noise XX handshake over `a` (initiator) and `b`, run on two threads.
fn handshake(a: &mut TcpStream, b: TcpStream) -> (snow::TransportState, snow::TransportState) {
    let responder = thread::spawn(move || {
        let (mut b, mut hs) = (b, noise(false));
        let (mut buf, mut msg) = (vec![0u8; 65_535], vec![0u8; 65_535]);
        read_message(&mut b, &mut msg);
        hs.read_message(&msg, &mut buf).unwrap();
        let len = hs.write_message(&[], &mut buf).unwrap();
        write_message(&mut b, &buf[..len]);
        read_message(&mut b, &mut msg);
        hs.read_message(&msg, &mut buf).unwrap();
        hs.into_transport_mode().unwrap()
    });
    let mut hs = noise(true);
    let (mut buf, mut msg) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let len = hs.write_message(&[], &mut buf).unwrap();
    write_message(a, &buf[..len]);
    read_message(a, &mut msg);
    hs.read_message(&msg, &mut buf).unwrap();
    let len = hs.write_message(&[], &mut buf).unwrap();
    write_message(a, &buf[..len]);
    let theirs = responder.join().unwrap();
    (hs.into_transport_mode().unwrap(), theirs)
}

fn write_message(w: &mut impl Write, m: &[u8]) {
    w.write_all(&(m.len() as u16).to_le_bytes()).unwrap();
    w.write_all(m).unwrap();
}

fn read_message(r: &mut impl Read, m: &mut Vec<u8>) -> bool {
    let mut len = [0u8; 2];
    if r.read_exact(&mut len).is_err() {
        return false;
    }
    m.resize(u16::from_le_bytes(len) as usize, 0);
    r.read_exact(m).is_ok()
}

/// How many times an idle writer, or an idle process before crossbeam's own wait, yields before
/// it sleeps: a cluster node's count with more threads than cores (32), which the bare program
/// gains from as much as the cluster (BENCHMARKS.md, ninth cluster round). Whatever the core
/// count, as the 3 before it was: where the threads fit the cores the cluster spins instead.
const YIELDS: usize = 32;

/// The writer of one connection: whatever is queued, sealed and written in one `write_all`.
fn bare_writer(outbox: &Outbox, mut stream: TcpStream, mut noise: snow::TransportState) {
    let mut out = Vec::new();
    let mut sealed = Vec::new();
    loop {
        // Under load more comes within microseconds: a few yields before sleeping save a
        // wake-up (a system call on each side) per round, as the cluster's writer does.
        for _ in 0..YIELDS {
            if !outbox.queue.lock().unwrap().bytes.is_empty() {
                break;
            }
            thread::yield_now();
        }
        {
            let mut queue = outbox.queue.lock().unwrap();
            while queue.bytes.is_empty() && !outbox.closing.load(Ordering::Acquire) {
                queue.sleeping = true;
                queue = outbox.ready.wait(queue).unwrap();
                queue.sleeping = false;
            }
            if queue.bytes.is_empty() {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                return;
            }
            std::mem::swap(&mut out, &mut queue.bytes);
        }
        // Into one buffer kept at its longest, from 0 each round: no zeroing after the first.
        let mut at = 0;
        for piece in out.chunks(PLAIN) {
            let room = at + 2 + piece.len() + 16;
            if sealed.len() < room {
                sealed.resize(room, 0);
            }
            let len = noise
                .write_message(piece, &mut sealed[at + 2..room])
                .unwrap();
            sealed[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
            at += 2 + len;
        }
        stream.write_all(&sealed[..at]).unwrap();
        out.clear();
        // One turn for the processes before the next take, as the cluster's writer gives them:
        // what they add meanwhile joins the next write.
        thread::yield_now();
    }
}

/// Room for a hop's frame: its length (4 bytes), then at most 5 + 10 bytes of header and
/// 10 + 5 + 5 of token.
const FRAME_ROOM: usize = 40;

/// Appends a hop's frame to `buf`: its length (4 bytes, little-endian), then postcard's bytes
/// for `(to, seq, hop)` (every integer a varint, seven bits a byte, in the fields' order),
/// written where they go, into zeroed room at the buffer's end cut back after, as the cluster
/// writes its frames. Through `postcard::to_extend` each integer went to the buffer as a slice
/// of its own: five calls of `memcpy` a frame, 59M of the 632M instructions the bare processes
/// ran at 3 x 16 (callgrind). `check_frames` holds it to postcard's bytes.
#[inline(always)]
fn encode_frame(buf: &mut Vec<u8>, to: u32, seq: u64, hop: Hop) {
    let at = buf.len();
    buf.extend_from_slice(&[0; FRAME_ROOM]);
    let room: &mut [u8; FRAME_ROOM] = (&mut buf[at..at + FRAME_ROOM]).try_into().unwrap();
    let mut end = 4;
    for v in [
        u64::from(to),
        seq,
        hop.amount,
        hop.hops.into(),
        hop.from.into(),
    ] {
        end = put_varint(room, end, v);
    }
    room[..4].copy_from_slice(&((end - 4) as u32).to_le_bytes());
    buf.truncate(at + end);
}

/// Writes `v` as postcard's varint at `at` in `room`; returns where it ends.
#[inline(always)]
fn put_varint(room: &mut [u8; FRAME_ROOM], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        room[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    room[at] = v as u8;
    at + 1
}

/// `encode_frame` writes what postcard writes, at the edges of every varint's length.
fn check_frames() {
    let edges = [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX];
    for &a in &edges {
        for &b in &edges {
            let (to, small) = (b as u32, a as u32);
            let hop = Hop {
                amount: b,
                hops: small,
                from: to,
            };
            let mut ours = vec![7];
            encode_frame(&mut ours, to, a, hop);
            let body = postcard::to_stdvec(&(to, a, hop)).unwrap();
            let mut theirs = vec![7];
            theirs.extend_from_slice(&(body.len() as u32).to_le_bytes());
            theirs.extend_from_slice(&body);
            assert_eq!(
                ours, theirs,
                "the bare program's frame of ({to}, {a}, {hop:?})"
            );
        }
    }
}

/// The reader of one connection: opens each Noise message, splits it into frames, and puts each
/// hop in its process's inbox. With `bells` (`bare edges`: the doorbells, and the inbox's bit
/// in them), rings each process it gave hops to once per message, as the cluster's reader rings
/// once per round.
fn bare_reader(
    stream: TcpStream,
    mut noise: snow::TransportState,
    inboxes: &[Sender<Item>],
    bells: Option<(&Bells, usize)>,
) {
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut msg = Vec::new();
    let mut plain = vec![0u8; 65_535];
    let mut pending: Vec<u8> = Vec::new();
    let mut owed: Vec<usize> = Vec::new();
    while read_message(&mut r, &mut msg) {
        let len = noise.read_message(&msg, &mut plain).unwrap();
        pending.extend_from_slice(&plain[..len]);
        let mut at = 0;
        while pending.len() - at >= 4 {
            let size = u32::from_le_bytes(pending[at..at + 4].try_into().unwrap()) as usize;
            if pending.len() - at - 4 < size {
                break;
            }
            let (to, _seq, hop): (u32, u64, Hop) =
                postcard::from_bytes(&pending[at + 4..at + 4 + size]).unwrap();
            inboxes[to as usize].send(Item::Hop(hop)).unwrap();
            if bells.is_some() && !owed.contains(&(to as usize)) {
                owed.push(to as usize);
            }
            at += 4 + size;
        }
        pending.drain(..at);
        if let Some((bells, inbox_bit)) = bells {
            for to in owed.drain(..) {
                bells.ring(to, inbox_bit);
            }
        }
    }
}

/// How the bare program's processes receive from their own node.
#[derive(Clone, Copy, PartialEq)]
enum Local {
    /// One crossbeam inbox a process for everything (`bare`): the best plain program.
    Inbox,
    /// The mission's design (`bare edges`): a crossbeam channel per directed edge within a
    /// node, with the doorbells of `Bells`, beside one inbox a process for the hops from other
    /// nodes (as the cluster's `RemoteInbox`). What the design itself costs, without the
    /// runtime: the cluster against this is the runtime's and the links' own cost.
    Edges,
}

/// One run of the bare program, as `run_cluster` without snapshots.
fn run_bare(nodes: usize, per: usize, hops: u32) -> Timed {
    run_bare_as(nodes, per, hops, Local::Inbox)
}

/// The same with a channel per edge within a node (`Local::Edges`).
fn run_bare_edges(nodes: usize, per: usize, hops: u32) -> Timed {
    run_bare_as(nodes, per, hops, Local::Edges)
}

fn run_bare_as(nodes: usize, per: usize, hops: u32, local: Local) -> Timed {
    let n = nodes * per;
    let node_of = move |p: usize| p / per;
    // A node's processes, its inbox's bit (`per`) and the sleeping bit in one word.
    assert!(per < 63, "at most 62 processes a node with `bare edges`");
    let bells = Arc::new((local == Local::Edges).then(|| Bells::new(n)));
    let (inbox_tx, inbox_rx): (Vec<Sender<Item>>, Vec<Receiver<Item>>) =
        (0..n).map(|_| unbounded()).unzip();
    // edges[q][p]: the channel to process q from process p of its node (p by its place there).
    type Edge = Option<(Sender<Hop>, Receiver<Hop>)>;
    let edges: Vec<Vec<Edge>> = (0..n)
        .map(|q| {
            (0..per)
                .map(|p| {
                    let p = node_of(q) * per + p;
                    (local == Local::Edges && p != q).then(unbounded)
                })
                .collect()
        })
        .collect();
    // outboxes[a][b]: from node a to node b.
    let outboxes: Vec<Vec<Arc<Outbox>>> = (0..nodes)
        .map(|_| {
            (0..nodes)
                .map(|_| {
                    Arc::new(Outbox {
                        queue: Mutex::new(Queue::default()),
                        ready: Condvar::new(),
                        closing: AtomicBool::new(false),
                    })
                })
                .collect()
        })
        .collect();
    let mut links = Vec::new();
    for (a, from_a) in outboxes.iter().enumerate() {
        for b in (0..nodes).filter(|&b| b != a) {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (inn, _) = listener.accept().unwrap();
            out.set_nodelay(true).unwrap();
            inn.set_nodelay(true).unwrap();
            let (sealer, opener) = handshake(&mut out, inn.try_clone().unwrap());
            let outbox = from_a[b].clone();
            let named = |name: &str| thread::Builder::new().name(name.to_string());
            links.push(
                named("bare-writer")
                    .spawn(move || bare_writer(&outbox, out, sealer))
                    .unwrap(),
            );
            let (inboxes, bells) = (inbox_tx.clone(), bells.clone());
            links.push(
                named("bare-reader")
                    .spawn(move || {
                        let bells = bells.as_ref().as_ref().map(|b| (b, per));
                        bare_reader(inn, opener, &inboxes, bells)
                    })
                    .unwrap(),
            );
        }
    }
    let retired = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(n + 1));
    let (done_tx, done) = unbounded();
    let processes: Vec<_> = inbox_rx
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| {
            let mut teller = Teller::new(me, n, n * IN_FLIGHT, retired.clone(), done_tx.clone());
            let (inboxes, outboxes, start, bells) = (
                inbox_tx.clone(),
                outboxes[node_of(me)].clone(),
                start.clone(),
                bells.clone(),
            );
            // This process's ends of its node's channels, by the other's place in the node: to
            // each, and from each.
            let out: Vec<Option<Sender<Hop>>> = (0..per)
                .map(|q| {
                    edges[node_of(me) * per + q][me % per]
                        .as_ref()
                        .map(|e| e.0.clone())
                })
                .collect();
            let inc: Vec<Option<Receiver<Hop>>> = (0..per)
                .map(|p| edges[me][p].as_ref().map(|e| e.1.clone()))
                .collect();
            let named = thread::Builder::new().name("bare-process".to_string());
            named.spawn(move || {
                let bells = bells.as_ref().as_ref();
                if let Some(bells) = bells {
                    bells.register(me);
                }
                let mut staged: Vec<Vec<u8>> = vec![Vec::new(); nodes];
                let mut seq = vec![0u64; n];
                let mut send = |to: usize, hop: Hop, staged: &mut Vec<Vec<u8>>| {
                    if node_of(to) != node_of(me) {
                        seq[to] += 1;
                        encode_frame(&mut staged[node_of(to)], to as u32, seq[to], hop);
                    } else if let Some(bells) = bells {
                        out[to % per]
                            .as_ref()
                            .expect("a neighbour")
                            .send(hop)
                            .unwrap();
                        bells.ring(to, me % per);
                    } else {
                        inboxes[to].send(Item::Hop(hop)).unwrap();
                    }
                };
                let flush = |staged: &mut Vec<Vec<u8>>| {
                    for (b, buf) in staged.iter_mut().enumerate() {
                        if !buf.is_empty() {
                            let outbox = &outboxes[b];
                            let sleeping = {
                                let mut queue = outbox.queue.lock().unwrap();
                                queue.bytes.extend_from_slice(buf);
                                queue.sleeping
                            };
                            if sleeping {
                                outbox.ready.notify_one();
                            }
                            buf.clear();
                        }
                    }
                };
                // Every process registers its thread before any can ring it (the barrier).
                start.wait();
                for _ in 0..IN_FLIGHT {
                    let (k, hop) = teller.token(hops, n - 1);
                    send(teller.other(k), hop, &mut staged);
                }
                flush(&mut staged);
                let mut take = |hop: Hop, staged: &mut Vec<Vec<u8>>| {
                    if let Some(hops) = teller.receive(hop) {
                        let (k, hop) = teller.token(hops, n - 1);
                        send(teller.other(k), hop, staged);
                    }
                };
                if let Some(bells) = bells {
                    // A round: every channel rung, each drained, then what went to other nodes
                    // is handed over, as the inbox program does once per drained inbox.
                    'edges: loop {
                        let mut ready = bells.take(me, 0);
                        if ready == 0 {
                            // The inbox program's patience, then parked, with no spinning.
                            bells.wait(me, 1, 0, YIELDS as u32);
                            continue;
                        }
                        while ready != 0 {
                            let bit = ready.trailing_zeros() as usize;
                            ready &= ready - 1;
                            if bit == per {
                                while let Ok(item) = inbox.try_recv() {
                                    match item {
                                        Item::Stop => break 'edges,
                                        Item::Hop(hop) => take(hop, &mut staged),
                                    }
                                }
                            } else {
                                let rx = inc[bit].as_ref().expect("a neighbour");
                                while let Ok(hop) = rx.try_recv() {
                                    take(hop, &mut staged);
                                }
                            }
                        }
                        flush(&mut staged);
                    }
                    return;
                }
                'run: while let Ok(first) = {
                    // The same short patience as the writer's before sleeping.
                    let mut waited = None;
                    for _ in 0..YIELDS {
                        if let Ok(item) = inbox.try_recv() {
                            waited = Some(item);
                            break;
                        }
                        thread::yield_now();
                    }
                    waited.map_or_else(|| inbox.recv(), Ok)
                } {
                    let mut item = Some(first);
                    while let Some(next) = item.take() {
                        match next {
                            Item::Stop => break 'run,
                            Item::Hop(hop) => take(hop, &mut staged),
                        }
                        item = inbox.try_recv().ok();
                    }
                    flush(&mut staged);
                }
            })
        })
        .collect();
    drop(edges);
    start.wait();
    let began = Began::now();
    done.recv().unwrap();
    let took = began.end();
    for (to, tx) in inbox_tx.iter().enumerate() {
        tx.send(Item::Stop).unwrap();
        if let Some(bells) = bells.as_ref() {
            bells.ring(to, per);
        }
    }
    for p in processes {
        p.unwrap().join().unwrap();
    }
    for outbox in outboxes.iter().flatten() {
        outbox.closing.store(true, Ordering::Release);
        let _queue = outbox.queue.lock().unwrap();
        outbox.ready.notify_all();
    }
    drop(inbox_tx);
    for l in links {
        l.join().unwrap();
    }
    took
}

/// A timed run: its wall time and, when the system says (`/proc` on Linux), the CPU time the
/// process's threads spent in it by kind of thread (`kind_of`, in `KIND_NAMES`' order), and how
/// many times each kind was put on a CPU.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    by_kind: Option<[Duration; KINDS]>,
    slices_by_kind: Option<[u64; KINDS]>,
}

impl Timed {
    /// The CPU time of every thread of the process (processes, links, the bench's own).
    fn cpu(&self) -> Option<Duration> {
        self.by_kind.map(|k| k.iter().sum())
    }
}

/// The kinds of thread the CPU time is split into (`--threads`), by their names: a process's
/// (`process-N` in the cluster and the runtime, `bare-process`), a link's reader
/// (`node-K-from-P`, `bare-reader`) and writer (`node-K-to-P`, `bare-writer`), and the rest (the
/// bench's own, a node's start-up and stop).
const KIND_NAMES: [&str; KINDS] = ["processes", "readers", "writers", "other"];
const KINDS: usize = 4;

fn kind_of(name: &str) -> usize {
    if name.starts_with("process") || name == "bare-process" {
        0
    } else if name.contains("-from-") || name == "bare-reader" {
        1
    } else if name.contains("-to-") || name == "bare-writer" {
        2
    } else {
        3
    }
}

/// When a timed section began, on both clocks.
struct Began {
    at: Instant,
    cpu: Option<HashMap<u64, ThreadTimes>>,
}

impl Began {
    fn now() -> Self {
        // The threads' times first, so that reading them is not in the wall time.
        let cpu = thread_cpu();
        Began {
            at: Instant::now(),
            cpu,
        }
    }

    /// A thread that began after the section did is counted whole; one that ended within it
    /// is missing what it spent after the section began (the nodes' threads all live through
    /// it; a start-up thread ending then has next to nothing left to do).
    fn end(&self) -> Timed {
        let wall = self.at.elapsed();
        let split = thread_cpu().zip(self.cpu.as_ref()).map(|(now, then)| {
            let mut by_kind = [Duration::ZERO; KINDS];
            let mut slices = [0; KINDS];
            for (tid, t) in &now {
                let before = then.get(tid).copied().unwrap_or_default();
                by_kind[t.kind] += Duration::from_nanos(t.ns.saturating_sub(before.ns));
                slices[t.kind] += t.slices.saturating_sub(before.slices);
            }
            (by_kind, slices)
        });
        Timed {
            wall,
            by_kind: split.map(|(k, _)| k),
            slices_by_kind: split.map(|(_, s)| s),
        }
    }
}

/// The CPU time (user and system) each thread of this process has had so far, in
/// nanoseconds, by thread id: the first field of `/proc/self/task/<tid>/schedstat`, the
/// scheduler's own count. It replaced `/proc/self/stat`, whose 10 ms ticks put a step of 10 ns
/// in the CPU per delivery of a run of a million, as large as the differences the bench looks
/// for (a snapshot's marker against a delivery, one build against another). Not the wall
/// time: on a machine with fewer cores than threads the two programs' rates follow their CPU
/// per delivery, which varies far less from run to run than the rates do (BENCHMARKS.md, ninth
/// round), and on a machine with more cores the CPU says what the rate may hide.
///
/// Also the third field, how many times the thread was put on a CPU: with more threads than
/// cores, each is a switch of threads, and a variant that makes its threads give up the CPU
/// more often (find nothing to do, and yield) shows there (`--threads`).
fn thread_cpu() -> Option<HashMap<u64, ThreadTimes>> {
    let mut by_thread = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        let tid: u64 = entry.file_name().to_str()?.parse().ok()?;
        // A thread that ends between the listing and the reads is left out.
        let (Ok(stat), Ok(name)) = (
            std::fs::read_to_string(entry.path().join("schedstat")),
            std::fs::read_to_string(entry.path().join("comm")),
        ) else {
            continue;
        };
        let mut fields = stat.split_whitespace();
        let ns = fields.next()?.parse().ok()?;
        let slices = fields.nth(1)?.parse().ok()?;
        by_thread.insert(
            tid,
            ThreadTimes {
                kind: kind_of(name.trim_end()),
                ns,
                slices,
            },
        );
    }
    Some(by_thread)
}

/// One thread's figures from its schedstat (`thread_cpu`).
#[derive(Clone, Copy, Default)]
struct ThreadTimes {
    kind: usize,
    /// CPU time so far, in nanoseconds.
    ns: u64,
    /// Times put on a CPU so far.
    slices: u64,
}

/// The first and third quartiles of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 4], v[(3 * v.len()) / 4])
}

/// An interval that holds the median of what `v` samples with at least 95% confidence, from
/// the order statistics alone: the k-th smallest and the k-th largest of `v`, k the largest
/// with P(Binomial(n, 1/2) < k) <= 2.5%. It assumes nothing of the distribution (a round's
/// ratio is far from normal: a slow spell of this shared machine gives it a long tail), only
/// rounds independent of each other. Whether a target such as 0.9 lies inside it says whether
/// one run of the bench can tell the two apart. `None` under 6 values (their extremes hold
/// the median with less than 95%).
fn median_interval(mut v: Vec<f64>) -> Option<(f64, f64)> {
    let n = v.len();
    v.sort_by(f64::total_cmp);
    // The binomial's terms C(n, j) / 2^n, summed from j = 0 while the sum stays within 2.5%.
    let mut term = 0.5f64.powi(n as i32);
    let (mut below, mut k) = (0.0, 0);
    for j in 0..n {
        if below + term > 0.025 {
            break;
        }
        below += term;
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    (k >= 1).then(|| (v[k - 1], v[n - k]))
}

fn main() {
    check_frames();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|k| args.get(k + 1).cloned())
    };
    let only = after("--only");
    let threads = args.iter().any(|a| a == "--threads");
    let sizes: Vec<(usize, usize)> = after("--sizes")
        .unwrap_or_else(|| "2x4,2x16,3x4,3x16".to_string())
        .split(',')
        .map(|s| {
            let (a, b) = s.split_once('x').expect("sizes as NODESxPER");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    let rounds: usize = args
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .find_map(|a| a.parse().ok())
        .unwrap_or(9);
    type Run = fn(usize, usize, u32) -> Timed;
    let variants: [(&str, Run); 5] = [
        ("bare", run_bare),
        ("bare edges", run_bare_edges),
        ("cluster", |nodes, per, hops| {
            run_cluster(nodes, per, hops, 0)
        }),
        ("cluster 100", |nodes, per, hops| {
            run_cluster(nodes, per, hops, SNAPSHOTS)
        }),
        ("runtime", run_in_process),
    ];
    let chosen: Vec<&(&str, Run)> = variants
        .iter()
        .filter(|(name, _)| {
            only.as_ref()
                .map_or(!["runtime", "bare edges"].contains(name), |o| {
                    o.split(',').any(|x| x == *name)
                })
        })
        .collect();
    for (nodes, per) in sizes {
        let n = nodes * per;
        let hops = (DELIVERIES / (n * IN_FLIGHT) as u64).max(1) as u32;
        let deliveries = (n * IN_FLIGHT) as f64 * hops as f64;
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); chosen.len()];
        // Nanoseconds of CPU per delivery, by variant; empty where the system does not say.
        let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); chosen.len()];
        // The same by kind of thread, by variant; and times on a CPU per delivery.
        let mut kinds: Vec<[Vec<f64>; KINDS]> = vec![Default::default(); chosen.len()];
        let mut slices: Vec<[Vec<f64>; KINDS]> = vec![Default::default(); chosen.len()];
        for _ in 0..rounds {
            for (k, (_, run)) in chosen.iter().enumerate() {
                let timed = run(nodes, per, hops);
                rates[k].push(deliveries / timed.wall.as_secs_f64());
                if let Some(cpu) = timed.cpu() {
                    cpus[k].push(cpu.as_nanos() as f64 / deliveries);
                }
                for (kind, spent) in timed.by_kind.iter().flatten().enumerate() {
                    kinds[k][kind].push(spent.as_nanos() as f64 / deliveries);
                }
                for (kind, &times) in timed.slices_by_kind.iter().flatten().enumerate() {
                    slices[k][kind].push(times as f64 / deliveries);
                }
            }
        }
        let medians: Vec<f64> = rates.iter().cloned().map(median).collect();
        let cpu_medians: Vec<Option<f64>> = cpus
            .iter()
            .map(|c| (c.len() == rounds).then(|| median(c.clone())))
            .collect();
        // Each variant's middle half of the runs, to show how far one run is from the next.
        let line: Vec<String> = chosen
            .iter()
            .zip(&rates)
            .zip(&medians)
            .zip(&cpu_medians)
            .map(|((((name, _), r), m), cpu)| {
                let (low, high) = quartiles(r.clone());
                let cpu = cpu.map_or(String::new(), |c| format!(", {c:.0} ns CPU"));
                format!(
                    "{name} {:.3}M/s ({:.3}-{:.3}{cpu})",
                    m / 1e6,
                    low / 1e6,
                    high / 1e6
                )
            })
            .collect();
        // Ratios two ways: of the medians, and the median of each round's own ratio (the
        // variants of one round run one after the other, so a slow spell of the machine
        // weighs on both sides of that round's ratio); and the CPU per delivery the other way
        // up (the earlier variant's over the later's), so that for both, above 1 is the later
        // variant doing better.
        // Every later variant against every earlier one: `cluster 100 / cluster` is the
        // snapshots' own cost.
        let mut ratios = Vec::new();
        for (k, (name, _)) in chosen.iter().enumerate().skip(1) {
            for j in 0..k {
                let by_round: Vec<f64> =
                    rates[k].iter().zip(&rates[j]).map(|(a, b)| a / b).collect();
                // The middle half of the rounds' own ratios: whether a target such as 0.9 is
                // inside the spread of one run, or outside it.
                let (low, high) = quartiles(by_round.clone());
                // Issue 22's targets are 0.9 for both `cluster / bare` and `cluster 100 /
                // cluster`: said against the interval, so a run's verdict needs no reading.
                let target = matches!(
                    (*name, chosen[j].0),
                    ("cluster", "bare") | ("cluster 100", "cluster")
                );
                let within = median_interval(by_round.clone()).map_or(String::new(), |(a, b)| {
                    let verdict = if !target {
                        String::new()
                    } else if a >= TARGET {
                        format!(", target {TARGET} met")
                    } else if b < TARGET {
                        format!(", target {TARGET} missed")
                    } else {
                        format!(", target {TARGET} inside")
                    };
                    format!(", median within {a:.3}-{b:.3} (95%){verdict}")
                });
                let cpu = match (cpu_medians[j], cpu_medians[k]) {
                    (Some(earlier), Some(later)) => format!(", CPU {:.3}", earlier / later),
                    _ => String::new(),
                };
                ratios.push(format!(
                    "{name} / {} {:.3} (by round {:.3}, {low:.3}-{high:.3}{within}{cpu})",
                    chosen[j].0,
                    medians[k] / medians[j],
                    median(by_round)
                ));
            }
        }
        // What a snapshot costs in the terms of the algorithm: it puts a marker on every
        // channel (n(n-1) of them in the complete graph), and each is delivered as a message
        // is. So the snapshots' share of the run is about (markers per delivery) x (a marker's
        // CPU over a delivery's): `cluster 100 / cluster` >= 0.9 needs that product at most
        // 1/9.
        let variant = |name: &str| chosen.iter().position(|(n, _)| *n == name);
        if let (Some(none), Some(some)) = (variant("cluster"), variant("cluster 100")) {
            if let (Some(none), Some(some)) = (cpu_medians[none], cpu_medians[some]) {
                // Small systems take few markers, and there the difference of two noisy
                // medians says little per marker: read the per-snapshot figure.
                let markers = (SNAPSHOTS * n * (n - 1)) as f64;
                let added = (some - none) * deliveries;
                ratios.push(format!(
                    "{SNAPSHOTS} snapshots: {:.0} us CPU each, {:.3} markers per delivery, \
                     a marker {:.0} ns CPU ({:.2} of a delivery)",
                    added / SNAPSHOTS as f64 / 1e3,
                    markers / deliveries,
                    added / markers,
                    added / markers / none
                ));
            }
        }
        println!(
            "{nodes} nodes x {per}: {} | {}",
            line.join(", "),
            ratios.join(", ")
        );
        // Where each variant's CPU went, by kind of thread: medians of each kind's own, so
        // they need not add up to the median of the whole.
        if threads {
            let by_thread = |of: &[[Vec<f64>; KINDS]], digits: usize| -> String {
                let split: Vec<String> = chosen
                    .iter()
                    .zip(of)
                    .filter(|(_, by)| by[0].len() == rounds)
                    .map(|((name, _), by)| {
                        let parts: Vec<String> = KIND_NAMES
                            .iter()
                            .zip(by)
                            .map(|(kind, v)| format!("{kind} {:.digits$}", median(v.clone())))
                            .collect();
                        format!("{name}: {}", parts.join(", "))
                    })
                    .collect();
                split.join("; ")
            };
            println!(
                "  ns of CPU a delivery by thread, medians: {}",
                by_thread(&kinds, 0)
            );
            println!(
                "  times on a CPU a delivery by thread, medians: {}",
                by_thread(&slices, 3)
            );
        }
    }
}
