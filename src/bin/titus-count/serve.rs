//! `titus-count serve`: the totals in the Prometheus text exposition format
//! at `/metrics`, a health check at `/health`. Reads Redis at most once per
//! cache period, however often it is scraped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime};

use titus_count::{Config, Reader, Snapshot};

use crate::Failure;

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition of one snapshot.
pub fn exposition(snapshot: &Snapshot) -> String {
    let ns = label(&snapshot.namespace);
    let mut out = String::new();
    out.push_str("# HELP titus_count_messages_total Messages counted at each stage, summed over every process of the namespace.\n");
    out.push_str("# TYPE titus_count_messages_total counter\n");
    for (stage, n) in &snapshot.totals {
        out.push_str(&format!(
            "titus_count_messages_total{{namespace=\"{ns}\",stage=\"{}\"}} {n}\n",
            label(stage)
        ));
    }
    let c = &snapshot.completeness;
    if let Some(t) = c.complete_up_to {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out.push_str("# HELP titus_count_complete_up_to_seconds Every count made before this Unix time is in the totals.\n");
        out.push_str("# TYPE titus_count_complete_up_to_seconds gauge\n");
        out.push_str(&format!(
            "titus_count_complete_up_to_seconds{{namespace=\"{ns}\"}} {secs:.3}\n"
        ));
    }
    out.push_str(
        "# HELP titus_count_settled 1 if every live instance has flushed with nothing pending.\n",
    );
    out.push_str("# TYPE titus_count_settled gauge\n");
    out.push_str(&format!(
        "titus_count_settled{{namespace=\"{ns}\"}} {}\n",
        u8::from(c.settled)
    ));
    out.push_str(
        "# HELP titus_count_instances Processes flushing to the namespace, live or stale.\n",
    );
    out.push_str("# TYPE titus_count_instances gauge\n");
    out.push_str(&format!(
        "titus_count_instances{{namespace=\"{ns}\",state=\"live\"}} {}\n",
        c.live
    ));
    out.push_str(&format!(
        "titus_count_instances{{namespace=\"{ns}\",state=\"stale\"}} {}\n",
        c.stale
    ));
    out
}

struct Cache {
    config: Config,
    reader: Option<Reader>,
    ttl: Duration,
    last: Option<(Instant, Result<String, String>)>,
}

impl Cache {
    fn get(&mut self) -> Result<String, String> {
        if let Some((at, result)) = &self.last
            && at.elapsed() < self.ttl
        {
            return result.clone();
        }
        let result = self.read();
        if result.is_err() {
            // Reconnect next time.
            self.reader = None;
        }
        self.last = Some((Instant::now(), result.clone()));
        result
    }

    fn read(&mut self) -> Result<String, String> {
        if self.reader.is_none() {
            self.reader = Some(Reader::connect(&self.config).map_err(|e| e.to_string())?);
        }
        let reader = self.reader.as_mut().expect("connected above");
        reader
            .snapshot()
            .map(|s| exposition(&s))
            .map_err(|e| e.to_string())
    }
}

pub fn serve(config: &Config, listen: SocketAddr, ttl: Duration) -> Result<(), Failure> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| Failure(format!("cannot listen on {listen}: {e}")))?;
    let mut cache = Cache {
        config: config.clone(),
        reader: None,
        ttl,
        last: None,
    };
    // Say where we listen (the port may have been chosen by the system).
    println!(
        "serving /metrics and /health on http://{}",
        listener.local_addr()?
    );
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = handle(stream, &mut cache);
    }
    Ok(())
}

fn handle(mut stream: TcpStream, cache: &mut Cache) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => match cache.get() {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        "/health" => match cache.get() {
            Ok(_) => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_owned()),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /metrics or /health\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
