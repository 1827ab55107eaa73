//! Detecting stable properties: take snapshots until a predicate holds on one.
//!
//! The lecture's uses of a global snapshot (termination, deadlock, garbage) are all *stable*
//! properties: once true, they stay true (a terminated computation stays terminated, a deadlocked
//! cycle stays deadlocked, an unreachable object stays unreachable). For those, a snapshot is
//! enough. A Chandy-Lamport snapshot is a consistent cut: a global state the system could have
//! passed through between the moment the snapshot started and the moment it completed, and from
//! which the system's actual later state is reachable. So if a stable property holds in the
//! snapshot, it holds at completion and forever after: a detection is never early.
//!
//! An unstable property gets no such promise. The snapshot's global state may never have existed
//! at any single instant (the processes recorded at different times), and even if it did, the
//! property may have become false since: "process 3 is idle", "no transfer is in flight" or
//! "the total on branch 0 is below 100" can hold in a snapshot and be false before the caller
//! reads the answer, or hold at some instant that no snapshot ever catches. Use it only for
//! properties that cannot become false again.
//!
//! The helpers work with both drivers through [`SnapshotSource`]: the threaded
//! [`Runtime`](crate::Runtime) (real time) and the [`Simulation`](crate::sim::Simulation)
//! (simulated time, one step per millisecond).
//!
//! ```
//! use std::time::Duration;
//! use chandy_lamport::detect::{detect, Detection};
//! use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
//!
//! /// Passes a countdown around until it reaches zero: the computation terminates.
//! struct Relay;
//! impl Process for Relay {
//!     type Message = u32;
//!     type State = ();
//!     fn on_start(&mut self, ctx: &mut Context<'_, u32>) {
//!         if ctx.id() == 0 {
//!             ctx.send(1, 1000).unwrap();
//!         }
//!     }
//!     fn on_message(&mut self, _: ProcessId, left: u32, ctx: &mut Context<'_, u32>) {
//!         if left > 0 {
//!             let to = ctx.neighbours()[0];
//!             ctx.send(to, left - 1).unwrap();
//!         }
//!     }
//!     fn record(&self) {}
//! }
//!
//! let mut runtime = Runtime::new(Topology::ring(3), (0..3).map(|_| Relay))?;
//! let detection = Detection {
//!     initiator: 0,
//!     interval: Duration::from_millis(1),
//!     timeout: Duration::from_secs(30),
//! };
//! // Terminated: nothing in flight (a relay holds no work between callbacks).
//! let proof = detect(&mut runtime, &detection, |s| s.in_flight().next().is_none())?;
//! assert!(proof.in_flight().next().is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use crate::error::Error;
use crate::snapshot::{GlobalSnapshot, SnapshotOutcome};
use crate::topology::ProcessId;

/// A driver that can take snapshots and let time pass: what the detection helpers need.
pub trait SnapshotSource {
    /// Application messages.
    type Message;
    /// Recorded process states.
    type State;

    /// Takes one snapshot started at `initiator`, waiting at most `timeout` for it.
    fn take_snapshot(
        &mut self,
        initiator: ProcessId,
        timeout: Duration,
    ) -> SnapshotOutcome<Self::Message, Self::State>;

    /// Lets the system run for `duration`.
    fn pause(&mut self, duration: Duration);

    /// Time since the driver started.
    fn clock(&self) -> Duration;
}

/// How to look for a stable property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// The process that starts every snapshot.
    pub initiator: ProcessId,
    /// How long to let the system run between two snapshots.
    pub interval: Duration,
    /// Give up (with [`Error::Timeout`]) once this much time has passed without a snapshot on
    /// which the property holds (a pause between two snapshots ends at this deadline). Any
    /// duration is accepted: a huge one waits as long as it takes.
    pub timeout: Duration,
}

/// Takes a snapshot every `interval` until `property` holds on one, and returns that snapshot,
/// the proof. Sound for stable properties only (see the [module documentation](self)).
pub fn detect<D: SnapshotSource>(
    driver: &mut D,
    detection: &Detection,
    mut property: impl FnMut(&GlobalSnapshot<D::Message, D::State>) -> bool,
) -> SnapshotOutcome<D::Message, D::State> {
    // Saturating: a timeout too long to add is "as long as it takes", not a panic.
    let deadline = driver.clock().saturating_add(detection.timeout);
    loop {
        let left = deadline.saturating_sub(driver.clock());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        let snapshot = driver.take_snapshot(detection.initiator, left)?;
        if property(&snapshot) {
            return Ok(snapshot);
        }
        // Never past the deadline: the last pause is what is left, so the timeout is kept.
        let left = deadline.saturating_sub(driver.clock());
        driver.pause(detection.interval.min(left));
    }
}
