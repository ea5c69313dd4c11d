//! Redis Cluster: several processes flush into a real three-primary cluster
//! through a comma-separated node list, exactly; through a slot migration
//! (`ASK`, then `MOVED` redirections) while they flush; through a primary
//! killed and its replica promoted, with `WAIT`; and the command reads the
//! totals from the cluster.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use support::{RedisCluster, RedisServer, is_child, spawn_child_guarded, wait_until};

/// How long the parent waits for something the processes do (a flush, a
/// failover): generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn counting_child() {
    let _guard = titus_count::Config::from_env()
        .interval(Duration::from_millis(10))
        .io_timeout(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(30))
        .init()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    titus_count::count!("cluster.messages");
                    // Several stages, for readers to merge.
                    match n % 4 {
                        0 => titus_count::count!("cluster.a"),
                        1 => titus_count::count!("cluster.b"),
                        2 => titus_count::count!("cluster.c"),
                        _ => titus_count::count!("cluster.d"),
                    }
                    n += 1;
                    if n.is_multiple_of(1000) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                n
            })
        })
        .collect();
    // Count for at least COUNT_FOR_MS, then until the parent is done with
    // its faults and creates STOP_FILE.
    let ms: u64 = std::env::var("COUNT_FOR_MS").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let stop_file = std::env::var("STOP_FILE").unwrap();
    wait_until(
        "the parent creates STOP_FILE",
        support::CHILD_DEADLINE,
        || std::path::Path::new(&stop_file).exists(),
    );
    stop.store(true, Ordering::Relaxed);
    let counted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    drop(_guard);
    let health = titus_count::health().unwrap();
    assert_eq!(health.pending_counts, 0, "{health:?}");
    println!("\ncounted={counted}");
    println!("instance={}", titus_count::instance_id().unwrap());
}

fn run_children(
    url: &str,
    namespace: &str,
    processes: usize,
    ms: u64,
    extra: &[(&str, &str)],
    during: impl FnOnce(),
) -> u64 {
    run_each_child(url, namespace, processes, ms, extra, during)
        .into_iter()
        .map(|(_, counted)| counted)
        .sum()
}

/// Like [`run_children`]: each child's instance id and count. The children
/// count until `during` has returned (and at least `ms`).
fn run_each_child(
    url: &str,
    namespace: &str,
    processes: usize,
    ms: u64,
    extra: &[(&str, &str)],
    during: impl FnOnce(),
) -> Vec<(String, u64)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let stop_file = std::env::temp_dir().join(format!(
        "titus-count-test-stop-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&stop_file);
    let ms = ms.to_string();
    let stop_path = stop_file.to_str().expect("a UTF-8 temporary directory");
    let mut env = vec![
        ("TITUS_COUNT_REDIS_URL", url),
        ("TITUS_COUNT_NAMESPACE", namespace),
        ("COUNT_FOR_MS", ms.as_str()),
        ("STOP_FILE", stop_path),
    ];
    env.extend_from_slice(extra);
    // Killed on drop if `during` panics.
    let children: Vec<_> = (0..processes)
        .map(|_| spawn_child_guarded("cluster_child", &env))
        .collect();
    during();
    std::fs::write(&stop_file, b"").expect("create the stop file");
    let outputs: Vec<_> = children.into_iter().map(|child| child.wait()).collect();
    let _ = std::fs::remove_file(&stop_file);
    outputs
        .into_iter()
        .map(|output| {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let field = |name: &str| {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .expect("the child reports its count and instance")
                    .to_owned()
            };
            (
                field("instance="),
                field("counted=").parse::<u64>().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cluster_child() {
    if is_child("cluster_child") {
        counting_child();
    }
}

/// `cluster.messages` in the totals of `namespace` (in `slot`), read from
/// the primary that owns the slot now: `None` while no live primary owns
/// it or the key is on its way to another node.
fn messages(cluster: &RedisCluster, slot: u16, namespace: &str) -> Option<u64> {
    let (_, owner) = cluster.owner_or_none(slot)?;
    let mut con = redis::Client::open(cluster.nodes[owner].url())
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    let n: Option<u64> = redis::cmd("HGET")
        .arg(format!("titus:{{{namespace}}}:totals"))
        .arg("cluster.messages")
        .query(&mut con)
        .ok()?;
    Some(n.unwrap_or(0))
}

/// Waits until the totals of `namespace` hold more than `than` messages;
/// returns how many they hold.
fn wait_for_more(cluster: &RedisCluster, slot: u16, namespace: &str, than: u64, what: &str) -> u64 {
    let mut seen = 0;
    wait_until(what, PATIENCE, || {
        seen = messages(cluster, slot, namespace).unwrap_or(0);
        seen > than
    });
    seen
}

/// A number in `INFO section` of `node`: the value of `key`, or with
/// `field` one field of it (`cmdstat_eval` `calls`); 0 if absent.
fn info_number(node: &RedisServer, section: &str, key: &str, field: Option<&str>) -> u64 {
    let info = node.info(section);
    let Some(value) = info
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
    else {
        return 0;
    };
    let value = match field {
        None => Some(value),
        Some(field) => value
            .split(',')
            .find_map(|f| f.strip_prefix(field)?.strip_prefix('=')),
    };
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn processes_flush_exactly_into_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let slot = cluster.slot("titus:{cl_exact}:totals");
    let counted = run_children(&cluster.url(), "cl_exact", 3, 1000, &[], || {
        // Empty every node's script cache while the processes flush: they
        // fall back to EVAL, routed by key like EVALSHA.
        let (_, owner) = cluster.owner(slot);
        let node = &cluster.nodes[owner];
        wait_until(
            "the processes flush and their script is cached",
            PATIENCE,
            || {
                messages(&cluster, slot, "cl_exact").unwrap_or(0) > 0
                    && info_number(node, "memory", "number_of_cached_scripts", None) > 0
            },
        );
        // The script is cached, so no EVAL runs until the flush below.
        let evals = info_number(node, "commandstats", "cmdstat_eval", Some("calls"));
        for node in &cluster.nodes {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query(&mut node.connection())
                .unwrap();
        }
        let flushed = messages(&cluster, slot, "cl_exact").expect("read the totals");
        wait_until(
            "the processes send EVAL after NOSCRIPT and flush again",
            PATIENCE,
            || {
                info_number(node, "commandstats", "cmdstat_eval", Some("calls")) > evals
                    && messages(&cluster, slot, "cl_exact").unwrap_or(0) > flushed
            },
        );
    });
    assert_eq!(cluster.totals("cl_exact")["cluster.messages"], counted);

    // The command reads the same totals through the node list.
    let stdout = support::titus_count_ok(&cluster.url(), "cl_exact", &["totals", "--json"], &[]);
    assert!(
        stdout.contains(&format!("\"cluster.messages\":{counted}")),
        "{stdout}"
    );
    assert!(stdout.contains("\"settled\":true"), "{stdout}");
}

#[test]
fn a_slot_migration_while_flushing_is_exact() {
    let cluster = RedisCluster::start(3, 0);
    let slot = cluster.slot("titus:{cl_moved}:totals");
    // Redirections answered so far, by every node (`INFO errorstats`).
    let redirections = || -> u64 {
        cluster
            .nodes
            .iter()
            .map(|n| {
                info_number(n, "errorstats", "errorstat_ASK", Some("count"))
                    + info_number(n, "errorstats", "errorstat_MOVED", Some("count"))
            })
            .sum()
    };
    let before = redirections();
    let counted = run_children(&cluster.url(), "cl_moved", 2, 2000, &[], || {
        // Let the processes flush to the first owner, then move the slot
        // to each other primary in turn while they keep flushing, and wait
        // each time until their flushes reach the new owner.
        let mut seen = wait_for_more(&cluster, slot, "cl_moved", 0, "the processes flush");
        for _ in 0..2 {
            let (_, owner) = cluster.owner(slot);
            cluster.migrate_slot(slot, (owner + 1) % 3);
            seen = seen.max(messages(&cluster, slot, "cl_moved").unwrap_or(0));
            seen = wait_for_more(
                &cluster,
                slot,
                "cl_moved",
                seen,
                "the processes flush to the slot's new owner",
            );
        }
    });
    // The processes were redirected (ASK while keys moved, or MOVED after);
    // which of the two each migration caused is not checked.
    assert!(
        redirections() > before,
        "no ASK or MOVED redirection during the migrations"
    );
    assert_eq!(cluster.totals("cl_moved")["cluster.messages"], counted);
}

#[test]
fn a_failover_with_wait_for_replicas_loses_nothing() {
    let mut cluster = RedisCluster::start(3, 1);
    let url = cluster.url();
    let slot = cluster.slot("titus:{cl_failover}:totals");
    let counted = run_children(
        &url,
        "cl_failover",
        2,
        4000,
        // A batch counts as delivered only once a replica has it.
        &[("TITUS_COUNT_WAIT_REPLICAS", "1")],
        || {
            wait_for_more(&cluster, slot, "cl_failover", 0, "the processes flush");
            let (old_id, old) = cluster.owner(slot);
            cluster.nodes[old].stop();
            // Wait for a replica to take the slot over.
            wait_until("a replica takes over the slot", PATIENCE, || {
                cluster
                    .owner_or_none(slot)
                    .is_some_and(|(id, _)| id != old_id)
            });
            let (_, new) = cluster.owner(slot);
            let promoted = messages(&cluster, slot, "cl_failover").unwrap_or(0);
            // The old primary comes back as a replica of the new one, so
            // WAIT can be satisfied again.
            cluster.nodes[old].restart();
            wait_for_more(
                &cluster,
                slot,
                "cl_failover",
                promoted,
                "the processes flush to the promoted replica",
            );
            // They ask the new primary to WAIT for its replica; that it
            // was satisfied shows in the children's empty buffers.
            wait_until(
                "the processes send WAIT to the new primary",
                PATIENCE,
                || {
                    info_number(
                        &cluster.nodes[new],
                        "commandstats",
                        "cmdstat_wait",
                        Some("calls"),
                    ) > 0
                },
            );
        },
    );
    assert_eq!(cluster.totals("cl_failover")["cluster.messages"], counted);
}

/// The shard a process writes to, as the README documents it: FNV-1a
/// (64-bit) of its instance id, modulo the number of shards.
fn shard_of(instance: &str, shards: u64) -> u64 {
    let hash = instance.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash % shards
}

#[test]
fn a_sharded_namespace_writes_each_process_to_its_shard_and_reads_merged() {
    let cluster = RedisCluster::start(3, 0);
    let shards = [("TITUS_COUNT_SHARDS", "4")];
    let mut children = run_each_child(&cluster.url(), "cl_shard", 3, 800, &shards, || {});
    // Each process lands on a shard by its random id: add processes until
    // at least two shards are in use, so that readers have shards to merge.
    let shards_used = |children: &[(String, u64)]| {
        let used: std::collections::BTreeSet<u64> =
            children.iter().map(|(id, _)| shard_of(id, 4)).collect();
        used.len()
    };
    while shards_used(&children) < 2 {
        assert!(children.len() < 20, "20 processes all on one shard");
        children.extend(run_each_child(
            &cluster.url(),
            "cl_shard",
            1,
            200,
            &shards,
            || {},
        ));
    }
    let counted: u64 = children.iter().map(|(_, n)| n).sum();
    // Each shard holds exactly the processes whose id maps to it: their
    // instance records, sequence marks and counts, and nothing else.
    let mut con = cluster.connection();
    let mut sum = std::collections::BTreeMap::<String, u64>::new();
    for shard in 0..4 {
        let mine: Vec<&(String, u64)> = children
            .iter()
            .filter(|(id, _)| shard_of(id, 4) == shard)
            .collect();
        let totals: std::collections::BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(format!("titus:{{cl_shard:{shard}}}:totals"))
            .query(&mut con)
            .unwrap();
        let expected: u64 = mine.iter().map(|(_, n)| n).sum();
        assert_eq!(
            totals.get("cluster.messages").copied().unwrap_or(0),
            expected,
            "shard {shard}"
        );
        let mut ids: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("titus:{{cl_shard:{shard}}}:instances"))
            .query(&mut con)
            .unwrap();
        ids.sort();
        let mut want: Vec<String> = mine.iter().map(|(id, _)| id.clone()).collect();
        want.sort();
        assert_eq!(ids, want, "shard {shard}");
        for (id, _) in &mine {
            let seq: Option<u64> = redis::cmd("GET")
                .arg(format!("titus:{{cl_shard:{shard}}}:seq:{id}"))
                .query(&mut con)
                .unwrap();
            assert!(seq.is_some_and(|s| s > 0), "shard {shard}, instance {id}");
        }
        for (stage, n) in totals {
            *sum.entry(stage).or_default() += n;
        }
    }
    assert_eq!(sum["cluster.messages"], counted);
    let four: u64 = ["cluster.a", "cluster.b", "cluster.c", "cluster.d"]
        .iter()
        .map(|s| sum[*s])
        .sum();
    assert_eq!(four, counted);

    // The command merges the shards.
    let stdout =
        support::titus_count_ok(&cluster.url(), "cl_shard", &["totals", "--json"], &shards);
    assert!(
        stdout.contains(&format!("\"cluster.messages\":{counted}")),
        "{stdout}"
    );
    assert!(stdout.contains("\"settled\":true"), "{stdout}");
    // It lists the processes of every shard.
    let stdout = support::titus_count_ok(
        &cluster.url(),
        "cl_shard",
        &["instances", "--json"],
        &shards,
    );
    for (id, _) in &children {
        assert!(stdout.contains(id.as_str()), "{id} missing: {stdout}");
    }
}

/// The README's writer rule plus what a cluster client needs: `PING` and
/// `CLUSTER SLOTS`, to check a node and learn which node owns which slot.
const CLUSTER_WRITER_RULE: &str = "on >writer-pw resetkeys ~titus:{cl_acl}:* resetchannels -@all +evalsha +eval +hset +get +type +hget +hincrby +set +expire +time +cluster|slots +ping";

#[test]
fn the_minimal_acl_user_is_enough_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    for node in &cluster.nodes {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("titus-writer")
            .arg(CLUSTER_WRITER_RULE.split(' ').collect::<Vec<_>>())
            .query(&mut node.connection())
            .unwrap();
    }
    let url = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://titus-writer:writer-pw@127.0.0.1:{}", n.port()))
        .collect::<Vec<_>>()
        .join(",");
    let counted = run_children(&url, "cl_acl", 2, 500, &[], || {});
    assert_eq!(cluster.totals("cl_acl")["cluster.messages"], counted);
}
