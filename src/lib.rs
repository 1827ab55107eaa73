//! Consistent global snapshots of a running set of communicating processes, taken while they
//! keep running: the Chandy-Lamport algorithm, in process.
//!
//! Each process runs on its own OS thread; each directed edge between two processes is its own
//! FIFO crossbeam channel. One event loop per thread serves the application's messages and the
//! snapshot markers, so application code never waits for a snapshot and never sees a marker.
//! Any process can start a snapshot, at any time, as many at once as you like; each is told apart
//! by a UUID and completes on its own.
//!
//! # A first run
//!
//! Implement [`Process`]: what happens when a message arrives, and what state a snapshot keeps.
//! Here three processes pass tokens around a ring; a snapshot must find all of them, in the
//! processes or in flight on a channel.
//!
//! ```
//! use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
//!
//! struct Holder {
//!     tokens: u64,
//! }
//!
//! impl Process for Holder {
//!     type Message = u64; // tokens passed on
//!     type State = u64; // tokens held
//!
//!     fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
//!         // Work on the process's own initiative: pass one token on.
//!         let next = ctx.neighbours()[0];
//!         self.tokens -= 1;
//!         ctx.send(next, 1).unwrap();
//!     }
//!
//!     fn on_message(&mut self, _from: ProcessId, tokens: u64, ctx: &mut Context<'_, u64>) {
//!         self.tokens += tokens;
//!         let next = ctx.neighbours()[(self.tokens as usize) % ctx.neighbours().len()];
//!         self.tokens -= 1;
//!         ctx.send(next, 1).unwrap();
//!     }
//!
//!     fn record(&self) -> u64 {
//!         self.tokens
//!     }
//! }
//!
//! let processes = (0..3).map(|_| Holder { tokens: 10 });
//! let runtime = Runtime::new(Topology::ring(3), processes)?;
//!
//! // Take a snapshot started by process 1 and wait for it.
//! let snapshot = runtime.snapshot(1)?;
//! snapshot.verify()?; // the consistent-cut criterion, checked exactly
//! assert_eq!(snapshot.total(|held| *held, |passed| *passed), 30);
//!
//! // Many at once, from different initiators.
//! let pending: Vec<_> = (0..3)
//!     .map(|p| runtime.start_snapshot(p))
//!     .collect::<Result<_, _>>()?;
//! for ticket in pending {
//!     let snapshot = ticket.wait_timeout(std::time::Duration::from_secs(10))?;
//!     assert_eq!(snapshot.total(|held| *held, |passed| *passed), 30);
//! }
//!
//! // Stop, and get the processes back.
//! let stopped = runtime.shutdown()?;
//! let in_flight: u64 = stopped.in_flight().map(|(_, tokens)| *tokens).sum();
//! let held: u64 = stopped.into_processes()?.iter().map(|h| h.tokens).sum();
//! assert_eq!(held + in_flight, 30);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Snapshots started by application code
//!
//! A process can start a snapshot inside any callback with [`Context::start_snapshot`]: its
//! state is recorded when that callback returns, after everything it sent. The snapshot is
//! known from the moment its id is handed out, so another thread may
//! [`watch`](Runtime::watch_snapshot) it at once. See every snapshot's end, whoever started it,
//! with [`Runtime::subscribe`].
//!
//! # Many snapshots at once
//!
//! Snapshots in flight do not slow each other down: everything a process or the collector does
//! for one marker, message, completed part or waiter costs O(1) or O(log k) in k, the number of
//! snapshots in flight (a hash lookup by id; the oldest open recording of a channel is kept at
//! hand rather than searched for). So k snapshots started at once cost about k times one
//! (BENCHMARKS.md measures the time per snapshot from 1 to 100,000 in flight). What each holds is
//! proportional to what it records (a state per process, counters per channel, the messages it
//! found in flight), plus one marker per channel on its way.
//!
//! That memory is bounded by [`RuntimeBuilder::max_snapshots_in_flight`]: past it,
//! [`Runtime::start_snapshot`] fails with [`Error::TooManySnapshots`], naming the limit, and the
//! running snapshots carry on undisturbed.
//!
//! # What a snapshot holds
//!
//! A [`GlobalSnapshot`] has every process's recorded state ([`Process::record`]), every channel's
//! recorded in-flight messages (empty channels included) with their per-channel sequence numbers,
//! the sent/received counters of each channel at the cut, the initiator, the id, and when it
//! started and completed. [`GlobalSnapshot::verify`] checks the consistent-cut criterion from
//! those numbers.
//!
//! # Failures
//!
//! Bad input gets a typed error ([`TopologyError`], [`BuildError`], [`Error`], [`SendError`]).
//! A panic in application code ends that process: the panic is reported ([`Runtime::failures`],
//! [`Error::ProcessFailed`]), and snapshots that can no longer complete fail instead of hanging.
//! The simulator follows the same rules through the same code (it catches the panic as the
//! runtime's thread does), so a failure can be replayed from a seed.
//! Every blocking call has a form with a timeout.
//!
//! # Which driver
//!
//! - [`Runtime`]: every process a thread of this OS process. For tests, and systems that live
//!   in one program.
//! - `cluster::Node` (cargo feature `cluster`): the processes spread over several OS
//!   processes, on one machine or many, channels between them over TCP; the same event loop and
//!   marker code as the runtime, and the same exact check. See `docs/cluster.md`.
//! - [`sim::Simulation`]: one thread, a seeded scheduler: replay a run exactly, explore
//!   thousands of interleavings, or all of them ([`sim::exhaustive`]).
//!
//! # Layout
//!
//! - [`topology`]: processes and channels, validated into a [`Wiring`];
//! - [`snapshot`]: ids, local and global snapshots, the cut check;
//! - [`recorder`]: the marker rules of one process, a pure state machine (no threads, channels
//!   or clocks), unit-tested rule by rule;
//! - `collector.rs` (private): assembling local parts into global snapshots, also pure;
//! - two drivers around them, sharing one per-process core (how a process sends, numbers and
//!   counts its messages, and handles messages and markers): the threaded [`Runtime`], and the
//!   deterministic simulator ([`sim`]), where a seed replays a run exactly. A driver only moves
//!   envelopes, so what the simulator checks is what the runtime runs; the cluster (feature
//!   `cluster`) is a layer over the runtime, adding links between nodes;
//! - on top, what only needs "take a snapshot": stable-property detection ([`detect`]), and
//!   restarting from a snapshot ([`RuntimeBuilder::restore`]; checkpoint files in
//!   `checkpoint`, cargo feature `serde`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The channel crate of [`Runtime::subscribe`]'s receiver, re-exported so its version always
/// matches the one this crate was built with.
pub use crossbeam_channel;

pub mod algorithm;
#[cfg(feature = "serde")]
pub mod checkpoint;
#[cfg(feature = "cluster")]
pub mod cluster;
mod collector;
mod deadline;
pub mod detect;
mod envelope;
pub mod error;
mod host;
mod ids;
mod outgoing;
mod own_lines;
mod peers;
mod process;
pub mod recorder;
mod restore;
mod runtime;
pub mod sim;
pub mod snapshot;
pub mod topology;
pub mod trace;

#[cfg(feature = "serde")]
pub use error::CheckpointError;
#[cfg(feature = "cluster")]
pub use error::ClusterError;
pub use error::{BuildError, CutError, Error, RestoreError, SendError, TopologyError};
pub use process::{Context, Process, ProcessFailure};
pub use runtime::{
    PendingSnapshot, Runtime, RuntimeBuilder, RuntimeStats, SnapshotEvent, SnapshotOf, Stopped,
    Undelivered,
};
pub use snapshot::{
    ChannelSnapshot, GlobalSnapshot, LocalSnapshot, RecordedMessage, SnapshotId, SnapshotOutcome,
};
pub use topology::{Channel, ProcessId, Topology, Wiring};

/// The README's code, compiled as a doctest so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The cluster guide's code, compiled as a doctest so it cannot go stale.
#[cfg(all(doctest, feature = "cluster"))]
#[doc = include_str!("../docs/cluster.md")]
pub struct ClusterGuideDoctests;
