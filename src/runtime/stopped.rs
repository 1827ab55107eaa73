//! What a shut-down runtime hands back.

use crate::error::Error;
use crate::process::{Process, ProcessFailure};
use crate::topology::Channel;

/// Application messages still in a channel when the runtime stopped, in FIFO order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered<M> {
    /// The channel.
    pub channel: Channel,
    /// The messages, oldest first.
    pub messages: Vec<M>,
}

/// Everything a shut-down runtime hands back: the processes themselves (their final states),
/// which ones panicked, and what was still in flight.
pub struct Stopped<P: Process> {
    /// By process id: the process as it was when it stopped; `None` if it panicked.
    pub processes: Vec<Option<P>>,
    /// Every process that panicked.
    pub failures: Vec<ProcessFailure>,
    /// Every channel that still held application messages, in topology order.
    pub undelivered: Vec<Undelivered<P::Message>>,
    /// The run's trace, if the runtime was built with
    /// [`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace).
    pub trace: Option<crate::trace::Trace>,
}

impl<P: Process> Stopped<P> {
    /// The processes, or the first panic if any process panicked, or
    /// [`Error::ProcessTaken`] naming the first process whose entry the caller emptied.
    pub fn into_processes(self) -> Result<Vec<P>, Error> {
        if let Some(f) = self.failures.into_iter().next() {
            return Err(Error::ProcessFailed {
                process: f.process,
                message: f.message,
            });
        }
        // No failure, so every process was handed back; but `processes` is public, and the
        // caller may have taken one out.
        self.processes
            .into_iter()
            .enumerate()
            .map(|(process, p)| p.ok_or(Error::ProcessTaken { process }))
            .collect()
    }

    /// Every undelivered message with its channel.
    pub fn in_flight(&self) -> impl Iterator<Item = (Channel, &P::Message)> + '_ {
        self.undelivered
            .iter()
            .flat_map(|u| u.messages.iter().map(move |m| (u.channel, m)))
    }
}

impl<P: Process> std::fmt::Debug for Stopped<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopped")
            .field("processes", &self.processes.len())
            .field("failures", &self.failures)
            .field(
                "undelivered",
                &self
                    .undelivered
                    .iter()
                    .map(|u| u.messages.len())
                    .sum::<usize>(),
            )
            .finish()
    }
}
