//! Shared by the benchmarks: running a closure on several threads at once,
//! and a `metrics` recorder built the way exporters build theirs.

#![allow(dead_code)]

use std::cell::RefCell;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Number of threads for the contended runs: as many as the machine has cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `f(i)` for `i in 0..iters` on each of `threads` threads started
/// together, and returns the mean time one thread took: criterion then
/// reports time per call per thread.
pub fn per_thread(threads: usize, iters: u64, f: impl Fn(u64) + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        f(i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        let total: Duration = handles.into_iter().map(|h| h.join().unwrap()).sum();
        total / threads as u32
    })
}

/// A `metrics` recorder on `metrics-util`'s atomic registry: what the
/// Prometheus and other exporters use to hold their counters.
pub struct RegistryRecorder {
    registry: Registry<Key, AtomicStorage>,
}

impl RegistryRecorder {
    pub fn install() {
        let recorder = RegistryRecorder {
            registry: Registry::atomic(),
        };
        let _ = metrics::set_global_recorder(recorder);
    }
}

impl Recorder for RegistryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The Redis server the naive approach talks to; set once per benchmark.
pub static REDIS_URL: OnceLock<String> = OnceLock::new();

thread_local! {
    static REDIS: RefCell<Option<redis::Connection>> = const { RefCell::new(None) };
}

/// The naive approach: one `INCR` round trip per count, on this thread's
/// own connection to [`REDIS_URL`].
pub fn redis_incr(key: &str) {
    REDIS.with(|c| {
        let mut c = c.borrow_mut();
        let con = c.get_or_insert_with(|| {
            redis::Client::open(REDIS_URL.get().expect("REDIS_URL is set").as_str())
                .unwrap()
                .get_connection()
                .unwrap()
        });
        let _: i64 = redis::cmd("INCR").arg(key).query(con).unwrap();
    });
}
