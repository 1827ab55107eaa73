//! The links between nodes: what a node queues for each peer, the thread that writes it, and
//! the thread that reads what a peer sends.
//!
//! Sending: a process encodes each envelope for another node on its own thread, into a buffer
//! of its own per peer ([`NodeWire`](super::driver::NodeWire)), and at the end of each round
//! of visits to its channels (or of a visit whose callbacks were slow, or of a callback of its
//! own) hands the buffer to the peer's [`Outlink`] and rings the writer's doorbell. The
//! writer takes every buffer that has something and writes it all with one `write` call: under
//! load many frames a write, and a single one the moment it is queued when idle. Each channel
//! has one sending process, whose frames keep their order in its buffer, and TCP keeps the
//! connection's order: so every channel stays FIFO across nodes.
//!
//! Receiving: the reader decodes each frame and puts its envelope, with its channel, in the
//! receiving process's inbox from other nodes (`runtime/remote_inbox.rs`: one crossbeam channel
//! a process, which the process sorts by channel when it must), and rings the process's
//! doorbell as a local sender does (for all it delivered, before it next reads from the socket:
//! `Inboxes`).

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;

use snow::TransportState;

use super::node::{Core, NodeProcess};
use super::secure::{self, Opened};
use super::startup::Secured;
use super::wire::{self, Frame, FrameIn, FrameLimit, ReadError};
use crate::envelope::Envelope;
use crate::runtime::layer::{set_bit, set_bits, test_bit, Arrival, Backoff, BitPlace, Doorbell};
use crate::topology::ProcessId;

/// What bounds a link: its heartbeat, the frame limit, and how much may queue for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkLimits {
    /// How long the writer lets the link be idle before it sends a heartbeat.
    pub(crate) heartbeat: Duration,
    /// The peer's frame limit.
    pub(crate) frame: FrameLimit,
    /// The bytes a link may hold from the processes before a process that adds more waits.
    pub(crate) max_queued: usize,
    /// How long processes may wait for room, with the writer taking nothing, before the
    /// node warns that the link is stalled (the failure timeout).
    pub(crate) stall: Duration,
}

/// The current wait for room on a link, if a process waits: since when the writer has taken
/// nothing, and whether that has been warned of.
#[derive(Default)]
struct Stall {
    since: Option<Instant>,
    warned: bool,
}

/// One process's frames for a peer, and how many bytes they are. A cache line of its own: two
/// processes appending at once (each to its own buffer) would otherwise take turns with the
/// line their locks share.
///
/// The count lives beside the lock, in the line that the process and the writer take turns
/// with anyway. Flow control once kept one count for the whole link, a line that every process
/// of the node and the writer changed on every hand-over (its `lock xadd` held 42% of
/// `Outlink::append`'s samples at 3 nodes x 16). Without it the miss moves to the buffer's
/// lock, and the whole run measured the same (BENCHMARKS.md, twenty-fourth round); what it
/// buys is the rule of [`Outlink::append`]: each process waits on its own share.
#[derive(Default)]
#[repr(align(64))]
struct ProcessBuffer {
    frames: Mutex<Vec<u8>>,
    /// `frames.len()`, to read without the lock: set under it, by the process as it appends
    /// and by the writer as it takes.
    len: AtomicUsize,
}

/// What a node queues for one peer, and the doorbell of the thread that writes it.
pub(crate) struct Outlink {
    /// The peer.
    pub(crate) peer: usize,
    /// Bits `0..locals`: a process's buffer has something; bit `locals`: the control buffer.
    bell: Doorbell,
    /// By the index of a process among the node's own: the frames it has encoded for the peer.
    buffers: Box<[ProcessBuffer]>,
    /// Control frames: snapshot parts and outcomes, starts, failures, shutdown.
    control: Mutex<Vec<u8>>,
    /// Set once nothing more will be queued: the writer writes what is left and ends.
    closing: AtomicBool,
    /// Set when the link has failed: nothing queued is written any more.
    broken: AtomicBool,
    /// Set when the node has declared the link down (`Core::link_failed`), for whatever
    /// reason: the reader of the peer's connection stops too (it may be this node's processes
    /// that found the peer's frames bad, not the reader).
    down: AtomicBool,
    /// Set when the node stops: nobody waits for room any more.
    released: AtomicBool,
    /// How long the writer lets the link be idle before it sends a heartbeat.
    heartbeat: Duration,
    /// The peer's frame limit: a longer frame goes in pieces under it.
    pub(crate) frame: FrameLimit,
    /// Past this many bytes handed over by the processes and not yet taken by the writer, a
    /// process that hands over more, and holds more than `share` of them, waits for the
    /// writer (`wait_for_room`).
    max_queued: usize,
    /// A process's share of `max_queued`: its buffer holds less, and it looks no further.
    share: usize,
    /// Signalled when the writer takes bytes while a process waits for room; `waiting` counts
    /// the processes waiting, so that the writer takes the lock only then.
    room: Condvar,
    room_lock: Mutex<Stall>,
    waiting: AtomicUsize,
    /// Processes waiting for room this long, with nothing taken, is a stall worth a warning.
    stall: Duration,
    /// Bytes read from the peer so far (by this node's reader of its connection, counted at
    /// each read from the socket: `Counted`): a write that times out while this still moves is
    /// to a peer that is alive but not reading (its processes slower than ours), not a failed
    /// one. Bytes, not frames: on a slow network one encrypted message can take longer than
    /// the failure timeout to arrive whole, and a peer sending it is alive.
    heard: AtomicU64,
    /// Frames the writer had taken and could not write whole before the link failed (the
    /// rest of what it took reached the peer, or may have): reported with what was never
    /// taken (`take_unsent`).
    unwritten: Mutex<Vec<u8>>,
    /// `write` calls made on the socket, and bytes written, counted at the call.
    pub(crate) writes: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// Set (and signalled) when the writer has ended: written everything, or failed.
    ended: Mutex<bool>,
    ended_signal: Condvar,
}

impl Outlink {
    /// A link to `peer` from a node running `locals` processes, with `limits`.
    pub(crate) fn new(peer: usize, locals: usize, limits: LinkLimits) -> Self {
        Outlink {
            peer,
            heartbeat: limits.heartbeat,
            frame: limits.frame,
            max_queued: limits.max_queued,
            share: (limits.max_queued / locals.max(1)).max(1),
            room: Condvar::new(),
            room_lock: Mutex::new(Stall::default()),
            stall: limits.stall,
            waiting: AtomicUsize::new(0),
            heard: AtomicU64::new(0),
            bell: Doorbell::new(locals + 1),
            buffers: (0..locals).map(|_| ProcessBuffer::default()).collect(),
            control: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            down: AtomicBool::new(false),
            released: AtomicBool::new(false),
            unwritten: Mutex::new(Vec::new()),
            writes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ended: Mutex::new(false),
            ended_signal: Condvar::new(),
        }
    }

    /// Waits until the writer has ended (everything queued written, or the link failed), or
    /// `deadline`; returns whether it ended. A node waits for this before it returns from a
    /// stop: its process may exit right after, and what is still queued would be lost.
    pub(crate) fn wait_written(&self, deadline: std::time::Instant) -> bool {
        let mut ended = self.ended.lock();
        while !*ended {
            if self
                .ended_signal
                .wait_until(&mut ended, deadline)
                .timed_out()
            {
                return *ended;
            }
        }
        true
    }

    /// The writer has ended.
    fn set_ended(&self) {
        *self.ended.lock() = true;
        self.ended_signal.notify_all();
    }

    /// Hands over what local process `local` encoded for the peer (leaving `staged` empty),
    /// and wakes the writer. Returns whether the link now holds more than its bound and this
    /// process more than its share of it: the caller should then
    /// [`wait_for_room`](Outlink::wait_for_room) (outside any lock).
    ///
    /// Why a share: if the link holds more than its bound, some process holds more than its
    /// share, so each process's buffer passes its share by at most one hand-over before that
    /// process waits, and the link holds at most its bound and a hand-over a process, as
    /// when every process waited past the bound. A process that sends the peer little (its
    /// markers, say) is not held back by one that floods it; and a hand-over, nearly always
    /// far under the share, reads no line another process writes.
    pub(crate) fn append(&self, local: usize, staged: &mut Vec<u8>) -> bool {
        let process = &self.buffers[local];
        let (was_empty, holds) = {
            let mut buffer = process.frames.lock();
            let was_empty = buffer.is_empty();
            if was_empty {
                // Usually: the writer took the last one. Swap, no copy.
                std::mem::swap(&mut *buffer, staged);
            } else {
                buffer.extend_from_slice(staged);
                staged.clear();
            }
            process.len.store(buffer.len(), Ordering::Relaxed);
            (was_empty, buffer.len())
        };
        // Only the buffer's first bytes ring: while it holds some, this process rang for them
        // (after it made the buffer non-empty, the only way it becomes so) and the writer has
        // yet to take the bit, or took it and has yet to lock the buffer, so it takes these
        // too. So an append to a buffer the writer has not taken yet leaves alone the
        // doorbell's line, which every process of the node and the writer share.
        if was_empty {
            self.bell.ring(local);
        }
        holds > self.share && self.handed_over() > self.max_queued
    }

    /// Bytes the processes have handed over and the writer has not yet taken, as their counts
    /// say (`ProcessBuffer::len`). Sequentially consistent with the writer's zeroing of a count
    /// as it takes a buffer, and with `waiting` (see `wait_for_room`).
    fn handed_over(&self) -> usize {
        self.buffers
            .iter()
            .map(|b| b.len.load(Ordering::SeqCst))
            .sum()
    }

    /// Waits until the writer has taken what the processes handed over down to half the
    /// link's bound, or the link ends (broken; closed, after its reader failed or at the stop;
    /// or the node stopping). This is the sender's side of flow control: a process whose peer
    /// (or the network to it) is slower than it blocks here, at the end of a batch, instead of
    /// queueing without limit. The writer only waits on the
    /// socket, and a socket the peer does not drain for the failure timeout breaks the link,
    /// unless the peer is heard meanwhile: then its reader holds back (`hold_back`) until its
    /// process catches up, and the wait lasts as long as that process, or the network, needs.
    /// A closed link's writer takes nothing more once it has written what it had, so its
    /// bound no longer holds anyone back: a link whose reader failed is closed at once, and
    /// its peer is decided failed (or this node is) a moment later.
    ///
    /// The one wait with no end of its own: nodes that hold each other back in a cycle (each
    /// one's processes waiting here for a peer whose reader holds back because its own
    /// processes wait here, for the next) while every peer stays heard. So a wait that has
    /// seen the writer take nothing for the failure timeout is warned of, once, and shows in
    /// the node's stats (`stalled_for`); the stop ends it (`release`).
    #[cold]
    #[inline(never)]
    pub(crate) fn wait_for_room(&self) {
        let mut guard = self.room_lock.lock();
        // Sequentially consistent with the writer's take: either the writer sees this waiter
        // (`took`, which notifies under the lock this thread holds until it sleeps), or this
        // thread sees the counts the writer zeroed (`handed_over`).
        self.waiting.fetch_add(1, Ordering::SeqCst);
        guard.since.get_or_insert_with(Instant::now);
        while self.handed_over() > self.max_queued / 2
            && !self.broken.load(Ordering::Acquire)
            && !self.closing.load(Ordering::Acquire)
            && !self.released.load(Ordering::Acquire)
        {
            // Timed as well: a wait can never outlive a link that ends without a wake-up.
            self.room.wait_for(&mut guard, Duration::from_millis(5));
            let stalled = guard.since.map_or(Duration::ZERO, |t| t.elapsed());
            if stalled >= self.stall && !guard.warned {
                guard.warned = true;
                log::warn!(
                    "processes have waited {:.1} s for room on the link to node {peer}, and \
                     its writer has taken nothing ({} bytes queued): node {peer} is heard but \
                     reads nothing of it, so its processes (or the network) are slower than the \
                     senders here; if the nodes hold each other back in a cycle, each one's \
                     processes waiting for the next, nothing moves until the cluster is stopped",
                    stalled.as_secs_f64(),
                    self.handed_over(),
                    peer = self.peer,
                );
            }
        }
        // The last waiter gone, the episode is over.
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            *guard = Stall::default();
        }
    }

    /// How long processes have waited for room on this link with the writer taking nothing;
    /// `None` while none waits.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        self.room_lock.lock().since.map(|t| t.elapsed())
    }

    /// The node is stopping: processes waiting for room go on (and no more wait).
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.wake_waiters();
    }

    /// Wakes every process waiting for room, to look again at why it waits.
    fn wake_waiters(&self) {
        let _guard = self.room_lock.lock();
        self.room.notify_all();
    }

    /// The writer took some of what the processes handed over (and zeroed their counts):
    /// wakes processes waiting for room (the lock is taken only if one waits).
    fn took(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut guard = self.room_lock.lock();
            // The link moves: whoever still waits, waits on a slow peer, not a stalled one.
            if guard.since.is_some() {
                *guard = Stall {
                    since: Some(Instant::now()),
                    warned: false,
                };
            }
            self.room.notify_all();
        }
    }

    /// Queues a control frame (encoded by `encode` into the control buffer) and wakes the
    /// writer. Returns `encode`'s error, with nothing queued.
    pub(crate) fn send_control(
        &self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        encode(&mut self.control.lock())?;
        self.bell.ring(self.buffers.len());
        Ok(())
    }

    /// Queues `frame` (see [`send_control`](Outlink::send_control)).
    pub(crate) fn send<T: Serialize>(&self, frame: &T) -> Result<(), String> {
        self.send_control(|buf| wire::encode_within(buf, frame, self.frame))
    }

    /// Nothing more will be queued: the writer writes what is left, then ends.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.bell.ring(self.buffers.len());
        // Nobody waits for room on a link that takes no more (`wait_for_room`).
        self.wake_waiters();
    }

    /// The node has declared the link down: the writer writes what is left and ends, and the
    /// reader stops at its next message.
    pub(crate) fn put_down(&self) {
        self.down.store(true, Ordering::Release);
        self.close();
    }

    /// Whether the link has failed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Takes everything queued and not yet taken by the writer (the frames for a node that
    /// has failed, to report what it will never get).
    pub(crate) fn take_unsent(&self) -> Vec<u8> {
        // Oldest first: what the writer had taken came before what is still queued.
        let mut all = std::mem::take(&mut *self.unwritten.lock());
        for process in self.buffers.iter() {
            let mut frames = process.frames.lock();
            all.append(&mut frames);
            // Under the lock, as the writer's take does: the counts say what the buffers hold.
            process.len.store(0, Ordering::SeqCst);
        }
        all.append(&mut self.control.lock());
        all
    }

    /// The writer failed with `out` taken, of which the first `delivered` bytes went out in
    /// whole Noise messages: keeps the frames from the first that did not (see `unwritten`).
    fn keep_unwritten(&self, out: &[u8], delivered: usize) {
        let from = wire::first_frame_past(out, delivered);
        self.unwritten.lock().extend_from_slice(&out[from..]);
    }

    /// The writer's take: appends to `out` the buffers whose bits are set in `bits` (a
    /// process's bit, or past them the control bit), emptying them, and wakes processes
    /// waiting for room if a process's buffer had anything.
    fn take_rung(&self, bits: &[u64], out: &mut Vec<u8>) {
        let control_bit = self.buffers.len();
        let mut from_processes = false;
        // The processes' frames first, then control frames: `Finished`, queued once every
        // process has stopped, must follow the last of their messages. The bits are taken in
        // ascending order, the control bit last, visiting only those set: the writer looks more
        // often than it finds work, and a test of every bit on each look was a third of its
        // loop's own instructions (callgrind, 3 nodes x 16).
        for local in set_bits(bits).take_while(|&local| local <= control_bit) {
            // A process's buffer, or (past them) the control buffer.
            let process = self.buffers.get(local);
            let mut b = process.map_or(&self.control, |p| &p.frames).lock();
            if let Some(process) = process {
                from_processes |= !b.is_empty();
                // Under the lock, as the process sets it; sequentially consistent with the
                // waiters' reads (`wait_for_room`).
                process.len.store(0, Ordering::SeqCst);
            }
            if out.is_empty() {
                std::mem::swap(out, &mut *b);
            } else {
                out.extend_from_slice(&b);
                b.clear();
            }
        }
        if from_processes {
            self.took();
        }
    }

    /// Bytes queued and not yet taken by the writer.
    pub(crate) fn queued(&self) -> usize {
        self.buffers
            .iter()
            .map(|b| b.frames.lock().len())
            .sum::<usize>()
            + self.control.lock().len()
    }
}

/// The most the writer seals before it writes: four Noise messages of the most they carry
/// (`secure.rs`: 65,535 bytes less the 16 of the tag). Under load a round takes about a link's
/// bound (`max_queued`), so this costs a few more `write` calls per round, each still of
/// hundreds of KiB.
const SEAL_PIECE: usize = 4 * (65_535 - 16);

/// The writer's thread: takes what is queued for the peer and writes it, one `write` call per
/// round, until the link is closed (then returns `Ok`) or a write fails.
pub(crate) fn write_loop(
    link: &Outlink,
    stream: TcpStream,
    transport: TransportState,
    timeout: Duration,
) -> Result<(), Broke> {
    // A write that cannot finish for the failure timeout (the peer reads nothing, its buffers
    // are full) is the link failing.
    let result = stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| Broke::from(e.to_string()))
        .and_then(|()| write_all_queued(link, stream, transport));
    if result.is_err() {
        link.broken.store(true, Ordering::Release);
    }
    link.set_ended();
    result
}

fn write_all_queued(
    link: &Outlink,
    mut stream: TcpStream,
    mut transport: TransportState,
) -> Result<(), Broke> {
    link.bell.register_current_thread();
    let control_bit = link.buffers.len();
    let mut bits = vec![0u64; link.bell.words()];
    let mut out = Vec::new();
    let mut sealed = Vec::new();
    // Never more writers than cores, and they should not keep cores spinning: a node's schedule
    // for more threads than cores.
    let backoff = Backoff::for_node_threads(usize::MAX);
    let mut written = Instant::now();
    loop {
        bits.iter_mut().for_each(|w| *w = 0);
        link.bell.take(&mut bits);
        if bits.len() > 1 && test_bit(&bits, control_bit) {
            // The doorbell's words are taken one after another, so with 63 or more processes
            // the control bit (in the last word) can be seen without the bit a process rang
            // before it (in a word already taken): its last frames, then `Finished` queued
            // after it stopped, would go out in the wrong order. So with a control frame every
            // process's buffer is taken too (the single word is one swap: no such gap).
            for local in 0..control_bit {
                set_bit(&mut bits, local);
            }
        }
        out.clear();
        link.take_rung(&bits, &mut out);
        if out.is_empty() && written.elapsed() >= link.heartbeat {
            let heartbeat: Frame<(), (), (), ()> = Frame::Heartbeat;
            wire::encode(&mut out, &heartbeat)?;
        }
        if !out.is_empty() {
            written = Instant::now();
            // Sealed and written a piece at a time: sealing is the slow part, and the peer
            // hears nothing until the first write (sealing a final report of megabytes took
            // more than the failure timeout in a debug build, and every link of a stopping
            // cluster failed as silent). Each piece starts a new run of Noise messages, whole
            // ones but its last, as `plain_in_whole_messages` counts.
            for (k, piece) in out.chunks(SEAL_PIECE).enumerate() {
                let from = k * SEAL_PIECE;
                // Into the same buffer from 0 each time: no zeroing once it is long enough.
                let end = match secure::seal_at(&mut transport, piece, &mut sealed, 0) {
                    Ok(end) => end,
                    Err(e) => {
                        link.keep_unwritten(&out, from);
                        return Err(Broke::from(e.to_string()));
                    }
                };
                if let Err((e, wrote)) = write_counted(link, &mut stream, &sealed[..end]) {
                    link.keep_unwritten(&out, from + secure::plain_in_whole_messages(wrote));
                    return Err(Broke {
                        why: e.to_string(),
                        silent: timed_out(&e),
                    });
                }
            }
            // One turn for the processes before the next take: under load they are queueing
            // more, and what they add while this thread waits its turn goes out in the next
            // write instead of a write of its own (on 2 cores at 3 nodes x 16, 452,913 writes
            // for 3 runs instead of 521,950, and 5-17% more deliveries a second). A lone frame
            // still goes out at once (the turn is after a write, not before it), and where
            // cores are free the yield returns at once.
            std::thread::yield_now();
            continue;
        }
        if link.closing.load(Ordering::Acquire) {
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        link.bell.wait(
            Some(crate::deadline::later(written, link.heartbeat)),
            backoff,
        );
    }
}

/// Writes all of `bytes`, counting each `write` call on the socket and the bytes it took (what
/// `stats()` shows: the batching is judged by these, not by rounds of the writer).
///
/// A write that makes no progress for the failure timeout fails the link, unless frames from
/// the peer arrived meanwhile: then the peer is alive and has stopped reading because its
/// processes are behind (its reader holds back: `deliver`), and the write goes on waiting.
///
/// On an error, also says how many of `bytes` were written.
fn write_counted(
    link: &Outlink,
    stream: &mut TcpStream,
    all: &[u8],
) -> Result<(), (std::io::Error, usize)> {
    let mut heard = link.heard.load(Ordering::Relaxed);
    let mut bytes = all;
    let wrote = |bytes: &[u8]| all.len() - bytes.len();
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err((std::io::ErrorKind::WriteZero.into(), wrote(bytes))),
            Ok(n) => {
                link.writes.fetch_add(1, Ordering::Relaxed);
                link.bytes.fetch_add(n as u64, Ordering::Relaxed);
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) && link.heard.load(Ordering::Relaxed) != heard => {
                heard = link.heard.load(Ordering::Relaxed);
            }
            Err(e) => return Err((e, wrote(bytes))),
        }
    }
    Ok(())
}

/// The receiving side's flow control: `end`'s process has `max_backlog` envelopes in its inbox
/// from other nodes, so this reader stops reading its connection until the process has taken
/// half of them. (The process takes them whenever it visits its inbox, parking what it cannot
/// deliver at once, up to `max_backlog` a channel: so the inbox fills when the process is busy
/// in a long callback, or when one of its channels has that many parked.) The peer's writer
/// then waits on TCP, its processes at their link's bound (`Outlink::wait_for_room`): a slow
/// process holds back its senders across the network instead of growing this node's memory.
/// It gives up holding back if the process stops taking envelopes for good (it failed, or the
/// node is stopping).
#[cold]
#[inline(never)]
fn hold_back<P: NodeProcess>(core: &Core<P>, end: &InboxEnd<P::Message>) {
    let bell = &core.shared().bells[end.to];
    let mut nap = Duration::from_micros(50);
    while end.tx.len() > core.max_backlog / 2 && !bell.is_closed() && !core.is_stopping() {
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(2));
    }
}

/// One channel from a process of the peer to one run here, as the reader sees it.
pub(crate) struct Inlet {
    /// Its local incoming number at the receiving process.
    at: u32,
    /// The receiving process's inbox, by its place in the reader's `Inboxes`.
    inbox: usize,
    /// The number the next message on it must carry.
    next: u64,
    /// Its number among the channels into this node from others (`Hub::learn_route`).
    remote: usize,
    /// The channel from the same sender into this node that follows it in number order: where
    /// a run of markers goes on (`Frame::Markers`).
    then: Option<u32>,
}

impl Inlet {
    /// Channel `at` (its local incoming number) into the process of inbox `inbox`, whose next
    /// message is numbered `next`, the `remote`-th channel into this node from others,
    /// followed by channel `then` from the same sender.
    pub(crate) fn new(
        at: usize,
        inbox: usize,
        next: u64,
        (remote, then): (usize, Option<u32>),
    ) -> Self {
        Inlet {
            at: u32::try_from(at).expect("fewer than 2^32 channels into a process"),
            inbox,
            next,
            remote,
            then,
        }
    }
}

/// How many envelopes the reader puts in an inbox between two looks at its backlog: a look
/// costs the inbox's two counters, and the bound may be passed by this many.
const CHECK_EVERY: u32 = 32;

/// One process's inbox from other nodes, as a reader sees it.
pub(crate) struct InboxEnd<M> {
    tx: Sender<Arrival<M>>,
    to: ProcessId,
    /// The inbox's bit in the process's doorbell.
    place: BitPlace,
    /// Envelopes put in since its backlog was last looked at.
    unchecked: u32,
    /// The round of rings (`Inboxes::round`) it was last owed a ring in: once a round is
    /// enough.
    owed_in: u64,
}

impl<M> InboxEnd<M> {
    /// Process `to`'s inbox `tx`, at bit `bit` of its doorbell.
    pub(crate) fn new(to: ProcessId, tx: Sender<Arrival<M>>, bit: usize) -> Self {
        InboxEnd {
            tx,
            to,
            place: BitPlace::of(bit),
            unchecked: 0,
            owed_in: u64::MAX,
        }
    }
}

/// Each reader keeps its own counts (not derived: `M` need not be `Clone`).
impl<M> Clone for InboxEnd<M> {
    fn clone(&self) -> Self {
        InboxEnd {
            tx: self.tx.clone(),
            to: self.to,
            place: self.place,
            unchecked: 0,
            owed_in: u64::MAX,
        }
    }
}

/// The inboxes a reader delivers to, and the rings it owes them. A process is rung for what
/// the reader put in its inbox before the reader next reads from the socket (so once per
/// decrypted Noise message at most, or every `RING_EVERY` envelopes), not once per envelope: a
/// process woken at the first envelope of a burst would take it alone, then sleep and be
/// woken again for the next, and on a busy machine each of those wake-ups is a switch of
/// threads (measured in BENCHMARKS.md, "The cluster against a bare TCP program"). It adds no
/// wait a process could notice: a message's envelopes are all in memory, and the rings are made
/// before any read that could wait (the rest of a frame cut between two messages too: on a
/// slow network it can be long in coming).
pub(crate) struct Inboxes<M> {
    ends: Vec<InboxEnd<M>>,
    /// The inboxes (by place in `ends`) owed a ring: each once.
    due: Vec<usize>,
    /// Envelopes delivered since the last rings.
    unrung: usize,
    /// Counts the times `due` was rung and emptied.
    round: u64,
}

/// At most this many envelopes wait for their rings while the reader decodes one Noise message
/// (a message can hold thousands of frames).
const RING_EVERY: usize = 64;

impl<M> Inboxes<M> {
    /// A reader's view of `ends`.
    pub(crate) fn new(ends: Vec<InboxEnd<M>>) -> Self {
        Inboxes {
            due: Vec::with_capacity(ends.len()),
            ends,
            unrung: 0,
            round: 0,
        }
    }

    /// Puts `envelope` in `inlet`'s process's inbox, as a local sender puts it on its channel,
    /// and owes the process a ring for it. A process that has failed still gets it (reported
    /// as undelivered at shutdown). Inlined into the reader's loop, so the envelope is built
    /// where it is sent from: passed by reference, it was read back whole from the caller's
    /// narrower stores, a stall on every message (`perf`: 107 and 124 samples of
    /// `deliver` and `read_frames` became 163 of the two together, BENCHMARKS.md, fourteenth
    /// round).
    #[inline(always)]
    fn deliver<P>(&mut self, core: &Core<P>, inlet: &Inlet, envelope: Envelope<M>)
    where
        P: NodeProcess<Message = M>,
    {
        let k = inlet.inbox;
        let end = &mut self.ends[k];
        end.unchecked += 1;
        if end.unchecked >= CHECK_EVERY {
            end.unchecked = 0;
            if end.tx.len() >= core.max_backlog {
                // Every process must know what it has before this reader stops: the one behind,
                // to take it, and the others, not to wait on it.
                self.ring_all(core);
                hold_back(core, &self.ends[k]);
            }
        }
        let end = &mut self.ends[k];
        let arrival = Arrival {
            channel: inlet.at,
            envelope,
        };
        // The inboxes live until shutdown has collected them, so this cannot fail while the
        // node runs; after, there is nobody to deliver to (nor any ring then).
        if end.tx.send(arrival).is_ok() {
            self.unrung += 1;
            if end.owed_in != self.round {
                end.owed_in = self.round;
                self.due.push(k);
            }
        }
    }

    /// Rings every process owed a ring, unless it has failed or stopped.
    fn ring_all<P: NodeProcess>(&mut self, core: &Core<P>) {
        let bells = &core.shared().bells;
        for k in self.due.drain(..) {
            let end = &self.ends[k];
            if !bells[end.to].is_closed() {
                bells[end.to].ring_at(end.place);
            }
        }
        self.unrung = 0;
        self.round += 1;
    }
}

/// Why a peer's frames are refused: the link is then closed.
pub(crate) type Refusal = String;

/// Why a link stopped working, as the node's failure detector needs it: the reason, and
/// whether it was silence (nothing read, or nothing written, for the failure timeout) rather
/// than a closed connection, a failed call or a refused frame. It matters to how long the node
/// waits for the others' word before it decides who failed (`Core::suspect`): the survivors of
/// a node that dies see its connections close at about the same moment, but they see it fall
/// silent up to a heartbeat apart.
#[derive(Debug)]
pub(crate) struct Broke {
    /// Why.
    pub(crate) why: String,
    /// It was silence.
    pub(crate) silent: bool,
}

impl From<Refusal> for Broke {
    fn from(why: Refusal) -> Self {
        Broke { why, silent: false }
    }
}

/// Whether an I/O error is a socket timeout: for a link, silence.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The reader's thread: reads the peer's frames and acts on each until the connection closes.
/// Returns `Ok` if it closed after the peer's `Finished` and report, else why it failed.
pub(crate) fn read_loop<P>(
    core: &Arc<Core<P>>,
    peer: usize,
    secured: Secured,
    (mut inlets, mut inboxes): (Vec<Option<Inlet>>, Inboxes<P::Message>),
) -> Result<(), Broke>
where
    P: NodeProcess,
{
    let result = read_frames(core, peer, secured, &mut inlets, &mut inboxes);
    // Whatever ended the reading, what was delivered is rung for.
    inboxes.ring_all(core);
    result
}

fn read_frames<P>(
    core: &Arc<Core<P>>,
    peer: usize,
    (stream, transport): Secured,
    inlets: &mut [Option<Inlet>],
    rings: &mut Inboxes<P::Message>,
) -> Result<(), Broke>
where
    P: NodeProcess,
{
    let run = &mut MarkerRun::default();
    // Any byte counts as a sign of life, heartbeats included: a read that waits longer than
    // the failure timeout means the peer, or the link, has gone silent.
    stream
        .set_read_timeout(Some(core.failure_timeout))
        .map_err(|e| e.to_string())?;
    let ours = core.links[peer].clone();
    let counted = Counted {
        stream,
        total: 0,
        link: ours.clone(),
    };
    let mut stream = Opened::new(BufReader::with_capacity(1 << 16, counted), transport);
    let mut buf = Vec::new();
    loop {
        if rings.unrung >= RING_EVERY {
            rings.ring_all(core);
        }
        // A frame whole in what was decrypted is decoded where it lies; anything else (a frame
        // across two messages, in pieces, or to be refused) goes the long way.
        let decoded = match wire::whole_frame(stream.unread(), core.frame) {
            Some((used, body)) => {
                if let Some(fields) = wire::decode_message(body) {
                    stream.consume(used);
                    let (channel, seq, message) =
                        fields.map_err(|e| ReadError::from(e).to_string())?;
                    deliver_message(inlets, peer, rings, core, (channel, seq, message))?;
                    continue;
                }
                let frame = wire::decode(body);
                stream.consume(used);
                frame
            }
            None => {
                // What was delivered is rung for before a read that may wait for the socket
                // (so once a message at least): on a slow network the rest of a frame cut
                // between two messages can be a long time coming.
                rings.ring_all(core);
                // Checked as often: a link put down by the node (its processes found the
                // peer's frames bad) stops delivering them, whatever the peer sends next.
                if ours
                    .as_ref()
                    .is_some_and(|l| l.down.load(Ordering::Acquire))
                {
                    return Err(Broke::from("the link was put down".to_string()));
                }
                let read = if stream.unread().is_empty() {
                    // Between two decrypted messages: the next one is decrypted where it lies,
                    // and its frames taken in place from the first. Read by `read_frame`, the
                    // first frame of every message went the long way (copied out, decoded by
                    // postcard as any frame): one message in six at 3 nodes x 16.
                    match stream.fill() {
                        Ok(true) => continue,
                        Ok(false) => Err(ReadError::Closed),
                        Err(e) => Err(ReadError::Io(e)),
                    }
                } else {
                    wire::read_frame(&mut stream, &mut buf, core.frame)
                };
                match read {
                    Ok(()) => {}
                    Err(ReadError::Closed) if core.peer_done(peer) => return Ok(()),
                    Err(ReadError::Io(e)) if timed_out(&e) => {
                        return Err(Broke {
                            why: format!(
                                "nothing arrived for {:.1} s",
                                core.failure_timeout.as_secs_f64()
                            ),
                            silent: true,
                        });
                    }
                    Err(e) => return Err(Broke::from(e.to_string())),
                }
                wire::decode(&buf)
            }
        };
        let frame: FrameIn<P::Message, P::State> = decoded.map_err(|e| e.to_string())?;
        match frame {
            Frame::Message {
                channel,
                seq,
                message,
            } => deliver_message(inlets, peer, rings, core, (channel, seq, message))?,
            Frame::Markers {
                first,
                count,
                snapshot,
                initiator,
            } => {
                // As `count` frames of one marker each, one after another; a run of none, or
                // one that goes past its sender's last channel into this node, is refused.
                // Every channel of the run is checked, and noted with the hub under one lock,
                // before any marker is delivered.
                if count == 0 {
                    return Err(Broke::from(format!(
                        "a run of no markers from channel {first}"
                    )));
                }
                run.clear();
                let mut next = Some(first);
                for _ in 0..count {
                    let channel = next.ok_or_else(|| {
                        format!(
                            "a run of {count} markers from channel {first}, past its sender's \
                             last channel into this node"
                        )
                    })?;
                    let inlet = inlet(inlets, channel, peer)?;
                    next = inlet.then;
                    run.push(channel, inlet.remote);
                }
                core.markers_from(peer, run, snapshot, initiator as usize)?;
                for &channel in &run.channels {
                    let inlet = inlet(inlets, channel, peer)?;
                    rings.deliver(core, inlet, Envelope::Marker(snapshot));
                }
            }
            other => core.control_from(peer, other)?,
        }
    }
}

/// Delivers message number `seq` of `channel` from `peer`, if it is one of this node's
/// channels from there and the number is the one due on it.
#[inline(always)]
fn deliver_message<P: NodeProcess>(
    inlets: &mut [Option<Inlet>],
    peer: usize,
    rings: &mut Inboxes<P::Message>,
    core: &Arc<Core<P>>,
    (channel, seq, message): (u32, u64, P::Message),
) -> Result<(), Broke> {
    let inlet = inlet(inlets, channel, peer)?;
    if seq != inlet.next {
        return Err(Broke::from(format!(
            "message {seq} on channel {channel} where message {} was due",
            inlet.next
        )));
    }
    inlet.next += 1;
    let seq = NonZeroU64::new(seq).expect("checked against a count from 1");
    rings.deliver(core, inlet, Envelope::Message { seq, message });
    Ok(())
}

/// The channels of one run of markers (`Frame::Markers`) as the reader walks it, kept from one
/// run to the next so that a run allocates nothing.
#[derive(Default)]
pub(crate) struct MarkerRun {
    /// The channels, in the run's order.
    pub(crate) channels: Vec<u32>,
    /// Their numbers among the channels into this node from others, in the same order.
    pub(crate) remotes: Vec<usize>,
}

impl MarkerRun {
    fn clear(&mut self) {
        self.channels.clear();
        self.remotes.clear();
    }

    fn push(&mut self, channel: u32, remote: usize) {
        self.channels.push(channel);
        self.remotes.push(remote);
    }
}

/// The peer's connection as its reader reads it, counting the bytes that arrive into the
/// link's `heard` (one store per read from the socket, by this thread only).
struct Counted {
    stream: TcpStream,
    total: u64,
    link: Option<Arc<Outlink>>,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.total += n as u64;
        if let Some(link) = &self.link {
            link.heard.store(self.total, Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// The inlet of `channel`, if it runs from `peer` to this node.
fn inlet(inlets: &mut [Option<Inlet>], channel: u32, peer: usize) -> Result<&mut Inlet, Refusal> {
    inlets
        .get_mut(channel as usize)
        .and_then(Option::as_mut)
        .ok_or_else(|| {
            format!("an envelope on channel {channel}, which does not run from node {peer} to this node")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::FrameLimit;

    /// Three frames of 100 bytes, each in three pieces (limit 40): what a writer had taken.
    fn taken() -> (Vec<u8>, Vec<usize>) {
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        for k in 0..3u8 {
            wire::encode_within(&mut out, &vec![k; 100], FrameLimit::pieces(40)).unwrap();
            ends.push(out.len());
        }
        (out, ends)
    }

    fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let (mut all, mut buf) = (Vec::new(), Vec::new());
        while wire::read_frame(&mut bytes, &mut buf, FrameLimit::pieces(usize::MAX)).is_ok() {
            all.push(wire::decode::<Vec<u8>>(&buf).unwrap());
        }
        all
    }

    /// A link of four processes, bound 400 bytes (a share of 100 each).
    fn link_of_four() -> Outlink {
        let limits = LinkLimits {
            heartbeat: Duration::from_secs(1),
            frame: FrameLimit::pieces(1 << 20),
            max_queued: 400,
            stall: Duration::from_secs(1),
        };
        Outlink::new(1, 4, limits)
    }

    /// Hands over `bytes` bytes from process `local`; returns whether it must wait for room.
    fn hand_over(link: &Outlink, local: usize, bytes: usize) -> bool {
        link.append(local, &mut vec![0; bytes])
    }

    /// Past the link's bound, a process waits only if it holds more than its share: the one
    /// that floods the link, not one that sends it little. And what queues is as counted.
    #[test]
    fn past_the_bound_a_process_waits_only_past_its_share() {
        let link = link_of_four();
        // Under its share, and past it with the link under its bound: no wait.
        assert!(!hand_over(&link, 0, 90));
        assert!(!hand_over(&link, 0, 20));
        assert!(!hand_over(&link, 1, 150));
        // 410 bytes, 150 of them this process's: it waits.
        assert!(hand_over(&link, 2, 150));
        // The link is past its bound, but this process holds 10 bytes: it goes on.
        assert!(!hand_over(&link, 3, 10));
        // This one holds 111, over its share: it waits.
        assert!(hand_over(&link, 0, 1));
        assert_eq!(link.handed_over(), 421);
        assert_eq!(link.queued(), 421);
    }

    /// The writer's take empties the counts with the buffers, and a process waiting for room
    /// goes on once it has; what the writer took is everything queued, in order of processes.
    #[test]
    fn the_writers_take_releases_a_process_waiting_for_room() {
        let link = Arc::new(link_of_four());
        assert!(!hand_over(&link, 0, 300));
        assert!(hand_over(&link, 1, 200));
        let waiter = {
            let link = link.clone();
            std::thread::spawn(move || link.wait_for_room())
        };
        // Give it time to wait (it also looks again every 5 ms: either way it must end).
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "it went on with 500 bytes queued");
        let mut out = Vec::new();
        link.take_rung(&[0b11], &mut out);
        assert_eq!(out.len(), 500);
        assert_eq!(link.handed_over(), 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiter.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(waiter.is_finished(), "still waiting with nothing queued");
        waiter.join().unwrap();
        // A bit rung with nothing in the buffer, and the control bit, take nothing amiss.
        out.clear();
        link.send_control(|buf| {
            buf.extend_from_slice(&[9; 3]);
            Ok(())
        })
        .unwrap();
        link.take_rung(&[0b1_0100], &mut out);
        assert_eq!(out, [9; 3]);
    }

    /// Frames a writer had taken when its write failed are reported with what was never taken,
    /// from the first one the peer cannot have had whole, oldest first; before, they were lost
    /// from the count of messages that never left.
    #[test]
    fn frames_a_failed_write_cut_are_reported_unsent() {
        let limits = LinkLimits {
            heartbeat: Duration::from_secs(1),
            frame: FrameLimit::pieces(40),
            max_queued: 1 << 20,
            stall: Duration::from_secs(1),
        };
        let (out, ends) = taken();
        for (delivered, from) in [
            (0, 0),
            (ends[0] - 1, 0),
            (ends[0], 1),
            (ends[0] + 50, 1),
            (ends[2] - 1, 2),
            (ends[2], 3),
        ] {
            let link = Outlink::new(1, 1, limits);
            link.keep_unwritten(&out, delivered);
            // Queued after the writer took `out`: comes after it.
            let mut later = Vec::new();
            wire::encode_within(&mut later, &vec![7u8; 3], FrameLimit::pieces(40)).unwrap();
            link.append(0, &mut later);
            let mut want: Vec<Vec<u8>> = (from as u8..3).map(|k| vec![k; 100]).collect();
            want.push(vec![7; 3]);
            assert_eq!(
                frames(&link.take_unsent()),
                want,
                "{delivered} bytes delivered"
            );
            assert_eq!(link.handed_over(), 0, "counted after all was taken");
        }
    }
}
