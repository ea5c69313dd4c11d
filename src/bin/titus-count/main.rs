//! `titus-count`: read the global counts of a namespace: totals, a live
//! view with rates, per-minute history, the flushing instances, the flow
//! between stages, and a Prometheus endpoint; and prune the records of
//! processes that are gone.

mod output;
mod serve;

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use titus_count::config::ENV_HISTORY_RETENTION;
use titus_count::{Config, Reader, Snapshot};

use output::{Out, Table, complete_line, format_time, json_string};

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
        /// How often to refresh, such as `1s` or `500ms` (at least 10ms).
        #[arg(long, default_value = "1s")]
        every: String,
    },
    /// Per-minute counts of stages over a period, as a table and a chart.
    History {
        /// The stages to show.
        #[arg(required = true)]
        stages: Vec<String>,
        /// How far back, such as `30m`, `2h` (at most the history retention, TITUS_COUNT_HISTORY_RETENTION, 24h by default).
        #[arg(long, default_value = "1h")]
        period: String,
        /// Print JSON: [{"minute", "time", "counts": {stage: count}}].
        #[arg(long)]
        json: bool,
    },
    /// The processes that flush to the namespace, and which are stale.
    Instances {
        /// Print JSON: [{"id", "host", "pid", "started_ms", "last_flush_ms", "complete_ms", "interval_ms", "seq", "pending", "quiet", "exited", "stale"}].
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

/// Why the program ends before its command is done.
enum Failure {
    /// A one-line message on standard error, and exit code 1.
    Error(String),
    /// Standard output's reader has gone (`| head -1`): nothing left to say,
    /// and exit code 0, as `ls | head` does.
    Closed,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.to_string())
    }
}

fn duration(text: &str, flag: &str) -> Result<Duration, Failure> {
    titus_count::config::parse_duration(text).map_err(|reason| {
        Failure::Error(format!(
            "invalid {flag} `{text}`: {reason} (expected a number and a unit, such as `500ms`, `5s`, `1m` or `1h`)"
        ))
    })
}

/// The shortest `--every`: below it `watch` would only load Redis and the
/// terminal (and `0s` would spin).
const MIN_EVERY: Duration = Duration::from_millis(10);

fn every(text: &str) -> Result<Duration, Failure> {
    let every = duration(text, "--every")?;
    if every < MIN_EVERY {
        return Err(Failure::Error(format!(
            "invalid --every `{text}`: must be at least 10ms"
        )));
    }
    Ok(every)
}

/// `--period`, at most the history retention: older minutes are gone, and
/// each minute is one more HMGET in the one transaction that reads them.
fn check_period(text: &str, period: Duration, retention: Duration) -> Result<(), Failure> {
    if period > retention {
        return Err(Failure::Error(format!(
            "invalid --period `{text}`: at most the history retention ({ENV_HISTORY_RETENTION}), {}; older minutes are not kept",
            human_duration(retention)
        )));
    }
    Ok(())
}

/// A duration as the shortest of `90s`, `15m`, `24h`, `7d` that is exact.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The stages once each, in the order first named: `history in in` is one
/// column, not two.
fn distinct(stages: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    stages
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Out::new();
    match run(cli, &mut out).and_then(|()| out.flush()) {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            // What was written before the error comes first.
            let _ = out.flush();
            // Not eprintln!, which panics if standard error is closed too.
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, out: &mut Out) -> Result<(), Failure> {
    // The environment's other settings (TLS files) apply; the flags, which
    // clap already filled from the environment, override the rest.
    let config = Config::from_env()
        .redis_url(cli.redis_url.clone())
        .namespace(cli.namespace.clone());
    match cli.command {
        Command::Totals { json } => totals(&config, out, json),
        Command::Watch { every: text } => watch(&config, out, every(&text)?),
        Command::History {
            stages,
            period: text,
            json,
        } => history(&config, out, &distinct(stages), &text, json),
        Command::Instances { json } => instances(&config, out, json),
        Command::Prune {
            older_than,
            dry_run,
        } => prune(
            &config,
            out,
            duration(&older_than, "--older-than")?,
            dry_run,
        ),
        Command::Flow { stages, json } => {
            let stages = distinct(stages);
            if stages.len() < 2 {
                return Err(Failure::Error(format!(
                    "flow needs two or more different stages, not only `{}`",
                    stages[0]
                )));
            }
            flow(&config, out, &stages, json)
        }
        Command::Serve { listen, cache } => {
            serve::serve(&config, listen, duration(&cache, "--cache")?)
        }
    }
}

/// Reads a snapshot, and refuses a namespace nothing has flushed to.
fn snapshot(reader: &mut Reader) -> Result<Snapshot, Failure> {
    let snapshot = reader.snapshot()?;
    if snapshot.totals.is_empty() && snapshot.instances.is_empty() {
        return Err(Failure::Error(format!(
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
    Err(Failure::Error(format!(
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

fn totals(config: &Config, out: &mut Out, json: bool) -> Result<(), Failure> {
    let snapshot = snapshot(&mut Reader::connect(config)?)?;
    if json {
        let totals: Vec<String> = snapshot
            .totals
            .iter()
            .map(|(stage, n)| format!("{}:{n}", json_string(stage)))
            .collect();
        return out.line(format_args!(
            "{{\"namespace\":{},\"complete_up_to_ms\":{},\"settled\":{},\"totals\":{{{}}}}}",
            json_string(&snapshot.namespace),
            ms(snapshot.completeness.complete_up_to),
            snapshot.completeness.settled,
            totals.join(",")
        ));
    }
    let mut table = Table::new(&["stage", "total"]);
    for (stage, n) in &snapshot.totals {
        table.row(vec![stage.clone(), n.to_string()]);
    }
    out.text(&table)?;
    out.line(complete_line(&snapshot))
}

/// The alternate screen with the cursor hidden, for `watch`; both restored
/// when it is dropped, so on Ctrl-C, on an error and on a panic alike.
struct Screen<'a> {
    out: &'a mut Out,
}

impl<'a> Screen<'a> {
    fn enter(out: &'a mut Out) -> Result<Self, Failure> {
        // The guard first: even a failed enter is undone.
        let screen = Screen { out };
        screen.out.text("\x1b[?1049h\x1b[?25l")?;
        Ok(screen)
    }
}

impl Drop for Screen<'_> {
    fn drop(&mut self) {
        // Best effort: if standard output is gone, there is no terminal to
        // restore, and the failure that brought us here is the one to report.
        let _ = self.out.text("\x1b[?25h\x1b[?1049l");
        let _ = self.out.flush();
    }
}

fn watch(config: &Config, out: &mut Out, every: Duration) -> Result<(), Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut reader = Reader::connect(config)?;
    snapshot(&mut reader)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    let screen = Screen::enter(out)?;
    while !stop.load(Ordering::SeqCst) {
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
        screen.out.text(format_args!(
            "\x1b[H\x1b[2Jtitus-count: namespace `{}`, {}  (Ctrl-C to quit)\n\n{table}\n{}\n",
            snapshot.namespace,
            format_time(SystemTime::now()),
            complete_line(&snapshot)
        ))?;
        screen.out.flush()?;
        // Short sleeps, so Ctrl-C is answered within 50 ms.
        let until = std::time::Instant::now() + every;
        while !stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
    Ok(())
}

fn history(
    config: &Config,
    out: &mut Out,
    stages: &[String],
    period_text: &str,
    json: bool,
) -> Result<(), Failure> {
    let period = duration(period_text, "--period")?;
    let mut reader = Reader::connect(config)?;
    check_period(period_text, period, reader.history_retention())?;
    let snapshot = snapshot(&mut reader)?;
    check_stages(&snapshot, stages)?;
    let now = titus_count::epoch_minute(SystemTime::now());
    let minutes = (period.as_secs() / 60).max(1);
    let history = reader.history(stages, (now + 1).saturating_sub(minutes), now)?;
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
        return out.line(format_args!("[{}]", rows.join(",")));
    }
    let mut header = vec!["minute (UTC)"];
    header.extend(stages.iter().map(String::as_str));
    let mut table = Table::new(&header);
    for m in &history {
        let mut row = vec![format_time(minute_time(m.minute))[..16].to_owned()];
        row.extend(stages.iter().map(|s| m.counts[s].to_string()));
        table.row(row);
    }
    out.text(&table)?;
    out.line("")?;
    for stage in stages {
        let values: Vec<u64> = history.iter().map(|m| m.counts[stage]).collect();
        out.line(output::chart(stage, &values))?;
    }
    out.line(complete_line(&snapshot))
}

fn minute_time(minute: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(minute * 60)
}

fn prune(
    config: &Config,
    out: &mut Out,
    older_than: Duration,
    dry_run: bool,
) -> Result<(), Failure> {
    let mut reader = Reader::connect(config)?;
    let gone = if dry_run {
        reader.prunable_instances(older_than)?
    } else {
        reader.prune_instances(older_than)?
    };
    for i in &gone {
        out.line(format_args!(
            "{} {} pid {}, last flush {}",
            i.id,
            i.host,
            i.pid,
            format_time(i.last_flush)
        ))?;
    }
    let verb = if dry_run { "would prune" } else { "pruned" };
    out.line(format_args!(
        "{verb} {} instance{} not heard from for {older_than:?}",
        gone.len(),
        if gone.len() == 1 { "" } else { "s" }
    ))
}

fn instances(config: &Config, out: &mut Out, json: bool) -> Result<(), Failure> {
    let snapshot = snapshot(&mut Reader::connect(config)?)?;
    if json {
        let rows: Vec<String> = snapshot
            .instances
            .iter()
            .map(|i| {
                format!(
                    "{{\"id\":{},\"host\":{},\"pid\":{},\"started_ms\":{},\"last_flush_ms\":{},\"complete_ms\":{},\"interval_ms\":{},\"seq\":{},\"pending\":{},\"quiet\":{},\"exited\":{},\"stale\":{}}}",
                    json_string(&i.id),
                    json_string(&i.host),
                    i.pid,
                    ms(Some(i.started)),
                    ms(Some(i.last_flush)),
                    ms(Some(i.complete)),
                    i.interval.as_millis(),
                    i.seq,
                    i.pending,
                    i.quiet,
                    i.exited,
                    i.stale
                )
            })
            .collect();
        return out.line(format_args!("[{}]", rows.join(",")));
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
            instance_state(i).to_owned(),
        ]);
    }
    out.text(&table)?;
    out.line(complete_line(&snapshot))
}

/// `live`, `stale` or `exited`.
fn instance_state(i: &titus_count::Instance) -> &'static str {
    if i.exited {
        "exited"
    } else if i.stale {
        "stale"
    } else {
        "live"
    }
}

fn flow(config: &Config, out: &mut Out, stages: &[String], json: bool) -> Result<(), Failure> {
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
        return out.line(format_args!(
            "{{\"stages\":[{}],\"complete_up_to_ms\":{},\"settled\":{}}}",
            rows.join(","),
            ms(snapshot.completeness.complete_up_to),
            snapshot.completeness.settled
        ));
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
    out.text(&table)?;
    out.line(
        "\"not past it\": counted at the previous stage, not (yet) at this one: in flight, filtered or lost.",
    )?;
    out.line(complete_line(&snapshot))
}
