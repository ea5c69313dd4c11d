//! Lost replies, reset connections, refused connections, black holes and a
//! paused Redis, between the flusher and Redis: a batch whose reply never
//! arrived may or may not have been applied, and resending it never adds it
//! twice.

mod support;

use std::time::Duration;

use support::{Fault, FaultProxy, RedisServer, is_child, run_child_ok};
use titus_count::Config;

fn init(url: String) -> titus_count::FlushGuard {
    Config::default()
        .redis_url(url)
        .interval(Duration::from_secs(3600))
        .io_timeout(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(30))
        .init()
        .unwrap()
}

#[test]
fn faults_between_flusher_and_redis_never_double_count() {
    if is_child("faults_between_flusher_and_redis_never_double_count") {
        let redis = RedisServer::start();
        let proxy = FaultProxy::start(redis.port());
        let _guard = init(proxy.url());
        let faults = [
            Fault::DropReplies,
            Fault::ResetReplies,
            Fault::Refuse,
            Fault::Blackhole,
        ];
        // A first delivery opens the flusher's connection, so the first
        // dropped reply is that of a batch, not of the connection handshake.
        titus_count::count!("faults.warmup");
        titus_count::flush().expect("first flush");
        let mut expected = 0u64;
        for round in 0..20u64 {
            let fault = faults[round as usize % faults.len()];
            titus_count::count!("faults.messages", round + 1);
            expected += round + 1;
            proxy.set(fault);
            let result = titus_count::flush_timeout(Duration::from_millis(300));
            assert!(
                result.is_err(),
                "round {round}: {fault:?} let the flush through"
            );
            let in_redis = redis
                .totals("titus")
                .get("faults.messages")
                .copied()
                .unwrap_or(0);
            match fault {
                // The request reached Redis and was applied; only the reply
                // was lost.
                Fault::DropReplies | Fault::ResetReplies => assert_eq!(in_redis, expected),
                // Nothing reached Redis.
                _ => assert_eq!(in_redis, expected - (round + 1)),
            }
            assert_eq!(titus_count::health().unwrap().batches_in_doubt, 1);
            proxy.set(Fault::None);
            titus_count::flush().expect("flush once the faults stop");
            assert_eq!(
                redis.totals("titus")["faults.messages"],
                expected,
                "round {round}"
            );
        }
        return;
    }
    run_child_ok("faults_between_flusher_and_redis_never_double_count", &[]);
}

#[test]
fn a_paused_redis_runs_queued_resends_once() {
    if is_child("a_paused_redis_runs_queued_resends_once") {
        let redis = RedisServer::start();
        let _guard = Config::default()
            .redis_url(redis.url())
            .interval(Duration::from_millis(20))
            .io_timeout(Duration::from_millis(150))
            .shutdown_timeout(Duration::from_secs(30))
            .init()
            .unwrap();
        for round in 1..=3u64 {
            titus_count::count!("paused.messages", 10);
            let _: () = redis::cmd("CLIENT")
                .arg(&["PAUSE", "1500", "ALL"][..])
                .query(&mut redis.connection())
                .unwrap();
            // Every delivery attempt times out while Redis holds it; the
            // flusher resends on new connections, and Redis queues them all.
            assert!(titus_count::flush_timeout(Duration::from_millis(600)).is_err());
            assert!(titus_count::health().unwrap().consecutive_failures >= 1);
            titus_count::flush().expect("flush after the pause");
            assert_eq!(redis.totals("titus")["paused.messages"], 10 * round);
        }
        return;
    }
    run_child_ok("a_paused_redis_runs_queued_resends_once", &[]);
}
