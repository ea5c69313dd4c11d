//! A batch is applied at most once per instance and sequence number, so a
//! batch whose reply was lost can be resent unchanged.

mod support;

use support::RedisServer;
use titus_count::__private::apply_batch;

#[test]
fn a_resent_batch_is_not_applied_twice() {
    let redis = RedisServer::start();
    let url = redis.url();
    let batch = [("in", 10u64), ("out", 7u64)];
    assert_eq!(apply_batch(&url, "idem", "instance-a", 1, &batch), Ok(true));
    assert_eq!(
        apply_batch(&url, "idem", "instance-a", 1, &batch),
        Ok(false)
    );
    let totals = redis.totals("idem");
    assert_eq!((totals["in"], totals["out"]), (10, 7));

    // The next sequence number applies; an older one never does again.
    assert_eq!(
        apply_batch(&url, "idem", "instance-a", 2, &[("in", 1)]),
        Ok(true)
    );
    assert_eq!(
        apply_batch(&url, "idem", "instance-a", 1, &batch),
        Ok(false)
    );
    assert_eq!(redis.totals("idem")["in"], 11);

    // Another instance has its own sequence.
    assert_eq!(apply_batch(&url, "idem", "instance-b", 1, &batch), Ok(true));
    let totals = redis.totals("idem");
    assert_eq!((totals["in"], totals["out"]), (21, 14));
}

#[test]
fn the_script_is_sent_again_after_a_script_flush() {
    let redis = RedisServer::start();
    let url = redis.url();
    assert_eq!(apply_batch(&url, "noscript", "i", 1, &[("s", 1)]), Ok(true));
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(apply_batch(&url, "noscript", "i", 2, &[("s", 1)]), Ok(true));
    assert_eq!(redis.totals("noscript")["s"], 2);
}

#[test]
fn a_totals_key_of_the_wrong_type_changes_nothing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let _: () = redis::cmd("SET")
        .arg("titus:{wrong}:totals")
        .arg("not a hash")
        .query(&mut redis.connection())
        .unwrap();
    let err = apply_batch(&url, "wrong", "i", 1, &[("s", 1)]).unwrap_err();
    assert!(err.contains("WRONGTYPE"), "{err}");
    // Nothing was half applied: no sequence mark, no minute bucket. Only
    // the instance's record is written, for readers to see it alive.
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("titus:{wrong}:*")
        .query(&mut redis.connection())
        .unwrap();
    keys.sort();
    assert_eq!(keys, ["titus:{wrong}:instances", "titus:{wrong}:totals"]);
}

#[test]
fn a_value_redis_cannot_increment_refuses_the_whole_batch() {
    let redis = RedisServer::start();
    let url = redis.url();
    for (i, bad) in ["007", "-0", "1.5", "-99999999999999999999"]
        .iter()
        .enumerate()
    {
        let ns = format!("bad{i}");
        let _: () = redis::cmd("HSET")
            .arg(format!("titus:{{{ns}}}:totals"))
            .arg("z.last")
            .arg(*bad)
            .query(&mut redis.connection())
            .unwrap();
        // `a.first` sorts before `z.last`: it must not be applied alone.
        let err = apply_batch(&url, &ns, "i", 1, &[("a.first", 1), ("z.last", 1)]).unwrap_err();
        assert!(err.contains("not an integer"), "{bad}: {err}");
        let totals: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("titus:{{{ns}}}:totals"))
            .query(&mut redis.connection())
            .unwrap();
        assert_eq!(totals.len(), 1, "{bad}: {totals:?}");
    }
}
