//! Stopping: the last handle's drop, and `shutdown`, which joins every thread and hands back
//! the processes, the failures and what was never delivered.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use super::event_loop::ThreadExit;
use super::shared::Shared;
use super::{Runtime, Stopped, Undelivered};
use crate::envelope::Envelope;
use crate::error::Error;
use crate::process::Process;
use crate::process::ProcessFailure;
use crate::topology::ProcessId;

/// The first and the longest pause of a shutdown with a deadline between two looks at threads
/// that have said they ended but are not gone yet (see [`Runtime::stop_threads`]).
const EXIT_POLL_MIN: Duration = Duration::from_micros(50);
const EXIT_POLL_MAX: Duration = Duration::from_millis(10);

/// Owns the threads; the last [`Runtime`] clone to go drops it, which stops and joins them.
pub(super) struct Owner<P: Process> {
    pub(super) shared: Arc<Shared<P>>,
    /// The process threads, with the process each runs.
    pub(super) threads: Mutex<Option<Threads<P>>>,
    /// Each thread sends its id here as it ends.
    pub(super) exits: Receiver<ProcessId>,
}

impl<P: Process> Drop for Owner<P> {
    fn drop(&mut self) {
        let Some(handles) = self.threads.get_mut().take() else {
            return;
        };
        self.shared.stop_all();
        // If the last handle goes on a process thread, that thread cannot join itself: it is
        // left to finish its callback and stop on its own.
        let me = thread::current().id();
        for (_, handle) in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

impl<P: Process> Runtime<P> {
    /// Stops every process (after its current callback), joins every thread and hands back the
    /// processes, the failures and the messages still in flight. Snapshots still running end
    /// with [`Error::Shutdown`]. Other clones of this runtime see [`Error::Shutdown`] from then
    /// on.
    ///
    /// Blocks until every callback running now returns; see
    /// [`shutdown_timeout`](Runtime::shutdown_timeout) for a bound.
    pub fn shutdown(self) -> Result<Stopped<P>, Error> {
        self.stop(None)
    }

    /// Like [`shutdown`](Runtime::shutdown), giving up after `timeout` with
    /// [`Error::ShutdownTimeout`] naming the processes still running; their threads are detached
    /// and stop once their callback returns. A thread needs a moment to see the stop even when
    /// idle, so a zero timeout may name every process; a huge one waits as long as it takes.
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<Stopped<P>, Error> {
        self.stop(Some(crate::deadline::deadline_after(timeout)))
    }

    fn stop(self, deadline: Option<Instant>) -> Result<Stopped<P>, Error> {
        let exits = self.stop_threads(deadline)?;
        let (mut stopped, _) = self.collect(exits);
        // Read once every thread has stopped: the whole run (up to the buffers' capacity).
        stopped.trace = self.shared().tracer.as_ref().map(|t| t.read());
        Ok(stopped)
    }

    /// The first half of a shutdown: stops every process thread (after its current callback)
    /// and joins it. Nothing is read from the channels yet: a cluster node's links still push
    /// what arrives from other nodes onto them before the second half, [`collect`].
    ///
    /// [`collect`]: Runtime::collect
    pub(crate) fn stop_threads(&self, deadline: Option<Instant>) -> Result<Exits<P>, Error> {
        self.guard().check()?;
        let owner = &self.owner;
        let handles = owner.threads.lock().take().ok_or(Error::Shutdown)?;
        owner.shared.stop_all();
        if let Some(deadline) = deadline {
            let all_finished = || handles.iter().all(|(_, h)| h.is_finished());
            if !await_threads(&owner.exits, deadline, all_finished) {
                let running: Vec<ProcessId> = handles
                    .iter()
                    .filter(|(_, h)| !h.is_finished())
                    .map(|&(p, _)| p)
                    .collect();
                // Those that were left may have ended since the last look.
                if !running.is_empty() {
                    return Err(Error::ShutdownTimeout { running });
                }
            }
        }
        // Join every thread before draining any channel: a thread still running may send.
        Ok(handles
            .into_iter()
            .map(|(p, handle)| (p, handle.join()))
            .collect())
    }

    /// The second half of a shutdown (see [`stop_threads`](Runtime::stop_threads)): the
    /// processes, the failures, and what is left on every channel into a process run here;
    /// and each process's final counters (messages sent by local outgoing channel, received
    /// by local incoming channel). Processes run elsewhere (a cluster node's others) are `None`
    /// in `processes`.
    pub(crate) fn collect(&self, exits: Exits<P>) -> (Stopped<P>, Vec<(ProcessId, FinalCounters)>) {
        let wiring = &self.shared().wiring;
        let mut stopped = Stopped {
            processes: (0..wiring.processes()).map(|_| None).collect(),
            failures: Vec::new(),
            undelivered: Vec::new(),
            trace: None,
        };
        let mut leftovers = vec![Vec::new(); wiring.channels().len()];
        let mut counters = Vec::new();
        for (process, exit) in exits {
            match exit {
                Ok(exit) => {
                    counters.push((process, exit.counters));
                    if let Some(message) = exit.failure {
                        stopped.failures.push(ProcessFailure { process, message });
                    }
                    stopped.processes[process] = exit.process;
                    let incoming = wiring.incoming(process);
                    for (&c, rx) in incoming.iter().zip(exit.inbound) {
                        leftovers[c] = messages(undelivered(&rx)).collect();
                    }
                    // A channel from another node has nothing on its own receiver: what it
                    // brought is in the inbox.
                    if let Some(inbox) = exit.inbox {
                        let parked = inbox.into_leftovers(|rx| undelivered(rx).collect());
                        for (&c, queue) in incoming.iter().zip(parked) {
                            leftovers[c].extend(messages(queue));
                        }
                    }
                }
                // Only reachable if dropping a failed process panicked again.
                Err(payload) => {
                    stopped.failures.push(ProcessFailure {
                        process,
                        message: crate::process::panic_message(&*payload),
                    });
                }
            }
        }
        stopped.undelivered = wiring
            .channels()
            .iter()
            .zip(leftovers)
            .filter(|(_, m)| !m.is_empty())
            .map(|(&channel, messages)| Undelivered { channel, messages })
            .collect();
        (stopped, counters)
    }
}

/// The process threads, with the process each runs.
pub(super) type Threads<P> = Vec<(ProcessId, JoinHandle<ThreadExit<P>>)>;

/// Waits until `all_finished` says so, or until `deadline` (then `false`), woken by each
/// thread's exit on `exits`.
///
/// Once every thread has said it ended, what is left of each is its return and its
/// thread-locals' destructors, which cannot be waited on with a deadline; and the channel,
/// empty and disconnected, answers at once. So the look is then repeated after a pause that
/// doubles, from 50 us (a thread's end) to 10 ms (a destructor that takes its time). Before,
/// this loop spun on a core while the threads it waited for needed one (callgrind counted 4.9
/// million turns in one bench run's stop).
fn await_threads(
    exits: &Receiver<ProcessId>,
    deadline: Instant,
    mut all_finished: impl FnMut() -> bool,
) -> bool {
    let mut poll = EXIT_POLL_MIN;
    while !all_finished() {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        if let Err(RecvTimeoutError::Disconnected) = exits.recv_deadline(deadline) {
            thread::sleep(poll.min(deadline - now));
            poll = (poll * 2).min(EXIT_POLL_MAX);
        }
    }
    true
}

/// How each process thread ended, with its process.
pub(crate) type Exits<P> = Vec<(ProcessId, std::thread::Result<ThreadExit<P>>)>;

/// A process's counters when it stopped: messages sent by local outgoing channel, received by
/// local incoming channel.
pub(crate) type FinalCounters = (Vec<u64>, Vec<u64>);

/// The messages among `envelopes` (markers left undelivered are not reported).
fn messages<M>(envelopes: impl IntoIterator<Item = Envelope<M>>) -> impl Iterator<Item = M> {
    envelopes.into_iter().filter_map(|e| match e {
        Envelope::Message { message, .. } => Some(message),
        Envelope::Marker(_) => None,
    })
}

/// What is left on a channel once every thread has been joined.
///
/// Read through `take` with the `cluster` feature, and with `recv_timeout(ZERO)` without it, on
/// purpose: which read a channel's other readers use decides what the compiler inlines into the
/// event loop, and `take.rs` says why each build wants its own.
fn undelivered<M>(rx: &Receiver<M>) -> impl Iterator<Item = M> + '_ {
    #[cfg(feature = "cluster")]
    let next = || super::take::take(rx);
    #[cfg(not(feature = "cluster"))]
    let next = || rx.recv_timeout(Duration::ZERO).ok();
    std::iter::from_fn(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every thread's exit already said (the channel empty and disconnected), the wait
    /// looks again after pauses, not at once: a few dozen looks while the threads take 50 ms
    /// to end, where the loop it replaced looked millions of times. And it still ends at its
    /// deadline when they never do.
    #[test]
    fn a_wait_for_threads_that_said_they_ended_does_not_spin() {
        let (tx, exits) = crossbeam_channel::unbounded::<ProcessId>();
        drop(tx);
        let began = Instant::now();
        let mut looks = 0;
        let ended = await_threads(&exits, began + Duration::from_secs(60), || {
            looks += 1;
            began.elapsed() >= Duration::from_millis(50)
        });
        assert!(ended);
        assert!(looks < 100, "{looks} looks in 50 ms");

        let began = Instant::now();
        let mut looks = 0;
        let ended = await_threads(&exits, began + Duration::from_millis(50), || {
            looks += 1;
            false
        });
        assert!(!ended);
        assert!(began.elapsed() >= Duration::from_millis(50));
        assert!(looks < 100, "{looks} looks in 50 ms");
    }
}
