//! A Titus-like pipeline (messages in, passed between stages on threads
//! through channels, messages out), in messages per second: not counted;
//! counted with titus-count; with the `metrics` crate; and with a Redis
//! `INCR` per message and stage, the approach that cut Titus's throughput.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::bounded;

#[derive(Clone, Copy)]
enum Stage {
    Ingest,
    Parse,
    Enrich,
    Emit,
}

/// How a pipeline counts a message passing a stage.
trait Counting: Sync {
    fn hit(&self, stage: Stage);
}

struct NotCounted;
impl Counting for NotCounted {
    #[inline(always)]
    fn hit(&self, _: Stage) {}
}

struct TitusCount;
impl Counting for TitusCount {
    #[inline(always)]
    fn hit(&self, stage: Stage) {
        match stage {
            Stage::Ingest => titus_count::count!("pipeline.ingest"),
            Stage::Parse => titus_count::count!("pipeline.parse"),
            Stage::Enrich => titus_count::count!("pipeline.enrich"),
            Stage::Emit => titus_count::count!("pipeline.emit"),
        }
    }
}

struct Metrics;
impl Counting for Metrics {
    #[inline(always)]
    fn hit(&self, stage: Stage) {
        match stage {
            Stage::Ingest => metrics::counter!("pipeline_ingest").increment(1),
            Stage::Parse => metrics::counter!("pipeline_parse").increment(1),
            Stage::Enrich => metrics::counter!("pipeline_enrich").increment(1),
            Stage::Emit => metrics::counter!("pipeline_emit").increment(1),
        }
    }
}

struct RedisIncr;
impl Counting for RedisIncr {
    fn hit(&self, stage: Stage) {
        let key = match stage {
            Stage::Ingest => "pipeline:ingest",
            Stage::Parse => "pipeline:parse",
            Stage::Enrich => "pipeline:enrich",
            Stage::Emit => "pipeline:emit",
        };
        common::redis_incr(key);
    }
}

/// Some work per stage, so the pipeline is not only channel overhead.
#[inline(never)]
fn work(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..16 {
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    }
    h
}

/// Runs `messages` messages through ingest -> parse+enrich (2 workers) ->
/// emit, and returns how long it took.
fn run_pipeline<C: Counting>(counting: &C, messages: u64) -> Duration {
    let start = Instant::now();
    let (to_workers, from_ingest) = bounded::<u64>(1024);
    let (to_sink, from_workers) = bounded::<u64>(1024);
    std::thread::scope(|s| {
        s.spawn(move || {
            for m in 0..messages {
                counting.hit(Stage::Ingest);
                to_workers.send(work(m)).unwrap();
            }
        });
        for _ in 0..2 {
            let input = from_ingest.clone();
            let out = to_sink.clone();
            s.spawn(move || {
                for m in input {
                    counting.hit(Stage::Parse);
                    let m = work(m);
                    counting.hit(Stage::Enrich);
                    out.send(work(m)).unwrap();
                }
            });
        }
        drop(to_sink);
        s.spawn(move || {
            let mut acc = 0u64;
            for m in from_workers {
                counting.hit(Stage::Emit);
                acc ^= work(m);
            }
            black_box(acc);
        });
    });
    start.elapsed()
}

fn pipeline(c: &mut Criterion) {
    common::RegistryRecorder::install();
    let redis = support::RedisServer::start();
    common::REDIS_URL.set(redis.url()).unwrap();
    let _guard = titus_count::Config::default()
        .redis_url(redis.url())
        .interval(Duration::from_millis(100))
        .init()
        .unwrap();

    const MESSAGES: u64 = 100_000;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(MESSAGES));
    g.sample_size(20);
    let batch = |b: &mut criterion::Bencher<'_>, run: &dyn Fn() -> Duration| {
        b.iter_custom(|iters| (0..iters).map(|_| run()).sum());
    };
    g.bench_function(BenchmarkId::new("not_counted", MESSAGES), |b| {
        batch(b, &|| run_pipeline(&NotCounted, MESSAGES))
    });
    g.bench_function(BenchmarkId::new("titus_count", MESSAGES), |b| {
        batch(b, &|| run_pipeline(&TitusCount, MESSAGES))
    });
    g.bench_function(BenchmarkId::new("metrics", MESSAGES), |b| {
        batch(b, &|| run_pipeline(&Metrics, MESSAGES))
    });
    g.finish();

    // The headline ratio, from interleaved pairs of runs (see
    // `common::paired`): throughput counted over throughput not counted.
    common::paired(
        "pipeline/titus_count",
        200,
        || run_pipeline(&NotCounted, MESSAGES),
        || run_pipeline(&TitusCount, MESSAGES),
    );
    common::paired(
        "pipeline/metrics",
        200,
        || run_pipeline(&NotCounted, MESSAGES),
        || run_pipeline(&Metrics, MESSAGES),
    );

    // A Redis round trip per message and stage is so slow that a smaller
    // run says all there is to say; throughput is per message all the same.
    const FEW: u64 = 2_000;
    let mut g = c.benchmark_group("pipeline_redis");
    g.throughput(Throughput::Elements(FEW));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("redis_incr", FEW), |b| {
        batch(b, &|| run_pipeline(&RedisIncr, FEW))
    });
    g.finish();
    common::paired(
        "pipeline/redis_incr",
        20,
        || run_pipeline(&NotCounted, FEW),
        || run_pipeline(&RedisIncr, FEW),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = pipeline
}
criterion_main!(benches);
