//! Configuring a runtime, and starting it: checking the topology, one channel per directed
//! edge (holding its recorded messages on a restore), one thread per process.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::doorbell::{Backoff, Doorbell};
use super::event_loop::{process_thread, ThreadDriver, Wire, Worker};
use super::guard;
use super::hub::Hub;
use super::outbox::EdgeOutbox;
use super::remote_inbox::{inbox_bit, Arrival, RemoteInbox};
use super::shared::{ProcessStats, Shared};
use super::shutdown::Owner;
use super::tracer::Tracer;
use super::Runtime;
use crate::envelope::Envelope;
use crate::error::BuildError;
use crate::host::Host;
use crate::process::Process;
use crate::restore::{self, ChannelStart};
use crate::snapshot::GlobalSnapshot;
use crate::topology::{Channel, ProcessId, Topology, Wiring};

/// How many (snapshot, channel) pairs the default limit on snapshots in flight allows. A
/// snapshot in flight holds a marker and per-channel bookkeeping for every channel, so its
/// memory is about proportional to the channels; BENCHMARKS.md measures about 100 bytes per
/// channel per snapshot, so about 2 GB at the default limit.
const DEFAULT_IN_FLIGHT_BUDGET: usize = 1 << 24;
/// The default limit never goes below this, however many channels.
const DEFAULT_IN_FLIGHT_FLOOR: usize = 16;

/// The default of [`RuntimeBuilder::max_snapshots_in_flight`] for a topology with `channels`
/// channels.
fn default_max_in_flight(channels: usize) -> usize {
    (DEFAULT_IN_FLIGHT_BUDGET / channels.max(1)).max(DEFAULT_IN_FLIGHT_FLOOR)
}

/// Configures and starts a [`Runtime`] of processes of type `P`.
pub struct RuntimeBuilder<P> {
    topology: Topology,
    max_in_flight: Option<usize>,
    tick: Option<Duration>,
    thread_name: String,
    stack_size: Option<usize>,
    trace: Option<usize>,
    processes: PhantomData<fn() -> P>,
}

impl<P: Process> RuntimeBuilder<P> {
    /// The defaults, for [`Runtime::builder`].
    pub(super) fn new(topology: Topology) -> Self {
        RuntimeBuilder {
            topology,
            max_in_flight: None,
            tick: None,
            thread_name: "process".to_string(),
            stack_size: None,
            trace: None,
            processes: PhantomData,
        }
    }

    /// Calls [`Process::on_tick`] on every process about every `interval` (not at all by
    /// default). Ticks are served by the same loop as messages, between two callbacks. A busy
    /// process looks at the clock every 16 channels it serves (an idle one before it waits), so
    /// under load a tick can come that much late: tens of microseconds.
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.tick = Some(interval);
        self
    }

    /// At most `limit` snapshots in flight (started, from outside or by application code, and
    /// not yet complete or failed). While that many are running, [`Runtime::start_snapshot`]
    /// fails with [`Error::TooManySnapshots`](crate::Error::TooManySnapshots) and a snapshot
    /// started by application code is reported to subscribers with that error; the running ones
    /// are not disturbed. This bounds the memory snapshots can take, which grows with the number
    /// in flight times the number of channels (each in-flight snapshot has one marker per
    /// channel queued or on its way, and counters per channel at every process).
    ///
    /// Default: 2^24 / channels, at least 16. That is 838,860 on `Topology::complete(5)` (20
    /// channels), 69,905 on `complete(16)` and 4,161 on `complete(64)`. Since a snapshot's
    /// memory grows with the channels, the default caps snapshots times channels, which keeps
    /// the memory at the limit about the same on every topology (BENCHMARKS.md, "Concurrent
    /// snapshots at scale", measures the bytes per channel per snapshot). A limit of 0 is taken
    /// as 1.
    pub fn max_snapshots_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit.max(1));
        self
    }

    /// Process threads are named `{prefix}-{id}` (default `process-{id}`). A prefix with a NUL
    /// byte cannot name a thread: `build` refuses it with [`BuildError::ThreadName`].
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Stack size of each process thread (default: the standard library's).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Keeps a trace of the run (off by default, and then it costs nothing but one branch per
    /// send and per receipt): every send and receipt of a message or marker, every state
    /// recorded, every snapshot completed, in the format of the simulator's trace, with vector
    /// clocks and, as time, microseconds since `build` (see [`crate::trace`]). Read it with
    /// [`Runtime::trace`] while the runtime runs, or from [`Stopped::trace`](crate::Stopped)
    /// after a shutdown.
    ///
    /// Each process keeps its first `max_events_per_process` events and counts the rest: a long
    /// run's trace is its beginning. What is handed back is always a consistent prefix (every
    /// receipt in it has its send in it); its [header](crate::trace::TraceHeader) says how many
    /// events were not kept, and how many snapshots are therefore in it only in part or not at
    /// all (written as the trace's first line, so a diagram of it can say so). Tracing costs a
    /// lock-free-in-practice mutex (taken only by the process's own thread while it runs) and a
    /// clock read per event, and about 100 bytes per event.
    pub fn trace(mut self, max_events_per_process: usize) -> Self {
        self.trace = Some(max_events_per_process);
        self
    }

    /// Checks the topology and starts one thread per process; `processes` are given in id
    /// order, one per process of the topology.
    pub fn build(self, processes: impl IntoIterator<Item = P>) -> Result<Runtime<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let apps = restore::fresh(&wiring, processes)?;
        self.start(wiring, apps, None)
    }

    /// Starts again from a completed global snapshot: each process is rebuilt from its recorded
    /// state by `rebuild(id, state)`, each channel starts holding its recorded in-flight
    /// messages (delivered before anything sent after the restart), and every channel's
    /// counters continue from the snapshot's, so later snapshots verify exactly.
    ///
    /// The snapshot must fit the topology (same processes and channels) and be a consistent
    /// cut; if not, nothing is rebuilt or started and the error says why. `on_start` runs on
    /// restored processes too: one that starts work there should know it was restored (the
    /// `rebuild` closure can tell it).
    pub fn restore(
        self,
        snapshot: &GlobalSnapshot<P::Message, P::State>,
        rebuild: impl FnMut(ProcessId, &P::State) -> P,
    ) -> Result<Runtime<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let (apps, starts) = restore::rebuild(&wiring, snapshot, rebuild)?;
        self.start(wiring, apps, Some(starts))
    }

    fn start(
        self,
        wiring: Arc<Wiring>,
        apps: Vec<P>,
        starts: Option<Vec<ChannelStart<P::Message>>>,
    ) -> Result<Runtime<P>, BuildError> {
        let apps = apps.into_iter().map(Some).collect();
        // No process runs elsewhere, so none has an inbox to bound.
        let started = self.start_part(
            wiring,
            apps,
            starts,
            Backoff::for_threads,
            usize::MAX,
            |wire| wire,
        )?;
        started.gate.open();
        Ok(started.runtime)
    }

    /// Starts the processes of `apps` that are `Some` (all of them in process; a cluster
    /// node's own in a cluster), each driven by `driver(wire)`, their threads held at the gate
    /// until the caller opens it. The channels between two processes run here are made as in
    /// process; a process here with channels from processes elsewhere gets an inbox for them
    /// (`remote_inbox.rs`), parking at most `parked_bound` envelopes a channel, and the
    /// inbox's sending end is handed back with each such channel (the node's links push onto
    /// it); a channel from here to elsewhere gets a sender that goes nowhere, which the node's
    /// driver never uses (it encodes for the link itself). `idle` gives the idle schedule of a
    /// process ([`Backoff`]) for the number of processes run here: the caller adds the threads
    /// that run beside them (a node's links).
    pub(crate) fn start_part<D: ThreadDriver<P>>(
        self,
        wiring: Arc<Wiring>,
        mut apps: Vec<Option<P>>,
        mut starts: Option<Vec<ChannelStart<P::Message>>>,
        idle: impl FnOnce(usize) -> Backoff,
        parked_bound: usize,
        mut driver: impl FnMut(Wire<P>) -> D,
    ) -> Result<Started<P>, BuildError> {
        // Checked before any thread starts: the standard library's thread builder panics on a
        // name with a NUL byte, and would do so after some threads were already running.
        if self.thread_name.contains('\0') {
            return Err(BuildError::ThreadName {
                prefix: self.thread_name,
            });
        }
        let n = wiring.processes();
        debug_assert_eq!(apps.len(), n);
        let here: Vec<bool> = apps.iter().map(Option::is_some).collect();
        let epoch = Instant::now();
        // One channel per directed edge, and one doorbell bit per incoming channel plus one for
        // control requests. (A process run elsewhere has a doorbell too, never rung: its closed
        // flag is what refuses sends to it once it has failed.)
        // A process here with channels from processes elsewhere gets an inbox for them, with a
        // bit after the control channel's (`remote_inbox.rs`).
        let mut has_inbox = vec![false; n];
        for channel in wiring.channels() {
            if here[channel.to] && !here[channel.from] {
                has_inbox[channel.to] = true;
            }
        }
        let bells: Arc<[Doorbell]> = (0..n)
            .map(|p| Doorbell::new(wiring.incoming(p).len() + 1 + usize::from(has_inbox[p])))
            .collect();
        let (inbox_tx, mut inbox_rx): (Vec<_>, Vec<_>) = (0..n)
            .map(|p| {
                if has_inbox[p] {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                }
            })
            .unzip();
        let mut links: Vec<Vec<_>> = (0..n)
            .map(|p| Vec::with_capacity(wiring.outgoing(p).len()))
            .collect();
        type Inbound<M> = Vec<Option<Receiver<Envelope<M>>>>;
        let mut inbound: Vec<Inbound<P::Message>> = (0..n)
            .map(|p| (0..wiring.incoming(p).len()).map(|_| None).collect())
            .collect();
        let mut from_elsewhere = Vec::new();
        let mut channel_order: Vec<usize> = (0..wiring.channels().len()).collect();
        channel_order.sort_by_key(|&c| (wiring.channels()[c].from, wiring.local_slots(c).0));
        for c in channel_order {
            let Channel { from, to } = wiring.channels()[c];
            if !here[from] && !here[to] {
                continue;
            }
            let (_, at_receiver) = wiring.local_slots(c);
            // A restored channel holds its in-flight messages before any thread runs. (Taken
            // out: the hosts need only the counters.)
            let restored = match starts.as_mut() {
                Some(starts) => std::mem::take(&mut starts[c].in_flight),
                None => Vec::new(),
            };
            if let Some(inbox) = inbox_tx[to].as_ref().filter(|_| !here[from]) {
                // From elsewhere: its envelopes come through the inbox; the channel itself is
                // never fed.
                for (seq, message) in restored {
                    let _ = inbox.send(Arrival {
                        channel: at_receiver as u32,
                        envelope: Envelope::restored(seq, message),
                    });
                    bells[to].ring(inbox_bit(wiring.incoming(to).len()));
                }
                inbound[to][at_receiver] = Some(crossbeam_channel::never());
                from_elsewhere.push((c, inbox.clone()));
                continue;
            }
            let (tx, rx) = crossbeam_channel::unbounded();
            if here[to] {
                for (seq, message) in restored {
                    let _ = tx.send(Envelope::restored(seq, message));
                    bells[to].ring(at_receiver);
                }
                inbound[to][at_receiver] = Some(rx);
            }
            links[from].push((tx, to, at_receiver));
        }
        let tracer = self.trace.map(|capacity| {
            let sent_before = (0..wiring.channels().len())
                .map(|c| starts.as_ref().map_or(0, |s| s[c].sent))
                .collect();
            Tracer::new(wiring.clone(), epoch, capacity, sent_before)
        });
        let (controls, control_rx): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        let shared = Arc::new(Shared {
            wiring: wiring.clone(),
            bells: bells.clone(),
            controls,
            hub: Hub::new(
                wiring.clone(),
                epoch,
                self.max_in_flight
                    .unwrap_or_else(|| default_max_in_flight(wiring.channels().len())),
                here.iter().filter(|&&h| h).count(),
            ),
            stats: (0..n).map(|_| ProcessStats::default()).collect(),
            backoff: idle(here.iter().filter(|&&h| h).count()),
            key: guard::new_key(),
            start_aborted: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            tracer,
        });
        let (start_tx, start_rx) = crossbeam_channel::bounded::<()>(0);
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(n);
        let workers = links.into_iter().zip(inbound).zip(control_rx).enumerate();
        for (me, ((links, inbound), control)) in workers {
            let incoming = inbound.len();
            let inbox = inbox_rx[me]
                .take()
                .map(|rx| RemoteInbox::new(rx, incoming, parked_bound));
            let Some(app) = apps[me].take() else {
                continue;
            };
            let inbound: Vec<_> = inbound.into_iter().map(|r| r.expect("wired")).collect();
            let wire = Wire::new(me, EdgeOutbox::new(links, bells.clone()), shared.clone());
            let worker = Worker::new(
                Host::start(me, app, &wiring, starts.as_deref()),
                driver(wire),
                inbound,
                inbox,
                control,
                self.tick,
            );
            let mut builder = thread::Builder::new().name(format!("{}-{me}", self.thread_name));
            if let Some(bytes) = self.stack_size {
                builder = builder.stack_size(bytes);
            }
            let (start, exits) = (start_rx.clone(), exit_tx.clone());
            match builder.spawn(move || process_thread(worker, start, exits)) {
                Ok(handle) => handles.push((me, handle)),
                Err(e) => {
                    // Release the threads already started without running any process code.
                    shared.start_aborted.store(true, Ordering::Release);
                    drop(start_tx);
                    for (_, handle) in handles {
                        let _ = handle.join();
                    }
                    return Err(BuildError::Spawn {
                        process: me,
                        message: e.to_string(),
                    });
                }
            }
        }
        let gate = StartGate {
            tx: Some(start_tx),
            shared: shared.clone(),
        };
        Ok(Started {
            runtime: Runtime {
                owner: Arc::new(Owner {
                    shared,
                    threads: Mutex::new(Some(handles)),
                    exits: exit_rx,
                }),
            },
            from_elsewhere,
            gate,
        })
    }
}

/// A runtime whose threads wait at the gate, and the channels that come from elsewhere.
pub(crate) struct Started<P: Process> {
    pub(crate) runtime: Runtime<P>,
    /// By channel index, each channel from a process not run here to one run here, with the
    /// sending end of the receiving process's inbox.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) from_elsewhere: Vec<(usize, Sender<Arrival<P::Message>>)>,
    pub(crate) gate: StartGate,
}

/// Holds the process threads before their first callback (`on_start`) until opened: a cluster
/// node opens it once every node is connected. Dropped unopened, the threads end without
/// running any process code.
pub(crate) struct StartGate {
    tx: Option<Sender<()>>,
    shared: Arc<dyn Abort>,
}

/// What the gate needs of `Shared` without naming the process type.
trait Abort: Send + Sync {
    fn abort_start(&self);
}

impl<P: Process> Abort for Shared<P> {
    fn abort_start(&self) {
        self.start_aborted.store(true, Ordering::Release);
    }
}

impl StartGate {
    /// Lets the threads run.
    pub(crate) fn open(mut self) {
        self.tx = None;
    }
}

impl Drop for StartGate {
    fn drop(&mut self) {
        // The flag first: a thread let go by the sender's drop must see it.
        if let Some(tx) = self.tx.take() {
            self.shared.abort_start();
            drop(tx);
        }
    }
}

impl<P> std::fmt::Debug for RuntimeBuilder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("topology", &self.topology)
            .field("max_in_flight", &self.max_in_flight)
            .field("tick", &self.tick)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .field("trace", &self.trace)
            .finish()
    }
}
