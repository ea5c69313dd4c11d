//! Counts from many threads and many calls reach Redis exactly, including the
//! counts of threads that have exited.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::{RedisServer, is_child, run_child_ok};
use titus_count::counted;

#[counted("ingest")]
fn ingest(x: u64) -> u64 {
    x + 1
}

struct Stage {
    seen: u64,
}

impl Stage {
    #[counted("stage.by_ref")]
    fn by_ref(&self) -> u64 {
        self.seen
    }

    #[counted("stage.by_mut")]
    fn by_mut(&mut self) {
        self.seen += 1;
    }

    #[counted("stage.by_value")]
    fn by_value(self) -> u64 {
        self.seen
    }
}

/// Like `ingest`: two functions with the same stage add up.
#[counted("ingest")]
fn ingest_again() {}

const THREADS: u64 = 8;
const CALLS: u64 = 25_000;

#[test]
fn many_threads_many_calls_are_exact() {
    if is_child("many_threads_many_calls_are_exact") {
        let _guard = titus_count::Config::from_env()
            .interval(Duration::from_millis(20))
            .init()
            .expect("init");
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut stage = Stage { seen: 0 };
                    for i in 0..CALLS {
                        std::hint::black_box(ingest(i));
                        stage.by_mut();
                        std::hint::black_box(stage.by_ref());
                        if i % 5 == 0 {
                            ingest_again();
                        }
                        titus_count::count!("batched", 3);
                    }
                    std::hint::black_box(stage.by_value() + t);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        titus_count::flush().expect("flush");
        let local = titus_count::local_totals();
        let global = titus_count::read_totals(&titus_count::Config::from_env()).expect("read");
        let local: BTreeMap<String, u64> =
            local.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(local, global);
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "many_threads_many_calls_are_exact",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "exact"),
        ],
    );
    let expected: BTreeMap<String, u64> = [
        ("ingest", THREADS * CALLS + THREADS * CALLS / 5),
        ("stage.by_ref", THREADS * CALLS),
        ("stage.by_mut", THREADS * CALLS),
        ("stage.by_value", THREADS),
        ("batched", 3 * THREADS * CALLS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(redis.totals("exact"), expected);
}

#[test]
fn counts_of_exited_threads_are_flushed() {
    if is_child("counts_of_exited_threads_are_flushed") {
        // A long interval: only the explicit flush below can deliver.
        let _guard = titus_count::Config::from_env()
            .interval(Duration::from_secs(3600))
            .init()
            .expect("init");
        for round in 0..50u64 {
            let threads: Vec<_> = (0..20)
                .map(|_| std::thread::spawn(move || titus_count::count!("short.lived", round + 1)))
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        titus_count::flush().expect("flush");
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "counts_of_exited_threads_are_flushed",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "exited"),
        ],
    );
    let expected: u64 = (1..=50).map(|r| 20 * r).sum();
    assert_eq!(redis.totals("exited")["short.lived"], expected);
}

#[test]
fn the_flusher_delivers_on_its_own() {
    if is_child("the_flusher_delivers_on_its_own") {
        let _guard = titus_count::Config::from_env()
            .interval(Duration::from_millis(50))
            .init()
            .expect("init");
        titus_count::count!("ticked", 42);
        // No flush call: wait until the flusher's own tick has delivered.
        let config = titus_count::Config::from_env();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let totals = titus_count::read_totals(&config).expect("read");
            if totals.get("ticked") == Some(&42) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher never delivered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::mem::forget(_guard);
        std::process::exit(0);
    }
    let redis = RedisServer::start();
    run_child_ok(
        "the_flusher_delivers_on_its_own",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "ticked"),
        ],
    );
    assert_eq!(redis.totals("ticked")["ticked"], 42);
}
