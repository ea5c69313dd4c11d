//! Errors that need an operator (a totals key of the wrong type, a script
//! refused by ACL, an overflowing count): a clear error is logged and shown
//! by `health()`, the counts stay buffered, the flusher keeps retrying,
//! never faster than the interval, and nothing is half applied.

mod support;

use std::time::{Duration, Instant};

use redis::Commands;
use support::{RedisServer, is_child, run_child_ok, wait_until};
use titus_count::Config;

const INTERVAL: Duration = Duration::from_millis(50);

/// Writes a string where titus-count keeps a hash, as another program might.
fn spoil(con: &mut redis::Connection, key: &str) {
    let _: () = con.set(key, "written by another program").unwrap();
}

fn init(url: String) -> titus_count::FlushGuard {
    support::log_to_stderr();
    Config::default()
        .redis_url(url)
        .interval(INTERVAL)
        .io_timeout(Duration::from_millis(500))
        .init()
        .unwrap()
}

/// Lets the flusher retry for a while and checks it did not spin: one try
/// per interval at most, give or take the first; then that it keeps
/// trying.
fn assert_retries_without_spinning(needle: &str) {
    let start = Instant::now();
    let before = titus_count::health().unwrap().consecutive_failures;
    // A stretch of time to count attempts in, not a wait for an event.
    std::thread::sleep(INTERVAL * 10);
    let health = titus_count::health().unwrap();
    let intervals = (start.elapsed().as_millis() / INTERVAL.as_millis()) as u32;
    assert!(health.last_error_permanent, "{health:?}");
    assert!(
        health.last_error.as_deref().unwrap_or("").contains(needle),
        "{health:?}"
    );
    let attempts = health.consecutive_failures - before;
    assert!(
        attempts <= intervals + 2,
        "{attempts} attempts in {intervals} intervals"
    );
    assert_eq!(health.batches_in_doubt, 1);
    // A flusher that stopped retrying fails here. Retries back off, up to
    // 30 s apart.
    let seen = health.consecutive_failures;
    wait_until("the flusher tries again", Duration::from_secs(90), || {
        titus_count::health().unwrap().consecutive_failures > seen
    });
    assert!(titus_count::health().unwrap().last_error_permanent);
}

#[test]
fn a_totals_key_of_the_wrong_type() {
    if is_child("a_totals_key_of_the_wrong_type") {
        let redis = RedisServer::start();
        let mut con = redis.connection();
        spoil(&mut con, "titus:{titus}:totals");
        let _guard = init(redis.url());
        titus_count::count!("wrongtype.messages", 7);
        assert!(titus_count::flush_timeout(Duration::from_millis(300)).is_err());
        assert_retries_without_spinning("WRONGTYPE");
        assert_eq!(titus_count::health().unwrap().pending_counts, 7);
        let _: () = con.del("titus:{titus}:totals").unwrap();
        titus_count::flush().expect("flush once the key is fixed");
        assert_eq!(redis.totals("titus")["wrongtype.messages"], 7);
        return;
    }
    let output = run_child_ok("a_totals_key_of_the_wrong_type", &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("[ERROR] titus-count: Redis refused batch 1"),
        "{log}"
    );
    assert!(log.contains("WRONGTYPE"), "{log}");
}

/// The instances hash is written on every path of the batch script, the
/// one for a batch applied before included: of the wrong type, it refuses
/// the batch before any count is written, rather than after.
#[test]
fn an_instances_key_of_the_wrong_type() {
    if is_child("an_instances_key_of_the_wrong_type") {
        let redis = RedisServer::start();
        let mut con = redis.connection();
        spoil(&mut con, "titus:{titus}:instances");
        let _guard = init(redis.url());
        titus_count::count!("wrongtype.instances", 5);
        assert!(titus_count::flush_timeout(Duration::from_millis(300)).is_err());
        assert_retries_without_spinning("WRONGTYPE");
        // Nothing half applied: no count, no sequence mark.
        let totals: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg("titus:{titus}:totals")
            .query(&mut con)
            .unwrap();
        assert!(totals.is_empty(), "{totals:?}");
        let marks: Vec<String> = redis::cmd("KEYS")
            .arg("titus:{titus}:seq:*")
            .query(&mut con)
            .unwrap();
        assert!(marks.is_empty(), "{marks:?}");
        let _: () = con.del("titus:{titus}:instances").unwrap();
        titus_count::flush().expect("flush once the key is fixed");
        assert_eq!(redis.totals("titus")["wrongtype.instances"], 5);
        return;
    }
    let output = run_child_ok("an_instances_key_of_the_wrong_type", &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("titus:{titus}:instances"), "{log}");
}

/// After many refusals the back-off between tries is seconds long; once the
/// operator has fixed the cause, a caller waiting on a flush does not wait
/// that out: its wait brings the next try forward to the interval.
#[test]
fn a_fix_is_picked_up_by_a_waiting_flush_despite_a_long_back_off() {
    let test = "a_fix_is_picked_up_by_a_waiting_flush_despite_a_long_back_off";
    if is_child(test) {
        let redis = RedisServer::start();
        let mut con = redis.connection();
        spoil(&mut con, "titus:{titus}:totals");
        let _guard = init(redis.url());
        titus_count::count!("wrongtype.fixed", 4);
        // After 7 refusals in a row the next try is 3.2 s to 6.4 s away.
        wait_until("7 refusals in a row", Duration::from_secs(60), || {
            titus_count::health().unwrap().consecutive_failures >= 7
        });
        let _: () = con.del("titus:{titus}:totals").unwrap();
        titus_count::flush_timeout(Duration::from_secs(2))
            .expect("the waiting flush tries again within an interval");
        assert_eq!(redis.totals("titus")["wrongtype.fixed"], 4);
        return;
    }
    run_child_ok(test, &[]);
}

#[test]
fn a_script_refused_by_acl() {
    if is_child("a_script_refused_by_acl") {
        let redis = RedisServer::start();
        let mut con = redis.connection();
        let acl = |rule: &str| {
            let _: () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg("writer")
                .arg(rule.split(' ').collect::<Vec<_>>())
                .query(&mut redis.connection())
                .unwrap();
        };
        acl("on >s3cret-pw ~titus:* +@all -evalsha -eval");
        let _guard = init(format!(
            "redis://writer:s3cret-pw@127.0.0.1:{}",
            redis.port()
        ));
        titus_count::count!("acl.messages", 3);
        assert!(titus_count::flush_timeout(Duration::from_millis(300)).is_err());
        assert_retries_without_spinning("NoPerm");
        let health = format!("{:?}", titus_count::health().unwrap());
        assert!(!health.contains("s3cret-pw"), "{health}");
        acl("+evalsha +eval");
        titus_count::flush().expect("flush once the ACL allows the script");
        let _: () = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(redis.totals("titus")["acl.messages"], 3);
        return;
    }
    let output = run_child_ok("a_script_refused_by_acl", &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("[ERROR]") && log.contains("NoPerm"), "{log}");
    assert!(!log.contains("s3cret-pw"), "{log}");
}

#[test]
fn an_overflowing_count_applies_nothing() {
    if is_child("an_overflowing_count_applies_nothing") {
        let redis = RedisServer::start();
        let mut con = redis.connection();
        let _: () = redis::cmd("HSET")
            .arg("titus:{titus}:totals")
            .arg("overflow.big")
            .arg(i64::MAX - 50)
            .query(&mut con)
            .unwrap();
        let _guard = init(redis.url());
        titus_count::count!("overflow.small", 5);
        titus_count::count!("overflow.big", 100);
        assert!(titus_count::flush_timeout(Duration::from_millis(300)).is_err());
        assert_retries_without_spinning("overflow");
        // The batch is all or nothing: the stage that fits was not applied.
        let totals = redis.totals("titus");
        assert_eq!(totals.get("overflow.small"), None);
        assert_eq!(totals["overflow.big"], (i64::MAX - 50) as u64);
        let _: () = redis::cmd("HSET")
            .arg("titus:{titus}:totals")
            .arg("overflow.big")
            .arg(0)
            .query(&mut con)
            .unwrap();
        titus_count::flush().expect("flush once the count fits");
        let totals = redis.totals("titus");
        assert_eq!((totals["overflow.small"], totals["overflow.big"]), (5, 100));
        return;
    }
    run_child_ok("an_overflowing_count_applies_nothing", &[]);
}
