//! One connection's start: the opener dials and greets (`dial`, `greet`), the acceptor welcomes
//! or refuses (`Welcoming`), each within a deadline for the whole handshake (`ByDeadline`);
//! then the acceptor waits for the opener's `Ready` (`read_ready`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use snow::TransportState;

use super::attempts::Attempts;
use super::{Made, Secured, HANDSHAKE};
use crate::cluster::keys::NodeKeys;
use crate::cluster::secure::{self, Opened};
use crate::cluster::wire::{self, Hello, Reply};

/// Between two attempts to connect to a node that is not listening yet.
const RETRY: Duration = Duration::from_millis(50);

/// The longest `Hello` a node reads.
const MAX_HELLO: usize = 1 << 20;

/// A socket whose reads and writes must all be done by one deadline: the handshake's, as a
/// whole. A socket's own timeout starts again at every read, so a peer that sends a byte now
/// and then (or a stranger doing so on purpose) could hold a handshake, and with it one of the
/// few threads that welcome connections, for as long as it liked.
pub(super) struct ByDeadline<'a> {
    pub(super) stream: &'a TcpStream,
    pub(super) until: Instant,
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
pub(super) fn no_deadline(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)
}

/// What became of connecting to one node.
pub(super) enum Dialed {
    /// It welcomed us, from its start `boot` (`Hello::boot`), at `at`.
    Welcomed {
        peer: usize,
        secured: Secured,
        boot: u64,
        at: Instant,
    },
    /// It refused us: what differs.
    Refused(usize, String),
    /// It runs a cluster already, started without this start of this node.
    Running(usize),
    /// It never answered by the deadline: the last error seen.
    Silent(usize, String),
}

/// Connects to `peer` at `address`, retrying until `deadline` (or until start-up ends:
/// `attempts`), and says hello.
pub(super) fn dial(
    peer: usize,
    address: String,
    hello: &Hello,
    keys: &NodeKeys,
    deadline: Instant,
    attempts: &Arc<Attempts>,
) -> Dialed {
    let mut last = "no attempt".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || attempts.dialing_over() {
            return Dialed::Silent(peer, last);
        }
        let resolved = address.to_socket_addrs().map(|mut all| all.next());
        let connected = match resolved {
            Ok(Some(address)) => {
                TcpStream::connect_timeout(&address, left.min(Duration::from_secs(1)))
            }
            Ok(None) => Err(std::io::Error::other("its host resolves to no address")),
            Err(e) => Err(std::io::Error::other(format!("cannot resolve it: {e}"))),
        };
        match connected {
            // A peer that accepts and then says nothing must not hold this node past its
            // deadline: the handshake gets what is left of it, at most HANDSHAKE.
            Ok(stream) => match attempts.enter(&stream).map(|attempt| {
                let handshake = attempts.handshake();
                let greeted = greet(stream, peer, hello, keys, HANDSHAKE.min(left));
                drop((handshake, attempt));
                greeted
            }) {
                None => return Dialed::Silent(peer, last),
                Some(Ok(Ok((secured, boot)))) => {
                    return Dialed::Welcomed {
                        peer,
                        secured,
                        boot,
                        at: Instant::now(),
                    }
                }
                Some(Ok(Err(Turned::Refused(why)))) => return Dialed::Refused(peer, why),
                Some(Ok(Err(Turned::Running))) => return Dialed::Running(peer),
                Some(Err(e)) => last = format!("connected, but the handshake failed: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Why a node turned this one away.
#[derive(Debug)]
pub(super) enum Turned {
    /// It runs something else: what differs.
    Refused(String),
    /// It runs a cluster already, started without this start of this node.
    Running,
}

/// The opener's side of the handshake (see the module documentation): the connection, and the
/// acceptor's start (`Hello::boot`). `Ok(Err(why))`: the acceptor says this node does not
/// belong with it (a mismatch, not worth a retry). Whatever else answers at the node's address
/// (another program, a node without the node's key) is an `Err`, retried until the deadline:
/// the node itself may yet come.
fn greet(
    stream: TcpStream,
    peer: usize,
    hello: &Hello,
    keys: &NodeKeys,
    patience: Duration,
) -> std::io::Result<Result<(Secured, u64), Turned>> {
    stream.set_nodelay(true)?;
    let mut timed = ByDeadline {
        stream: &stream,
        until: Instant::now() + patience,
    };
    timed.write_all(&wire::preamble())?;
    match wire::read_preamble(&mut timed)? {
        Ok(()) => {}
        // This crate, another wire format: the two builds cannot run together.
        Err(foreign @ wire::Foreign::Version(_)) => {
            return Ok(Err(Turned::Refused(foreign.to_string())))
        }
        Err(foreign @ wire::Foreign::Stranger) => {
            return Err(std::io::Error::other(foreign.to_string()))
        }
    }
    let said = wire::to_bytes(hello).map_err(std::io::Error::other)?;
    let transport = secure::open(&mut timed, keys, peer, &said)?;
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
        Reply::Welcome { boot } => {
            no_deadline(&stream)?;
            Ok(Ok(((stream, transport), boot)))
        }
        Reply::Refused(why) => Ok(Err(Turned::Refused(why))),
        Reply::Running => Ok(Err(Turned::Running)),
    }
}

/// Why the acceptor refused a connection.
pub(super) enum Refusal {
    /// A node of this cluster whose `Hello` differs from this node's: what differs.
    Differs(usize, String),
    /// Anything else (not a member's key, a node the file does not list, a failed read): the
    /// node it proved it is, if it got that far, and why.
    Other(Option<usize>, String),
}

/// What the threads that welcome connections report.
pub(super) enum Heard {
    /// `peer`'s start `boot` proved itself and was welcomed at `at`; `socket` is a handle on
    /// the connection, whose thread now waits for the node's `Ready`.
    Welcomed {
        peer: usize,
        boot: u64,
        at: Instant,
        socket: TcpStream,
    },
    /// The node welcomed at `at` says it is connected to every node: the connection.
    Ready {
        peer: usize,
        at: Instant,
        secured: Secured,
    },
    /// The connection welcomed at `at` ended, or said nothing more by the time start-up can
    /// last, before the node said it was ready: why.
    Gone {
        peer: usize,
        at: Instant,
        why: String,
    },
    /// A connection from this address was refused.
    Refused(SocketAddr, Refusal),
}

/// What the threads that welcome connections share.
pub(super) struct Welcoming {
    hello: Hello,
    keys: NodeKeys,
    me: usize,
    nodes: usize,
    /// Start-up's deadline: a welcomed node that has not said it is ready two handshakes'
    /// time after it is gone (the connect loop waits at most one past it, unless it has told
    /// every node it is ready: then it waits for this).
    deadline: Instant,
    /// What start-up has under way (each welcome is, until the node's `Ready` or not).
    attempts: Arc<Attempts>,
    /// Start-up is over and the cluster runs: every node that proves itself a member is told
    /// so (`Reply::Running`) and welcomed no more.
    running: bool,
    /// Handshakes under way.
    busy: AtomicUsize,
}

impl Welcoming {
    /// The most handshakes at once: a flood of connections costs at most this many threads,
    /// each for at most `HANDSHAKE`.
    const MOST: usize = 64;

    /// For node `me` of a cluster of `nodes`, saying `hello`, with `keys`, until `deadline`,
    /// its welcomes among `attempts`: nobody welcomed yet.
    pub(super) fn new(
        hello: &Hello,
        keys: &NodeKeys,
        me: usize,
        nodes: usize,
        deadline: Instant,
        attempts: &Arc<Attempts>,
    ) -> Self {
        Welcoming {
            hello: hello.clone(),
            keys: keys.clone(),
            me,
            nodes,
            deadline,
            attempts: attempts.clone(),
            running: false,
            busy: AtomicUsize::new(0),
        }
    }

    /// The same, once the cluster runs: members are told so, not welcomed.
    pub(super) fn running(mut self) -> Self {
        self.running = true;
        self
    }

    /// The acceptor's side: checks the opener's preamble, its key (a member's) and its `Hello`
    /// (the same node, and agreeing with this node's), and welcomes or refuses it. `Ok`: the
    /// opener's node index and the connection. A node welcomed before may connect again (it
    /// retries, having missed its welcome; or it was started again): the connect loop keeps the
    /// later connection.
    fn welcome(&self, stream: TcpStream) -> Result<(usize, Made), Refusal> {
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
        if self.running {
            let mut out = Vec::new();
            if wire::encode(&mut out, &Reply::Running).is_ok() {
                let _ = secure::send_one(&mut timed, &mut transport, &out);
            }
            let why = format!("node {peer} connected while the cluster runs: told so");
            return Err(Refusal::Other(Some(peer), why));
        }
        if let Some(differ) = self.hello.differences(&theirs) {
            return match refuse(&mut timed, &mut transport, Some(peer), differ) {
                Err(Refusal::Other(_, differ)) => Err(Refusal::Differs(peer, differ)),
                other => other,
            };
        }
        let welcomed = (|| {
            let mut out = Vec::new();
            let welcome = Reply::Welcome {
                boot: self.hello.boot,
            };
            wire::encode(&mut out, &welcome).map_err(std::io::Error::other)?;
            secure::send_one(&mut timed, &mut transport, &out)?;
            no_deadline(&stream)
        })();
        if let Err(e) = welcomed {
            // Gone before it heard it was welcome: it may try again.
            return Err(Refusal::Other(Some(peer), e.to_string()));
        }
        let made = Made {
            secured: (stream, transport),
            boot: theirs.boot,
            at: Instant::now(),
        };
        Ok((peer, made))
    }

    /// Welcomes (or refuses) `stream`, from `from`, on a thread of its own, and says how it
    /// went on `done`; then waits there for the node's `Ready`, and says that too.
    pub(super) fn start(
        self: &Arc<Self>,
        stream: TcpStream,
        from: SocketAddr,
        done: &Sender<Heard>,
    ) {
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
                // Under way until the node's `Ready` (or not): cut off if start-up ends first.
                let attempt = welcoming.attempts.enter(&stream);
                let result = match attempt {
                    Some(_) => {
                        let _handshake = welcoming.attempts.handshake();
                        welcoming.welcome(stream)
                    }
                    None => Err(Refusal::Other(None, "start-up has ended".into())),
                };
                welcoming.busy.fetch_sub(1, Ordering::AcqRel);
                let (peer, made) = match result {
                    Ok(welcomed) => welcomed,
                    Err(refusal) => {
                        let _ = done.send(Heard::Refused(from, refusal));
                        return;
                    }
                };
                let Made { secured, boot, at } = made;
                let socket = match secured.0.try_clone() {
                    Ok(socket) => socket,
                    Err(e) => {
                        let why = Refusal::Other(Some(peer), e.to_string());
                        let _ = done.send(Heard::Refused(from, why));
                        return;
                    }
                };
                let welcomed = Heard::Welcomed {
                    peer,
                    boot,
                    at,
                    socket,
                };
                if done.send(welcomed).is_err() {
                    return;
                }
                let until = welcoming.deadline.max(at) + 2 * HANDSHAKE;
                let heard = match read_ready(secured, until) {
                    Ok(secured) => Heard::Ready { peer, at, secured },
                    Err(why) => Heard::Gone { peer, at, why },
                };
                // Done before it is said: a connection taken is no longer under way.
                drop(attempt);
                let _ = done.send(heard);
            });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            log::warn!("node {}: no thread to welcome {from}: {e}", self.me);
        }
    }
}

/// Waits for a node's `Ready` on the connection it opened to this node, until `until` (or the
/// connect loop shuts the socket down). `Err`: why it did not come.
fn read_ready((stream, transport): Secured, until: Instant) -> Result<Secured, String> {
    let mut timed = ByDeadline {
        stream: &stream,
        until,
    };
    let mut opened = Opened::new(&mut timed, transport);
    let mut buf = Vec::new();
    let limit = wire::FrameLimit {
        piece: MAX_HELLO,
        whole: MAX_HELLO,
    };
    let heard = match wire::read_frame(&mut opened, &mut buf, limit) {
        Ok(()) => wire::decode::<wire::Ready>(&buf).map_err(|e| e.to_string()),
        Err(wire::ReadError::Closed) => Err("its connection closed".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let transport = opened.into_transport();
    match heard {
        Ok(wire::Ready::Connected) => {
            no_deadline(&stream).map_err(|e| e.to_string())?;
            Ok((stream, transport))
        }
        Err(why) => Err(why),
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
    use std::net::TcpListener;

    /// What node `node` of a cluster of `nodes` would say.
    fn hello(node: u32) -> Hello {
        Hello {
            crate_version: "0.1.0".into(),
            message_type: "u64".into(),
            state_type: "u64".into(),
            node,
            boot: u64::from(node) + 100,
            processes: 3,
            channels: vec![(0, 1), (1, 2), (2, 0)],
            placement: vec![vec![0], vec![1], vec![2]],
            checkpoint: None,
            max_frame: 1 << 20,
            max_frame_total: 1 << 30,
            failure_timeout_ns: 1_000_000_000,
            settings: String::new(),
        }
    }

    /// Node 0 of a cluster of `nodes` welcomes one connection, opened with `keys` saying
    /// `said`: what the opener hears, and what node 0 decides.
    fn meet(
        acceptor: &NodeKeys,
        nodes: usize,
        opener: &NodeKeys,
        said: Hello,
    ) -> (Result<(), String>, Result<usize, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let welcoming = Welcoming::new(
            &hello(0),
            acceptor,
            0,
            nodes,
            Instant::now() + HANDSHAKE,
            &Arc::default(),
        );
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
            Ok(Err(Turned::Refused(why))) => Err(why),
            Ok(Err(Turned::Running)) => Err("running".to_string()),
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
        let (heard, decided) = meet(&keys[0], 3, &keys[2], hello(2));
        assert_eq!((heard, decided), (Ok(()), Ok(2)));
    }

    #[test]
    fn a_key_that_says_another_node_is_refused() {
        // Node 1's key, a hello that says node 2.
        let keys = NodeKeys::generate(3).unwrap();
        let (heard, decided) = meet(&keys[0], 3, &keys[1], hello(2));
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
        let (heard, decided) = meet(&keys[0], 3, &keys[3], hello(3));
        assert!(decided.unwrap_err().contains("cannot connect to node 0"));
        assert!(heard.is_err());
        // Node 0's own key, calling node 0.
        let (heard, decided) = meet(&keys[0], 3, &keys[0], hello(0));
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
        let (heard, decided) = meet(&keys[0], 3, &keys[1], other);
        assert!(decided.unwrap_err().contains("message type"));
        assert!(heard.unwrap_err().contains("message type"));
    }
}
