//! Refusing blocking calls that could never return: a process thread waiting on something only
//! its own thread can serve (a snapshot needs its markers handled; a closure sent to it needs it
//! to run).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;
use crate::topology::ProcessId;

thread_local! {
    /// On a process thread: (its runtime's key, its process id).
    static CURRENT: Cell<Option<(usize, ProcessId)>> = const { Cell::new(None) };
}

/// A fresh key for a new runtime.
pub(crate) fn new_key() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Marks the current thread as the thread of `process` in runtime `key`.
pub(crate) fn enter(key: usize, process: ProcessId) {
    CURRENT.with(|c| c.set(Some((key, process))));
}

/// Knows which runtime it guards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadGuard {
    pub(crate) key: usize,
}

impl ThreadGuard {
    /// The process whose thread this is, if it belongs to the guarded runtime.
    pub(crate) fn current_process(&self) -> Option<ProcessId> {
        CURRENT.with(|c| match c.get() {
            Some((key, process)) if key == self.key => Some(process),
            _ => None,
        })
    }

    /// Refuses a blocking call on one of the guarded runtime's threads.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.current_process() {
            Some(process) => Err(Error::WouldDeadlock { process }),
            None => Ok(()),
        }
    }
}
