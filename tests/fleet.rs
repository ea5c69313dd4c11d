//! Several processes with several threads each count into one Redis through
//! a proxy that injects faults the whole time: the global totals are exact.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Fault, FaultProxy, RedisServer, is_child, spawn_child_guarded};

const PROCESSES: usize = 4;
const THREADS: usize = 3;

#[test]
fn many_processes_under_faults_are_exact() {
    if is_child("many_processes_under_faults_are_exact") {
        let _guard = titus_count::Config::from_env()
            .interval(Duration::from_millis(10))
            .io_timeout(Duration::from_millis(100))
            .shutdown_timeout(Duration::from_secs(60))
            .init()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        titus_count::count!("fleet.messages", 3);
                        n += 3;
                        if n.is_multiple_of(3000) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(2500));
        stop.store(true, Ordering::Relaxed);
        let counted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        drop(_guard); // waits until everything is delivered
        let failed = titus_count::health().unwrap().failed_attempts;
        println!("\ncounted={counted}\nfailed={failed}");
        return;
    }
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis.port());
    let url = proxy.url();
    let env = [("TITUS_COUNT_REDIS_URL", url.as_str())];
    // Killed on drop if the test panics.
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| spawn_child_guarded("many_processes_under_faults_are_exact", &env))
        .collect();
    // Cycle through the faults while the processes count and flush.
    let faults = [
        Fault::DropReplies,
        Fault::None,
        Fault::ResetReplies,
        Fault::None,
        Fault::Blackhole,
        Fault::None,
        Fault::Refuse,
        Fault::None,
    ];
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2000) {
        proxy.set(faults[i % faults.len()]);
        i += 1;
        std::thread::sleep(Duration::from_millis(60));
    }
    proxy.set(Fault::None);
    let mut counted = 0u64;
    let mut failed = 0u64;
    for child in children {
        let output = child.wait();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        counted += stdout
            .lines()
            .find_map(|l| l.strip_prefix("counted="))
            .expect("the child reports its count")
            .parse::<u64>()
            .unwrap();
        failed += stdout
            .lines()
            .find_map(|l| l.strip_prefix("failed="))
            .expect("the child reports its failures")
            .parse::<u64>()
            .unwrap();
    }
    assert!(counted > 0);
    assert!(failed > 0, "the faults never hit a delivery");
    assert_eq!(redis.totals("titus")["fleet.messages"], counted);
}
