//! `titus-count`: read the global counts of a namespace: totals, a live
//! view with rates, per-minute history, the flushing instances, the flow
//! between stages, and a Prometheus endpoint; and prune the records of
//! processes that are gone.

mod output;
mod serve;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use titus_count::{Config, Reader, Snapshot};

use output::{Table, complete_line, format_time, json_string};

/// Reads the counts titus-count processes flush to Redis.
#[derive(Parser, Debug)]
#[command(name = "titus-count", version, about, long_about = None)]
struct Cli {
    /// The Redis server, as for the counting processes.
    #[arg(
        long,
        global = true,
        env = "TITUS_COUNT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// The namespace to read (the `NS` of `titus:{NS}:totals`).
    #[arg(
        long,
        global = true,
        env = "TITUS_COUNT_NAMESPACE",
        default_value = "titus"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every stage and its all-time count.
    Totals {
        /// Print JSON: {"namespace", "complete_up_to_ms", "settled", "totals": {stage: count}}.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the totals and their rates, refreshed until Ctrl-C.
    Watch {
        /// How often to refresh, such as `1s` or `500ms`.
        #[arg(long, default_value = "1s")]
        every: String,
    },
    /// Per-minute counts of stages over a period, as a table and a chart.
    History {
        /// The stages to show.
        #[arg(required = true)]
        stages: Vec<String>,
        /// How far back, such as `30m`, `2h` (at most the history retention).
        #[arg(long, default_value = "1h")]
        period: String,
        /// Print JSON: [{"minute", "time", "counts": {stage: count}}].
        #[arg(long)]
        json: bool,
    },
    /// The processes that flush to the namespace, and which are stale.
    Instances {
        /// Print JSON: [{"id", "host", "pid", "started_ms", "last_flush_ms", "complete_ms", "interval_ms", "seq", "pending", "stale"}].
        #[arg(long)]
        json: bool,
    },
    /// Deletes the records of stale processes not heard from for a while
    /// (until then they are listed as stale). Counts are never touched.
    Prune {
        /// How long a stale process must have been silent, such as `1h`,
        /// `24h` or `7d`.
        #[arg(long, default_value = "24h")]
        older_than: String,
        /// List what would be deleted, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stages in pipeline order, with what is between each and the next
    /// (in flight, filtered or lost).
    Flow {
        /// Two or more stages, in the order messages pass them.
        #[arg(required = true, num_args = 2..)]
        stages: Vec<String>,
        /// Print JSON: {"stages": [{"stage", "count", "from_previous"}], ...}.
        #[arg(long)]
        json: bool,
    },
    /// Serve the totals in the Prometheus text format at /metrics, and a
    /// health check at /health.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// How long a read from Redis is reused across scrapes.
        #[arg(long, default_value = "1s")]
        cache: String,
    },
}

/// A failure to report: the message, and the process exits with 1.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn duration(text: &str, flag: &str) -> Result<Duration, Failure> {
    titus_count::config::parse_duration(text).map_err(|reason| {
        Failure(format!(
            "invalid {flag} `{text}`: {reason} (expected a number and a unit, such as `500ms`, `5s`, `1m` or `1h`)"
        ))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // The environment's other settings (TLS files) apply; the flags, which
    // clap already filled from the environment, override the rest.
    let config = Config::from_env()
        .redis_url(cli.redis_url.clone())
        .namespace(cli.namespace.clone());
    match cli.command {
        Command::Totals { json } => totals(&config, json),
        Command::Watch { every } => watch(&config, duration(&every, "--every")?),
        Command::History {
            stages,
            period,
            json,
        } => history(&config, &stages, duration(&period, "--period")?, json),
        Command::Instances { json } => instances(&config, json),
        Command::Prune {
            older_than,
            dry_run,
        } => prune(&config, duration(&older_than, "--older-than")?, dry_run),
        Command::Flow { stages, json } => flow(&config, &stages, json),
        Command::Serve { listen, cache } => {
            serve::serve(&config, listen, duration(&cache, "--cache")?)
        }
    }
}

/// Reads a snapshot, and refuses a namespace nothing has flushed to.
fn snapshot(reader: &mut Reader) -> Result<Snapshot, Failure> {
    let snapshot = reader.snapshot()?;
    if snapshot.totals.is_empty() && snapshot.instances.is_empty() {
        return Err(Failure(format!(
            "namespace `{}` has no counts in Redis (no key titus:{{{}}}:totals, or titus:{{{}:K}}:totals with TITUS_COUNT_SHARDS); check --namespace, --redis-url and TITUS_COUNT_SHARDS",
            snapshot.namespace, snapshot.namespace, snapshot.namespace
        )));
    }
    Ok(snapshot)
}

fn check_stages(snapshot: &Snapshot, stages: &[String]) -> Result<(), Failure> {
    let unknown: Vec<&str> = stages
        .iter()
        .filter(|s| !snapshot.totals.contains_key(*s))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = snapshot.totals.keys().map(String::as_str).collect();
    Err(Failure(format!(
        "unknown stage{} {} in namespace `{}`; its stages are: {}",
        if unknown.len() > 1 { "s" } else { "" },
        unknown
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", "),
        snapshot.namespace,
        known.join(", ")
    )))
}

fn ms(time: Option<SystemTime>) -> String {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or("null".to_owned(), |d| d.as_millis().to_string())
}

fn totals(config: &Config, json: bool) -> Result<(), Failure> {
    let snapshot = snapshot(&mut Reader::connect(config)?)?;
    if json {
        let totals: Vec<String> = snapshot
            .totals
            .iter()
            .map(|(stage, n)| format!("{}:{n}", json_string(stage)))
            .collect();
        println!(
            "{{\"namespace\":{},\"complete_up_to_ms\":{},\"settled\":{},\"totals\":{{{}}}}}",
            json_string(&snapshot.namespace),
            ms(snapshot.completeness.complete_up_to),
            snapshot.completeness.settled,
            totals.join(",")
        );
        return Ok(());
    }
    let mut table = Table::new(&["stage", "total"]);
    for (stage, n) in &snapshot.totals {
        table.row(vec![stage.clone(), n.to_string()]);
    }
    print!("{table}");
    println!("{}", complete_line(&snapshot));
    Ok(())
}

fn watch(config: &Config, every: Duration) -> Result<(), Failure> {
    let mut reader = Reader::connect(config)?;
    snapshot(&mut reader)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))?;
    // Alternate screen, cursor hidden; both restored on the way out.
    print!("\x1b[?1049h\x1b[?25l");
    let result = (|| -> Result<(), Failure> {
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let snapshot = reader.snapshot()?;
            let stages: Vec<String> = snapshot.totals.keys().cloned().collect();
            let now = titus_count::epoch_minute(SystemTime::now());
            // Complete minutes only: the current one is still filling.
            let history = reader.history(&stages, now.saturating_sub(5), now.saturating_sub(1))?;
            let mut table = Table::new(&["stage", "total", "per s (1 min)", "per s (5 min)"]);
            for stage in &stages {
                let last = history.last().map_or(0, |m| m.counts[stage]);
                let five: u64 = history.iter().map(|m| m.counts[stage]).sum();
                table.row(vec![
                    stage.clone(),
                    snapshot.totals[stage].to_string(),
                    format!("{:.1}", last as f64 / 60.0),
                    format!("{:.1}", five as f64 / 300.0),
                ]);
            }
            print!(
                "\x1b[H\x1b[2Jtitus-count: namespace `{}`, {}  (Ctrl-C to quit)\n\n{table}\n{}\n",
                snapshot.namespace,
                format_time(SystemTime::now()),
                complete_line(&snapshot)
            );
            use std::io::Write;
            std::io::stdout().flush()?;
            let until = std::time::Instant::now() + every;
            while std::time::Instant::now() < until
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    })();
    print!("\x1b[?25h\x1b[?1049l");
    result
}

fn history(
    config: &Config,
    stages: &[String],
    period: Duration,
    json: bool,
) -> Result<(), Failure> {
    let mut reader = Reader::connect(config)?;
    let snapshot = snapshot(&mut reader)?;
    check_stages(&snapshot, stages)?;
    let now = titus_count::epoch_minute(SystemTime::now());
    let minutes = (period.as_secs() / 60).max(1);
    let history = reader.history(stages, now + 1 - minutes, now)?;
    if json {
        let rows: Vec<String> = history
            .iter()
            .map(|m| {
                let counts: Vec<String> = m
                    .counts
                    .iter()
                    .map(|(s, n)| format!("{}:{n}", json_string(s)))
                    .collect();
                format!(
                    "{{\"minute\":{},\"time\":{},\"counts\":{{{}}}}}",
                    m.minute,
                    json_string(&format_time(minute_time(m.minute))),
                    counts.join(",")
                )
            })
            .collect();
        println!("[{}]", rows.join(","));
        return Ok(());
    }
    let mut header = vec!["minute (UTC)"];
    header.extend(stages.iter().map(String::as_str));
    let mut table = Table::new(&header);
    for m in &history {
        let mut row = vec![format_time(minute_time(m.minute))[..16].to_owned()];
        row.extend(stages.iter().map(|s| m.counts[s].to_string()));
        table.row(row);
    }
    print!("{table}");
    println!();
    for stage in stages {
        let values: Vec<u64> = history.iter().map(|m| m.counts[stage]).collect();
        println!("{}", output::chart(stage, &values));
    }
    println!("{}", complete_line(&snapshot));
    Ok(())
}

fn minute_time(minute: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60)
}

fn prune(config: &Config, older_than: Duration, dry_run: bool) -> Result<(), Failure> {
    let mut reader = Reader::connect(config)?;
    let gone = if dry_run {
        reader.prunable_instances(older_than)?
    } else {
        reader.prune_instances(older_than)?
    };
    for i in &gone {
        println!(
            "{} {} pid {}, last flush {}",
            i.id,
            i.host,
            i.pid,
            format_time(i.last_flush)
        );
    }
    let verb = if dry_run { "would prune" } else { "pruned" };
    println!(
        "{verb} {} instance{} not heard from for {older_than:?}",
        gone.len(),
        if gone.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn instances(config: &Config, json: bool) -> Result<(), Failure> {
    let snapshot = snapshot(&mut Reader::connect(config)?)?;
    if json {
        let rows: Vec<String> = snapshot
            .instances
            .iter()
            .map(|i| {
                format!(
                    "{{\"id\":{},\"host\":{},\"pid\":{},\"started_ms\":{},\"last_flush_ms\":{},\"complete_ms\":{},\"interval_ms\":{},\"seq\":{},\"pending\":{},\"stale\":{}}}",
                    json_string(&i.id),
                    json_string(&i.host),
                    i.pid,
                    ms(Some(i.started)),
                    ms(Some(i.last_flush)),
                    ms(Some(i.complete)),
                    i.interval.as_millis(),
                    i.seq,
                    i.pending,
                    i.stale
                )
            })
            .collect();
        println!("[{}]", rows.join(","));
        return Ok(());
    }
    let mut table = Table::new(&[
        "instance",
        "host",
        "pid",
        "started",
        "last flush",
        "pending",
        "state",
    ]);
    for i in &snapshot.instances {
        table.row(vec![
            i.id.clone(),
            i.host.clone(),
            i.pid.to_string(),
            format_time(i.started),
            format_time(i.last_flush),
            if i.pending { "yes" } else { "no" }.to_owned(),
            if i.stale { "stale" } else { "live" }.to_owned(),
        ]);
    }
    print!("{table}");
    println!("{}", complete_line(&snapshot));
    Ok(())
}

fn flow(config: &Config, stages: &[String], json: bool) -> Result<(), Failure> {
    let snapshot = snapshot(&mut Reader::connect(config)?)?;
    check_stages(&snapshot, stages)?;
    let counts: Vec<u64> = stages.iter().map(|s| snapshot.totals[s]).collect();
    if json {
        let rows: Vec<String> = stages
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (s, n))| {
                let diff = if i == 0 {
                    "null".to_owned()
                } else {
                    (counts[i - 1] as i128 - *n as i128).to_string()
                };
                format!(
                    "{{\"stage\":{},\"count\":{n},\"from_previous\":{diff}}}",
                    json_string(s)
                )
            })
            .collect();
        println!(
            "{{\"stages\":[{}],\"complete_up_to_ms\":{},\"settled\":{}}}",
            rows.join(","),
            ms(snapshot.completeness.complete_up_to),
            snapshot.completeness.settled
        );
        return Ok(());
    }
    let mut table = Table::new(&["stage", "count", "not past it", "of previous"]);
    for (i, (stage, n)) in stages.iter().zip(&counts).enumerate() {
        let (gap, share) = if i == 0 {
            (String::new(), String::new())
        } else {
            let prev = counts[i - 1];
            let share = if prev == 0 {
                0.0
            } else {
                *n as f64 / prev as f64 * 100.0
            };
            (
                (prev as i128 - *n as i128).to_string(),
                format!("{share:.2}%"),
            )
        };
        table.row(vec![stage.clone(), n.to_string(), gap, share]);
    }
    print!("{table}");
    println!(
        "\"not past it\": counted at the previous stage, not (yet) at this one: in flight, filtered or lost."
    );
    println!("{}", complete_line(&snapshot));
    Ok(())
}
