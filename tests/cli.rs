//! The `titus-count` command against a real redis-server filled by real
//! counting processes: totals, JSON, instances, history, flow, the
//! Prometheus endpoint (checked with the reference Python parser), the live
//! view's exit on Ctrl-C, and bad input.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};

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
    Command::new(BIN)
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
    assert!(out.contains("Settled: every live instance (2)"), "{out}");

    let json = ok(&cli(&redis.url(), "cli_totals", &["totals", "--json"]));
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(d['namespace'], d['totals']['in'], d['totals']['mid'], d['totals']['out'], d['settled'], d['complete_up_to_ms'] > 0)",
        &json,
    );
    assert_eq!(checked, "cli_totals 2000 1800 1700 True True");
}

#[test]
fn instances_history_and_flow() {
    let redis = filled(2, "cli_views");
    let url = redis.url();
    let out = ok(&cli(&url, "cli_views", &["instances"]));
    assert_eq!(
        out.lines().filter(|l| l.ends_with("live")).count(),
        2,
        "{out}"
    );
    let json = ok(&cli(&url, "cli_views", &["instances", "--json"]));
    let checked = python(
        "import json,sys; d=json.load(sys.stdin); print(len(d), all(not i['stale'] and not i['pending'] and i['pid'] > 0 for i in d))",
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
            "live 1",
            "stale 0",
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
}
