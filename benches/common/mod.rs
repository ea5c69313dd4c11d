//! Shared by the benchmarks: running a closure on several threads at once,
//! and a `metrics` recorder built the way exporters build theirs.

#![allow(dead_code)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Number of threads for the contended runs: as many as the machine has cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs `f(i)` for `i in 0..iters` on each of `threads` threads started
/// together, and returns the mean time one thread took: criterion then
/// reports time per call per thread. The threads spin until all have
/// arrived, so they start within nanoseconds of each other rather than as
/// the scheduler wakes them, and really run at the same time (`threads`
/// should not exceed the cores).
pub fn per_thread(threads: usize, iters: u64, f: impl Fn(u64) + Sync) -> Duration {
    let waiting = AtomicUsize::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    waiting.fetch_sub(1, Ordering::AcqRel);
                    while waiting.load(Ordering::Acquire) != 0 {
                        std::hint::spin_loop();
                    }
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

/// A distribution-free 95% confidence interval for the median of `sorted`:
/// the order statistics `x(l)` and `x(n + 1 - l)`, with `l` the largest rank
/// for which a Binomial(n, 1/2) falls below `l` with probability at most
/// 2.5%.
fn median_interval(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    assert!(
        (6..=1000).contains(&n),
        "a 95% interval for the median needs 6 to 1000 samples, not {n}"
    );
    // P(B = k) for k = 0, 1, ...; `below` is P(B < l).
    let (mut l, mut below, mut pmf) = (0, 0.0, 0.5f64.powi(n as i32));
    while below + pmf <= 0.025 {
        below += pmf;
        pmf *= (n - l) as f64 / (l + 1) as f64;
        l += 1;
    }
    (sorted[l - 1], sorted[n - l])
}

/// The ratio of two ways of doing the same work, measured in interleaved
/// pairs: `pairs` times, run `base` and `other` back to back (in alternating
/// order, so neither always runs first) and take `time(base) / time(other)`,
/// so a ratio above 1 means `other` is faster. On a shared machine the
/// speed drifts over seconds; both halves of a pair see the same drift, so
/// the median of the pairs' ratios is far steadier than the ratio of two
/// medians measured one after the other.
///
/// Prints `paired: NAME: median R (95% CI LO-HI, quartiles Q1-Q3, N pairs)`,
/// the line `scripts/bench_report.py` reads.
pub fn paired(
    name: &str,
    pairs: usize,
    mut base: impl FnMut() -> Duration,
    mut other: impl FnMut() -> Duration,
) -> f64 {
    // Warm both up: first-call paths, caches, channels' buffers.
    for _ in 0..3 {
        base();
        other();
    }
    let mut ratios: Vec<f64> = (0..pairs)
        .map(|i| {
            let (b, o) = if i % 2 == 0 {
                let b = base();
                (b, other())
            } else {
                let o = other();
                (base(), o)
            };
            b.as_secs_f64() / o.as_secs_f64()
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (low, high) = median_interval(&ratios);
    let n = ratios.len();
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    let quartile = |p: f64| ratios[((n - 1) as f64 * p).round() as usize];
    println!(
        "paired: {name}: median {median:.3} (95% CI {low:.3}-{high:.3}, quartiles {:.3}-{:.3}, {pairs} pairs)",
        quartile(0.25),
        quartile(0.75)
    );
    median
}
