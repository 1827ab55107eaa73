//! Start-up: every node connects to every other, in any order, retrying until a deadline, and
//! the first frames check that they agree (topology, placement, wire format, crate version,
//! message and state types, checkpoint).
//!
//! Node I opens one connection to each other node J and writes its I->J traffic on it; it
//! accepts one from each J and reads J's traffic from it. So each ordered pair of nodes has its
//! own connection, which is what carries every channel from I's processes to J's in order.
//!
//! A connection starts with both preambles (the wire format's version, each way, in the clear),
//! then the Noise handshake (`secure.rs`): the opener proves it holds node I's key and sends its
//! `Hello`, encrypted; the acceptor, having checked the key is a member's and the `Hello` says
//! the same node, answers `Welcome` or why not, encrypted. A stranger's connection (no member's
//! key) is closed and logged, with nothing read past the handshake. Each accepted connection
//! is welcomed on a thread of its own (at most 64 at once, each for at most 5 s for the whole
//! handshake, however slowly the other side sends), so one that connects and says nothing, or
//! dribbles, holds up no other.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use snow::TransportState;

use super::config::ClusterConfig;
use super::keys::NodeKeys;
use super::secure::{self, Opened};
use super::wire::{self, Hello, Reply};
use crate::error::ClusterError;

/// How long a handshake may take once connected (it is a few hundred bytes each way).
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Between two attempts to connect to a node that is not listening yet.
const RETRY: Duration = Duration::from_millis(50);

/// The longest `Hello` a node reads.
const MAX_HELLO: usize = 1 << 20;

/// A socket whose reads and writes must all be done by one deadline: the handshake's, as a
/// whole. A socket's own timeout starts again at every read, so a peer that sends a byte now
/// and then (or a stranger doing so on purpose) could hold a handshake, and with it one of the
/// few threads that welcome connections, for as long as it liked.
struct ByDeadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl ByDeadline<'_> {
    /// The time left, or `TimedOut` if there is none.
    fn left(&self) -> std::io::Result<Duration> {
        match self.until.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

impl Read for ByDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.stream).read(buf)
    }
}

impl Write for ByDeadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&mut &*self.stream).flush()
    }
}

/// The connection is made: its reads and writes wait as long as they need again (the links'
/// own timeouts are set by the links).
fn no_deadline(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)
}

/// One authenticated connection: the socket and its Noise transport.
pub(crate) type Secured = (TcpStream, TransportState);

/// Every connection of one node, once all are made: by node, the one it writes to (opened
/// here) and the one it reads from (accepted here); `None` for itself.
pub(crate) struct Connections {
    pub(crate) outgoing: Vec<Option<Secured>>,
    pub(crate) incoming: Vec<Option<Secured>>,
}

/// What became of connecting to one node.
enum Dialed {
    Welcomed(usize, Secured),
    /// It refused us: what differs.
    Refused(usize, String),
    /// It never answered by the deadline: the last error seen.
    Silent(usize, String),
}

/// Connects node `me` to every other node of `config`, accepting theirs on `listener`, until
/// all are connected or `deadline` passes. `hello` is what this node says of itself (and what
/// it expects of every peer but the node index).
pub(crate) fn connect(
    config: &ClusterConfig,
    me: usize,
    hello: &Hello,
    keys: &NodeKeys,
    listener: TcpListener,
    timeout: Duration,
) -> Result<Connections, ClusterError> {
    let nodes = config.nodes.len();
    let began = Instant::now();
    let deadline = began + timeout;
    let (dialed_tx, dialed) = crossbeam_channel::unbounded();
    for peer in (0..nodes).filter(|&p| p != me) {
        let address = config.resolve(peer)?;
        let hello = hello.clone();
        let keys = keys.clone();
        let dialed_tx = dialed_tx.clone();
        thread::Builder::new()
            .name(format!("dial-{peer}"))
            .spawn(move || {
                let _ = dialed_tx.send(dial(peer, address, &hello, &keys, deadline));
            })
            .map_err(|e| ClusterError::Link {
                node: peer,
                message: format!("cannot start a thread to connect: {e}"),
            })?;
    }
    drop(dialed_tx);
    listener
        .set_nonblocking(true)
        .map_err(|e| ClusterError::Bind {
            node: me,
            address: config.listen_address(me).to_string(),
            message: e.to_string(),
        })?;
    let mut outgoing: Vec<Option<Secured>> = (0..nodes).map(|_| None).collect();
    let mut incoming: Vec<Option<Secured>> = (0..nodes).map(|_| None).collect();
    let mut silent: Vec<(usize, String)> = Vec::new();
    // What was last refused of each node that tried to connect here.
    let mut refused_here: Vec<Option<String>> = vec![None; nodes];
    let mut dialing = nodes - 1;
    let mut accepted = 0;
    // Each connection is welcomed on a thread of its own, so that one that connects and says
    // nothing (a stranger, a stuck peer) holds up nobody else; `claimed` says which nodes have
    // been welcomed, so a second connection claiming one is refused.
    let (welcomed_tx, welcomed) = crossbeam_channel::unbounded();
    let welcoming = Arc::new(Welcoming::new(hello, keys, me, nodes));
    while dialing > 0 || accepted < nodes - 1 {
        // Accept whoever is waiting.
        loop {
            match listener.accept() {
                Ok((stream, from)) => welcoming.start(stream, from, &welcomed_tx),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("node {me}: accept failed: {e}");
                    break;
                }
            }
        }
        for (from, welcome) in welcomed.try_iter() {
            match welcome {
                Ok((peer, secured)) => {
                    incoming[peer] = Some(secured);
                    accepted += 1;
                }
                // A node of this cluster that runs something else: the cluster cannot start,
                // whichever of the two noticed first.
                Err(Refusal::Differs(peer, message)) => {
                    log::error!("node {me}: refused node {peer}: {message}");
                    return Err(ClusterError::Mismatch {
                        node: peer,
                        message,
                    });
                }
                Err(Refusal::Other(peer, why)) => {
                    log::warn!("node {me}: refused a connection from {from}: {why}");
                    if let Some(peer) = peer {
                        refused_here[peer] = Some(why);
                    }
                }
            }
        }
        // Take whatever the dialers have to say, waiting a little if nothing.
        let wait = if Instant::now() >= deadline {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        match dialed.recv_timeout(wait) {
            Ok(Dialed::Welcomed(peer, secured)) => {
                outgoing[peer] = Some(secured);
                dialing -= 1;
            }
            Ok(Dialed::Refused(peer, message)) => {
                return Err(ClusterError::Mismatch {
                    node: peer,
                    message,
                });
            }
            Ok(Dialed::Silent(peer, why)) => {
                silent.push((peer, why));
                dialing -= 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every dialer is done: nothing comes on `dialed` any more, and `recv_timeout`
            // returns at once. Wait here instead, or the loop spins on the listener.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(wait),
        }
        if Instant::now() >= deadline && dialing == 0 {
            break;
        }
    }
    let _ = listener.set_nonblocking(false);
    let mut missing: Vec<usize> = Vec::new();
    let mut detail: Vec<String> = Vec::new();
    for (peer, why) in silent {
        missing.push(peer);
        detail.push(format!(
            "node {peer} at {}: {why}",
            config.nodes[peer].address
        ));
    }
    for peer in (0..nodes).filter(|&p| p != me && incoming[p].is_none()) {
        if !missing.contains(&peer) {
            missing.push(peer);
        }
        detail.push(match &refused_here[peer] {
            Some(why) => format!("node {peer} tried to connect and was refused: {why}"),
            None => format!("node {peer} never connected to this node"),
        });
    }
    if !missing.is_empty() {
        missing.sort_unstable();
        return Err(ClusterError::Unreachable {
            nodes: missing,
            waited: began.elapsed(),
            detail: detail.join("; "),
        });
    }
    Ok(Connections { outgoing, incoming })
}

/// Connects to `peer` at `address`, retrying until `deadline`, and says hello.
fn dial(
    peer: usize,
    address: SocketAddr,
    hello: &Hello,
    keys: &NodeKeys,
    deadline: Instant,
) -> Dialed {
    let mut last = "no attempt".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Dialed::Silent(peer, last);
        }
        match TcpStream::connect_timeout(&address, left.min(Duration::from_secs(1))) {
            // A peer that accepts and then says nothing must not hold this node past its
            // deadline: the handshake gets what is left of it, at most HANDSHAKE.
            Ok(stream) => match greet(stream, peer, hello, keys, HANDSHAKE.min(left)) {
                Ok(Ok(secured)) => return Dialed::Welcomed(peer, secured),
                Ok(Err(refusal)) => return Dialed::Refused(peer, refusal),
                Err(e) => last = format!("connected, but the handshake failed: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Sends this node's preamble and reads the peer's: `Err` with what differs if the versions
/// do.
fn preambles(stream: &mut (impl Read + Write)) -> std::io::Result<Result<(), String>> {
    stream.write_all(&wire::preamble())?;
    Ok(wire::read_preamble(stream)?.map_err(|foreign| foreign.to_string()))
}

/// The opener's side of the handshake (see the module documentation). `Ok(Err(why))`: the
/// acceptor, or the handshake, says this node does not belong with it (a mismatch, not worth a
/// retry).
fn greet(
    stream: TcpStream,
    peer: usize,
    hello: &Hello,
    keys: &NodeKeys,
    patience: Duration,
) -> std::io::Result<Result<Secured, String>> {
    stream.set_nodelay(true)?;
    let mut timed = ByDeadline {
        stream: &stream,
        until: Instant::now() + patience,
    };
    if let Err(why) = preambles(&mut timed)? {
        return Ok(Err(why));
    }
    let said = wire::to_bytes(hello).map_err(std::io::Error::other)?;
    let transport = match secure::open(&mut timed, keys, peer, &said) {
        Ok(transport) => transport,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    let mut opened = Opened::new(&mut timed, transport);
    let mut buf = Vec::new();
    let limit = wire::FrameLimit {
        piece: MAX_HELLO,
        whole: MAX_HELLO,
    };
    wire::read_frame(&mut opened, &mut buf, limit)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let reply = wire::decode::<Reply>(&buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    let transport = opened.into_transport();
    match reply {
        Reply::Welcome => {
            no_deadline(&stream)?;
            Ok(Ok((stream, transport)))
        }
        Reply::Refused(why) => Ok(Err(why)),
    }
}

/// Why the acceptor refused a connection.
enum Refusal {
    /// A node of this cluster whose `Hello` differs from this node's: what differs.
    Differs(usize, String),
    /// Anything else (not a member's key, a node already connected, a failed read): the node
    /// it proved it is, if it got that far, and why.
    Other(Option<usize>, String),
}

/// How welcoming a connection went: where it came from, and the node it proved it is and the
/// connection, or why not.
type Welcomed = (SocketAddr, Result<(usize, Secured), Refusal>);

/// What the threads that welcome connections share.
struct Welcoming {
    hello: Hello,
    keys: NodeKeys,
    me: usize,
    nodes: usize,
    /// By node: welcomed already.
    claimed: Mutex<Vec<bool>>,
    /// Handshakes under way.
    busy: AtomicUsize,
}

impl Welcoming {
    /// The most handshakes at once: a flood of connections costs at most this many threads,
    /// each for at most `HANDSHAKE`.
    const MOST: usize = 64;

    /// For node `me` of a cluster of `nodes`, saying `hello`, with `keys`: nobody welcomed yet.
    fn new(hello: &Hello, keys: &NodeKeys, me: usize, nodes: usize) -> Self {
        Welcoming {
            hello: hello.clone(),
            keys: keys.clone(),
            me,
            nodes,
            claimed: Mutex::new(vec![false; nodes]),
            busy: AtomicUsize::new(0),
        }
    }

    /// The acceptor's side: checks the opener's preamble, its key (a member's) and its `Hello`
    /// (the same node, and agreeing with this node's), and welcomes or refuses it. `Ok`: the
    /// opener's node index and the connection.
    fn welcome(&self, stream: TcpStream) -> Result<(usize, Secured), Refusal> {
        let (me, nodes) = (self.me, self.nodes);
        let io = |e: std::io::Error| Refusal::Other(None, e.to_string());
        stream.set_nonblocking(false).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        // The whole handshake within `HANDSHAKE`, not each read.
        let mut timed = ByDeadline {
            stream: &stream,
            until: Instant::now() + HANDSHAKE,
        };
        // Read first: a stranger learns nothing, not even this node's version, unless it speaks
        // the format's first words.
        match wire::read_preamble(&mut timed) {
            Ok(Ok(())) => {}
            Ok(Err(foreign)) => {
                if let wire::Foreign::Version(_) = foreign {
                    // Our own crate, another build: say our version, so that the opener fails
                    // at once with what differs rather than retrying until its deadline.
                    let _ = timed.write_all(&wire::preamble());
                }
                return Err(Refusal::Other(None, foreign.to_string()));
            }
            Err(e) => return Err(Refusal::Other(None, format!("no preamble: {e}"))),
        }
        timed.write_all(&wire::preamble()).map_err(io)?;
        let (mut transport, peer, said) = secure::accept(&mut timed, &self.keys)
            .map_err(|e| Refusal::Other(None, e.to_string()))?;
        let theirs: Hello = match wire::decode(&said) {
            Ok(hello) => hello,
            Err(e) => {
                let why = format!("not a hello: {e}");
                return refuse(&mut timed, &mut transport, Some(peer), why);
            }
        };
        if theirs.node as usize != peer {
            // Worded so that both ends read it right: the refused node prints it as the
            // reason it was turned away.
            let why = format!(
                "the node that says it is node {} holds node {peer}'s private key (each node \
                 needs its own)",
                theirs.node
            );
            return refuse(&mut timed, &mut transport, Some(peer), why);
        }
        if peer >= nodes || peer == me {
            let why = format!("node {peer} cannot connect to node {me} of a cluster of {nodes}");
            return refuse(&mut timed, &mut transport, Some(peer), why);
        }
        if let Some(differ) = self.hello.differences(&theirs) {
            return match refuse(&mut timed, &mut transport, Some(peer), differ) {
                Err(Refusal::Other(_, differ)) => Err(Refusal::Differs(peer, differ)),
                other => other,
            };
        }
        if std::mem::replace(&mut self.claimed.lock()[peer], true) {
            let why = format!("node {peer} is already connected");
            return refuse(&mut timed, &mut transport, Some(peer), why);
        }
        let welcomed = (|| {
            let mut out = Vec::new();
            wire::encode(&mut out, &Reply::Welcome).map_err(std::io::Error::other)?;
            secure::send_one(&mut timed, &mut transport, &out)?;
            no_deadline(&stream)
        })();
        if let Err(e) = welcomed {
            // Gone before it heard it was welcome: it may try again.
            self.claimed.lock()[peer] = false;
            return Err(Refusal::Other(Some(peer), e.to_string()));
        }
        Ok((peer, (stream, transport)))
    }

    /// Welcomes (or refuses) `stream`, from `from`, on a thread of its own, and says how it
    /// went on `done`.
    fn start(self: &Arc<Self>, stream: TcpStream, from: SocketAddr, done: &Sender<Welcomed>) {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= Self::MOST {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            log::warn!(
                "node {}: closed a connection from {from}: {} handshakes under way already",
                self.me,
                Self::MOST
            );
            return;
        }
        let (welcoming, done) = (self.clone(), done.clone());
        let spawned = thread::Builder::new()
            .name(format!("welcome-{from}"))
            .spawn(move || {
                let result = welcoming.welcome(stream);
                welcoming.busy.fetch_sub(1, Ordering::AcqRel);
                let _ = done.send((from, result));
            });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            log::warn!("node {}: no thread to welcome {from}: {e}", self.me);
        }
    }
}

/// Tells the opener why it is refused (best effort: it may be gone), encrypted, and says so.
fn refuse<T>(
    stream: &mut impl Write,
    transport: &mut TransportState,
    peer: Option<usize>,
    why: String,
) -> Result<T, Refusal> {
    let mut out = Vec::new();
    if wire::encode(&mut out, &Reply::Refused(why.clone())).is_ok() {
        let _ = secure::send_one(stream, transport, &out);
    }
    Err(Refusal::Other(peer, why))
}

// Real sockets: not under Miri, which has none.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    /// What node `node` of a cluster of `nodes` would say.
    fn hello(node: u32) -> Hello {
        Hello {
            crate_version: "0.1.0".into(),
            message_type: "u64".into(),
            state_type: "u64".into(),
            node,
            processes: 3,
            channels: vec![(0, 1), (1, 2), (2, 0)],
            placement: vec![vec![0], vec![1], vec![2]],
            checkpoint: None,
            max_frame: 1 << 20,
            max_frame_total: 1 << 30,
        }
    }

    /// Node 0 of a cluster of `nodes` welcomes one connection, opened with `keys` saying
    /// `said`, with `claimed` already welcomed: what the opener hears, and what node 0 decides.
    fn meet(
        acceptor: &NodeKeys,
        nodes: usize,
        claimed: &[usize],
        opener: &NodeKeys,
        said: Hello,
    ) -> (Result<(), String>, Result<usize, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let welcoming = Welcoming::new(&hello(0), acceptor, 0, nodes);
        for &k in claimed {
            welcoming.claimed.lock()[k] = true;
        }
        let accepting = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            match welcoming.welcome(stream) {
                Ok((peer, _)) => Ok(peer),
                Err(Refusal::Differs(_, why) | Refusal::Other(_, why)) => Err(why),
            }
        });
        let stream = TcpStream::connect(address).unwrap();
        let heard = match greet(stream, 0, &said, opener, HANDSHAKE) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        };
        (heard, accepting.join().unwrap())
    }

    /// A peer that answers a byte at a time, each well within the socket's timeout, cannot hold
    /// a handshake past its deadline: the deadline is for the whole handshake (before, every
    /// byte started the timeout again, and this one would have run for the dribbler's 10 s).
    #[test]
    fn a_peer_that_dribbles_cannot_hold_a_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let dribbler = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let began = Instant::now();
            // The real preamble, then what could be a handshake message, a byte at a time.
            let mut bytes = wire::preamble().to_vec();
            bytes.extend_from_slice(&[0xff; 64]);
            for byte in bytes {
                if began.elapsed() > Duration::from_secs(10) || stream.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(150));
            }
        });
        let keys = NodeKeys::generate(2).unwrap();
        let stream = TcpStream::connect(address).unwrap();
        let began = Instant::now();
        let patience = Duration::from_millis(600);
        let result = greet(stream, 1, &hello(0), &keys[0], patience);
        let took = began.elapsed();
        assert!(result.is_err(), "{result:?}");
        assert!(took < patience + Duration::from_secs(2), "took {took:?}");
        dribbler.join().unwrap();
    }

    #[test]
    fn a_member_is_welcomed_once() {
        let keys = NodeKeys::generate(3).unwrap();
        let (heard, decided) = meet(&keys[0], 3, &[], &keys[2], hello(2));
        assert_eq!((heard, decided), (Ok(()), Ok(2)));
    }

    #[test]
    fn a_node_already_connected_is_refused() {
        let keys = NodeKeys::generate(3).unwrap();
        let (heard, decided) = meet(&keys[0], 3, &[2], &keys[2], hello(2));
        assert!(decided.unwrap_err().contains("already connected"));
        assert!(heard.unwrap_err().contains("already connected"));
    }

    #[test]
    fn a_key_that_says_another_node_is_refused() {
        // Node 1's key, a hello that says node 2.
        let keys = NodeKeys::generate(3).unwrap();
        let (heard, decided) = meet(&keys[0], 3, &[], &keys[1], hello(2));
        let why = decided.unwrap_err();
        assert!(
            why.contains("the node that says it is node 2 holds node 1's private key"),
            "{why}"
        );
        assert!(heard.is_err());
    }

    #[test]
    fn a_node_the_file_does_not_list_and_a_node_as_itself_are_refused() {
        // Keys for four, a cluster file of three: node 3 holds a key but is no node here.
        let keys = NodeKeys::generate(4).unwrap();
        let (heard, decided) = meet(&keys[0], 3, &[], &keys[3], hello(3));
        assert!(decided.unwrap_err().contains("cannot connect to node 0"));
        assert!(heard.is_err());
        // Node 0's own key, calling node 0.
        let (heard, decided) = meet(&keys[0], 3, &[], &keys[0], hello(0));
        assert!(decided.unwrap_err().contains("cannot connect to node 0"));
        assert!(heard.is_err());
    }

    #[test]
    fn a_node_that_runs_something_else_is_told_what_differs() {
        let keys = NodeKeys::generate(3).unwrap();
        let other = Hello {
            message_type: "String".into(),
            ..hello(1)
        };
        let (heard, decided) = meet(&keys[0], 3, &[], &keys[1], other);
        assert!(decided.unwrap_err().contains("message type"));
        assert!(heard.unwrap_err().contains("message type"));
    }
}
