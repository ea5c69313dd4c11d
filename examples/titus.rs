//! Titus in miniature: messages come in, pass through stages on several
//! threads and go out; every stage is a counted handler. Several copies run
//! as separate processes and add into the same totals in Redis, which are
//! then read back and checked against what the processes counted.
//!
//! ```text
//! TITUS_COUNT_REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example titus -- --processes 3
//! ```

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};
use titus_count::{Config, count, counted};

/// One message flowing through Titus.
struct Message {
    id: u64,
    body: String,
}

/// A message after parsing.
struct Parsed {
    id: u64,
    words: usize,
}

#[counted("ingest")]
fn ingest(id: u64) -> Message {
    Message {
        id,
        body: format!("message {id} from the outside world"),
    }
}

#[counted("parse")]
fn parse(message: Message) -> Parsed {
    Parsed {
        id: message.id,
        words: message.body.split_whitespace().count(),
    }
}

/// Adds routing information; keeps a little state, so it is a method.
struct Enricher {
    routed: u64,
}

impl Enricher {
    #[counted("enrich")]
    fn enrich(&mut self, parsed: Parsed) -> Option<Parsed> {
        self.routed += 1;
        // Every seventh message is filtered out here.
        if parsed.id.is_multiple_of(7) {
            count!("filter.dropped");
            None
        } else {
            Some(parsed)
        }
    }
}

/// The exit of the pipeline.
struct Sink {
    words: usize,
}

impl Sink {
    #[counted("emit")]
    fn emit(&mut self, parsed: Parsed) {
        self.words += parsed.words;
    }
}

fn run_pipeline(messages: u64) {
    const INGESTERS: u64 = 2;
    const WORKERS: usize = 3;
    let (to_workers, from_ingest): (Sender<Message>, Receiver<Message>) = bounded(1024);
    let (to_sink, from_workers): (Sender<Parsed>, Receiver<Parsed>) = bounded(1024);

    let ingesters: Vec<_> = (0..INGESTERS)
        .map(|i| {
            let out = to_workers.clone();
            thread::spawn(move || {
                for id in (i..messages).step_by(INGESTERS as usize) {
                    out.send(ingest(id)).expect("workers are running");
                }
            })
        })
        .collect();
    drop(to_workers);

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let input = from_ingest.clone();
            let out = to_sink.clone();
            thread::spawn(move || {
                let mut enricher = Enricher { routed: 0 };
                for message in input {
                    if let Some(parsed) = enricher.enrich(parse(message)) {
                        out.send(parsed).expect("the sink is running");
                    }
                }
            })
        })
        .collect();
    drop(to_sink);

    let sink = thread::spawn(move || {
        let mut sink = Sink { words: 0 };
        for parsed in from_workers {
            sink.emit(parsed);
        }
        sink.words
    });

    for t in ingesters.into_iter().chain(workers) {
        t.join().expect("pipeline thread");
    }
    sink.join().expect("sink thread");
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

/// One copy of Titus: run the pipeline, deliver the counts, report them.
fn worker(messages: u64) {
    let guard = titus_count::init();
    run_pipeline(messages);
    // Dropping the guard waits until Redis has acknowledged every count.
    drop(guard);
    for (stage, n) in titus_count::local_totals() {
        println!("{stage} {n}");
    }
}

fn main() {
    let messages = arg("--messages", 200_000);
    if std::env::args().any(|a| a == "--worker") {
        return worker(messages);
    }
    let processes = arg("--processes", 3);
    let config = Config::from_env();
    let before = titus_count::read_totals(&config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });

    println!("running {processes} Titus processes, {messages} messages each");
    let exe = std::env::current_exe().expect("own executable");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .args(["--worker", "--messages", &messages.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a Titus process")
        })
        .collect();
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for child in children {
        let output = child.wait_with_output().expect("Titus process");
        assert!(output.status.success(), "a Titus process failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let (stage, n) = line.split_once(' ').expect("`stage count` lines");
            *counted.entry(stage.to_owned()).or_default() += n.parse::<u64>().expect("a count");
        }
    }

    let after = titus_count::read_totals(&config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    println!();
    println!("{:<16} {:>14} {:>14}", "stage", "counted", "in Redis");
    let mut exact = true;
    for (stage, &n) in &counted {
        let in_redis = after
            .get(stage)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(stage).copied().unwrap_or(0));
        let ok = if in_redis == n { "exact" } else { "MISMATCH" };
        exact &= in_redis == n;
        println!("{stage:<16} {n:>14} {in_redis:>14}  {ok}");
    }
    let dropped = messages.div_ceil(7) * processes;
    let expected = [
        ("ingest", messages * processes),
        ("parse", messages * processes),
        ("enrich", messages * processes),
        ("filter.dropped", dropped),
        ("emit", messages * processes - dropped),
    ];
    for (stage, n) in expected {
        exact &= counted.get(stage) == Some(&n);
    }
    println!();
    if exact {
        println!("Redis holds exactly what the {processes} processes counted.");
    } else {
        eprintln!("Totals differ from the messages processed.");
        std::process::exit(1);
    }
}
