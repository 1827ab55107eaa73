//! Start-up: every node connects to every other, in any order, retrying until a deadline, and
//! the first frames check that they agree (topology, placement, wire format, crate version,
//! message and state types, checkpoint).
//!
//! Node I opens one connection to each other node J and writes its I->J traffic on it; it
//! accepts one from each J and reads J's traffic from it. So each ordered pair of nodes has its
//! own connection, which is what carries every channel from I's processes to J's in order.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::config::ClusterConfig;
use super::wire::{self, Hello, Reply};
use crate::error::ClusterError;

/// How long a handshake may take once connected (it is a few hundred bytes each way).
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Between two attempts to connect to a node that is not listening yet.
const RETRY: Duration = Duration::from_millis(50);

/// The longest `Hello` a node reads.
const MAX_HELLO: usize = 1 << 20;

/// Every connection of one node, once all are made: by node, the one it writes to (opened
/// here) and the one it reads from (accepted here); `None` for itself.
pub(crate) struct Connections {
    pub(crate) outgoing: Vec<Option<TcpStream>>,
    pub(crate) incoming: Vec<Option<TcpStream>>,
}

/// What became of connecting to one node.
enum Dialed {
    Welcomed(usize, TcpStream),
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
        let dialed_tx = dialed_tx.clone();
        thread::Builder::new()
            .name(format!("dial-{peer}"))
            .spawn(move || {
                let _ = dialed_tx.send(dial(peer, address, &hello, deadline));
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
    let mut outgoing: Vec<Option<TcpStream>> = (0..nodes).map(|_| None).collect();
    let mut incoming: Vec<Option<TcpStream>> = (0..nodes).map(|_| None).collect();
    let mut silent: Vec<(usize, String)> = Vec::new();
    // What was last refused of each node that tried to connect here.
    let mut refused_here: Vec<Option<String>> = vec![None; nodes];
    let mut dialing = nodes - 1;
    let mut accepted = 0;
    while dialing > 0 || accepted < nodes - 1 {
        // Accept whoever is waiting.
        loop {
            match listener.accept() {
                Ok((stream, from)) => match welcome(stream, hello, me, nodes, &incoming) {
                    Ok((peer, stream)) => {
                        incoming[peer] = Some(stream);
                        accepted += 1;
                    }
                    // A node of this cluster that runs something else: the cluster cannot
                    // start, whichever of the two noticed first.
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
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("node {me}: accept failed: {e}");
                    break;
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
            Ok(Dialed::Welcomed(peer, stream)) => {
                outgoing[peer] = Some(stream);
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
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
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
fn dial(peer: usize, address: SocketAddr, hello: &Hello, deadline: Instant) -> Dialed {
    let mut last = "no attempt".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Dialed::Silent(peer, last);
        }
        match TcpStream::connect_timeout(&address, left.min(Duration::from_secs(1))) {
            Ok(stream) => match greet(stream, hello) {
                Ok(Ok(stream)) => return Dialed::Welcomed(peer, stream),
                Ok(Err(refusal)) => return Dialed::Refused(peer, refusal),
                Err(e) => last = format!("connected, but the handshake failed: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
        thread::sleep(RETRY.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The opener's side of the handshake: preamble and `Hello` out, `Reply` in.
fn greet(mut stream: TcpStream, hello: &Hello) -> std::io::Result<Result<TcpStream, String>> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE))?;
    let mut out = wire::preamble().to_vec();
    wire::encode(&mut out, hello).map_err(std::io::Error::other)?;
    stream.write_all(&out)?;
    let mut buf = Vec::new();
    wire::read_frame(&mut stream, &mut buf, MAX_HELLO)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    match wire::decode::<Reply>(&buf).map_err(|e| std::io::Error::other(e.to_string()))? {
        Reply::Welcome => {
            stream.set_read_timeout(None)?;
            Ok(Ok(stream))
        }
        Reply::Refused(why) => Ok(Err(why)),
    }
}

/// Why the acceptor refused a connection.
enum Refusal {
    /// A node of this cluster whose `Hello` differs from this node's: what differs.
    Differs(usize, String),
    /// Anything else (not a node of this format, a node already connected, a failed read): the
    /// node it claimed to be, if it got that far, and why.
    Other(Option<usize>, String),
}

/// The acceptor's side: checks the opener's preamble and `Hello` against this node's, and
/// welcomes or refuses it. `Ok`: the opener's node index and the stream.
fn welcome(
    mut stream: TcpStream,
    ours: &Hello,
    me: usize,
    nodes: usize,
    connected: &[Option<TcpStream>],
) -> Result<(usize, TcpStream), Refusal> {
    let io = |e: std::io::Error| Refusal::Other(None, e.to_string());
    stream.set_nonblocking(false).map_err(io)?;
    stream.set_read_timeout(Some(HANDSHAKE)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    if let Err(why) = wire::read_preamble(&mut stream) {
        return refuse(&mut stream, None, why);
    }
    let mut buf = Vec::new();
    if let Err(e) = wire::read_frame(&mut stream, &mut buf, MAX_HELLO) {
        return refuse(&mut stream, None, format!("no hello: {e}"));
    }
    let theirs: Hello = match wire::decode(&buf) {
        Ok(hello) => hello,
        Err(e) => return refuse(&mut stream, None, format!("not a hello: {e}")),
    };
    let peer = theirs.node as usize;
    if peer >= nodes || peer == me {
        return refuse(
            &mut stream,
            None,
            format!(
                "it says it is node {peer}, but the cluster has nodes 0..{nodes} and this is node {me}"
            ),
        );
    }
    if connected[peer].is_some() {
        return refuse(
            &mut stream,
            Some(peer),
            format!("node {peer} is already connected"),
        );
    }
    if let Some(differ) = ours.differences(&theirs) {
        return match refuse(&mut stream, Some(peer), differ) {
            Err(Refusal::Other(_, differ)) => Err(Refusal::Differs(peer, differ)),
            other => other,
        };
    }
    let mut out = Vec::new();
    wire::encode(&mut out, &Reply::Welcome).map_err(|e| Refusal::Other(Some(peer), e))?;
    stream.write_all(&out).map_err(io)?;
    stream.set_read_timeout(None).map_err(io)?;
    Ok((peer, stream))
}

/// Tells the opener why it is refused (best effort: it may be gone), and says so.
fn refuse<T>(stream: &mut TcpStream, peer: Option<usize>, why: String) -> Result<T, Refusal> {
    let mut out = Vec::new();
    if wire::encode(&mut out, &Reply::Refused(why.clone())).is_ok() {
        let _ = stream.write_all(&out);
    }
    Err(Refusal::Other(peer, why))
}
