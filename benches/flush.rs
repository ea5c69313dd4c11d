//! What a flush costs: one batch as the number of stages grows (time, and
//! Redis round trips per batch); one whole flush (collect every thread's
//! cells, cut the batch, send it, wait for the reply) as the number of
//! counting threads grows; and the flusher's CPU use at the default interval.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use titus_count::__private::BatchWriter;

fn evalsha_calls(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Sixteen sites, each counted once on the calling thread.
fn touch_sixteen_sites() {
    titus_count::count!("collect.s00");
    titus_count::count!("collect.s01");
    titus_count::count!("collect.s02");
    titus_count::count!("collect.s03");
    titus_count::count!("collect.s04");
    titus_count::count!("collect.s05");
    titus_count::count!("collect.s06");
    titus_count::count!("collect.s07");
    titus_count::count!("collect.s08");
    titus_count::count!("collect.s09");
    titus_count::count!("collect.s10");
    titus_count::count!("collect.s11");
    titus_count::count!("collect.s12");
    titus_count::count!("collect.s13");
    titus_count::count!("collect.s14");
    titus_count::count!("collect.s15");
}

fn flush(c: &mut Criterion) {
    let redis = support::RedisServer::start();
    let mut con = redis.connection();

    // One batch, by number of stages touched.
    let mut g = c.benchmark_group("flush_batch");
    g.sample_size(20);
    for stages in [1usize, 10, 100, 1_000, 10_000] {
        let names: Vec<&'static str> = (0..stages)
            .map(|i| &*Box::leak(format!("stage.{i:05}").into_boxed_str()))
            .collect();
        let deltas: Vec<(&'static str, u64)> = names.iter().map(|n| (*n, 3)).collect();
        let mut writer =
            BatchWriter::new(&redis.url(), "bench", &format!("bench-{stages}")).unwrap();
        let mut seq = 0u64;
        let before = evalsha_calls(&mut con);
        let mut batches = 0u64;
        g.throughput(Throughput::Elements(stages as u64));
        g.bench_with_input(BenchmarkId::from_parameter(stages), &stages, |b, _| {
            b.iter(|| {
                seq += 1;
                batches += 1;
                assert!(writer.apply(seq, &deltas).unwrap());
            })
        });
        let calls = evalsha_calls(&mut con) - before;
        // The first batch of a new connection may need an EVAL as well.
        println!(
            "flush_batch/{stages}: {calls} EVALSHA for {batches} batches ({:.2} round trips per batch)",
            calls as f64 / batches as f64
        );
    }
    g.finish();

    // Collecting every thread's cells, by number of live threads (16 sites each).
    let mut g = c.benchmark_group("collect");
    for threads in [1usize, 4, 16, 64] {
        let ready = Arc::new(Barrier::new(threads + 1));
        let done = Arc::new(Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (ready, done) = (ready.clone(), done.clone());
                std::thread::spawn(move || {
                    touch_sixteen_sites();
                    ready.wait();
                    done.wait();
                })
            })
            .collect();
        ready.wait();
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, _| {
            b.iter(|| black_box(titus_count::local_totals()))
        });
        done.wait();
        for h in handles {
            h.join().unwrap();
        }
    }
    g.finish();

    // The flusher runs at the default interval from here on.
    let _guard = titus_count::Config::default()
        .redis_url(redis.url())
        .init()
        .unwrap();

    // One whole flush, `titus_count::flush()`, by number of counting threads.
    // Before each timed flush every thread counts once at its sixteen sites,
    // so each flush collects every thread's cells and sends sixteen stages.
    let mut g = c.benchmark_group("flush_threads");
    g.sample_size(20);
    for threads in [1usize, 4, 16, 64] {
        let go = Arc::new(Barrier::new(threads + 1));
        let counted = Arc::new(Barrier::new(threads + 1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (go, counted, stop) = (go.clone(), counted.clone(), stop.clone());
                std::thread::spawn(move || {
                    loop {
                        go.wait();
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        touch_sixteen_sites();
                        counted.wait();
                    }
                })
            })
            .collect();
        let before = evalsha_calls(&mut con);
        let batches_before = titus_count::health().unwrap().acknowledged_batches;
        let mut flushes = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, _| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    go.wait();
                    counted.wait();
                    let start = Instant::now();
                    titus_count::flush().unwrap();
                    timed += start.elapsed();
                    flushes += 1;
                }
                timed
            })
        });
        let calls = evalsha_calls(&mut con) - before;
        let batches = titus_count::health().unwrap().acknowledged_batches - batches_before;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        go.wait();
        for h in handles {
            h.join().unwrap();
        }
        // Batches beyond one per flush are the flusher's heartbeats, one per
        // interval.
        println!(
            "flush_threads/{threads}: {calls} EVALSHA for {batches} batches and {flushes} flush() calls ({:.2} round trips per batch)",
            calls as f64 / batches as f64
        );
    }
    g.finish();

    // The flusher's CPU at the default interval while 4 threads count flat out.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counters: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        titus_count::count!("flusher_cpu.messages");
                    }
                    touch_sixteen_sites();
                }
            })
        })
        .collect();
    let cpu_before = flusher_cpu_ns();
    let wall = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let cpu = flusher_cpu_ns() - cpu_before;
    let wall = wall.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in counters {
        c.join().unwrap();
    }
    println!(
        "flusher_cpu: {:.4}% of one core at the default interval ({:.2} ms CPU in {:.1} s)",
        cpu as f64 / wall.as_nanos() as f64 * 100.0,
        cpu as f64 / 1e6,
        wall.as_secs_f64()
    );
}

/// CPU time of the flusher thread so far, in nanoseconds.
fn flusher_cpu_ns() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // Thread names are cut to 15 bytes: `titus-count-flu`.
        if comm.trim().starts_with("titus-count-flu") {
            let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap();
            return schedstat
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    }
    panic!("no flusher thread");
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = flush
}
criterion_main!(benches);
