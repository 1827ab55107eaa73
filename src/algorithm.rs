//! The algorithm as this crate implements it: the system it assumes, the marker rules, when a
//! snapshot is complete, and what makes a snapshot correct. The code, the tests and the errors
//! cite this page by its section names.
//!
//! # The system
//!
//! - Processes `0..N`, joined by one-way channels. The classic presentation joins every ordered
//!   pair (a complete graph); this crate takes any strongly connected directed graph, since a
//!   marker must be able to reach every process from every initiator.
//! - A channel delivers what it is given, in the order it was given (FIFO), once: nothing is
//!   lost, duplicated or reordered. Markers travel on the same channels as application messages,
//!   and that shared order is what the rules rely on.
//! - Taking a snapshot never stops the application: messages keep flowing throughout.
//! - Any process may start a snapshot, at any time, and any number may be running at once; each
//!   carries its own id (a UUID here), and snapshots with different ids never affect each other.
//!
//! # The rules, for one snapshot id S
//!
//! **Starting (the initiator).** The process that starts S, in one turn of its event loop:
//! 1. records its own state;
//! 2. sends a marker of S on each of its outgoing channels, ahead of any later application
//!    message on that channel;
//! 3. starts recording each of its incoming channels.
//!
//! **A marker of S arrives on incoming channel C.**
//! - If the process has not recorded its state for S yet (this is the first marker of S it
//!   sees, and it did not start S): it records its state, records C as *empty*, sends a marker of
//!   S on each outgoing channel, and starts recording every other incoming channel, all in the
//!   same turn.
//! - Otherwise (it recorded its state for S before, as initiator or on an earlier marker): it
//!   stops recording C. C's recorded state is every application message that arrived on C from
//!   the moment its recording began until this marker, in arrival order.
//!
//! **An application message arrives on C.** It is delivered to the application as always, and
//! also appended to C's recording for every snapshot that is recording C at that moment.
//!
//! **In the same turn.** Recording the state, sending the markers and starting the recordings
//! happen with no application message handled or sent in between. When application code starts
//! a snapshot from inside one of its callbacks, the state recorded is the one the callback
//! leaves behind, and the markers follow everything that callback sent.
//!
//! **Exactly one marker of S crosses each channel.**
//!
//! # Completion
//!
//! A process's part of S is complete once it has recorded its state and has received a marker
//! of S on every incoming channel. This is checked after every rule, initiation included: a
//! process with one incoming channel completes on its first marker, and a process with none
//! (only in a one-process system) completes as soon as it records. S is complete when every
//! process's part is. Only the receiving end of a channel records that channel.
//!
//! A process forgets S once its own part is complete. A marker of S arriving after that would
//! break "one marker per channel": it is a bug, not the start of another snapshot
//! ([`MarkerError`](crate::error::MarkerError)).
//!
//! # Correctness: the consistent cut
//!
//! Number the application messages of each channel `c = i -> j` from 1, in the order `i` sent
//! them. For snapshot S, let
//! - `sent(c)` be how many messages `i` had sent on `c` when `i` recorded its state for S, and
//! - `received(c)` how many messages `j` had received on `c` when `j` recorded its state for S.
//!
//! S is consistent exactly when, on every channel `c`:
//! - `received(c) <= sent(c)`: nothing was received that had not yet been sent (no orphan
//!   message), and
//! - the recorded state of `c` is exactly the messages numbered `received(c) + 1 ..= sent(c)`,
//!   in that order: every message in flight across the cut is there, once.
//!
//! Each message carries its number on its channel (the sender keeps that counter anyway), and
//! each recorded message keeps it, so [`GlobalSnapshot::verify`](crate::GlobalSnapshot::verify)
//! checks the identity of the recorded messages, not only their count
//! ([`CutError`](crate::CutError) names the first channel that fails and how). Only sends made
//! on a process's own thread count, which is the only place a process sends from.
//!
//! An invariant of the application, such as money conserved across a bank, follows from
//! consistency but is weaker: a snapshot can conserve the money and still be inconsistent.
//!
//! # What snapshots are for
//!
//! A consistent snapshot is a state the system could have passed through, and every later state
//! is reachable from it. That makes it the right tool for *stable* properties, which once true
//! stay true: termination, deadlock, garbage (objects no one can reach any more); see
//! [`detect`](crate::detect). It is also a checkpoint to restart from
//! ([`RuntimeBuilder::restore`](crate::RuntimeBuilder::restore)).
