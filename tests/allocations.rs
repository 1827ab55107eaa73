//! "No allocation per application message while no snapshot is recording": counted with a
//! global allocator. The only allocations left on the message path are crossbeam's own (an
//! unbounded channel allocates one block per 31 messages), which the bare-channel baseline pays
//! too. While a snapshot records a channel, each recorded message costs one allocation (its
//! shared copy): counted on the marker core, which shows the counter would catch a per-message
//! allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chandy_lamport::recorder::Recorder;
use chandy_lamport::{Context, Process, ProcessId, Runtime, SnapshotId, Topology};
use common::{wait_for_traffic, PATIENCE};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's allocations: the marker core's count is of its own thread's, so that the
    /// test harness's thread, which may allocate while it waits for the test (it did, once in
    /// three full runs of the suite), cannot make it fail. A constant initialiser and a type
    /// with nothing to drop: reading it allocates nothing.
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    MINE.with(|mine| mine.set(mine.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Processes 0 and 1 bounce balls between them; process 2 only takes part in snapshots.
struct Bouncer {
    balls: u32,
    traffic: Arc<AtomicU64>,
}

impl Process for Bouncer {
    type Message = u64;
    type State = ();
    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        if ctx.id() == 0 {
            for ball in 0..self.balls as u64 {
                ctx.send(1, ball).unwrap();
            }
        }
    }
    fn on_message(&mut self, from: ProcessId, ball: u64, ctx: &mut Context<'_, u64>) {
        self.traffic.fetch_add(1, Ordering::Relaxed);
        ctx.send(from, ball).unwrap();
    }
    fn record(&self) {}
}

/// Allocations per delivered message over the next `deliveries` deliveries.
fn allocations_per_message(traffic: &AtomicU64, deliveries: u64) -> f64 {
    let (a0, t0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        traffic.load(Ordering::Relaxed),
    );
    wait_for_traffic(traffic, deliveries);
    let (a1, t1) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        traffic.load(Ordering::Relaxed),
    );
    (a1 - a0) as f64 / (t1 - t0) as f64
}

// One test, in sequence: the counter is global, so nothing else may allocate meanwhile.
#[test]
fn no_allocation_per_message_unless_a_snapshot_records_it() {
    the_core_allocates_only_for_recorded_messages();

    let traffic = Arc::new(AtomicU64::new(0));
    let procs = (0..3).map(|_| Bouncer {
        balls: 8,
        traffic: traffic.clone(),
    });
    let runtime = Runtime::new(Topology::complete(3), procs).unwrap();
    wait_for_traffic(&traffic, 10_000);

    let quiet = allocations_per_message(&traffic, 200_000);
    assert!(
        quiet < 0.1,
        "{quiet:.3} allocations per message with no snapshot recording"
    );

    // Snapshots still complete and verify on the same run.
    for p in 0..3 {
        runtime
            .snapshot_timeout(p, *PATIENCE)
            .unwrap()
            .verify()
            .unwrap();
    }
    eprintln!("allocations per message with no snapshot recording: {quiet:.3}");
}

/// The same count on the marker core alone, on this thread: zero allocations per message while
/// nothing records the channel, one per message (its shared copy) while a snapshot does. Shows
/// the counter would see a per-message allocation in the library's own code.
fn the_core_allocates_only_for_recorded_messages() {
    let mut recorder: Recorder<u64, ()> = Recorder::new(0, 2);
    let count = |recorder: &mut Recorder<u64, ()>, from: u64| {
        let before = MINE.with(Cell::get);
        for seq in from..from + 10_000 {
            recorder.on_message(0, seq, &seq);
        }
        MINE.with(Cell::get) - before
    };
    assert_eq!(
        count(&mut recorder, 1),
        0,
        "not recording: no allocation at all"
    );
    let id = SnapshotId::random();
    let _ = recorder.initiate(id, (), &[]).unwrap();
    assert!(
        count(&mut recorder, 10_001) >= 10_000,
        "recording: one copy per message"
    );
}
