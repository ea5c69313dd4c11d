//! Several processes running at once add into the same totals exactly.

mod support;

use support::{RedisServer, is_child, spawn_child_guarded};

#[titus_count::counted("shared.work")]
fn work() {}

#[test]
fn processes_add_into_the_same_totals() {
    if is_child("processes_add_into_the_same_totals") {
        let _guard = titus_count::init();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10_000 {
                        work();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        titus_count::count!("shared.processes");
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("TITUS_COUNT_REDIS_URL", url.as_str()),
        ("TITUS_COUNT_NAMESPACE", "fleet"),
        ("TITUS_COUNT_INTERVAL", "5ms"),
    ];
    // Killed on drop if the test panics.
    let children: Vec<_> = (0..4)
        .map(|_| spawn_child_guarded("processes_add_into_the_same_totals", &env))
        .collect();
    for child in children {
        let output = child.wait();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let totals = redis.totals("fleet");
    assert_eq!(totals["shared.work"], 4 * 3 * 10_000);
    assert_eq!(totals["shared.processes"], 4);
    // Every process registered itself as its own instance.
    let instances: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("titus:{fleet}:instances")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(instances.len(), 4);
}
