//! `titus-count serve`: the totals in the Prometheus text exposition format
//! at `/metrics`, a health check at `/health`. Reads Redis at most once per
//! cache period, however often it is scraped.
//!
//! Each connection has a thread of its own (at most [`MAX_CONNECTIONS`]), a
//! deadline for its whole request and a cap on its size, so a slow, idle or
//! endless client cannot hold up a scrape.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
        "# HELP titus_count_settled 1 if the totals are final for now: every live instance counted nothing in its last interval.\n",
    );
    out.push_str("# TYPE titus_count_settled gauge\n");
    out.push_str(&format!(
        "titus_count_settled{{namespace=\"{ns}\"}} {}\n",
        u8::from(c.settled)
    ));
    out.push_str(
        "# HELP titus_count_instances Processes flushing to the namespace: live, stale or exited, and records that could not be read.\n",
    );
    out.push_str("# TYPE titus_count_instances gauge\n");
    for (state, n) in [
        ("live", c.live),
        ("stale", c.stale),
        ("exited", c.exited),
        ("unreadable", c.unreadable),
    ] {
        out.push_str(&format!(
            "titus_count_instances{{namespace=\"{ns}\",state=\"{state}\"}} {n}\n"
        ));
    }
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

/// Connections served at once; one more is answered 503 and closed, so idle
/// clients cannot pile up threads.
const MAX_CONNECTIONS: usize = 64;
/// How long a client has for its whole request line and headers: a deadline,
/// not a timeout per read, so a byte every few seconds does not keep it open.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing a response may take, for a client that does not read.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);
/// The request line and headers together, at most (a scrape sends a few
/// hundred bytes).
const MAX_HEAD: u64 = 8 * 1024;
/// After the response, what of the client's data is read and dropped before
/// closing (at most this long and this much), so that unread data does not
/// make the close a reset that loses the response.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

pub fn serve(config: &Config, listen: SocketAddr, ttl: Duration) -> Result<(), Failure> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| Failure::Error(format!("cannot listen on {listen}: {e}")))?;
    let cache = Arc::new(Mutex::new(Cache {
        config: config.clone(),
        reader: None,
        ttl,
        last: None,
    }));
    // Say where we listen (the port may have been chosen by the system).
    // Best effort: a server with nobody reading its output serves on.
    let mut stdout = io::stdout();
    let _ = writeln!(
        stdout,
        "serving /metrics and /health on http://{}",
        listener.local_addr()?
    )
    .and_then(|()| stdout.flush());
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off, not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            refuse(stream);
            continue;
        }
        let slot = Slot(active.clone());
        let cache = cache.clone();
        // If the thread cannot start, the closure is dropped: the stream is
        // closed and the slot given back.
        let _ = std::thread::Builder::new()
            .name("titus-count-http".to_owned())
            .spawn(move || {
                let _slot = slot;
                handle(stream, &cache);
            });
    }
    Ok(())
}

/// One of the [`MAX_CONNECTIONS`], given back when dropped, even by a panic.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a connection beyond the limit without reading it: the response
/// fits the socket's send buffer, and the accept loop must never block.
fn refuse(stream: TcpStream) {
    if stream.set_nonblocking(true).is_ok() {
        let response = Response::text(
            "503 Service Unavailable",
            "too many connections\n".to_owned(),
        );
        let _ = (&stream).write_all(&response.bytes(false));
        // Close our side, then drop what the client already sent: closing
        // with unread data would reset the connection, and the client
        // could lose the 503 with it.
        let _ = stream.shutdown(Shutdown::Write);
        let mut sink = [0u8; 8192];
        for _ in 0..8 {
            if !matches!((&stream).read(&mut sink), Ok(1..)) {
                break;
            }
        }
    }
}

/// What a response says.
struct Response {
    status: &'static str,
    content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: String) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: "",
            body,
        }
    }

    /// The bytes on the wire; a response to `HEAD` has the headers of the
    /// `GET` response, its length included, and no body.
    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Why no request head was read.
enum HeadError {
    /// Closed before sending anything: nothing to answer.
    Closed,
    /// The deadline passed first.
    TimedOut,
    /// More than [`MAX_HEAD`] bytes without the blank line ending the head.
    TooLarge,
    /// Closed in the middle of the head.
    Incomplete,
    /// The connection failed.
    Io,
}

fn handle(stream: TcpStream, cache: &Mutex<Cache>) {
    let (response, head_only) = match read_head(&stream, Instant::now() + REQUEST_DEADLINE) {
        Ok(head) => respond(&head, cache),
        Err(HeadError::Closed | HeadError::Io) => return,
        Err(HeadError::TimedOut) => {
            // A client this slow gets its answer, but no lingering.
            let response = Response::text("408 Request Timeout", "request timeout\n".to_owned());
            let _ = write_by(&stream, &response.bytes(false), Instant::now() + LINGER);
            return;
        }
        Err(HeadError::TooLarge) => (
            Response::text(
                "431 Request Header Fields Too Large",
                format!("the request line and headers are limited to {MAX_HEAD} bytes\n"),
            ),
            false,
        ),
        Err(HeadError::Incomplete) => (
            Response::text("400 Bad Request", "incomplete request\n".to_owned()),
            false,
        ),
    };
    if write_by(
        &stream,
        &response.bytes(head_only),
        Instant::now() + RESPONSE_DEADLINE,
    )
    .is_ok()
    {
        linger(&stream);
    }
}

/// Reads the request line and headers, through the blank line that ends
/// them, within `deadline` and [`MAX_HEAD`] bytes.
fn read_head(stream: &TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut limited = Read::take(stream, MAX_HEAD);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Io)?;
        match limited.read(&mut buf) {
            Ok(0) if limited.limit() == 0 => return Err(HeadError::TooLarge),
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Incomplete),
            Ok(n) => {
                // The end may straddle two reads.
                let from = head.len().saturating_sub(2);
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head_end(&head[from..]) {
                    head.truncate(from + end);
                    return Ok(head);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::TimedOut);
            }
            Err(_) => return Err(HeadError::Io),
        }
    }
}

/// Where the head ends: just after the first empty line (CRLF or bare LF).
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        if bytes[i] != b'\n' {
            return None;
        }
        match &bytes[i + 1..] {
            [b'\n', ..] => Some(i + 2),
            [b'\r', b'\n', ..] => Some(i + 3),
            _ => None,
        }
    })
}

/// The response to a request head, and whether it is to `HEAD`.
fn respond(head: &[u8], cache: &Mutex<Cache>) -> (Response, bool) {
    let bad = |why: &str| (Response::text("400 Bad Request", format!("{why}\n")), false);
    let Ok(head) = std::str::from_utf8(head) else {
        return bad("the request is not UTF-8");
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("not an HTTP request");
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let headers_ok = lines
        .take_while(|l| !l.is_empty())
        .all(|l| l.split_once(':').is_some_and(|(name, _)| token(name)));
    if !token(method) || !version.starts_with("HTTP/1.") || !headers_ok {
        return bad("not an HTTP request");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut response =
                Response::text("405 Method Not Allowed", "only GET and HEAD\n".to_owned());
            response.headers = "Allow: GET, HEAD\r\n";
            return (response, false);
        }
    };
    // The absolute form (`http://host/metrics`) names the same path.
    let target = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => target,
    };
    // The query string is not ours: Prometheus `params:` adds one.
    let path = target.split('?').next().unwrap_or(target);
    let read = || cache.lock().unwrap_or_else(PoisonError::into_inner).get();
    let unavailable = |e: String| Response::text("503 Service Unavailable", format!("{e}\n"));
    let response = match path {
        "/metrics" => match read() {
            Ok(body) => Response {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                headers: "",
                body,
            },
            Err(e) => unavailable(e),
        },
        "/health" => match read() {
            Ok(_) => Response::text("200 OK", "ok\n".to_owned()),
            Err(e) => unavailable(e),
        },
        _ => Response::text("404 Not Found", "try /metrics or /health\n".to_owned()),
    };
    (response, head_only)
}

/// Writes all of `bytes` by `deadline`: the write timeout is what is left
/// of it, so a client reading a byte at a time cannot stretch it.
fn write_by(stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends the response, then reads and drops what the client still sends
/// (within [`LINGER`] and [`LINGER_BYTES`]) until it closes: closing with
/// its data unread would reset the connection, and could lose the response.
fn linger(stream: &TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut buf = [0u8; 4096];
    while drained < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
