//! Tens of thousands of short-lived threads, each counting then exiting,
//! while the flusher runs: the totals are exact and memory returns to a
//! baseline (thread records are reused, not accumulated).

mod support;

use std::time::Duration;

use support::{RedisServer, is_child, run_child_ok};

const WAVES: u64 = 400;
const PER_WAVE: u64 = 50;

fn wave(round: u64) {
    let threads: Vec<_> = (0..PER_WAVE)
        .map(|i| {
            std::thread::spawn(move || {
                titus_count::count!("churn.messages");
                titus_count::count!("churn.weighted", (round + i) % 7);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn thread_churn_is_exact_and_bounded() {
    if is_child("thread_churn_is_exact_and_bounded") {
        let redis = RedisServer::start();
        let _guard = titus_count::Config::default()
            .redis_url(redis.url())
            .interval(Duration::from_millis(5))
            .init()
            .unwrap();
        wave(0);
        let records_after_first_wave = titus_count::__private::thread_records();
        let rss_baseline = support::rss_kib();
        let mut weighted: u64 = (0..PER_WAVE).map(|i| i % 7).sum();
        for round in 1..WAVES {
            wave(round);
            weighted += (0..PER_WAVE).map(|i| (round + i) % 7).sum::<u64>();
        }
        titus_count::flush().expect("flush");
        let totals = redis.totals("titus");
        assert_eq!(totals["churn.messages"], WAVES * PER_WAVE);
        assert_eq!(totals["churn.weighted"], weighted);
        let records = titus_count::__private::thread_records();
        assert!(
            records <= records_after_first_wave + 2 * PER_WAVE as usize,
            "{records} records after {} threads",
            WAVES * PER_WAVE
        );
        let rss = support::rss_kib();
        assert!(
            rss < rss_baseline + 4096,
            "memory grew from {rss_baseline} KiB to {rss} KiB"
        );
        return;
    }
    run_child_ok("thread_churn_is_exact_and_bounded", &[]);
}
