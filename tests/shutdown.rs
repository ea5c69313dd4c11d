//! The last counts reach Redis when the process ends: through the guard,
//! through the exit hook after a bare `init()` (returning from `main` or
//! calling `std::process::exit`), and through `flush()`.

mod support;

use support::{RedisServer, is_child, run_child_ok};

/// Environment for a child: its own namespace and an interval so long that
/// only the shutdown path under test can deliver the counts.
fn env<'a>(redis: &'a str, namespace: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("TITUS_COUNT_REDIS_URL", redis),
        ("TITUS_COUNT_NAMESPACE", namespace),
        ("TITUS_COUNT_INTERVAL", "1h"),
    ]
}

fn read(stage: &str) -> Option<u64> {
    titus_count::read_totals(&titus_count::Config::from_env())
        .expect("read totals")
        .get(stage)
        .copied()
}

#[test]
fn dropping_the_guard_delivers_everything() {
    if is_child("dropping_the_guard_delivers_everything") {
        let guard = titus_count::init();
        titus_count::count!("guarded", 7);
        assert_eq!(read("guarded"), None, "nothing is sent before the interval");
        drop(guard);
        assert_eq!(
            read("guarded"),
            Some(7),
            "the guard's drop waited for Redis"
        );
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "dropping_the_guard_delivers_everything",
        &env(&redis.url(), "guard"),
    );
    assert_eq!(redis.totals("guard")["guarded"], 7);
}

#[test]
fn bare_init_delivers_when_main_returns() {
    if is_child("bare_init_delivers_when_main_returns") {
        #[allow(unused_must_use)]
        {
            titus_count::init();
        }
        titus_count::count!("bare.return", 11);
        // Returning ends the test harness's `main`; the exit hook delivers.
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "bare_init_delivers_when_main_returns",
        &env(&redis.url(), "bare_return"),
    );
    assert_eq!(redis.totals("bare_return")["bare.return"], 11);
}

#[test]
fn bare_init_delivers_on_process_exit() {
    if is_child("bare_init_delivers_on_process_exit") {
        #[allow(unused_must_use)]
        {
            titus_count::init();
        }
        std::thread::spawn(|| titus_count::count!("bare.exit", 13))
            .join()
            .unwrap();
        titus_count::count!("bare.exit", 1);
        std::process::exit(0);
    }
    let redis = RedisServer::start();
    run_child_ok(
        "bare_init_delivers_on_process_exit",
        &env(&redis.url(), "bare_exit"),
    );
    assert_eq!(redis.totals("bare_exit")["bare.exit"], 14);
}

#[test]
fn flush_returns_once_redis_has_everything() {
    if is_child("flush_returns_once_redis_has_everything") {
        let _guard = titus_count::init();
        for round in 1..=20u64 {
            let threads: Vec<_> = (0..4)
                .map(|_| std::thread::spawn(|| titus_count::count!("flushed", 5)))
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            titus_count::count!("flushed.main");
            titus_count::flush().expect("flush");
            assert_eq!(read("flushed"), Some(20 * round));
            assert_eq!(read("flushed.main"), Some(round));
        }
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "flush_returns_once_redis_has_everything",
        &env(&redis.url(), "flush"),
    );
}

#[test]
fn flush_before_init_is_an_error() {
    assert_eq!(
        titus_count::flush(),
        Err(titus_count::FlushError::NotInitialized)
    );
}

#[test]
fn an_unreachable_redis_does_not_hang_shutdown() {
    if is_child("an_unreachable_redis_does_not_hang_shutdown") {
        support::log_to_stderr();
        let _guard = titus_count::Config::from_env()
            .shutdown_timeout(std::time::Duration::from_millis(500))
            .io_timeout(std::time::Duration::from_millis(300))
            .init()
            .unwrap();
        titus_count::count!("shutdown.blackhole", 4);
        return;
    }
    let redis = RedisServer::start();
    let proxy = support::FaultProxy::start(redis.port());
    // Connections are accepted, nothing is ever answered.
    proxy.set(support::Fault::Blackhole);
    let url = proxy.url();
    let started = std::time::Instant::now();
    let output = run_child_ok(
        "an_unreachable_redis_does_not_hang_shutdown",
        &env(&url, "blackhole"),
    );
    let elapsed = started.elapsed();
    // Guard drop and exit hook each wait at most the shutdown timeout, plus
    // one command's I/O timeout; the rest is process start-up.
    assert!(
        elapsed < std::time::Duration::from_secs(6),
        "shutdown took {elapsed:?}"
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("[ERROR]"), "{log}");
    assert!(log.contains("stage `shutdown.blackhole`: 4"), "{log}");
    assert_eq!(redis.totals("blackhole").get("shutdown.blackhole"), None);
}

#[test]
fn a_batch_in_doubt_at_exit_names_the_key_that_settles_it() {
    if is_child("a_batch_in_doubt_at_exit_names_the_key_that_settles_it") {
        support::log_to_stderr();
        // The proxy lives here, so the reply is dropped exactly when the
        // last batch goes out.
        let port: u16 = std::env::var("REDIS_PORT").unwrap().parse().unwrap();
        let proxy = support::FaultProxy::start(port);
        let guard = titus_count::Config::from_env()
            .redis_url(proxy.url())
            .shutdown_timeout(std::time::Duration::from_millis(500))
            .io_timeout(std::time::Duration::from_millis(300))
            .init()
            .unwrap();
        titus_count::count!("shutdown.warm");
        titus_count::flush().expect("delivered while the proxy forwards");
        // From now on Redis applies every command; no reply comes back,
        // and every new connection fails in its handshake.
        proxy.set(support::Fault::DropReplies);
        titus_count::count!("shutdown.doubt", 6);
        drop(guard);
        return;
    }
    let redis = RedisServer::start();
    let port = redis.port().to_string();
    let output = run_child_ok(
        "a_batch_in_doubt_at_exit_names_the_key_that_settles_it",
        &[
            ("REDIS_PORT", &port),
            ("TITUS_COUNT_NAMESPACE", "doubt"),
            ("TITUS_COUNT_INTERVAL", "1h"),
            ("TITUS_COUNT_SHARDS", "4"),
        ],
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("in doubt: stage `shutdown.doubt`: 6"), "{log}");
    // What an operator does with the log: read the key it names and
    // compare it with the batch's number.
    let line = log
        .lines()
        .find(|l| l.contains("is in doubt: it was applied if"))
        .unwrap_or_else(|| panic!("no batch in doubt: {log}"));
    let key = line.split('`').nth(1).unwrap();
    let at_least: u64 = line
        .split("is at least ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(key.starts_with("titus:{doubt:"), "{key}");
    let applied: Option<u64> = redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap();
    assert!(
        applied.is_some_and(|seq| seq >= at_least),
        "{key}: {applied:?}"
    );
    // Applied exactly once, however often it was resent.
    let totals: u64 = (0..4)
        .filter_map(|shard| {
            redis::cmd("HGET")
                .arg(format!("titus:{{doubt:{shard}}}:totals"))
                .arg("shutdown.doubt")
                .query::<Option<u64>>(&mut redis.connection())
                .unwrap()
        })
        .sum();
    assert_eq!(totals, 6);
}

/// At exit, a final batch says the process exited. With every count already
/// delivered and Redis gone, that record is not worth the shutdown timeout:
/// the exit waits one I/O timeout and says so in a warning, with no count
/// reported as undelivered.
#[test]
fn a_lost_exit_record_is_only_a_warning() {
    if is_child("a_lost_exit_record_is_only_a_warning") {
        support::log_to_stderr();
        let mut redis = RedisServer::start();
        let _guard = titus_count::Config::default()
            .redis_url(redis.url())
            .interval(std::time::Duration::from_secs(3600))
            .shutdown_timeout(std::time::Duration::from_secs(3600))
            .io_timeout(std::time::Duration::from_millis(300))
            .init()
            .unwrap();
        titus_count::count!("shutdown.delivered", 3);
        titus_count::flush().expect("flush");
        assert_eq!(redis.totals("titus")["shutdown.delivered"], 3);
        redis.stop();
        return;
    }
    let output = run_child_ok("a_lost_exit_record_is_only_a_warning", &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("at exit every count was delivered, but not the record saying instance"),
        "{log}"
    );
    assert!(!log.contains("[ERROR]"), "{log}");
}
