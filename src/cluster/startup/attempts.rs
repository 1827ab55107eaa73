//! What a start of a node still has under way, so that none of it outlives start-up.

use std::net::TcpStream;
use std::sync::Arc;

use parking_lot::Mutex;

/// The connections this start of a node is still making (dials, handshakes, waits for a
/// node's `Ready`), by socket, so that when start-up ends none of them goes on: a start that
/// gave up must not dial, welcome or be ready for anyone after, in the name of a node that may
/// be started again (its leftovers would be taken for the new start, or refuse it).
#[derive(Default)]
pub(super) struct Attempts {
    state: Mutex<UnderWay>,
}

/// What `Attempts` guards.
#[derive(Default)]
struct UnderWay {
    /// Start-up has ended.
    over: bool,
    /// Start-up is ending (`close`): no new dial; what is under way goes on until `end`.
    closing: bool,
    /// Handshakes under way (`handshake`), dials' and welcomes' both.
    handshakes: usize,
    /// The next attempt's id.
    next: u64,
    /// The sockets under way, by attempt.
    sockets: Vec<(u64, TcpStream)>,
}

impl Attempts {
    /// Registers `stream` as under way until the returned guard drops; `None` if start-up has
    /// ended (or the socket cannot be shared): the attempt must stop.
    pub(super) fn enter(self: &Arc<Self>, stream: &TcpStream) -> Option<Attempt> {
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

    /// Whether a dial should give up rather than connect again: start-up has ended, or is
    /// ending (`close`). (Not whether start-up is over: while it ends, handshakes go on.)
    pub(super) fn dialing_over(&self) -> bool {
        let state = self.state.lock();
        state.over || state.closing
    }

    /// Start-up is ending: no dial connects again, but what is under way (a handshake, a
    /// welcome of a connection accepted meanwhile) goes on until [`end`](Attempts::end).
    pub(super) fn close(&self) {
        self.state.lock().closing = true;
    }

    /// Counts a handshake as under way until the returned guard drops.
    pub(super) fn handshake(self: &Arc<Self>) -> Handshake {
        self.state.lock().handshakes += 1;
        Handshake {
            attempts: self.clone(),
        }
    }

    /// Handshakes under way.
    pub(super) fn handshakes(&self) -> usize {
        self.state.lock().handshakes
    }

    /// Start-up has ended: every attempt under way is cut off, and no other begins.
    pub(super) fn end(&self) {
        let mut state = self.state.lock();
        state.over = true;
        for (_, socket) in state.sockets.drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One attempt under way (`Attempts::enter`); dropped when it is done.
pub(super) struct Attempt {
    attempts: Arc<Attempts>,
    id: u64,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut state = self.attempts.state.lock();
        state.sockets.retain(|(id, _)| *id != self.id);
    }
}

/// One handshake under way (`Attempts::handshake`); dropped when it has ended, either way.
pub(super) struct Handshake {
    attempts: Arc<Attempts>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.attempts.state.lock().handshakes -= 1;
    }
}
