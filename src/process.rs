//! The application's side: the [`Process`] trait it implements and the [`Context`] through which
//! it sends messages and starts snapshots.

use crate::error::SendError;
use crate::snapshot::SnapshotId;
use crate::topology::ProcessId;

/// One process of the application.
///
/// Each process runs on its own thread; every callback runs on that thread, one at a time, in
/// the same event loop that handles the snapshot markers, so a process never needs locks for its
/// own state. Between two callbacks the runtime may call [`record`](Process::record) to take
/// the process's state for a snapshot.
pub trait Process: Send + 'static {
    /// The application messages processes send one another.
    ///
    /// `Clone` is used only while a snapshot is recording the channel a message arrives on (one
    /// copy, shared by every snapshot recording it). `Sync` is kept on purpose: that one copy
    /// sits behind an `Arc` shared by every snapshot that recorded it, and snapshots are read on
    /// other threads (tickets, subscribers), so the message is shared between threads. Dropping
    /// `Sync` would mean a copy per snapshot per recorded message, which is what makes many
    /// concurrent snapshots affordable. A message type that is `Send` but not `Sync` (one holding
    /// a `Cell` or `RefCell`) can travel as plain data and be rebuilt on receipt, or hold a
    /// `Mutex`.
    type Message: Clone + Send + Sync + 'static;

    /// What [`record`](Process::record) returns: the part of the process's state a snapshot keeps.
    type State: Send + Sync + 'static;

    /// Called once on the process's thread before anything else: a process can start its work
    /// here, sending without first receiving.
    fn on_start(&mut self, ctx: &mut Context<'_, Self::Message>) {
        let _ = ctx;
    }

    /// Called for each application message, in FIFO order per channel.
    fn on_message(
        &mut self,
        from: ProcessId,
        message: Self::Message,
        ctx: &mut Context<'_, Self::Message>,
    );

    /// Called periodically when the runtime is built with a tick interval: work on the process's
    /// own initiative.
    fn on_tick(&mut self, ctx: &mut Context<'_, Self::Message>) {
        let _ = ctx;
    }

    /// A copy of the process's state, for a snapshot.
    ///
    /// It is not told its process id: a snapshot files each state under its process
    /// ([`GlobalSnapshot::states`](crate::GlobalSnapshot::states) is indexed by id), so the state
    /// need not carry it, and a process that wants its id keeps it from
    /// [`Context::id`] in [`on_start`](Process::on_start).
    fn record(&self) -> Self::State;
}

/// A process that panicked, and its panic message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFailure {
    /// The process.
    pub process: ProcessId,
    /// Its panic message.
    pub message: String,
}

/// What a driver provides to application code: sending, and starting snapshots.
pub(crate) trait Outbox<M> {
    /// Sends an application message on the channel to `to`.
    fn send(&mut self, to: ProcessId, message: M) -> Result<(), SendError<M>>;
    /// Registers a snapshot started by application code at `initiator`, under a fresh id,
    /// and returns that id with whether it may start. `false`: the driver is shutting down or
    /// a process has failed, and the refusal has been reported as that snapshot's end.
    fn begin_snapshot(&mut self, initiator: ProcessId) -> (SnapshotId, bool);
}

/// The process's view of the system during a callback.
pub struct Context<'a, M> {
    process: ProcessId,
    /// Held here, not asked of the outbox: applications read it on every message (to pick a
    /// destination), and a field costs no call through the `dyn` outbox.
    neighbours: &'a [ProcessId],
    outbox: &'a mut dyn Outbox<M>,
    started: &'a mut Vec<SnapshotId>,
}

impl<'a, M> Context<'a, M> {
    pub(crate) fn new(
        process: ProcessId,
        neighbours: &'a [ProcessId],
        outbox: &'a mut dyn Outbox<M>,
        started: &'a mut Vec<SnapshotId>,
    ) -> Self {
        Context {
            process,
            neighbours,
            outbox,
            started,
        }
    }

    /// This process's id.
    pub fn id(&self) -> ProcessId {
        self.process
    }

    /// The processes this one has a channel to, in increasing order.
    ///
    /// Empty in a one-process system, which has no channel at all (in any larger topology,
    /// strong connectivity gives every process at least one): there, code that picks a
    /// destination by indexing, `ctx.neighbours()[0]`, panics, and the process fails. If your
    /// process may run alone, take a destination with [`first`](slice::first) or
    /// [`get`](slice::get) and decide what it does with no one to send to (keep the work, or do
    /// it itself):
    ///
    /// ```
    /// use chandy_lamport::sim::Simulation;
    /// use chandy_lamport::{Context, Process, ProcessId, Topology};
    ///
    /// /// Passes every token on, or keeps it when there is no one to pass it to.
    /// struct Relay(u64);
    /// impl Relay {
    ///     fn pass_on(&mut self, token: u64, ctx: &mut Context<'_, u64>) {
    ///         match ctx.neighbours().first() {
    ///             Some(&to) => ctx.send(to, token).unwrap(),
    ///             None => self.0 += token,
    ///         }
    ///     }
    /// }
    /// impl Process for Relay {
    ///     type Message = u64;
    ///     type State = u64;
    ///     fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
    ///         self.pass_on(1, ctx);
    ///     }
    ///     fn on_message(&mut self, _: ProcessId, token: u64, ctx: &mut Context<'_, u64>) {
    ///         self.pass_on(token, ctx);
    ///     }
    ///     fn record(&self) -> u64 { self.0 }
    /// }
    ///
    /// // Alone: no neighbour, so the token stays, and nothing panicked.
    /// let mut sim = Simulation::new(Topology::complete(1), [Relay(0)], 1)?;
    /// sim.run_for(10);
    /// assert!(sim.failures().is_empty());
    /// assert_eq!(sim.processes().next().map(|r| r.0), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn neighbours(&self) -> &[ProcessId] {
        self.neighbours
    }

    /// Sends `message` to neighbour `to`, after every message this process sent `to` before.
    ///
    /// Fails, handing the message back, if there is no channel to `to` or `to` has panicked.
    /// (During a graceful shutdown sends keep succeeding; what was not delivered is handed back
    /// by [`Runtime::shutdown`](crate::Runtime::shutdown).)
    pub fn send(&mut self, to: ProcessId, message: M) -> Result<(), SendError<M>> {
        self.outbox.send(to, message)
    }

    /// Starts a snapshot with this process as initiator and returns its id.
    ///
    /// The process records its state when the current callback returns, and its markers follow
    /// every message the callback sent. Collect the result with
    /// [`Runtime::subscribe`](crate::Runtime::subscribe) or
    /// [`Runtime::watch_snapshot`](crate::Runtime::watch_snapshot).
    ///
    /// The snapshot is known from the moment this returns: its id may go to another thread (or,
    /// on a cluster node, another node) at once, and a watch of it succeeds even while this
    /// callback is still running. If it may not start (the runtime is shutting down, or a
    /// process has failed), subscribers are told it failed, and a watch finds it ended.
    pub fn start_snapshot(&mut self) -> SnapshotId {
        let (id, begun) = self.outbox.begin_snapshot(self.process);
        if begun {
            self.started.push(id);
        }
        id
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
