//! Fleet simulation: many counting processes (each a distinct instance with
//! its own sequence numbers) flushing a realistic batch once a second into
//! one Redis, then into a local three-primary cluster with the namespace
//! sharded over the primaries. For growing fleet sizes it reports flush
//! latency, Redis CPU (summed over nodes, in all and per batch) and Redis
//! memory per instance, and stops where the fleet no longer keeps up.
//!
//! `cargo bench --bench fleet` (prints a table; `scripts/bench.sh` keeps it).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use titus_count::__private::BatchWriter;

/// Each simulated process flushes this often...
const INTERVAL: Duration = Duration::from_secs(1);
/// ...a batch of this many stages (a pipeline's handlers and outcomes).
const STAGES: usize = 20;
/// Load generator threads, each with one connection.
const WORKERS: usize = 8;
/// How long each fleet size is measured.
const ROUND: Duration = Duration::from_secs(4);

/// Where the simulated fleet flushes.
struct Target<'a> {
    name: &'static str,
    url: String,
    shards: u32,
    nodes: Vec<&'a support::RedisServer>,
}

impl Target<'_> {
    /// A field of `INFO section`, summed over the nodes.
    fn info(&self, section: &str, field: &str) -> f64 {
        self.nodes
            .iter()
            .map(|n| info(&mut n.connection(), section, field))
            .sum()
    }
}

fn info(con: &mut redis::Connection, section: &str, field: &str) -> f64 {
    let text: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Round {
    processes: usize,
    p50: Duration,
    p99: Duration,
    redis_cpu: f64,
    /// Redis CPU time (all nodes) per batch applied.
    cpu_per_batch: Duration,
    bytes_per_instance: f64,
    on_time: bool,
}

fn round(target: &Target<'_>, processes: usize, generation: usize) -> Round {
    let mem_before = target.info("memory", "used_memory");
    let cpu = || target.info("cpu", "used_cpu_sys") + target.info("cpu", "used_cpu_user");
    let cpu_before = cpu();
    let started = Instant::now();
    let names: Vec<&'static str> = (0..STAGES)
        .map(|i| &*Box::leak(format!("fleet.stage{i:02}").into_boxed_str()))
        .collect();
    let results: Vec<(Vec<Duration>, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let names = &names;
                let (url, shards) = (target.url.clone(), target.shards);
                s.spawn(move || {
                    let mut writer = BatchWriter::sharded(&url, "fleet", "unused", shards).unwrap();
                    let mine: Vec<usize> = (w..processes).step_by(WORKERS).collect();
                    let ids: Vec<String> = mine
                        .iter()
                        .map(|p| format!("sim-{generation}-{p}"))
                        .collect();
                    let mut seqs = vec![0u64; mine.len()];
                    let mut latencies = Vec::new();
                    let mut on_time = true;
                    let begin = Instant::now();
                    let mut tick = 0u32;
                    while begin.elapsed() < ROUND {
                        // Spread this worker's instances over the interval.
                        for (k, id) in ids.iter().enumerate() {
                            let due = begin
                                + INTERVAL * tick
                                + INTERVAL.mul_f64(k as f64 / ids.len() as f64);
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            } else if now - due > INTERVAL / 2 {
                                on_time = false;
                            }
                            let deltas: Vec<(&'static str, u64)> = names
                                .iter()
                                .enumerate()
                                .map(|(i, n)| (*n, (i as u64 + 1) * 7))
                                .collect();
                            seqs[k] += 1;
                            let t = Instant::now();
                            writer.apply_as(id, seqs[k], &deltas).unwrap();
                            latencies.push(t.elapsed());
                        }
                        tick += 1;
                    }
                    (latencies, on_time)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed();
    let mut latencies: Vec<Duration> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let cpu_used = cpu() - cpu_before;
    Round {
        processes,
        p50: pick(0.5),
        p99: pick(0.99),
        redis_cpu: cpu_used / wall.as_secs_f64(),
        cpu_per_batch: Duration::from_secs_f64(cpu_used / latencies.len() as f64),
        bytes_per_instance: (target.info("memory", "used_memory") - mem_before) / processes as f64,
        on_time: results.iter().all(|(_, ok)| *ok),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; listing (`--list`) should not run anything.
    if std::env::args().any(|a| a == "--list") {
        println!("fleet: bench");
        return;
    }
    let redis = support::RedisServer::start_with(&["--maxclients", "10000"]);
    let cluster = support::RedisCluster::start(3, 0);
    let targets = [
        Target {
            name: "one Redis",
            url: redis.url(),
            shards: 1,
            nodes: vec![&redis],
        },
        Target {
            name: "3-primary cluster, 3 shards",
            url: cluster.url(),
            shards: 3,
            nodes: cluster.nodes.iter().collect(),
        },
    ];
    println!(
        "fleet simulation: {STAGES} stages per batch, one batch per process every {INTERVAL:?}"
    );
    println!(
        "| target | processes | flush p50 | flush p99 | Redis CPU (all nodes) | Redis CPU per batch | Redis memory per process | keeps up |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut generation = 0;
    for target in &targets {
        const SIZES: [usize; 10] = [
            250, 500, 1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 12_000, 16_000,
        ];
        let mut capacity = 0;
        for processes in SIZES {
            generation += 1;
            let r = round(target, processes, generation);
            let keeps_up = r.on_time && r.p99 < INTERVAL / 10;
            println!(
                "| {} | {} | {:.2} ms | {:.2} ms | {:.0}% | {:.0} µs | {:.0} B | {} |",
                target.name,
                r.processes,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                r.redis_cpu * 100.0,
                r.cpu_per_batch.as_secs_f64() * 1e6,
                r.bytes_per_instance,
                if keeps_up { "yes" } else { "no" }
            );
            if !keeps_up {
                break;
            }
            capacity = processes;
        }
        // Every size kept up: the capacity is at least the largest tried.
        let at_least = if capacity == SIZES[SIZES.len() - 1] {
            "at least "
        } else {
            ""
        };
        println!(
            "fleet capacity, {}: {at_least}{capacity} processes at a 1 s interval (p99 flush under 100 ms, on schedule)",
            target.name
        );
    }
}
