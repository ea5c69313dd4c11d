//! Redis away: down at start-up, stopped and restarted mid-run, frozen with
//! SIGSTOP. Counting goes on, memory stays flat, the flusher backs off and
//! recovers by itself, and the totals come out exact: nothing lost, nothing
//! doubled.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{RedisServer, closed_port, is_child, run_child_ok, wait_until};
use titus_count::Config;

/// Threads that count under `stage` until stopped; each returns how many
/// times it counted.
fn start_counting(stage_threads: usize, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..stage_threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..1000 {
                        titus_count::count!("outage.messages");
                    }
                    n += 1000;
                    std::thread::yield_now();
                }
                n
            })
        })
        .collect()
}

/// Waits until a batch of `outage.messages` has landed in `redis`, and
/// returns how many it holds.
fn wait_for_a_batch(redis: &RedisServer) -> u64 {
    let mut landed = 0;
    wait_until("a first batch lands", Duration::from_secs(30), || {
        landed = messages(redis);
        landed > 0
    });
    landed
}

fn messages(redis: &RedisServer) -> u64 {
    redis
        .totals("titus")
        .get("outage.messages")
        .copied()
        .unwrap_or(0)
}

/// Waits until `health()` shows at least `failures` failures in a row.
fn wait_for_failures(failures: u32) {
    wait_until(
        &format!("{failures} failed attempts in a row"),
        Duration::from_secs(30),
        || titus_count::health().unwrap().consecutive_failures >= failures,
    );
}

/// Waits until the flusher has delivered a batch on its own.
fn wait_for_recovery(deadline: Duration) {
    let start = Instant::now();
    loop {
        let health = titus_count::health().expect("initialised");
        if health.consecutive_failures == 0 && health.batches_in_doubt == 0 {
            return;
        }
        assert!(start.elapsed() < deadline, "no recovery: {health:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the flusher towards `port`, where no Redis listens yet.
fn init_without_redis(port: u16) -> titus_count::FlushGuard {
    Config::default()
        .redis_url(format!("redis://127.0.0.1:{port}"))
        .interval(Duration::from_millis(20))
        .io_timeout(Duration::from_millis(200))
        .init()
        .expect("init does not need Redis")
}

#[test]
fn redis_down_at_start_up() {
    if is_child("redis_down_at_start_up") {
        let port = closed_port();
        let _guard = init_without_redis(port);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..50_000 {
                        titus_count::count!("outage.start");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(titus_count::flush_timeout(Duration::from_millis(300)).is_err());
        let health = titus_count::health().unwrap();
        assert!(health.consecutive_failures >= 1, "{health:?}");
        assert!(!health.last_error_permanent, "{health:?}");
        assert_eq!(health.pending_counts, 200_000);

        let redis = RedisServer::start_on(port, &[]);
        // No flush call: the flusher's own retries deliver.
        wait_for_recovery(Duration::from_secs(40));
        assert_eq!(redis.totals("titus")["outage.start"], 200_000);
        titus_count::flush().expect("flush");
        let health = titus_count::health().unwrap();
        assert_eq!(health.pending_counts, 0);
        assert!(health.last_success.is_some());
        return;
    }
    run_child_ok("redis_down_at_start_up", &[]);
}

/// A caller waiting on a flush (`flush_timeout` here; a guard drop and the
/// exit hook wait the same way) is not held to a long back-off: while it
/// waits, the flusher tries at least once a second, so a Redis that comes
/// back within the caller's timeout gets the counts.
#[test]
fn a_waiting_flush_is_not_held_to_a_long_back_off() {
    if is_child("a_waiting_flush_is_not_held_to_a_long_back_off") {
        let port = closed_port();
        let _guard = init_without_redis(port);
        titus_count::count!("outage.waited", 9);
        // After 7 failures in a row the next try is 3.2 s to 6.4 s away.
        wait_for_failures(7);
        // Redis comes back partway into the wait below (a moment in the
        // scenario, not a wait for an event).
        let starter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            RedisServer::start_on(port, &[])
        });
        let result = titus_count::flush_timeout(Duration::from_secs(5));
        let redis = starter.join().unwrap();
        result.expect("delivered once Redis is back, within the caller's wait");
        assert_eq!(redis.totals("titus")["outage.waited"], 9);
        return;
    }
    run_child_ok("a_waiting_flush_is_not_held_to_a_long_back_off", &[]);
}

#[test]
fn redis_stopped_and_restarted_mid_run() {
    if is_child("redis_stopped_and_restarted_mid_run") {
        let mut redis =
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        let _guard = Config::default()
            .redis_url(redis.url())
            .interval(Duration::from_millis(10))
            .io_timeout(Duration::from_millis(200))
            .shutdown_timeout(Duration::from_secs(30))
            .init()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = start_counting(3, &stop);
        let landed = wait_for_a_batch(&redis);
        redis.stop();
        // Counting goes on during the outage; memory does not grow with it.
        wait_for_failures(1);
        let rss_early = support::rss_kib();
        let pending_early = titus_count::health().unwrap().pending_counts;
        // A stretch of outage to measure, not a wait for an event.
        std::thread::sleep(Duration::from_millis(1500));
        let rss_late = support::rss_kib();
        let health = titus_count::health().unwrap();
        assert!(health.consecutive_failures >= 1, "{health:?}");
        assert!(
            health.pending_counts > pending_early,
            "counting went on during the outage"
        );
        assert!(
            rss_late < rss_early + 2048,
            "memory grew from {rss_early} KiB to {rss_late} KiB during the outage"
        );
        redis.restart();
        wait_for_recovery(Duration::from_secs(40));
        assert!(messages(&redis) > landed, "recovered without delivering");
        stop.store(true, Ordering::Relaxed);
        let counted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        titus_count::flush().expect("flush");
        assert_eq!(redis.totals("titus")["outage.messages"], counted);
        return;
    }
    run_child_ok("redis_stopped_and_restarted_mid_run", &[]);
}

#[test]
fn redis_frozen_with_sigstop() {
    if is_child("redis_frozen_with_sigstop") {
        let redis = RedisServer::start();
        let _guard = Config::default()
            .redis_url(redis.url())
            .interval(Duration::from_millis(10))
            .io_timeout(Duration::from_millis(150))
            .shutdown_timeout(Duration::from_secs(30))
            .init()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = start_counting(2, &stop);
        let landed = wait_for_a_batch(&redis);
        redis.freeze();
        assert!(titus_count::flush_timeout(Duration::from_millis(500)).is_err());
        // A timed-out batch and at least one more attempt on a new
        // connection (whether that resent the batch or timed out sooner,
        // in the handshake, is not checked).
        wait_for_failures(2);
        // Thawed, Redis runs every command queued while frozen, resent
        // batches included: each is applied once.
        redis.thaw();
        wait_for_recovery(Duration::from_secs(40));
        assert!(messages(&redis) > landed, "recovered without delivering");
        stop.store(true, Ordering::Relaxed);
        let counted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        titus_count::flush().expect("flush");
        assert_eq!(redis.totals("titus")["outage.messages"], counted);
        return;
    }
    run_child_ok("redis_frozen_with_sigstop", &[]);
}
