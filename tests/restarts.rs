//! A restarted process is a new instance: its sequence numbers never collide
//! with an earlier process's marks, and the totals of both add up exactly.

mod support;

use support::{RedisServer, is_child, run_child_ok};

#[test]
fn restarted_processes_add_up() {
    if is_child("restarted_processes_add_up") {
        let _guard = titus_count::init();
        // Several batches, so the sequence numbers of the runs overlap.
        for _ in 0..5 {
            titus_count::count!("restart.messages", 100);
            titus_count::flush().expect("flush");
        }
        println!("\ninstance={}", titus_count::instance_id().unwrap());
        return;
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [
        ("TITUS_COUNT_REDIS_URL", url.as_str()),
        ("TITUS_COUNT_NAMESPACE", "restarts"),
        // Only the five explicit flushes and the final batch at exit send
        // batches.
        ("TITUS_COUNT_INTERVAL", "1h"),
    ];
    let mut instances = Vec::new();
    for run in 1..=3u64 {
        let output = run_child_ok("restarted_processes_add_up", &env);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let instance = stdout
            .lines()
            .find_map(|l| l.strip_prefix("instance="))
            .expect("the child prints its instance")
            .to_owned();
        instances.push(instance);
        assert_eq!(redis.totals("restarts")["restart.messages"], 500 * run);
    }
    instances.sort();
    instances.dedup();
    assert_eq!(instances.len(), 3, "every run is a new instance");
    let mut con = redis.connection();
    for instance in &instances {
        let seq: u64 = redis::cmd("GET")
            .arg(format!("titus:{{restarts}}:seq:{instance}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(seq, 6);
    }
}
