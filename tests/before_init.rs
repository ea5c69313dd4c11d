//! Counting is always on: counts made before `init()` (or without it) are
//! kept, readable in-process, and delivered once the flusher starts.

mod support;

use support::{RedisServer, is_child, run_child_ok};

#[titus_count::counted("early")]
fn early() {}

#[test]
fn counts_before_init_are_delivered() {
    if is_child("counts_before_init_are_delivered") {
        for _ in 0..5 {
            early();
        }
        std::thread::spawn(|| titus_count::count!("early", 10))
            .join()
            .unwrap();
        assert_eq!(titus_count::local_totals()["early"], 15);
        let _guard = titus_count::init();
        early();
        titus_count::flush().expect("flush");
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        "counts_before_init_are_delivered",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "early"),
        ],
    );
    assert_eq!(redis.totals("early")["early"], 16);
}

#[test]
fn local_totals_work_without_init() {
    #[titus_count::counted("local.only")]
    fn work() {}
    for _ in 0..3 {
        work();
    }
    titus_count::count!("local.only", 4u8);
    assert_eq!(titus_count::local_totals()["local.only"], 7);
    assert_eq!(titus_count::instance_id(), None);
}
