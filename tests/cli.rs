//! The `titus-count` command against a real redis-server filled by real
//! counting processes: totals, JSON, instances, history, flow, the
//! Prometheus endpoint (checked with the reference Python parser) and its
//! HTTP handling under slow and malformed clients, the live view's exit on
//! Ctrl-C and on errors, closed standard output, and bad input.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::{RedisServer, is_child, run_child_ok};

const BIN: &str = env!("CARGO_BIN_EXE_titus-count");

#[test]
fn counting_process() {
    if is_child("counting_process") {
        let _guard = titus_count::init();
        for i in 0..1000u32 {
            titus_count::count!("in");
            if i % 10 != 0 {
                titus_count::count!("mid");
            }
            if i % 20 >= 3 {
                titus_count::count!("out");
            }
        }
    }
    // The parent side: nothing to do on its own; `filled` runs it.
}

/// A Redis with `processes` counting processes' totals in `namespace`.
fn filled(processes: u64, namespace: &str) -> RedisServer {
    let redis = RedisServer::start();
    for _ in 0..processes {
        run_child_ok(
            "counting_process",
            &[
                ("TITUS_COUNT_REDIS_URL", &redis.url()),
                ("TITUS_COUNT_NAMESPACE", namespace),
            ],
        );
    }
    redis
}

fn cli(redis_url: &str, namespace: &str, args: &[&str]) -> Output {
    cli_env(redis_url, namespace, args, &[])
}

/// Runs the command with only these `TITUS_COUNT_*` variables set.
fn cli_env(redis_url: &str, namespace: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("TITUS_COUNT_")) {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .args(["--redis-url", redis_url, "--namespace", namespace])
        .args(args)
        .output()
        .expect("run titus-count")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Runs a Python check with the text on standard input.
fn python(script: &str, input: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn totals_table_and_json() {
    let redis = filled(2, "cli_totals");
    let out = ok(&cli(&redis.url(), "cli_totals", &["totals"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["stage", "total"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["in", "2000"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["mid", "1800"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["out", "1700"]
    );
    // Both processes exited with everything delivered.
    assert!(
        out.contains(
            "Settled: no live instance counted in its last interval (0 live instances, 2 exited)"
        ),
        "{out}"
    );

    let json = ok(&cli(&redis.url(), "cli_totals", &["totals", "--json"]));
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(d['namespace'], d['totals']['in'], d['totals']['mid'], d['totals']['out'], d['settled'], d['complete_up_to_ms'] > 0)",
        &json,
    );
    assert_eq!(checked, "cli_totals 2000 1800 1700 True True");
}

/// `settled` says the totals are final for now: never while a process
/// counts in every interval, as soon as every live process has had an
/// interval without counts; a process that exits says so with a final
/// batch and holds nothing back.
#[test]
fn settled_only_once_every_live_process_is_quiet() {
    let test = "settled_only_once_every_live_process_is_quiet";
    if is_child(test) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let config = titus_count::Config::from_env().interval(Duration::from_millis(50));
        let _guard = config.clone().init().unwrap();
        let mut reader = titus_count::Reader::connect(&config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counting = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    titus_count::count!("busy");
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        // While it counts, a batch with counts is not settled, though the
        // totals are complete up to it. (A batch of an interval in which
        // the thread happened not to run would be quiet, and settled.)
        let mut busy_batches = std::collections::BTreeSet::new();
        support::wait_until("three batches with counts", Duration::from_secs(30), || {
            let snapshot = reader.snapshot().unwrap();
            if let [me] = snapshot.instances.as_slice() {
                assert!(!me.exited && !me.stale, "{me:?}");
                assert_eq!(snapshot.completeness.settled, me.quiet, "{snapshot:?}");
                assert!(snapshot.completeness.complete_up_to.is_some());
                if !me.quiet {
                    busy_batches.insert(me.seq);
                }
            }
            busy_batches.len() >= 3
        });
        stop.store(true, Ordering::Relaxed);
        counting.join().unwrap();
        // An interval with no counts, and it is settled.
        support::wait_until("settled once quiet", Duration::from_secs(30), || {
            reader.snapshot().unwrap().completeness.settled
        });
        let snapshot = reader.snapshot().unwrap();
        let me = &snapshot.instances[0];
        assert!(me.quiet && !me.exited && !me.pending, "{me:?}");
        assert_eq!(snapshot.completeness.live, 1);
        assert_eq!(titus_count::local_totals()["busy"], snapshot.totals["busy"]);
        return;
    }
    let redis = RedisServer::start();
    run_child_ok(
        test,
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "cli_settled"),
        ],
    );
    // The process has exited: its final batch said so.
    let config = titus_count::Config::default()
        .redis_url(redis.url())
        .namespace("cli_settled");
    let snapshot = titus_count::Reader::connect(&config)
        .unwrap()
        .snapshot()
        .unwrap();
    let c = &snapshot.completeness;
    assert_eq!((c.live, c.stale, c.exited), (0, 0, 1), "{snapshot:?}");
    assert!(c.settled && c.complete_up_to.is_some(), "{snapshot:?}");
    assert!(snapshot.instances[0].exited);

    // A record another program wrote, not even UTF-8, is one unreadable
    // record; every view still reads.
    let _: () = redis::cmd("HSET")
        .arg("titus:{cli_settled}:instances")
        .arg(&b"foreign\xff"[..])
        .arg(&b"\xfe\xff"[..])
        .query(&mut redis.connection())
        .unwrap();
    let again = titus_count::Reader::connect(&config)
        .unwrap()
        .snapshot()
        .unwrap();
    assert_eq!(again.completeness.unreadable, 1);
    assert_eq!(again.instances, snapshot.instances);
    assert_eq!(again.totals, snapshot.totals);
    let out = ok(&cli(&redis.url(), "cli_settled", &["totals"]));
    assert!(out.contains("1 exited, 1 unreadable"), "{out}");
}

/// A long history is read in several round trips (4096 minutes times
/// shards each), every minute in its place and summed over the shards; a
/// range beyond the limit is an error, not a huge request.
#[test]
fn a_long_history_is_read_in_parts() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    // Two shards: 2048 minutes per round trip. Counts at the edges of the
    // parts, some in both shards.
    let from = 29_000_000u64;
    let to = from + 5_000;
    let marks = [
        (from, 1),
        (from + 2047, 2),
        (from + 2048, 3),
        (from + 4096, 4),
        (to, 5),
    ];
    for (minute, n) in marks {
        for shard in 0..2 {
            let _: () = redis::cmd("HSET")
                .arg(format!("titus:{{cli_long:{shard}}}:minute:{minute}"))
                .arg("in")
                .arg(n * (shard + 1))
                .query(&mut con)
                .unwrap();
        }
    }
    let config = titus_count::Config::default()
        .redis_url(redis.url())
        .namespace("cli_long")
        .shards(2);
    let mut reader = titus_count::Reader::connect(&config).unwrap();
    let history = reader.history(&["in".to_owned()], from, to).unwrap();
    assert_eq!(history.len() as u64, to - from + 1);
    for (i, minute) in history.iter().enumerate() {
        assert_eq!(minute.minute, from + i as u64);
        let expected = marks
            .iter()
            .find(|(m, _)| *m == minute.minute)
            .map_or(0, |(_, n)| n * 3);
        assert_eq!(minute.counts["in"], expected, "minute {}", minute.minute);
    }
    let err = reader
        .history(&["in".to_owned()], 0, titus_count::MAX_HISTORY_MINUTES)
        .unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
}

/// A process whose clock is a day behind is live all the same, to a reader
/// whose clock is a day ahead: Redis's clock stamps each record's last
/// flush, and readers judge liveness by Redis's clock too.
#[test]
fn wrong_clocks_do_not_make_a_live_process_stale() {
    let test = "wrong_clocks_do_not_make_a_live_process_stale";
    if is_child(test) {
        let _guard = titus_count::init();
        titus_count::count!("skewed", 2);
        titus_count::flush().expect("flush");
        println!("flushed");
        // Flushing every interval until the parent is done and kills it.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let redis = RedisServer::start();
    let url = redis.url();
    let behind = support::wrong_clock("-1d");
    let mut env: Vec<(&str, &str)> = behind.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("TITUS_COUNT_REDIS_URL", url.as_str()),
        ("TITUS_COUNT_NAMESPACE", "cli_clock"),
        ("TITUS_COUNT_INTERVAL", "200ms"),
    ]);
    let child = support::spawn_child_guarded(test, &env);
    let config = titus_count::Config::default()
        .redis_url(url.as_str())
        .namespace("cli_clock");
    let mut reader = titus_count::Reader::connect(&config).unwrap();
    let mut snapshot = None;
    support::wait_until("the process flushes", Duration::from_secs(30), || {
        let s = reader.snapshot().unwrap();
        let flushed = s.totals.get("skewed") == Some(&2);
        snapshot = Some(s);
        flushed
    });
    let snapshot = snapshot.unwrap();
    let [me] = snapshot.instances.as_slice() else {
        panic!("{snapshot:?}")
    };
    assert!(!me.stale && !me.exited, "{me:?}");
    assert_eq!(snapshot.completeness.live, 1, "{snapshot:?}");

    // A reader a day ahead sees it live too.
    let ahead = support::wrong_clock("+1d");
    let ahead: Vec<(&str, &str)> = ahead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let json = support::titus_count_ok(&url, "cli_clock", &["instances", "--json"], &ahead);
    assert!(json.contains("\"stale\":false"), "{json}");
    drop(child);
}

#[test]
fn instances_history_and_flow() {
    let redis = filled(2, "cli_views");
    let url = redis.url();
    let out = ok(&cli(&url, "cli_views", &["instances"]));
    assert_eq!(
        out.lines().filter(|l| l.ends_with("exited")).count(),
        2,
        "{out}"
    );
    let json = ok(&cli(&url, "cli_views", &["instances", "--json"]));
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(len(d), all(i['exited'] and not i['stale'] and not i['pending'] and i['pid'] > 0 for i in d))",
        &json,
    );
    assert_eq!(checked, "2 True");

    let json = ok(&cli(
        &url,
        "cli_views",
        &["history", "in", "out", "--period", "10m", "--json"],
    ));
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(len(d), sum(m['counts']['in'] for m in d), sum(m['counts']['out'] for m in d))",
        &json,
    );
    assert_eq!(checked, "10 2000 1700");
    let out = ok(&cli(
        &url,
        "cli_views",
        &["history", "in", "--period", "5m"],
    ));
    assert!(out.contains("in: |") && out.contains("max "), "{out}");

    let out = ok(&cli(&url, "cli_views", &["flow", "in", "mid", "out"]));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .take(4)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[1], ["in", "2000"]);
    assert_eq!(rows[2], ["mid", "1800", "200", "90.00%"]);
    assert_eq!(rows[3], ["out", "1700", "100", "94.44%"]);
}

#[test]
fn prometheus_endpoint() {
    let redis = filled(1, "cli_serve");
    // A label value that needs escaping, written as another tool might.
    let _: () = redis::cmd("HSET")
        .arg("titus:{cli_serve}:totals")
        .arg("odd\"stage\\")
        .arg(5)
        .query(&mut redis.connection())
        .unwrap();
    let mut server = Command::new(BIN)
        .args(["--redis-url", &redis.url(), "--namespace", "cli_serve"])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    };
    let metrics = get("/metrics");
    let health = get("/health");
    let _ = server.kill();
    let _ = server.wait();
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    let body = metrics.split("\r\n\r\n").nth(1).unwrap();
    let parsed = python(
        "import sys\n\
         from prometheus_client.parser import text_string_to_metric_families\n\
         for f in text_string_to_metric_families(sys.stdin.read()):\n\
         \x20   for s in f.samples:\n\
         \x20       if s.name == 'titus_count_messages_total':\n\
         \x20           print(f.type, s.labels['namespace'], s.labels['stage'], int(s.value))\n\
         \x20       if s.name == 'titus_count_instances':\n\
         \x20           print(s.labels['state'], int(s.value))",
        body,
    );
    let mut lines: Vec<&str> = parsed.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "counter cli_serve in 1000",
            "counter cli_serve mid 900",
            "counter cli_serve odd\"stage\\ 5",
            "counter cli_serve out 850",
            "exited 1",
            "live 0",
            "stale 0",
            "unreadable 0",
        ]
    );
}

#[test]
fn watch_exits_cleanly_on_ctrl_c() {
    let redis = filled(1, "cli_watch");
    let mut watch = Command::new(BIN)
        .args(["--redis-url", &redis.url(), "--namespace", "cli_watch"])
        .args(["watch", "--every", "100ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    // Wait for the first screen, then press Ctrl-C.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Ctrl-C to quit") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    let status = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stdout.read_to_end(&mut seen).unwrap();
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status}");
    let screen = String::from_utf8_lossy(&seen);
    assert!(
        screen.contains("per s (1 min)") && screen.contains("1000"),
        "{screen}"
    );
    // The cursor is shown again and the normal screen restored.
    assert!(screen.ends_with("\x1b[?25h\x1b[?1049l"), "{screen:?}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let redis = filled(1, "cli_bad");
    let url = redis.url();
    let fails = |output: Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    fails(
        cli(&url, "nothing_here", &["totals"]),
        "namespace `nothing_here` has no counts",
    );
    fails(
        cli(&url, "cli_bad", &["history", "in", "nope"]),
        "unknown stage `nope`",
    );
    fails(
        cli(&url, "cli_bad", &["flow", "in", "nope"]),
        "its stages are: in, mid, out",
    );
    fails(
        cli(&url, "cli_bad", &["history", "in", "--period", "5 parsecs"]),
        "invalid --period `5 parsecs`",
    );
    let down = format!("redis://:hunter2@127.0.0.1:{}", support::closed_port());
    let output = cli(&down, "cli_bad", &["totals"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
    fails(output, "the request to Redis failed");
    fails(
        cli("not a url", "cli_bad", &["totals"]),
        "invalid redis_url",
    );
    // Argument errors are clap's, with usage, and exit 2.
    let output = cli(&url, "cli_bad", &["flow", "in"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn prune_deletes_only_silent_instances_in_every_shard() {
    let redis = RedisServer::start();
    let sharded = [("TITUS_COUNT_SHARDS", "2")];
    let mut con = redis.connection();
    let records = |con: &mut redis::Connection| -> Vec<Vec<(String, String)>> {
        (0..2)
            .map(|shard| {
                redis::cmd("HGETALL")
                    .arg(format!("titus:{{cli_prune:{shard}}}:instances"))
                    .query(con)
                    .unwrap()
            })
            .collect()
    };
    // Processes until both shards have one and there is a third: each
    // lands on a shard by its random id.
    let mut runs = 0;
    while {
        let shards = records(&mut con);
        shards.iter().any(Vec::is_empty) || shards.iter().map(Vec::len).sum::<usize>() < 3
    } {
        assert!(runs < 40, "40 processes all on one shard");
        runs += 1;
        run_child_ok(
            "counting_process",
            &[
                ("TITUS_COUNT_REDIS_URL", &redis.url()),
                ("TITUS_COUNT_NAMESPACE", "cli_prune"),
                sharded[0],
            ],
        );
    }
    // The processes exited; their records are made to say they still run,
    // as a live process's do.
    for (shard, records) in records(&mut con).iter().enumerate() {
        for (id, json) in records {
            let _: () = redis::cmd("HSET")
                .arg(format!("titus:{{cli_prune:{shard}}}:instances"))
                .arg(id)
                .arg(json.replace("\"exited\":true", "\"exited\":false"))
                .query(&mut con)
                .unwrap();
        }
    }
    // One process in each shard went silent two days ago; the others
    // flushed just now.
    let two_days_ago = support::epoch_ms_ago(std::time::Duration::from_secs(2 * 86_400));
    let mut silent = Vec::new();
    for (shard, records) in records(&mut con).iter().enumerate() {
        let (id, json) = &records[0];
        let _: () = redis::cmd("HSET")
            .arg(format!("titus:{{cli_prune:{shard}}}:instances"))
            .arg(id)
            .arg(support::aged_record(json, two_days_ago))
            .query(&mut con)
            .unwrap();
        silent.push(id.clone());
    }
    let mut live: Vec<String> = records(&mut con)
        .concat()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !silent.contains(id))
        .collect();
    live.sort();
    let totals = |con: &mut redis::Connection| -> Vec<Vec<(String, String)>> {
        (0..2)
            .map(|shard| {
                redis::cmd("HGETALL")
                    .arg(format!("titus:{{cli_prune:{shard}}}:totals"))
                    .query(con)
                    .unwrap()
            })
            .collect()
    };
    let counts = totals(&mut con);

    let run = |args: &[&str]| support::titus_count_ok(&redis.url(), "cli_prune", args, &sharded);
    let dry = run(&["prune", "--older-than", "1d", "--dry-run"]);
    assert!(dry.contains("would prune 2 instances"), "{dry}");
    assert!(silent.iter().all(|id| dry.contains(id.as_str())), "{dry}");
    assert_eq!(
        records(&mut con).concat().len(),
        live.len() + 2,
        "a dry run deletes nothing"
    );

    // Silent, but not for three days: nothing goes.
    let out = run(&["prune", "--older-than", "3d"]);
    assert!(out.contains("pruned 0 instances"), "{out}");
    // Live processes are never pruned, however short the time.
    let out = run(&["prune", "--older-than", "0s"]);
    assert!(out.contains("pruned 2 instances"), "{out}");
    let mut left: Vec<String> = records(&mut con)
        .concat()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    left.sort();
    assert_eq!(left, live);
    assert_eq!(totals(&mut con), counts, "pruning touches no count");

    // A process that said it exited goes once silent for the given time.
    let one = run_child_ok(
        "counting_process",
        &[
            ("TITUS_COUNT_REDIS_URL", &redis.url()),
            ("TITUS_COUNT_NAMESPACE", "cli_prune"),
            sharded[0],
        ],
    );
    drop(one);
    let out = run(&["prune", "--older-than", "1h"]);
    assert!(out.contains("pruned 0 instances"), "{out}");
    let out = run(&["prune", "--older-than", "0s"]);
    assert!(out.contains("pruned 1 instance "), "{out}");
    assert_eq!(records(&mut con).concat().len(), live.len());
}

/// A running `titus-count serve` on a port of the system's choosing; killed
/// and reaped on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(redis: &RedisServer, namespace: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["--redis-url", &redis.url(), "--namespace", namespace])
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
        Serve { child, addr }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        // Generous, only so that a broken server fails the test, not hangs it.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    /// Sends `request` and reads the whole response, until the server closes.
    fn exchange(&self, request: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_a_scrape_while_slow_and_idle_clients_hold_connections() {
    let redis = filled(1, "cli_slow");
    let server = Serve::start(&redis, "cli_slow");
    // A client that sent half a request line and then nothing, and a few
    // that connected and sent nothing at all.
    let mut slow = server.connect();
    slow.write_all(b"GET /metr").unwrap();
    let idle: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();

    let scrape = server.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(
        scrape.contains("titus_count_messages_total{namespace=\"cli_slow\",stage=\"in\"} 1000"),
        "{scrape}"
    );

    // The slow connection was neither answered nor closed meanwhile: the
    // scrape did not wait for it to be given up on.
    slow.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match slow.read(&mut byte) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the slow connection was ended before its request: {other:?}"),
    }
    // And it is still served once its request is complete.
    slow.set_nonblocking(false).unwrap();
    slow.write_all(b"ics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    slow.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    drop(idle);
}

#[test]
fn serve_speaks_enough_http() {
    let redis = filled(1, "cli_http");
    let server = Serve::start(&redis, "cli_http");
    let sample = "titus_count_messages_total{namespace=\"cli_http\",stage=\"in\"} 1000";

    // Prometheus `params:` adds a query string; the absolute form names the
    // same path.
    for target in [
        "/metrics?x=1",
        "/metrics?",
        "http://127.0.0.1/metrics?a=b&c=d",
    ] {
        let response = server.exchange(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(
            response.starts_with("HTTP/1.1 200 OK"),
            "{target}: {response}"
        );
        assert!(response.contains(sample), "{target}: {response}");
    }
    let health = server.exchange(b"GET /health?verbose HTTP/1.0\n\n");
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");

    // HEAD: the headers of the GET response, its length included, no body.
    let get = server.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
    let head = server.exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    let (head_headers, head_body) = head.split_once("\r\n\r\n").unwrap();
    let get_headers = get.split_once("\r\n\r\n").unwrap().0;
    assert!(head_headers.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(head_body, "", "{head:?}");
    let length = |headers: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|n| n.parse::<usize>().unwrap())
    };
    assert!(length(head_headers).unwrap() > 0, "{head}");
    assert_eq!(length(head_headers), length(get_headers));

    for method in ["POST", "PUT", "DELETE"] {
        let response = server.exchange(
            format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert!(
            response.starts_with("HTTP/1.1 405 Method Not Allowed"),
            "{method}: {response}"
        );
        assert!(response.contains("\r\nAllow: GET, HEAD\r\n"), "{response}");
    }
    let missing = server.exchange(b"GET /nope HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");

    // Not HTTP, or not UTF-8: 400.
    for request in [
        &b"hello\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics SMTP/1.0\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX: \xc3\x28\r\n\r\n",
    ] {
        let response = server.exchange(request);
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request"),
            "{:?}: {response}",
            String::from_utf8_lossy(request)
        );
    }

    // A client streaming without a newline is cut off at the cap, not
    // buffered without end; the server serves on.
    let endless = server.exchange(&[b'a'; 16 * 1024]);
    assert!(
        endless.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{endless}"
    );
    let response = server.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(response.contains(sample), "{response}");
}

#[test]
fn serve_refuses_connections_beyond_its_limit() {
    let redis = filled(1, "cli_limit");
    let server = Serve::start(&redis, "cli_limit");
    // 64 idle connections take every slot (for the 5 s a request may take).
    let idle: Vec<TcpStream> = (0..64).map(|_| server.connect()).collect();
    let mut refused = server.connect();
    let mut response = String::new();
    refused.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{response}"
    );
    // Closing them gives the slots back (as their threads see the close).
    drop(idle);
    let mut last = String::new();
    for _ in 0..100 {
        last = server.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
        if last.starts_with("HTTP/1.1 200 OK") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no slot given back: {last}");
}

#[test]
fn history_period_and_watch_interval_have_limits() {
    let redis = filled(1, "cli_limits");
    let url = redis.url();
    for period in ["25h", "2d", "365d"] {
        let output = cli(&url, "cli_limits", &["history", "in", "--period", period]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "error: invalid --period `{period}`: at most the history retention (TITUS_COUNT_HISTORY_RETENTION), 1d; older minutes are not kept\n"
            )
        );
    }
    // A longer retention, configured as the writers have it, allows more.
    let longer = [("TITUS_COUNT_HISTORY_RETENTION", "2d")];
    support::titus_count_ok(
        &url,
        "cli_limits",
        &["history", "in", "--period", "25h"],
        &longer,
    );
    let output = cli_env(
        &url,
        "cli_limits",
        &["history", "in", "--period", "3d"],
        &longer,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("retention (TITUS_COUNT_HISTORY_RETENTION), 2d")
    );
    // The whole retention is allowed.
    let json = support::titus_count_ok(
        &url,
        "cli_limits",
        &["history", "in", "--period", "24h", "--json"],
        &[],
    );
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(len(d), sum(m['counts']['in'] for m in d))",
        &json,
    );
    assert_eq!(checked, "1440 1000");

    for every in ["0s", "0ms", "5ms", "0.001s"] {
        let output = cli(&url, "cli_limits", &["watch", "--every", every]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr,
            format!("error: invalid --every `{every}`: must be at least 10ms\n")
        );
        assert!(output.stdout.is_empty(), "no screen for a refused interval");
    }
}

#[test]
fn stages_named_twice_count_once() {
    let redis = filled(1, "cli_twice");
    let url = redis.url();
    let run = |args: &[&str]| support::titus_count_ok(&url, "cli_twice", args, &[]);

    let json = run(&[
        "history", "in", "in", "out", "in", "--period", "5m", "--json",
    ]);
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(len(d), sorted(d[0]['counts']), sum(m['counts']['in'] for m in d))",
        &json,
    );
    assert_eq!(checked, "5 ['in', 'out'] 1000");
    let out = run(&["history", "out", "in", "out", "--period", "5m"]);
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["minute", "(UTC)", "out", "in"],
        "{out}"
    );
    assert_eq!(out.matches("in: |").count(), 1, "{out}");
    assert_eq!(out.matches("out: |").count(), 1, "{out}");

    // First-seen order.
    let out = run(&["flow", "in", "mid", "in", "out", "mid"]);
    let stages: Vec<&str> = out
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('"'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(stages, ["in", "mid", "out"], "{out}");
    let json = run(&["flow", "in", "out", "out", "--json"]);
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print([(s['stage'], s['from_previous']) for s in d['stages']])",
        &json,
    );
    assert_eq!(checked, "[('in', None), ('out', 150)]");

    // One stage named twice is no flow.
    let output = cli(&url, "cli_twice", &["flow", "in", "in"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: flow needs two or more different stages, not only `in`\n"
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let redis = filled(1, "cli_pipe");
    let url = redis.url();
    // Far more output than a pipe holds.
    let mut hset = redis::cmd("HSET");
    hset.arg("titus:{cli_pipe}:totals");
    for i in 0..20_000 {
        hset.arg(format!("stage-{i:05}")).arg(i);
    }
    let _: () = hset.query(&mut redis.connection()).unwrap();

    // `titus-count totals | head -1`.
    let mut child = Command::new(BIN)
        .args(["--redis-url", &url, "--namespace", "cli_pipe", "totals"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["stage", "total"]
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty());

    // `titus-count ... | true`: the reader is gone before anything is written.
    for args in [
        &["instances"][..],
        &["instances", "--json"],
        &["totals", "--json"],
        &["history", "in", "--period", "5m"],
        &["flow", "in", "out"],
        &["prune", "--dry-run"],
        &["watch", "--every", "10ms"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(BIN)
            .args(["--redis-url", &url, "--namespace", "cli_pipe"])
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Any other write error is a one-line error and exit code 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = Command::new(BIN)
        .args(["--redis-url", &url, "--namespace", "cli_pipe", "instances"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write to standard output: ")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn watch_restores_the_terminal_on_an_error() {
    let mut redis = filled(1, "cli_watch_error");
    let mut watch = Command::new(BIN)
        .args([
            "--redis-url",
            &redis.url(),
            "--namespace",
            "cli_watch_error",
        ])
        .args(["watch", "--every", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Ctrl-C to quit") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    // Redis goes away under the live view.
    redis.stop();
    stdout.read_to_end(&mut seen).unwrap();
    let output = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let screen = String::from_utf8_lossy(&seen);
    assert!(screen.ends_with("\x1b[?25h\x1b[?1049l"), "{screen:?}");
}
