//! Per-thread counter cells and the collector that merges them.
//!
//! Every thread that counts owns one [`ThreadRecord`]: an append-only list of
//! cells, one per call site the thread has counted at. Only the owner writes a
//! cell (a relaxed load and store, no read-modify-write); the collector reads
//! every cell and remembers the last value it saw, so the delta since the last
//! collection is the difference. Cells only grow while their owner lives, so no
//! increment can be lost to a race between owner and collector.
//!
//! Records are never freed. When a thread exits it marks its record finished;
//! the collector reads it one last time, zeroes it and puts it on a free list,
//! and the next new thread takes it. Memory is therefore bounded by the peak
//! number of live counting threads times the number of sites, and no `unsafe`
//! is needed: cells are `&'static` because records are leaked exactly once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

// Under `--cfg loom` the protocol between an owner and the collector runs on
// loom's model-checked atomics.
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use once_cell::sync::Lazy;

/// Cells per cache-line-aligned group. Buckets are whole groups, so a bucket
/// never shares a cache line with memory written by another thread.
const GROUP: usize = 8;
/// Bucket `b` holds `2^b` groups; 24 buckets hold far more sites than any
/// program has.
const BUCKETS: usize = 24;

/// Record states: owned by a live thread, finished by its thread (waiting for
/// the collector's last read), or free for the next thread.
const LIVE: u8 = 0;
const FINISHED: u8 = 1;
const FREE: u8 = 2;

/// One counter: the stage it counts for and the value, written only by the
/// owning thread.
pub(crate) struct Cell {
    stage: AtomicU32,
    value: AtomicU64,
}

impl Cell {
    fn new() -> Self {
        Cell {
            stage: AtomicU32::new(0),
            value: AtomicU64::new(0),
        }
    }

    /// The counter itself, for the owner's hot path.
    pub(crate) fn value(&'static self) -> &'static AtomicU64 {
        &self.value
    }
}

type Group = CachePadded<[Cell; GROUP]>;

/// The cells of one thread, in buckets that never move once allocated, so the
/// collector can read them while the owner appends.
pub(crate) struct ThreadRecord {
    index: usize,
    state: AtomicU8,
    /// Number of cells published to the collector (Release by the owner).
    len: AtomicUsize,
    buckets: [OnceLock<Box<[Group]>>; BUCKETS],
}

/// Where cell `i` lives: bucket, group within the bucket, slot within the group.
fn locate(i: usize) -> (usize, usize, usize) {
    let group = i / GROUP;
    // Bucket b starts at group 2^b - 1.
    let bucket = (usize::BITS - (group + 1).leading_zeros() - 1) as usize;
    (bucket, group + 1 - (1 << bucket), i % GROUP)
}

impl ThreadRecord {
    fn new(index: usize) -> Self {
        ThreadRecord {
            index,
            state: AtomicU8::new(LIVE),
            len: AtomicUsize::new(0),
            buckets: Default::default(),
        }
    }

    fn cell(&self, i: usize) -> Option<&Cell> {
        let (bucket, group, slot) = locate(i);
        self.buckets.get(bucket)?.get().map(|b| &b[group][slot])
    }

    /// Appends a cell for `stage` holding `initial`. Owner only.
    pub(crate) fn push(&'static self, stage: u32, initial: u64) -> &'static Cell {
        let i = self.len.load(Ordering::Relaxed);
        let (bucket, group, slot) = locate(i);
        let groups = self
            .buckets
            .get(bucket)
            .expect("more counting sites on one thread than titus-count supports")
            .get_or_init(|| {
                (0..1usize << bucket)
                    .map(|_| CachePadded::new(std::array::from_fn(|_| Cell::new())))
                    .collect()
            });
        let cell = &groups[group][slot];
        cell.stage.store(stage, Ordering::Relaxed);
        cell.value.store(initial, Ordering::Relaxed);
        // Publishes the cell's stage and first value to the collector.
        self.len.store(i + 1, Ordering::Release);
        cell
    }

    /// Marks the record finished: its owner will never write it again.
    pub(crate) fn finish(&self) {
        self.state.store(FINISHED, Ordering::Release);
    }

    /// Reads every published cell and reports what is new since `seen` (the
    /// values read last time, updated here) as `(stage, delta)`. Returns
    /// whether the owner had finished before the read: then the deltas
    /// reported so far are final and the record may be recycled.
    fn collect(&self, seen: &mut Vec<u64>, mut add: impl FnMut(u32, u64)) -> bool {
        // Acquire: a finished owner's last writes are visible below.
        let finished = self.state.load(Ordering::Acquire) == FINISHED;
        let len = self.len.load(Ordering::Acquire);
        seen.resize(len, 0);
        for (i, last) in seen.iter_mut().enumerate() {
            let cell = self.cell(i).expect("published cell exists");
            let value = cell.value.load(Ordering::Relaxed);
            let delta = value.wrapping_sub(*last);
            *last = value;
            if delta != 0 {
                add(cell.stage.load(Ordering::Relaxed), delta);
            }
        }
        finished
    }

    /// Zeroes a finished, fully collected record for the next thread.
    fn recycle(&self, seen: &mut Vec<u64>) {
        for i in 0..self.len.load(Ordering::Relaxed) {
            let cell = self.cell(i).expect("published cell exists");
            cell.value.store(0, Ordering::Relaxed);
        }
        self.len.store(0, Ordering::Relaxed);
        self.state.store(FREE, Ordering::Relaxed);
        seen.clear();
    }
}

/// The registry of stages and thread records, and the collector's memory of
/// what it has already seen. One lock guards all of it; only cold paths and
/// the collector take it, never a counted call once its thread has counted at
/// that site.
pub(crate) struct Registry {
    stage_ids: HashMap<&'static str, u32>,
    stage_names: Vec<&'static str>,
    records: Vec<&'static ThreadRecord>,
    free: Vec<usize>,
    /// Per record, per cell: the value the collector saw last.
    seen: Vec<Vec<u64>>,
    /// Sites that counted after their thread's exit began.
    orphan_sites: Vec<&'static crate::site::Site>,
    /// Per stage: everything collected so far in this process.
    totals: Vec<u64>,
    /// Per stage: collected but not yet taken by the flusher.
    pending: Vec<u64>,
}

static REGISTRY: Lazy<Mutex<Registry>> = Lazy::new(|| {
    Mutex::new(Registry {
        stage_ids: HashMap::new(),
        stage_names: Vec::new(),
        records: Vec::new(),
        free: Vec::new(),
        seen: Vec::new(),
        orphan_sites: Vec::new(),
        totals: Vec::new(),
        pending: Vec::new(),
    })
});

/// Adds a collected delta to a stage's lifetime total and to its pending
/// delta.
fn add(totals: &mut [u64], pending: &mut [u64], stage: u32, delta: u64) {
    let stage = stage as usize;
    totals[stage] = totals[stage].wrapping_add(delta);
    pending[stage] = pending[stage].wrapping_add(delta);
}

/// Locks the registry. A panic while it was held cannot leave it
/// inconsistent in a way that loses counts, so poisoning is ignored.
pub(crate) fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// The dense id of a stage name, assigning one on first use.
    pub(crate) fn stage_id(&mut self, name: &'static str) -> u32 {
        if let Some(&id) = self.stage_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.stage_names.len()).expect("too many stages");
        self.stage_ids.insert(name, id);
        self.stage_names.push(name);
        self.totals.push(0);
        self.pending.push(0);
        id
    }

    /// Gives a record to a new thread: a free one if the collector has
    /// recycled one, a new one otherwise.
    pub(crate) fn acquire_record(&mut self) -> &'static ThreadRecord {
        if self.free.is_empty() {
            // Finished records become free only once collected.
            self.collect();
        }
        if let Some(index) = self.free.pop() {
            let record = self.records[index];
            record.state.store(LIVE, Ordering::Relaxed);
            return record;
        }
        let record: &'static ThreadRecord =
            Box::leak(Box::new(ThreadRecord::new(self.records.len())));
        self.records.push(record);
        self.seen.push(Vec::new());
        record
    }

    pub(crate) fn add_orphan_site(&mut self, site: &'static crate::site::Site) {
        if !self.orphan_sites.iter().any(|s| std::ptr::eq(*s, site)) {
            self.orphan_sites.push(site);
        }
    }

    /// Reads every cell, adds what is new since the last collection to the
    /// totals and to the pending deltas, and recycles finished records.
    pub(crate) fn collect(&mut self) {
        for r in 0..self.records.len() {
            let record = self.records[r];
            if record.state.load(Ordering::Relaxed) == FREE {
                continue;
            }
            let mut seen = std::mem::take(&mut self.seen[record.index]);
            let (totals, pending) = (&mut self.totals, &mut self.pending);
            let finished =
                record.collect(&mut seen, |stage, delta| add(totals, pending, stage, delta));
            if finished {
                record.recycle(&mut seen);
                self.free.push(record.index);
            }
            self.seen[record.index] = seen;
        }
        for s in 0..self.orphan_sites.len() {
            let site = self.orphan_sites[s];
            let delta = site.take_orphaned();
            if delta != 0 {
                let stage = site.stage_id_locked(self);
                add(&mut self.totals, &mut self.pending, stage, delta);
            }
        }
    }

    /// Takes the pending deltas, as (stage, delta) pairs in stage order.
    pub(crate) fn take_pending(&mut self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        for (id, delta) in self.pending.iter_mut().enumerate() {
            if *delta != 0 {
                // Redis counts in signed 64-bit integers; a larger delta
                // (not reachable in practice) goes out over several batches.
                let take = (*delta).min(i64::MAX as u64);
                *delta -= take;
                out.push((self.stage_names[id], take));
            }
        }
        out
    }

    /// The sum of the collected deltas not yet taken into a batch.
    pub(crate) fn pending_total(&self) -> u64 {
        self.pending.iter().fold(0u64, |a, &d| a.saturating_add(d))
    }

    /// Whether collected deltas wait for a batch.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.iter().any(|&d| d != 0)
    }

    /// Everything collected so far in this process, per stage.
    pub(crate) fn totals(&self) -> Vec<(&'static str, u64)> {
        self.stage_names
            .iter()
            .copied()
            .zip(self.totals.iter().copied())
            .collect()
    }

    /// Number of thread records ever allocated (live, finished or free).
    pub(crate) fn record_count(&self) -> usize {
        self.records.len()
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! The owner/collector protocol, model-checked: every interleaving of an
    //! owner counting, adding cells and exiting with a collector reading.
    //! Run with `RUSTFLAGS="--cfg loom" cargo test -p titus-count-runtime --lib loom`.

    use super::*;

    #[test]
    fn loom_collector_sees_every_count_once() {
        loom::model(|| {
            let record: &'static ThreadRecord = Box::leak(Box::new(ThreadRecord::new(0)));
            let owner = loom::thread::spawn(move || {
                let a = record.push(0, 1);
                // The hot path: a relaxed load and store by the only writer.
                a.value
                    .store(a.value.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                record.push(1, 5);
                a.value
                    .store(a.value.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                record.finish();
            });
            let mut seen = Vec::new();
            let mut totals = [0u64; 2];
            let finished =
                record.collect(&mut seen, |stage, delta| totals[stage as usize] += delta);
            if finished {
                // Recycling is safe only if a finished record's counts are
                // complete when the collector sees it finished.
                assert_eq!(totals, [3, 5]);
            }
            // Counts only grow: a concurrent read never sees more than was
            // counted.
            assert!(totals[0] <= 3 && totals[1] <= 5);
            owner.join().unwrap();
            let finished =
                record.collect(&mut seen, |stage, delta| totals[stage as usize] += delta);
            assert!(finished);
            assert_eq!(totals, [3, 5], "every count seen exactly once");
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_is_dense_and_bucketed() {
        assert_eq!(locate(0), (0, 0, 0));
        assert_eq!(locate(7), (0, 0, 7));
        assert_eq!(locate(8), (1, 0, 0));
        assert_eq!(locate(15), (1, 0, 7));
        assert_eq!(locate(16), (1, 1, 0));
        assert_eq!(locate(24), (2, 0, 0));
        // Every index maps to a distinct slot inside its bucket's size.
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let (b, g, s) = locate(i);
            assert!(g < 1 << b, "group {g} outside bucket {b}");
            assert!(seen.insert((b, g, s)));
        }
    }

    #[test]
    fn groups_are_cache_line_aligned() {
        assert_eq!(std::mem::size_of::<Group>() % 64, 0);
        assert!(std::mem::align_of::<Group>() >= 64);
    }
}
