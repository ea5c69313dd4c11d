//! Cost of counting one call, titus-count against the peers, each with one
//! thread and with as many threads as there are cores (time per call per
//! thread: contention shows as a rise with more threads).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use titus_count::counted;

// Every handler does the same little arithmetic; the call sites black_box
// arguments and results. (A `black_box` inside a handler would force a stack
// frame on every version and hide what counting adds.)

#[inline(never)]
fn uninstrumented(x: u64) -> u64 {
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
#[counted("bench.counted")]
fn titus_counted(x: u64) -> u64 {
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
fn titus_count_macro(x: u64) -> u64 {
    titus_count::count!("bench.count_macro");
    x.wrapping_mul(3) ^ 7
}

static SHARED: AtomicU64 = AtomicU64::new(0);

#[inline(never)]
fn shared_atomic(x: u64) -> u64 {
    SHARED.fetch_add(1, Ordering::Relaxed);
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
fn metrics_macro(x: u64) -> u64 {
    metrics::counter!("bench_metrics_macro").increment(1);
    x.wrapping_mul(3) ^ 7
}

static METRICS_HANDLE: OnceLock<metrics::Counter> = OnceLock::new();

#[inline(never)]
fn metrics_handle(x: u64) -> u64 {
    METRICS_HANDLE
        .get_or_init(|| metrics::counter!("bench_metrics_handle"))
        .increment(1);
    x.wrapping_mul(3) ^ 7
}

fn prometheus_counter() -> &'static prometheus::IntCounter {
    static COUNTER: OnceLock<prometheus::IntCounter> = OnceLock::new();
    COUNTER.get_or_init(|| prometheus::IntCounter::new("bench_prometheus", "calls").unwrap())
}

#[inline(never)]
fn prometheus_inc(x: u64) -> u64 {
    prometheus_counter().inc();
    x.wrapping_mul(3) ^ 7
}

thread_local! {
    static PROMETHEUS_LOCAL: prometheus::local::LocalIntCounter = prometheus_counter().local();
    static UDP: RefCell<Option<UdpSocket>> = const { RefCell::new(None) };
}

#[inline(never)]
fn prometheus_local(x: u64) -> u64 {
    PROMETHEUS_LOCAL.with(|c| {
        c.inc();
        // The local counter must be flushed into the shared one now and then.
        if x.is_multiple_of(1024) {
            c.flush();
        }
    });
    x.wrapping_mul(3) ^ 7
}

static UDP_TARGET: OnceLock<std::net::SocketAddr> = OnceLock::new();

#[inline(never)]
fn udp_datagram(x: u64) -> u64 {
    UDP.with(|s| {
        let mut s = s.borrow_mut();
        let socket = s.get_or_insert_with(|| UdpSocket::bind("127.0.0.1:0").unwrap());
        let _ = socket.send_to(b"bench.udp:1|c", UDP_TARGET.get().unwrap());
    });
    x.wrapping_mul(3) ^ 7
}

#[inline(never)]
fn redis_incr(x: u64) -> u64 {
    common::redis_incr("bench:incr");
    x.wrapping_mul(3) ^ 7
}

/// For each approach and thread count, the uninstrumented call's time over
/// the approach's, from interleaved pairs of runs (see `common::paired`).
fn paired_ratios(group: &str, approaches: &[Approach]) {
    const CALLS: u64 = 1 << 21;
    for threads in [1, common::cores()] {
        for (name, f) in approaches {
            let time = |f: fn(u64) -> u64| {
                common::per_thread(threads, CALLS, |i| {
                    black_box(f(i));
                })
            };
            common::paired(
                &format!("{group}/{name}/{threads}"),
                200,
                || time(uninstrumented),
                || time(*f),
            );
        }
    }
}

/// For each approach, its time per call per thread with one thread over
/// that with every core counting at once, from interleaved pairs of runs:
/// what contention costs.
fn paired_scaling(approaches: &[Approach]) {
    // Runs of about 10 ms, long against the threads' start-up.
    const CALLS: u64 = 1 << 22;
    for (name, f) in approaches {
        let time = |threads: usize| {
            common::per_thread(threads, CALLS, |i| {
                black_box(f(i));
            })
        };
        common::paired(
            &format!("per_call_scaling/{name}"),
            100,
            || time(1),
            || time(common::cores()),
        );
    }
}

/// A named way of making the benchmarked call.
type Approach = (&'static str, fn(u64) -> u64);

fn run(c: &mut Criterion, group: &str, approaches: &[Approach]) {
    let mut g = c.benchmark_group(group);
    for threads in [1, common::cores()] {
        for (name, f) in approaches {
            g.bench_with_input(BenchmarkId::new(*name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    common::per_thread(threads, iters, |i| {
                        black_box(f(i));
                    })
                })
            });
        }
    }
    g.finish();
}

fn per_call(c: &mut Criterion) {
    common::RegistryRecorder::install();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    UDP_TARGET.set(sink.local_addr().unwrap()).unwrap();

    run(
        c,
        "per_call",
        &[
            ("uninstrumented", uninstrumented),
            ("titus_counted", titus_counted),
            ("titus_count_macro", titus_count_macro),
            ("shared_atomic", shared_atomic),
            ("prometheus_local", prometheus_local),
            ("prometheus", prometheus_inc),
            ("metrics_handle", metrics_handle),
            ("metrics_macro", metrics_macro),
            ("udp_datagram", udp_datagram),
        ],
    );

    // The ratios the targets are about, from interleaved pairs of runs.
    paired_ratios(
        "per_call",
        &[
            ("titus_counted", titus_counted),
            ("titus_count_macro", titus_count_macro),
        ],
    );

    // The build with aligned code (scripts/bench.sh) is there for the ratios
    // above; contention it would only measure again.
    let placement_only = std::env::var_os("TITUS_BENCH_PLACEMENT_ONLY").is_some();
    if !placement_only {
        paired_scaling(&[
            ("uninstrumented", uninstrumented),
            ("titus_counted", titus_counted),
            ("shared_atomic", shared_atomic),
            ("prometheus", prometheus_inc),
            ("metrics_handle", metrics_handle),
        ]);
    }

    // The naive approach: one Redis round trip per call.
    let redis = support::RedisServer::start();
    common::REDIS_URL.set(redis.url()).unwrap();
    {
        let mut g = c.benchmark_group("per_call_redis");
        g.sample_size(10).measurement_time(Duration::from_secs(3));
        for threads in [1, common::cores()] {
            g.bench_with_input(
                BenchmarkId::new("redis_incr", threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        common::per_thread(t, iters, |i| {
                            black_box(redis_incr(i));
                        })
                    })
                },
            );
        }
        g.finish();
    }

    // The hot path with a flusher running every millisecond: unchanged, as
    // the flusher only reads the cells (no false sharing).
    let _guard = titus_count::Config::default()
        .redis_url(redis.url())
        .interval(Duration::from_millis(1))
        .init()
        .unwrap();
    run(
        c,
        "per_call_flusher_running",
        &[
            ("uninstrumented", uninstrumented),
            ("titus_counted", titus_counted),
        ],
    );
    paired_ratios(
        "per_call_flusher_running",
        &[("titus_counted", titus_counted)],
    );
    drop(sink);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = per_call
}
criterion_main!(benches);
