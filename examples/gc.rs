//! Distributed garbage collection: objects live on processes and point at each other across
//! processes, references travel in messages; a snapshot finds the objects that nothing
//! reachable points to, counting references in recorded in-flight messages as live.
//! Run: `cargo run --release --example gc`
//!
//! Each process owns a heap of objects and holds roots; on its ticks it allocates, links,
//! drops references and hands root references to neighbours (moving them, so for a while the
//! only reference to an object may be in a message). It only ever uses references it can reach
//! from its own roots, so an unreachable object can never be reached again: garbage is stable,
//! and what a snapshot proves unreachable can be freed. The example frees it round after round,
//! then checks, once the mutators have stopped: nothing freed is referenced from anything
//! reachable (no object was collected while reachable), and a last snapshot finds every object
//! that is unreachable (all the garbage is found). Exit status 0 if both hold, 1 otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use chandy_lamport::{Context, GlobalSnapshot, Process, ProcessId, Runtime, Topology};

/// An object: its owner in the high 32 bits, its number there in the low 32.
pub type ObjectId = u64;

/// The process that owns object `o`.
pub fn owner(o: ObjectId) -> ProcessId {
    (o >> 32) as ProcessId
}

/// A reference handed to another process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref(pub ObjectId);

/// A process's heap: what a snapshot keeps of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    /// Objects it owns, each with the references it holds.
    pub objects: BTreeMap<ObjectId, Vec<ObjectId>>,
    /// References the process itself holds.
    pub roots: Vec<ObjectId>,
}

/// One process: a heap and a mutator that changes it on every tick.
pub struct Mutator {
    me: u32,
    heap: Heap,
    next: u32,
    ops_left: u32,
    rng: fastrand::Rng,
}

impl Mutator {
    /// `n` mutators, each starting with `objects` rooted objects and doing `ops` operations.
    pub fn team(n: usize, objects: u32, ops: u32, seed: u64) -> Vec<Mutator> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|p| {
                let mut m = Mutator {
                    me: p as u32,
                    heap: Heap::default(),
                    next: 0,
                    ops_left: ops,
                    rng: fastrand::Rng::with_seed(rng.u64(..)),
                };
                for _ in 0..objects {
                    let o = m.allocate();
                    m.heap.roots.push(o);
                }
                m
            })
            .collect()
    }

    /// The heap as it is now.
    pub fn heap(&self) -> &Heap {
        &self.heap
    }

    /// Operations still to do.
    pub fn ops_left(&self) -> u32 {
        self.ops_left
    }

    /// Drops root `k`.
    pub fn drop_root(&mut self, k: usize) -> ObjectId {
        self.heap.roots.swap_remove(k)
    }

    /// Frees these objects (the collector proved them unreachable).
    pub fn free(&mut self, objects: &[ObjectId]) {
        for o in objects {
            self.heap.objects.remove(o);
        }
    }

    /// Moves root `k` to process `to` in a message: until it arrives, that message may hold the
    /// only reference to the object. Returns the object.
    pub fn hand_over(&mut self, k: usize, to: ProcessId, ctx: &mut Context<'_, Ref>) -> ObjectId {
        let o = self.heap.roots.swap_remove(k);
        ctx.send(to, Ref(o)).expect("a neighbour");
        o
    }

    fn allocate(&mut self) -> ObjectId {
        let o = (u64::from(self.me) << 32) | u64::from(self.next);
        self.next += 1;
        self.heap.objects.insert(o, Vec::new());
        o
    }

    /// References reachable from this process's roots without looking into other processes:
    /// the only ones the mutator may use. Remote references are reachable but opaque.
    fn reachable(&self) -> Vec<ObjectId> {
        let mut seen: BTreeSet<ObjectId> = BTreeSet::new();
        let mut todo: Vec<ObjectId> = self.heap.roots.clone();
        while let Some(o) = todo.pop() {
            if seen.insert(o) {
                if let Some(refs) = self.heap.objects.get(&o) {
                    todo.extend(refs);
                }
            }
        }
        seen.into_iter().collect()
    }

    fn local_reachable(&self) -> Vec<ObjectId> {
        self.reachable()
            .into_iter()
            .filter(|o| self.heap.objects.contains_key(o))
            .collect()
    }

    /// One random operation.
    fn mutate(&mut self, ctx: &mut Context<'_, Ref>) {
        match self.rng.u32(0..100) {
            // Allocate, held by a root or by a reachable local object.
            0..=24 => {
                let holders = self.local_reachable();
                let o = self.allocate();
                match holders.get(self.rng.usize(..holders.len().max(1))) {
                    Some(h) if self.rng.bool() => self.heap.objects.get_mut(h).unwrap().push(o),
                    _ => self.heap.roots.push(o),
                }
            }
            // Link two reachable things.
            25..=49 => {
                let (holders, targets) = (self.local_reachable(), self.reachable());
                if !holders.is_empty() && !targets.is_empty() {
                    let h = holders[self.rng.usize(..holders.len())];
                    let t = targets[self.rng.usize(..targets.len())];
                    self.heap.objects.get_mut(&h).unwrap().push(t);
                }
            }
            // Drop a root, or a reference held by an object.
            50..=79 => {
                if self.rng.bool() && !self.heap.roots.is_empty() {
                    let k = self.rng.usize(..self.heap.roots.len());
                    self.drop_root(k);
                } else if let Some(refs) = self
                    .heap
                    .objects
                    .values_mut()
                    .filter(|r| !r.is_empty())
                    .nth(self.rng.usize(..8))
                {
                    let k = self.rng.usize(..refs.len());
                    refs.swap_remove(k);
                }
            }
            // Hand a root reference to a neighbour.
            _ => {
                if !self.heap.roots.is_empty() {
                    let k = self.rng.usize(..self.heap.roots.len());
                    let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
                    self.hand_over(k, to, ctx);
                }
            }
        }
    }
}

impl Process for Mutator {
    type Message = Ref;
    type State = Heap;

    fn on_message(&mut self, _from: ProcessId, r: Ref, _ctx: &mut Context<'_, Ref>) {
        self.heap.roots.push(r.0);
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Ref>) {
        if self.ops_left > 0 {
            self.ops_left -= 1;
            self.mutate(ctx);
        }
    }

    fn record(&self) -> Heap {
        self.heap.clone()
    }
}

/// What a global state (recorded or actual) says: the objects nothing reachable points to,
/// and the references reachable from a root or from a message in flight whose object does not
/// exist (what collecting a reachable object would leave behind).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// Objects unreachable from every root and every reference in flight.
    pub unreachable: BTreeSet<ObjectId>,
    /// Reachable references to objects that are gone.
    pub dangling: BTreeSet<ObjectId>,
}

/// Marks from every root and every in-flight reference through the heaps.
pub fn reach<'a>(
    heaps: impl IntoIterator<Item = &'a Heap>,
    in_flight: impl IntoIterator<Item = ObjectId>,
) -> Reach {
    let heaps: Vec<&Heap> = heaps.into_iter().collect();
    let objects: BTreeMap<ObjectId, &Vec<ObjectId>> = heaps
        .iter()
        .flat_map(|h| h.objects.iter().map(|(o, r)| (*o, r)))
        .collect();
    let mut marked: BTreeSet<ObjectId> = BTreeSet::new();
    let mut todo: Vec<ObjectId> = heaps.iter().flat_map(|h| h.roots.iter().copied()).collect();
    todo.extend(in_flight);
    while let Some(o) = todo.pop() {
        if marked.insert(o) {
            if let Some(refs) = objects.get(&o) {
                todo.extend(refs.iter());
            }
        }
    }
    Reach {
        unreachable: objects
            .keys()
            .filter(|o| !marked.contains(o))
            .copied()
            .collect(),
        dangling: marked
            .into_iter()
            .filter(|o| !objects.contains_key(o))
            .collect(),
    }
}

/// The garbage a snapshot proves: objects unreachable in its recorded state.
pub fn garbage(snapshot: &GlobalSnapshot<Ref, Heap>) -> BTreeSet<ObjectId> {
    reach(&snapshot.states, snapshot.in_flight().map(|(_, r)| r.0)).unreachable
}

/// Garbage collection by snapshots: objects reference each other across processes, references
/// travel in messages, and each snapshot proves some objects unreachable. Exit status 0 if
/// nothing reachable was collected and all garbage was found, 1 if not, 2 for bad flags.
#[derive(clap::Parser, Debug)]
#[command(name = "gc")]
struct Args {
    /// Processes, on the complete graph.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=256))]
    processes: u64,
    /// Objects each process starts with.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    objects: u32,
    /// Mutations each process makes (new objects, references moved or dropped).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    ops: u32,
    /// Seed of the mutators' random choices.
    #[arg(long, default_value_t = 11)]
    seed: u64,
}

fn main() -> ExitCode {
    env_logger::init();
    let args = <Args as clap::Parser>::parse();
    let (n, objects, ops, seed) = (args.processes as usize, args.objects, args.ops, args.seed);
    let runtime = Runtime::builder(Topology::complete(n))
        .tick_interval(Duration::from_micros(300))
        .build(Mutator::team(n, objects, ops, seed))
        .expect("a valid topology");
    println!(
        "gc: {}, {} each to start, {} each, seed {seed}",
        count(n, "process", "processes"),
        count(objects, "object", "objects"),
        count(ops, "mutation", "mutations")
    );
    let mut freed: Vec<ObjectId> = Vec::new();
    let collect = |round: usize, freed: &mut Vec<ObjectId>| {
        let snapshot = runtime
            .snapshot_timeout(0, Duration::from_secs(30))
            .expect("a snapshot");
        let found = garbage(&snapshot);
        let in_flight = snapshot.in_flight().count();
        let mut by_owner: BTreeMap<ProcessId, Vec<ObjectId>> = BTreeMap::new();
        for &o in &found {
            by_owner.entry(owner(o)).or_default().push(o);
        }
        for (p, list) in by_owner {
            runtime
                .with_process(p, move |m, _| m.free(&list))
                .expect("no panic");
        }
        if !found.is_empty() {
            let shown: Vec<String> = found
                .iter()
                .take(6)
                .map(|o| format!("{}.{}", owner(*o), o & 0xffff_ffff))
                .collect();
            println!(
                "round {round:>2}: {} ({}{}), {} in flight counted live",
                count(found.len(), "garbage object", "garbage objects"),
                shown.join(" "),
                if found.len() > 6 { " ..." } else { "" },
                count(in_flight, "reference", "references")
            );
        }
        freed.extend(found);
    };
    let mut round = 0;
    loop {
        round += 1;
        std::thread::sleep(Duration::from_millis(10));
        collect(round, &mut freed);
        let busy = (0..n).any(|p| {
            runtime
                .with_process(p, |m, _| m.ops_left() > 0)
                .unwrap_or(false)
        });
        if !busy {
            break;
        }
    }
    // The mutators have stopped; references may still be in flight. One more round finds
    // whatever the last mutations left unreachable.
    collect(round + 1, &mut freed);
    let stopped = runtime.shutdown().expect("first shutdown");
    let in_flight: Vec<ObjectId> = stopped.in_flight().map(|(_, r)| r.0).collect();
    let mutators = stopped.into_processes().expect("no panic");
    let heaps: Vec<&Heap> = mutators.iter().map(Mutator::heap).collect();
    let Reach {
        unreachable: left,
        dangling: bad,
    } = reach(heaps.iter().copied(), in_flight.iter().copied());
    let live: usize = heaps.iter().map(|h| h.objects.len()).sum();
    println!(
        "collected {} in {}; {}",
        count(freed.len(), "object", "objects"),
        count(round + 1, "round", "rounds"),
        count(live, "live object remains", "live objects remain")
    );
    println!(
        "check: {} to collected objects, {} not found",
        count(bad.len(), "reachable reference", "reachable references"),
        count(left.len(), "unreachable object", "unreachable objects")
    );
    if bad.is_empty() && left.is_empty() {
        println!("check: nothing reachable was collected, and all garbage was found");
        ExitCode::SUCCESS
    } else {
        println!("check: FAILED");
        ExitCode::from(1)
    }
}

/// `n` things, in words: `1 branch`, `2 branches`.
fn count(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    match n.to_string() {
        n if n == "1" => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}
