//! The minimal ACL users documented in the README are enough: a writer that
//! may run only the batch script's commands on the namespace's keys, and a
//! read-only user for the `titus-count` command. The default user is
//! switched off, so neither relies on it.

mod support;

use support::{RedisServer, is_child, run_child_ok};

/// The README's writer rule, for the namespace `acl`.
const WRITER_RULE: &str = "on >writer-s3cret resetkeys ~titus:{acl}:* resetchannels -@all +evalsha +eval +hset +get +type +hget +hincrby +set +expire +time";
/// The README's reader rule, for the namespace `acl`.
const READER_RULE: &str = "on >reader-s3cret resetkeys %R~titus:{acl}:* resetchannels -@all +hgetall +hmget +multi +exec +time";

/// The reader's rule with write access to the keys and the prune script's
/// commands, as the README gives it for `titus-count prune`.
const PRUNER_RULE: &str = "on >pruner-s3cret resetkeys ~titus:{acl}:* resetchannels -@all +hgetall +hmget +multi +exec +time +eval +hget +hdel";

fn acl_setuser(con: &mut redis::Connection, user: &str, rule: &str) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rule.split(' ').collect::<Vec<_>>())
        .query(con)
        .unwrap();
}

#[test]
fn minimal_acl_users_are_enough() {
    if is_child("minimal_acl_users_are_enough") {
        let _guard = titus_count::init();
        titus_count::count!("acl.in", 40);
        titus_count::count!("acl.out", 38);
        titus_count::flush().expect("the writer rule allows a batch");
        return;
    }
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    acl_setuser(&mut admin, "admin", "on >admin-pw ~* &* +@all");
    acl_setuser(&mut admin, "titus-writer", WRITER_RULE);
    acl_setuser(&mut admin, "titus-reader", READER_RULE);
    acl_setuser(&mut admin, "default", "off");
    let url = |user: &str, password: &str| {
        format!("redis://{user}:{password}@127.0.0.1:{}", redis.port())
    };
    let mut admin = redis::Client::open(url("admin", "admin-pw"))
        .unwrap()
        .get_connection()
        .unwrap();

    let output = run_child_ok(
        "minimal_acl_users_are_enough",
        &[
            (
                "TITUS_COUNT_REDIS_URL",
                &url("titus-writer", "writer-s3cret"),
            ),
            ("TITUS_COUNT_NAMESPACE", "acl"),
        ],
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("writer-s3cret"), "{log}");
    let totals: std::collections::BTreeMap<String, u64> = redis::cmd("HGETALL")
        .arg("titus:{acl}:totals")
        .query(&mut admin)
        .unwrap();
    assert_eq!((totals["acl.in"], totals["acl.out"]), (40, 38));

    // The writer may touch only its namespace.
    let mut writer = redis::Client::open(url("titus-writer", "writer-s3cret"))
        .unwrap()
        .get_connection()
        .unwrap();
    let denied: redis::RedisResult<()> =
        redis::cmd("SET").arg("other:key").arg(1).query(&mut writer);
    assert!(denied.is_err());

    // The reader reads everything the command needs, and may write nothing.
    let reader_url = url("titus-reader", "reader-s3cret");
    for args in [
        vec!["totals"],
        vec!["instances"],
        vec!["history", "acl.in", "--period", "5m"],
        vec!["flow", "acl.in", "acl.out"],
    ] {
        support::titus_count_ok(&reader_url, "acl", &args, &[]);
    }
    let mut reader = redis::Client::open(reader_url)
        .unwrap()
        .get_connection()
        .unwrap();
    let denied: redis::RedisResult<()> = redis::cmd("HSET")
        .arg("titus:{acl}:totals")
        .arg("acl.in")
        .arg(0)
        .query(&mut reader);
    assert!(denied.is_err());

    // Pruning deletes instance records: the reader may not, the README's
    // pruning user may. The writer's process went silent a day ago.
    let (id, json): (String, String) = redis::cmd("HGETALL")
        .arg("titus:{acl}:instances")
        .query::<Vec<(String, String)>>(&mut admin)
        .unwrap()
        .remove(0);
    let day_ago = support::epoch_ms_ago(std::time::Duration::from_secs(86_400));
    let _: () = redis::cmd("HSET")
        .arg("titus:{acl}:instances")
        .arg(&id)
        .arg(support::aged_record(&json, day_ago))
        .query(&mut admin)
        .unwrap();
    let prune = ["prune", "--older-than", "1h"];
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_titus-count"))
        .args(["--redis-url", &url("titus-reader", "reader-s3cret")])
        .args(["--namespace", "acl"])
        .args(prune)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("no permissions"), "{error}");
    acl_setuser(&mut admin, "titus-pruner", PRUNER_RULE);
    let out = support::titus_count_ok(&url("titus-pruner", "pruner-s3cret"), "acl", &prune, &[]);
    assert!(out.contains("pruned 1 instance "), "{out}");
}

#[test]
fn a_sharded_namespace_needs_only_its_shard_key_pattern() {
    if is_child("a_sharded_namespace_needs_only_its_shard_key_pattern") {
        let _guard = titus_count::init();
        titus_count::count!("acl.in", 40);
        titus_count::flush().expect("the sharded writer rule allows a batch");
        return;
    }
    let sharded = |rule: &str| rule.replace("titus:{acl}:*", "titus:{acl:*}:*");
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    acl_setuser(&mut admin, "titus-writer", &sharded(WRITER_RULE));
    acl_setuser(&mut admin, "titus-reader", &sharded(READER_RULE));
    let url = |user: &str, password: &str| {
        format!("redis://{user}:{password}@127.0.0.1:{}", redis.port())
    };
    let shards = [("TITUS_COUNT_SHARDS", "3")];
    run_child_ok(
        "a_sharded_namespace_needs_only_its_shard_key_pattern",
        &[
            (
                "TITUS_COUNT_REDIS_URL",
                &url("titus-writer", "writer-s3cret"),
            ),
            ("TITUS_COUNT_NAMESPACE", "acl"),
            shards[0],
        ],
    );
    let stdout = support::titus_count_ok(
        &url("titus-reader", "reader-s3cret"),
        "acl",
        &["totals", "--json"],
        &shards,
    );
    assert!(stdout.contains("\"acl.in\":40"), "{stdout}");
}

/// Users set up before the rules had `+time` keep working: the writer's
/// record keeps the process's own clock, and readers use this machine's.
#[test]
fn users_without_time_still_work() {
    if is_child("users_without_time_still_work") {
        let _guard = titus_count::init();
        titus_count::count!("acl.in", 5);
        titus_count::flush().expect("a writer without +time delivers");
        return;
    }
    let without_time = |rule: &str| rule.replace(" +time", "");
    let redis = RedisServer::start();
    let mut admin = redis.connection();
    acl_setuser(&mut admin, "titus-writer", &without_time(WRITER_RULE));
    acl_setuser(&mut admin, "titus-reader", &without_time(READER_RULE));
    let url = |user: &str, password: &str| {
        format!("redis://{user}:{password}@127.0.0.1:{}", redis.port())
    };
    run_child_ok(
        "users_without_time_still_work",
        &[
            (
                "TITUS_COUNT_REDIS_URL",
                &url("titus-writer", "writer-s3cret"),
            ),
            ("TITUS_COUNT_NAMESPACE", "acl"),
        ],
    );
    let config = titus_count::Config::default()
        .redis_url(url("titus-reader", "reader-s3cret"))
        .namespace("acl");
    let mut reader = titus_count::Reader::connect(&config).unwrap();
    for _ in 0..2 {
        let snapshot = reader.snapshot().unwrap();
        assert_eq!(snapshot.totals["acl.in"], 5);
        let [me] = snapshot.instances.as_slice() else {
            panic!("{snapshot:?}")
        };
        assert!(me.exited && !me.stale, "{me:?}");
    }
    let out = support::titus_count_ok(
        &url("titus-reader", "reader-s3cret"),
        "acl",
        &["instances"],
        &[],
    );
    assert!(out.contains("exited"), "{out}");
}
