//! What the process threads and the runtime's handles share: wiring, doorbells, control
//! channels, the hub, the per-process stats, and the failure flag.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;

use super::doorbell::{Backoff, Doorbell};
use super::event_loop::Control;
use super::hub::Hub;
use super::tracer::Tracer;
use crate::error::Error;
use crate::process::Process;
use crate::topology::{ProcessId, Wiring};

/// Per-process figures a thread publishes when its snapshot bookkeeping changes (never per
/// message), for [`Runtime::stats`](crate::runtime::Runtime::stats). One cache line each, so
/// processes do not share lines.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct ProcessStats {
    pub(crate) recording: AtomicUsize,
    pub(crate) logged: AtomicUsize,
}

/// What the process threads and the handles share.
pub(crate) struct Shared<P: Process> {
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) bells: Arc<[Doorbell]>,
    pub(crate) controls: Vec<Sender<Control<P>>>,
    pub(crate) hub: Hub<P::Message, P::State>,
    pub(crate) stats: Box<[ProcessStats]>,
    /// How an idle process waits for work.
    pub(crate) backoff: Backoff,
    /// Identifies this runtime's threads (see `guard.rs`).
    pub(crate) key: usize,
    /// Set when the builder gave up before every thread started.
    pub(crate) start_aborted: AtomicBool,
    /// Set when a process has failed: no snapshot can complete any more, and processes ignore
    /// markers.
    pub(crate) degraded: AtomicBool,
    /// The trace buffers, when the runtime was built with a trace.
    pub(crate) tracer: Option<Tracer>,
}

impl<P: Process> Shared<P> {
    /// Queues a control request for `process` and wakes it.
    pub(crate) fn control(&self, process: ProcessId, request: Control<P>) -> Result<(), Error> {
        self.controls[process]
            .send(request)
            .map_err(|_| self.gone(process))?;
        // The control channel's bit comes after the incoming channels'.
        self.bells[process].ring(self.wiring.incoming(process).len());
        Ok(())
    }

    /// Why `process` no longer serves requests.
    pub(super) fn gone(&self, process: ProcessId) -> Error {
        match self.hub.failure(process) {
            Some(message) => Error::ProcessFailed { process, message },
            None => Error::Shutdown,
        }
    }

    /// `process`, run here, has panicked: record it (once) and refuse further messages to it.
    pub(crate) fn process_failed(&self, process: ProcessId, message: String) {
        self.failed(process, message, true);
    }

    /// `process`, run on another node, has failed there (that node said so): as if here, but
    /// not told to the others again.
    #[cfg(feature = "cluster")]
    pub(crate) fn process_failed_elsewhere(&self, process: ProcessId, message: String) {
        self.failed(process, message, false);
    }

    /// A node has failed (a cluster node decided it): its `processes` count as failed, with
    /// `error`; messages to them are refused from now on.
    #[cfg(feature = "cluster")]
    pub(crate) fn node_failed(&self, processes: &[ProcessId], reason: &str, error: Error) {
        for &p in processes {
            self.bells[p].close();
        }
        self.degrade(|hub| hub.fail_node(processes, reason, error));
    }

    fn failed(&self, process: ProcessId, message: String, here: bool) {
        self.bells[process].close();
        self.degrade(|hub| hub.fail_process(process, message, here));
    }

    /// A failure: first the flag, so no process builds new snapshot state, then `fail` (the
    /// hub fails the running snapshots), then, on the first failure only, every process drops
    /// what it holds.
    fn degrade(&self, fail: impl FnOnce(&Hub<P::Message, P::State>)) {
        let first = !self.degraded.swap(true, Ordering::AcqRel);
        fail(&self.hub);
        if first {
            for p in 0..self.controls.len() {
                let _ = self.control(p, Control::DropSnapshots);
            }
        }
    }

    /// Tells every thread to stop (they finish their current callback first).
    pub(super) fn stop_all(&self) {
        self.hub.close();
        for p in 0..self.controls.len() {
            let _ = self.control(p, Control::Stop);
        }
    }
}
