//! Ctrl-C: the first asks the run to stop cleanly, the second quits at once.
//!
//! A bank stopped half-way still has something worth saying: every snapshot it took so far,
//! each checked, and the final state after the stop (money in the branches plus money in
//! flight), which must still add up. So the first Ctrl-C (SIGINT) only raises a flag that the
//! run looks at between snapshots; the run then stops as it would at its end, prints its
//! summary, and exits 1 (it did not do what was asked). A second Ctrl-C, for a stop that takes
//! too long, exits at once with the shell's status for an interrupt (130).
//!
//! Across nodes: the node that drives the run (node 0) stops the whole cluster; a node started
//! on its own (`--cluster FILE --node I`) that is interrupted stops the cluster from there;
//! the parent of `--nodes` passes its interrupt on to node 0 (a Ctrl-C in a terminal reaches
//! the nodes too, but a signal sent to the parent alone would not).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Whether the run has been asked to stop; `WOKEN` wakes whoever waits for it.
static ASKED: Mutex<bool> = Mutex::new(false);
static WOKEN: Condvar = Condvar::new();

/// The shell's exit status for a program ended by SIGINT.
const INTERRUPTED: i32 = 130;

fn flag() -> MutexGuard<'static, bool> {
    ASKED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Raises the flag and wakes whoever waits for it; returns whether it was raised before.
fn raise() -> bool {
    let before = std::mem::replace(&mut *flag(), true);
    WOKEN.notify_all();
    before
}

/// Installs the handler (ctrlc runs it on a thread of its own, so it may take a lock). `said`
/// is what the first Ctrl-C prints on stderr (what happens next); `None` for a node of
/// `--nodes`, whose parent says it.
pub(crate) fn install(said: Option<&'static str>) {
    let installed = ctrlc::set_handler(move || {
        if raise() {
            if said.is_some() {
                eprintln!("bank: interrupted again: quitting at once");
            }
            std::process::exit(INTERRUPTED);
        }
        if let Some(said) = said {
            eprintln!("bank: interrupted: {said} (Ctrl-C again to quit at once)");
        }
    });
    if let Err(e) = installed {
        // The run goes on; a Ctrl-C then ends it the usual way, with no summary.
        eprintln!("bank: cannot catch Ctrl-C ({e}): it will end the run without a summary");
    }
}

/// Marks the run interrupted, as a Ctrl-C would (the parent of `--nodes` asking node 0).
pub(crate) fn ask() {
    raise();
}

/// Whether the run has been asked to stop.
pub(crate) fn asked() -> bool {
    *flag()
}

/// Waits until the run is asked to stop.
pub(crate) fn wait() {
    let mut asked = flag();
    while !*asked {
        asked = WOKEN.wait(asked).unwrap_or_else(PoisonError::into_inner);
    }
}

/// Why the run stopped, as the cluster's stop note says it (node 0 prints another node's).
pub(crate) const WHY: &str = "interrupted (Ctrl-C)";
