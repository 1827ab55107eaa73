//! Start-up: every node connects to every other, in any order, retrying until a deadline, and
//! the first frames check that they agree (topology, placement, wire format, crate version,
//! message and state types, application settings, checkpoint).
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
//!
//! Start-up ends together: a node connected to and from every other says so (`Ready`) on each
//! connection it opened, and returns only once every other node has said it. Without that, a
//! node connected early started its failure timeout while another was still connecting to a
//! third (sending nothing yet), and took it for failed.
//!
//! Each start of a node says a random `boot` in its `Hello` (and its `Welcome`), so that a node
//! started again while the others wait (it gave up, crashed, was restarted) is told from a
//! retry: its new connections replace the old start's, which are dead, and the others connect
//! to it again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

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
    /// It welcomed us, from its start `boot` (`Hello::boot`), at `at`.
    Welcomed {
        peer: usize,
        secured: Secured,
        boot: u64,
        at: Instant,
    },
    /// It refused us: what differs.
    Refused(usize, String),
    /// It never answered by the deadline: the last error seen.
    Silent(usize, String),
}

/// A connection made with one node, by the start of it that made it (`Hello::boot`), with
/// when its handshake ended.
struct Made {
    secured: Secured,
    boot: u64,
    at: Instant,
}

/// The connection opened to one node, and whether it has been told this node is ready.
struct Out {
    made: Made,
    told: bool,
}

/// The connection accepted from one node: its start, when it was welcomed, a handle on its
/// socket (to shut it down when it is no longer wanted: its thread waiting for `Ready` then
/// ends), and the connection once the node has said it is ready.
struct In {
    boot: u64,
    at: Instant,
    socket: TcpStream,
    ready: Option<Secured>,
}

/// Connects node `me` to every other node of `config`, accepting theirs on `listener`, until
/// every node is connected to every other, or `timeout` passes (a node connected to every
/// other says so: `wire::Ready`; this node returns once all have). `hello` is what this node
/// says of itself (and what it expects of every peer but the node index and start).
///
/// A node may be started again while the others wait for it (it gave up, or its operator
/// restarted it): its new connections replace those of its earlier start, which are dead, and
/// this node connects to it again.
pub(crate) fn connect(
    config: &ClusterConfig,
    me: usize,
    hello: &Hello,
    keys: &NodeKeys,
    listener: TcpListener,
    timeout: Duration,
) -> Result<Connections, ClusterError> {
    let began = Instant::now();
    let deadline = began + timeout;
    let attempts = Arc::new(Attempts::default());
    let result = connect_until(config, me, hello, keys, &listener, deadline, &attempts);
    // Whatever ended start-up, nothing goes on in this start's name: no dial, no welcome, no
    // wait for a node's `Ready` (this node may be started again, and a leftover of this start
    // would speak for it).
    attempts.end();
    let _ = listener.set_nonblocking(false);
    result.map_err(|why| why.into_error(config, me, began))
}

/// Why start-up gave up: a typed error already, or where it stood with each node.
enum GaveUp {
    Error(ClusterError),
    Deadline(Box<Startup>),
}

impl GaveUp {
    fn into_error(self, config: &ClusterConfig, me: usize, began: Instant) -> ClusterError {
        match self {
            GaveUp::Error(e) => e,
            GaveUp::Deadline(state) => state.why_not(config, me, began),
        }
    }
}

impl From<ClusterError> for GaveUp {
    fn from(e: ClusterError) -> Self {
        GaveUp::Error(e)
    }
}

/// `connect`'s loop, until `deadline`, with the attempts under way in `attempts`.
fn connect_until(
    config: &ClusterConfig,
    me: usize,
    hello: &Hello,
    keys: &NodeKeys,
    listener: &TcpListener,
    deadline: Instant,
    attempts: &Arc<Attempts>,
) -> Result<Connections, GaveUp> {
    let nodes = config.nodes.len();
    let (dialed_tx, dialed) = crossbeam_channel::unbounded();
    let start_dial = |peer: usize| -> Result<(), ClusterError> {
        let address = config.nodes[peer].address.clone();
        // A malformed address is the file's error, said at once (`resolve` says how, with no
        // lookup for it); a host that does not resolve (yet: its name may be published only
        // once its machine is up) is retried like a node that does not answer, on the thread
        // that dials, as a lookup may take long.
        if !looks_like_host_and_port(&address) {
            config.resolve(peer)?;
        }
        let (hello, keys, attempts) = (hello.clone(), keys.clone(), attempts.clone());
        let dialed_tx = dialed_tx.clone();
        thread::Builder::new()
            .name(format!("dial-{peer}"))
            .spawn(move || {
                let dialed = dial(peer, address, &hello, &keys, deadline, &attempts);
                let _ = dialed_tx.send(dialed);
            })
            .map(drop)
            .map_err(|e| ClusterError::Link {
                node: peer,
                message: format!("cannot start a thread to connect: {e}"),
            })
    };
    let others = || (0..nodes).filter(move |&p| p != me);
    for peer in others() {
        start_dial(peer)?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| ClusterError::Bind {
            node: me,
            address: config.listen_address(me).to_string(),
            message: e.to_string(),
        })?;
    let mut state = Box::new(Startup {
        outgoing: (0..nodes).map(|_| None).collect(),
        incoming: (0..nodes).map(|_| None).collect(),
        dialing: (0..nodes).map(|p| p != me).collect(),
        silent: vec![None; nodes],
        refused_here: vec![None; nodes],
        gone: vec![None; nodes],
        ever_connected: vec![false; nodes],
    });
    // Each connection is welcomed on a thread of its own, so that one that connects and says
    // nothing (a stranger, a stuck peer) holds up nobody else; the thread then waits for the
    // node's `Ready`.
    let (heard_tx, heard) = crossbeam_channel::unbounded();
    let welcoming = Arc::new(Welcoming::new(hello, keys, me, nodes, deadline, attempts));
    let mut ready = Vec::new();
    wire::encode(&mut ready, &wire::Ready::Connected).map_err(|e| ClusterError::Link {
        node: me,
        message: e,
    })?;
    // Since when every node has been connected to and from this one (`None` while one is
    // not): from then, the others get a handshake's time more than the deadline to say they
    // are ready, as a node started last is connected last.
    let mut all_since: Option<Instant> = None;
    loop {
        let all = others().all(|p| state.both(p));
        all_since = if all {
            all_since.or(Some(Instant::now()))
        } else {
            None
        };
        if all {
            state.tell_ready(me, &ready);
            let told = others().all(|p| state.outgoing[p].as_ref().is_some_and(|o| o.told));
            if told && others().all(|p| state.is_ready(p)) {
                // Each node's `Ready` may have waited here while that node gave up: only
                // connections still open go on (a node that gave up now is one that failed).
                if others().all(|p| !state.let_go_if_closed(p)) {
                    break;
                }
            }
        }
        // Once every node is told this node is ready, none is given up on by the clock: they
        // may act on it, and each either says it is ready too or gives up (its connection
        // closes, or its wait here ends: `Welcoming::start`). Before that, the deadline, and a
        // handshake's time more for the others once all are connected.
        let told_all = all && others().all(|p| state.outgoing[p].as_ref().is_some_and(|o| o.told));
        if !told_all {
            let until = all_since.map_or(deadline, |since| deadline.max(since + HANDSHAKE));
            let now = Instant::now();
            // A dial under way past the deadline is waited for a moment: its handshake ends by
            // the deadline, but a slow name lookup does not.
            let dialing = state.dialing.contains(&true) && now < until + Duration::from_secs(1);
            if now >= until && !dialing {
                return Err(GaveUp::Deadline(state));
            }
        }
        // Accept whoever is waiting.
        loop {
            match listener.accept() {
                Ok((stream, from)) => welcoming.start(stream, from, &heard_tx),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("node {me}: accept failed: {e}");
                    break;
                }
            }
        }
        let mut changed = Vec::new();
        for event in heard.try_iter() {
            match event {
                Heard::Welcomed {
                    peer,
                    boot,
                    at,
                    socket,
                } => {
                    if state.welcomed(
                        peer,
                        In {
                            boot,
                            at,
                            socket,
                            ready: None,
                        },
                    ) {
                        changed.push(peer);
                    }
                }
                Heard::Ready { peer, at, secured } => {
                    match state.incoming[peer].as_mut().filter(|i| i.at == at) {
                        Some(current) => current.ready = Some(secured),
                        None => drop(secured),
                    }
                }
                Heard::Gone { peer, at, why } => {
                    if state.incoming[peer].as_ref().is_some_and(|i| i.at == at) {
                        state.incoming[peer] = None;
                        state.gone[peer] = Some(why);
                    }
                }
                // A node of this cluster that runs something else: the cluster cannot start,
                // whichever of the two noticed first.
                Heard::Refused(_, Refusal::Differs(peer, message)) => {
                    log::error!("node {me}: refused node {peer}: {message}");
                    let node = peer;
                    return Err(ClusterError::Mismatch { node, message }.into());
                }
                Heard::Refused(from, Refusal::Other(peer, why)) => {
                    log::warn!("node {me}: refused a connection from {from}: {why}");
                    if let Some(peer) = peer {
                        state.refused_here[peer] = Some(why);
                    }
                }
            }
        }
        // Take whatever the dialers have to say, waiting a little if nothing.
        match dialed.recv_timeout(Duration::from_millis(5)) {
            Ok(Dialed::Welcomed {
                peer,
                secured,
                boot,
                at,
            }) => {
                state.dialing[peer] = false;
                let made = Made { secured, boot, at };
                state.outgoing[peer] = Some(Out { made, told: false });
                state.ever_connected[peer] = true;
                changed.push(peer);
            }
            Ok(Dialed::Refused(peer, message)) => {
                let node = peer;
                return Err(ClusterError::Mismatch { node, message }.into());
            }
            Ok(Dialed::Silent(peer, why)) => {
                state.silent[peer] = Some(why);
                state.dialing[peer] = false;
            }
            // Nothing yet (the channel cannot close: `start_dial` holds a sender).
            Err(_) => {}
        }
        for peer in changed {
            if state.start_again(peer) {
                log::warn!(
                    "node {me}: node {peer} connected from a new start: connecting to that one \
                     (if node {peer} was not started again, two copies of it are running)"
                );
                state.silent[peer] = None;
                start_dial(peer)?;
            }
        }
    }
    let outgoing = state
        .outgoing
        .into_iter()
        .map(|o| o.map(|o| o.made.secured));
    let incoming = state.incoming.into_iter().map(|i| i.and_then(|i| i.ready));
    Ok(Connections {
        outgoing: outgoing.collect(),
        incoming: incoming.collect(),
    })
}

/// Whether `address` has the form `host:port` (a port number after the last colon, something
/// before it), without looking the host up.
fn looks_like_host_and_port(address: &str) -> bool {
    address.parse::<SocketAddr>().is_ok()
        || address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Whether the other end of `stream` has closed it (or it failed): a look that does not wait.
/// Only for a socket no other thread reads meanwhile: it is non-blocking for the look.
fn closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

/// The connections this start of a node is still making (dials, handshakes, waits for a
/// node's `Ready`), by socket, so that when start-up ends none of them goes on: a start that
/// gave up must not dial, welcome or be ready for anyone after, in the name of a node that may
/// be started again (its leftovers would be taken for the new start, or refuse it).
#[derive(Default)]
struct Attempts {
    state: Mutex<UnderWay>,
}

/// What `Attempts` guards.
#[derive(Default)]
struct UnderWay {
    /// Start-up has ended.
    over: bool,
    /// The next attempt's id.
    next: u64,
    /// The sockets under way, by attempt.
    sockets: Vec<(u64, TcpStream)>,
}

impl Attempts {
    /// Registers `stream` as under way until the returned guard drops; `None` if start-up has
    /// ended (or the socket cannot be shared): the attempt must stop.
    fn enter(self: &Arc<Self>, stream: &TcpStream) -> Option<Attempt> {
        let socket = stream.try_clone().ok()?;
        let mut state = self.state.lock();
        if state.over {
            return None;
        }
        let id = state.next;
        state.next += 1;
        state.sockets.push((id, socket));
        Some(Attempt {
            attempts: self.clone(),
            id,
        })
    }

    fn over(&self) -> bool {
        self.state.lock().over
    }

    /// Start-up has ended: every attempt under way is cut off, and no other begins.
    fn end(&self) {
        let mut state = self.state.lock();
        state.over = true;
        for (_, socket) in state.sockets.drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One attempt under way (`Attempts::enter`); dropped when it is done.
struct Attempt {
    attempts: Arc<Attempts>,
    id: u64,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut state = self.attempts.state.lock();
        state.sockets.retain(|(id, _)| *id != self.id);
    }
}

/// Where start-up stands with each node (by index; unused for this node).
struct Startup {
    /// The connection opened to it, if made.
    outgoing: Vec<Option<Out>>,
    /// The connection accepted from it, if welcomed.
    incoming: Vec<Option<In>>,
    /// Whether a thread is connecting to it.
    dialing: Vec<bool>,
    /// Why connecting to it failed by the deadline.
    silent: Vec<Option<String>>,
    /// Why its last connection here was refused.
    refused_here: Vec<Option<String>>,
    /// Why the connection accepted from it ended before it said it was ready.
    gone: Vec<Option<String>>,
    /// Whether it was ever connected, either way.
    ever_connected: Vec<bool>,
}

impl Startup {
    /// Connected to and from `peer`, both with one start of it.
    fn both(&self, peer: usize) -> bool {
        matches!(
            (&self.outgoing[peer], &self.incoming[peer]),
            (Some(o), Some(i)) if o.made.boot == i.boot
        )
    }

    /// Connected both ways to `peer`, which has said it is ready.
    fn is_ready(&self, peer: usize) -> bool {
        self.both(peer)
            && self.incoming[peer]
                .as_ref()
                .is_some_and(|i| i.ready.is_some())
    }

    /// Tells every node whose connection (opened here) has not been told that this node is
    /// connected to every node (`ready`, the encoded `wire::Ready`). A connection that cannot
    /// take it is to a start that is gone: let go, to wait for a new one.
    fn tell_ready(&mut self, me: usize, ready: &[u8]) {
        for peer in (0..self.outgoing.len()).filter(|&p| p != me) {
            let Some(out) = self.outgoing[peer].as_mut().filter(|out| !out.told) else {
                continue;
            };
            out.told = true;
            let (stream, transport) = &mut out.made.secured;
            let mut timed = ByDeadline {
                stream,
                until: Instant::now() + HANDSHAKE,
            };
            if let Err(e) = secure::send_one(&mut timed, transport, ready) {
                self.gone[peer] = Some(format!("telling it this node is ready failed: {e}"));
                self.outgoing[peer] = None;
            }
        }
    }

    /// Lets go of `peer`'s connections if either has been closed by its end (its start gave
    /// up after it said it was ready): says whether it did. Nobody else reads them now.
    fn let_go_if_closed(&mut self, peer: usize) -> bool {
        let out_closed = self.outgoing[peer]
            .as_ref()
            .is_some_and(|o| closed(&o.made.secured.0));
        let in_closed = self.incoming[peer]
            .as_ref()
            .and_then(|i| i.ready.as_ref())
            .is_some_and(|(stream, _)| closed(stream));
        if !(out_closed || in_closed) {
            return false;
        }
        self.gone[peer] = Some("its connection closed after it said it was ready".into());
        if out_closed {
            self.outgoing[peer] = None;
        }
        if in_closed {
            self.incoming[peer] = None;
        }
        true
    }

    /// A connection from `peer` was welcomed: kept if it is the later one (a retry of the
    /// same start, or a new start: the later connection is the live one). Says whether it was.
    fn welcomed(&mut self, peer: usize, new: In) -> bool {
        if self.incoming[peer]
            .as_ref()
            .is_some_and(|had| had.at > new.at)
        {
            let _ = new.socket.shutdown(std::net::Shutdown::Both);
            return false;
        }
        if let Some(had) = self.incoming[peer].replace(new) {
            let _ = had.socket.shutdown(std::net::Shutdown::Both);
        }
        self.gone[peer] = None;
        self.ever_connected[peer] = true;
        true
    }

    /// After a change of `peer`'s connections: of two connections with two starts of it, lets
    /// go of the dead one, and says whether to connect to it again (what was opened here went
    /// to a start that is gone, and a new one connected here).
    fn start_again(&mut self, peer: usize) -> bool {
        let Some(i) = &self.incoming[peer] else {
            return false;
        };
        match &self.outgoing[peer] {
            Some(o) if o.made.boot == i.boot => return false,
            // The start this node connected to is gone (a start that ends closes everything,
            // before a new one can begin): connect to the new one.
            Some(o) if closed(&o.made.secured.0) => {}
            // Both open: the later is the new start (or two copies of the node run: the one
            // at its address wins, since this node keeps connecting there).
            Some(o) if o.made.at > i.at => {
                let _ = i.socket.shutdown(std::net::Shutdown::Both);
                self.incoming[peer] = None;
                return false;
            }
            _ => {}
        }
        self.outgoing[peer] = None;
        !std::mem::replace(&mut self.dialing[peer], true)
    }

    /// The error when start-up gives up: the nodes never connected both ways, if any
    /// (`Unreachable`), else those connected that did not say they were ready (`NotReady`);
    /// with what was seen of each.
    fn why_not(&self, config: &ClusterConfig, me: usize, began: Instant) -> ClusterError {
        let others = (0..self.outgoing.len()).filter(|&p| p != me && !self.is_ready(p));
        let (never, late): (Vec<usize>, Vec<usize>) =
            others.partition(|&p| !self.ever_connected[p]);
        let mut detail = Vec::new();
        for &peer in if never.is_empty() { &late } else { &never } {
            if let Some(why) = &self.silent[peer] {
                let address = &config.nodes[peer].address;
                detail.push(format!("node {peer} at {address}: {why}"));
            }
            if let Some(why) = &self.gone[peer] {
                detail.push(format!("node {peer} was connected, then {why}"));
            } else if self.incoming[peer].is_none() {
                detail.push(match (&self.refused_here[peer], &self.outgoing[peer]) {
                    (Some(why), _) => {
                        format!("node {peer} tried to connect and was refused: {why}")
                    }
                    (None, Some(_)) => {
                        format!("node {peer} took this node's connection but never connected here")
                    }
                    (None, None) => format!("node {peer} never connected to this node"),
                });
            } else if self.both(peer) {
                let why = format!("node {peer} did not say it was connected to every node");
                detail.push(why);
            }
        }
        let (waited, detail) = (began.elapsed(), detail.join("; "));
        if never.is_empty() {
            ClusterError::NotReady {
                nodes: late,
                waited,
                detail,
            }
        } else {
            ClusterError::Unreachable {
                nodes: never,
                waited,
                detail,
            }
        }
    }
}

/// Connects to `peer` at `address`, retrying until `deadline` (or until start-up ends:
/// `attempts`), and says hello.
fn dial(
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
        if left.is_zero() || attempts.over() {
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
                let greeted = greet(stream, peer, hello, keys, HANDSHAKE.min(left));
                drop(attempt);
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
                Some(Ok(Err(refusal))) => return Dialed::Refused(peer, refusal),
                Some(Err(e)) => last = format!("connected, but the handshake failed: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
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
) -> std::io::Result<Result<(Secured, u64), String>> {
    stream.set_nodelay(true)?;
    let mut timed = ByDeadline {
        stream: &stream,
        until: Instant::now() + patience,
    };
    timed.write_all(&wire::preamble())?;
    match wire::read_preamble(&mut timed)? {
        Ok(()) => {}
        // This crate, another wire format: the two builds cannot run together.
        Err(foreign @ wire::Foreign::Version(_)) => return Ok(Err(foreign.to_string())),
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
        Reply::Refused(why) => Ok(Err(why)),
    }
}

/// Why the acceptor refused a connection.
enum Refusal {
    /// A node of this cluster whose `Hello` differs from this node's: what differs.
    Differs(usize, String),
    /// Anything else (not a member's key, a node the file does not list, a failed read): the
    /// node it proved it is, if it got that far, and why.
    Other(Option<usize>, String),
}

/// What the threads that welcome connections report.
enum Heard {
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
struct Welcoming {
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
    /// Handshakes under way.
    busy: AtomicUsize,
}

impl Welcoming {
    /// The most handshakes at once: a flood of connections costs at most this many threads,
    /// each for at most `HANDSHAKE`.
    const MOST: usize = 64;

    /// For node `me` of a cluster of `nodes`, saying `hello`, with `keys`, until `deadline`,
    /// its welcomes among `attempts`: nobody welcomed yet.
    fn new(
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
            busy: AtomicUsize::new(0),
        }
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
    fn start(self: &Arc<Self>, stream: TcpStream, from: SocketAddr, done: &Sender<Heard>) {
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
                    Some(_) => welcoming.welcome(stream),
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
