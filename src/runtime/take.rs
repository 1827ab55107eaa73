//! The one function that reads a channel of the runtime's (an edge's envelopes, or a process's
//! inbox from other nodes), whoever reads it: the event loop's visits and the inbox's sorting,
//! and with the `cluster` feature also the collection at shutdown of what was never delivered.
//!
//! Why one function: crossbeam's `try_recv` costs what it costs only once inlined into its
//! caller, where its token and its result stay in registers. Out of line, every call zeroes a
//! token in memory, dispatches over every channel flavour, and moves its result through memory:
//! about 85 instructions a delivery more (callgrind, `cluster_ratio 1 --sizes 1x16 --only
//! cluster`: 614 against 531 million for a million deliveries). The compiler inlines it only
//! where it has a single caller. The event loop is generic over its driver, so a program that
//! runs the same process type both in process and on a cluster node (the bank, the benches, a
//! test suite that does both) has two event loops, two callers, and `try_recv` out of line in
//! both. Through this function, `try_recv`, and crossbeam's `start_recv` and `read` under it,
//! have this one caller whatever the program, and inline into it; with two event loops, this
//! function is the one call out of line.
//!
//! Why not always: a second caller of this function (the collection of leftovers at shutdown)
//! keeps it out of line in a program with one event loop too, where it would otherwise inline
//! into the loop whole, and that costs such a program 2-4% (`.ci/ab/ab.sh` at N = 16 and 64;
//! the `ratio` bench, which the dev-dependencies build with the `cluster` feature, 0.96-0.99 of
//! before in three sets of eight alternating pairs). No routing suits both kinds of program:
//! with one event loop the best single caller of `try_recv` is the loop, with two it is a
//! function both loops call. So without the `cluster` feature, where only the in-process event
//! loop exists, shutdown reads leftovers another way (`shutdown.rs`) and the loop inlines this
//! function whole; with it, where a program most often has both (a node, and the in-process
//! runtime in its tests or beside it), everything reads through here.

use crossbeam_channel::Receiver;

/// The next item on `rx`, if it holds one now.
pub(crate) fn take<T>(rx: &Receiver<T>) -> Option<T> {
    rx.try_recv().ok()
}
