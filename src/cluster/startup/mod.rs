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
//! A node that meets one that disagrees gives up (both do, whichever noticed first), but only
//! once the handshakes it has under way have ended (`linger`): every node it was meeting meets
//! its `Hello` too, and one that disagrees with it as well gives up at once, saying what
//! differs.
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

mod attempts;
mod handshake;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use snow::TransportState;

use super::config::ClusterConfig;
use super::keys::NodeKeys;
use super::secure;
use super::wire::{self, Hello};
use crate::error::ClusterError;
use attempts::Attempts;
use handshake::{dial, ByDeadline, Dialed, Heard, Refusal, Welcoming};

/// How long a handshake may take once connected (it is a few hundred bytes each way).
pub(super) const HANDSHAKE: Duration = Duration::from_secs(5);

/// One authenticated connection: the socket and its Noise transport.
pub(crate) type Secured = (TcpStream, TransportState);

/// Every connection of one node, once all are made: by node, the one it writes to (opened
/// here) and the one it reads from (accepted here); `None` for itself.
pub(crate) struct Connections {
    pub(crate) outgoing: Vec<Option<Secured>>,
    pub(crate) incoming: Vec<Option<Secured>>,
}

/// A connection made with one node, by the start of it that made it (`Hello::boot`), with
/// when its handshake ended.
pub(super) struct Made {
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
    listener: &TcpListener,
    timeout: Duration,
) -> Result<Connections, ClusterError> {
    let began = Instant::now();
    let deadline = began + timeout;
    let attempts = Arc::new(Attempts::default());
    let result = connect_until(config, me, hello, keys, listener, deadline, &attempts);
    // Whatever ended start-up, nothing goes on in this start's name: no dial, no welcome, no
    // wait for a node's `Ready` (this node may be started again, and a leftover of this start
    // would speak for it).
    attempts.end();
    result.map_err(|why| why.into_error(config, me, began))
}

/// Once the cluster runs, answers every node that connects: a member is told the cluster is
/// running without it (`Reply::Running`, its `ClusterError::Running`), so that a node started
/// again after it failed, or after the others started without it, says so at once instead of
/// waiting out its connect timeout on a port that refuses it. Strangers get what they get
/// during start-up (nothing). Stops, and lets go of the listener, on `stop` or drop.
pub(crate) struct Latecomers {
    /// Dropped (or sent on) to stop the thread: it waits on this between two looks at the
    /// listener.
    stop: Mutex<Option<crossbeam_channel::Sender<()>>>,
    /// Signalled when the thread has ended (and let go of the listener).
    ended: crossbeam_channel::Receiver<()>,
    attempts: Arc<Attempts>,
}

impl Latecomers {
    /// How long a latecomer may wait to be accepted: the thread looks at the listener this
    /// often. (A thread blocked in `accept` would need a connection to itself to wake, which
    /// can fail: a listener on `[::]` on a host without IPv6, a process out of descriptors.)
    const LOOK: Duration = Duration::from_millis(100);

    /// Answers on `listener` as node `me` of `nodes`, saying `hello`, with `keys`. If no thread
    /// can be started, nobody is answered (the port is let go: connections are refused).
    pub(crate) fn answer(
        listener: TcpListener,
        hello: &Hello,
        keys: &NodeKeys,
        me: usize,
        nodes: usize,
    ) -> Latecomers {
        let attempts = Arc::new(Attempts::default());
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let (ended_tx, ended) = crossbeam_channel::bounded(1);
        let welcoming = Welcoming::new(hello, keys, me, nodes, Instant::now(), &attempts);
        let welcoming = Arc::new(welcoming.running());
        let spawned = thread::Builder::new()
            .name(format!("node-{me}-latecomers"))
            .spawn(move || {
                let (heard_tx, heard) = crossbeam_channel::unbounded();
                if listener.set_nonblocking(true).is_ok() {
                    loop {
                        accept_waiting(&listener, &welcoming, &heard_tx, me);
                        for event in heard.try_iter() {
                            if let Heard::Refused(from, Refusal::Other(_, why)) = event {
                                log::warn!("node {me}: a connection from {from}: {why}");
                            }
                        }
                        match stop_rx.recv_timeout(Self::LOOK) {
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                            _ => break,
                        }
                    }
                }
                drop(listener);
                let _ = ended_tx.send(());
            });
        if let Err(e) = spawned {
            log::warn!("node {me}: no thread to answer nodes that connect late: {e}");
        }
        Latecomers {
            stop: Mutex::new(Some(stop_tx)),
            ended,
            attempts,
        }
    }

    /// Stops answering and lets go of the listener (waiting for that, at most a second, so
    /// that the port is free when the node's stop returns).
    pub(crate) fn stop(&self) {
        let Some(stop) = self.stop.lock().take() else {
            return;
        };
        drop(stop);
        self.attempts.end();
        if self.ended.recv_timeout(Duration::from_secs(1)).is_err() {
            log::warn!("the thread that answers nodes connecting late has not ended");
        }
    }
}

impl Drop for Latecomers {
    fn drop(&mut self) {
        self.stop();
    }
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
    // A node of this cluster that runs something else: the cluster cannot start, whichever of
    // the two noticed first, once the handshakes under way have ended (`linger`).
    let disagree = |node: usize, message: String| -> GaveUp {
        linger(
            listener,
            &welcoming,
            (&heard_tx, &heard),
            &dialed,
            attempts,
            me,
        );
        ClusterError::Mismatch { node, message }.into()
    };
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
        }
        let told_all = all && others().all(|p| state.outgoing[p].as_ref().is_some_and(|o| o.told));
        // Each node's `Ready` may have waited here while that node gave up: only connections
        // still open go on (a node that gave up now is one that failed).
        if told_all
            && others().all(|p| state.is_ready(p))
            && others().all(|p| !state.let_go_if_closed(p))
        {
            break;
        }
        // Once every node is told this node is ready, none is given up on by the clock: they
        // may act on it, and each either says it is ready too or gives up (its connection
        // closes, or its wait here ends: `Welcoming::start`). Before that, the deadline, and a
        // handshake's time more for the others once all are connected.
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
        accept_waiting(listener, &welcoming, &heard_tx, me);
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
                Heard::Refused(_, Refusal::Differs(peer, message)) => {
                    log::error!("node {me}: refused node {peer}: {message}");
                    return Err(disagree(peer, message));
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
            Ok(Dialed::Running(node)) => return Err(ClusterError::Running { node }.into()),
            Ok(Dialed::Refused(peer, message)) => return Err(disagree(peer, message)),
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

/// Start-up ends on a node that disagrees with this one, but first the handshakes under way
/// end (a handshake's time at most): each node they meet meets this node's `Hello`, and one
/// that disagrees with it as well gives up at once, saying what differs, instead of waiting out
/// its connect timeout for a node that has left (a third node, whose connections with this one
/// were still in their handshakes when this one met the node it disagrees with). Meanwhile
/// nothing is dialed again, the nodes that connect are answered as before, and whatever else is
/// heard is let go: start-up is over.
fn linger(
    listener: &TcpListener,
    welcoming: &Arc<Welcoming>,
    (heard_tx, heard): (&Sender<Heard>, &Receiver<Heard>),
    dialed: &Receiver<Dialed>,
    attempts: &Attempts,
    me: usize,
) {
    attempts.close();
    let until = Instant::now() + HANDSHAKE;
    while attempts.handshakes() > 0 && Instant::now() < until {
        accept_waiting(listener, welcoming, heard_tx, me);
        for event in heard.try_iter() {
            if let Heard::Refused(_, Refusal::Differs(peer, message)) = event {
                log::error!("node {me}: refused node {peer}: {message}");
            }
        }
        let _ = dialed.recv_timeout(Duration::from_millis(5));
    }
}

/// Hands every connection waiting on `listener` (non-blocking) to `welcoming`, which reports
/// on `heard`. The address is the one `accept` gives: a connection reset before it is taken
/// has none to ask for any more.
fn accept_waiting(
    listener: &TcpListener,
    welcoming: &Arc<Welcoming>,
    heard: &crossbeam_channel::Sender<Heard>,
    me: usize,
) {
    loop {
        match listener.accept() {
            Ok((stream, from)) => welcoming.start(stream, from, heard),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("node {me}: accept failed: {e}");
                return;
            }
        }
    }
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
