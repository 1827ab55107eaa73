//! Keeping off stderr the panics the exhaustive checker catches and reports itself.
//!
//! A process that panics in one order of events usually panics in many: with the default panic
//! hook, each of those panics prints its message (and a backtrace) while the checker is still
//! exploring, before the one report that matters, the violation, which already names the panic.
//! So while the checker runs an event on a thread, that thread's panics are kept: their message
//! and location are noted for the violation instead of printed.
//!
//! The hook is installed once per program and never removed, chaining to the hook it found.
//! Removing it again would be a race: with checkers on several threads (tests run in parallel),
//! the first to finish would pull the filter from under the others, and any hook installed after
//! ours (which chains to ours) would be dropped with it. Left in place it changes nothing
//! outside a checker: it passes on every panic of a thread that is not inside a checker's event,
//! and a thread is inside one only while [`Quiet`] guards it. What it cannot prevent is a race
//! with code that replaces the hook by `take_hook` and `set_hook` at the very moment it is
//! installed (std offers no atomic update on stable Rust): one of the two hooks is then lost, as
//! with any two such pieces of code; a program that installs its own hook later without
//! chaining to the previous one turns the filter off, and panics print again, as before.

use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

use crate::process::panic_message;

/// A panic kept off stderr: its message and where it happened (`file:line:column`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Kept {
    pub(super) message: String,
    pub(super) location: String,
}

thread_local! {
    /// Whether this thread is inside a checker's event, where every panic is caught and
    /// reported by the checker.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Panics kept while quiet, for the checker to take.
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

static INSTALL: Once = Once::new();

fn install() {
    // `take_hook` and `set_hook` panic on a panicking thread (a checker run from a `Drop` during
    // unwinding): then nothing is installed, and panics print as they always did.
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic while this thread's locals are being destroyed is passed on.
            if QUIET.try_with(Cell::get).unwrap_or(false) {
                let kept = Kept {
                    message: panic_message(info.payload()),
                    location: info.location().map_or_else(String::new, |l| l.to_string()),
                };
                if KEPT.try_with(|k| k.borrow_mut().push(kept)).is_ok() {
                    return;
                }
            }
            previous(info);
        }));
    });
}

/// While it lives, this thread's panics are kept, not printed; dropped, it puts back what was
/// there before (so guards may nest).
pub(super) struct Quiet {
    was: bool,
}

impl Quiet {
    /// Keeps this thread's panics from now on. Only for code whose every panic is caught and
    /// reported (a panic that escaped a `Quiet` scope would be lost without a word).
    pub(super) fn new() -> Self {
        install();
        Quiet {
            was: QUIET.with(|q| q.replace(true)),
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        QUIET.with(|q| q.set(self.was));
    }
}

/// The panics kept on this thread since the last call.
pub(super) fn take_kept() -> Vec<Kept> {
    KEPT.with(|k| std::mem::take(&mut *k.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_kept_only_inside_the_guard_and_guards_nest() {
        let panics = |text: &'static str| {
            let _ = panic::catch_unwind(|| panic!("{text}"));
        };
        take_kept();
        {
            let _outer = Quiet::new();
            {
                let _inner = Quiet::new();
                panics("inner");
            }
            // The inner guard put back the outer one's state, not "loud".
            panics("outer");
        }
        let kept = take_kept();
        assert_eq!(
            kept.iter().map(|k| k.message.as_str()).collect::<Vec<_>>(),
            ["inner", "outer"]
        );
        assert!(kept[0].location.contains("quiet.rs"), "{kept:?}");
        panics("loud again (printed, as this test's output shows with --nocapture)");
        assert!(take_kept().is_empty());
    }
}
