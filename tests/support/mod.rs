//! Shared test support: real `redis-server` processes on free loopback ports,
//! and running one test again in a child process (titus-count has one
//! flusher per process, so tests that call `init` each get their own).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own, on a free loopback port, with no persistence
/// and its log in a temporary directory. Killed and reaped on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    /// Speaks only TLS: there is no plain port to `PING`.
    tls: bool,
}

/// `redis-server`, or `TITUS_TEST_REDIS_SERVER`: a server binary, or a
/// wrapper that `exec`s one (a started server must be our child process).
fn redis_server_binary() -> String {
    std::env::var("TITUS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// How far above its client port a cluster node listens for its cluster bus.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// Whether a server started with `args` runs in cluster mode.
fn is_cluster_node(args: &[&str]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--cluster-enabled" && w[1] == "yes")
}

/// A free port for a server started with `args`. A cluster node refuses a
/// port above 55535 ("Your Redis port number must be 55535 or less"), as its
/// cluster bus listens on port + 10000, which must be free too.
fn free_port_for(args: &[&str]) -> u16 {
    if !is_cluster_node(args) {
        return free_port();
    }
    for _ in 0..1000 {
        let port = free_port();
        if port <= u16::MAX - CLUSTER_BUS_OFFSET
            && TcpListener::bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port at most 55535 with its cluster bus port free");
}

/// How many fresh ports a server start tries: another process can take the
/// port (or a cluster node's bus port) between our probe and the server's
/// bind, and the server then exits at start-up.
const START_ATTEMPTS: usize = 10;

fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "titus-count-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let owned: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::start_on_a_free_port(extra, |port| {
            Self::try_launch(port, temp_dir("redis"), owned.clone(), false)
        })
    }

    /// Tries [`START_ATTEMPTS`] fresh ports (fit for a server with `args`)
    /// with `launch` until one starts.
    fn start_on_a_free_port(
        args: &[&str],
        mut launch: impl FnMut(u16) -> Result<Self, String>,
    ) -> Self {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            match launch(free_port_for(args)) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!(
            "redis-server did not start on any of {START_ATTEMPTS} ports; its last log:\n{last_log}"
        );
    }

    /// Starts a server on `port`, which the caller chose (and may already
    /// have pointed a client at).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::try_launch(port, temp_dir("redis"), extra, false)
            .unwrap_or_else(|log| panic!("redis-server did not start on {port}:\n{log}"))
    }

    /// Starts a server on `port` and waits until it is ready; on failure the
    /// server is killed, its directory removed, and its log returned.
    fn try_launch(port: u16, dir: PathBuf, extra: Vec<String>, tls: bool) -> Result<Self, String> {
        let mut server = RedisServer {
            child: Self::spawn(port, &dir, &extra),
            port,
            dir,
            extra,
            tls,
        };
        if server.wait_until_ready(0) {
            Ok(server)
        } else {
            Err(server.log())
            // Dropped here: killed, reaped, its directory removed.
        }
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[impl AsRef<std::ffi::OsStr>]) -> Child {
        Command::new(redis_server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (install the Debian package `redis-server`)")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Stops the server (SIGKILL) and waits for it to exit; its directory,
    /// and with it any append-only file, stays for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        // The port was ours a moment ago; try it a few times in case it is
        // briefly taken, but it cannot change: clients point at it.
        for _ in 0..3 {
            let log_len = self.log().len();
            self.child = Self::spawn(self.port, &self.dir, &self.extra);
            if self.wait_until_ready(log_len) {
                return;
            }
            self.stop();
        }
        panic!(
            "redis-server did not restart on {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// Freezes the server with SIGSTOP: connections are accepted by the
    /// kernel but nothing is answered.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Thaws a frozen server with SIGCONT.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Sends `signal` (a name such as `STOP`) through the shell's `kill`
    /// builtin: std has no signals but SIGKILL, and `/bin/kill` (procps) is
    /// missing on slim images.
    fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args(["-c", "kill -s \"$1\" \"$2\"", "sh", signal])
            .arg(self.child.id().to_string())
            .stdin(Stdio::null())
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Waits until the server just spawned is ready: a plain server answers
    /// `PING` and is our process (not another server that holds the port
    /// while ours fails to bind it); a TLS server says so in its log after
    /// the first `log_from` bytes. False if it exited or took too long.
    fn wait_until_ready(&mut self, log_from: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.tls {
                let log = self.log();
                if log
                    .get(log_from..)
                    .is_some_and(|new| new.contains("Ready to accept connections"))
                {
                    return true;
                }
            } else if let Ok(mut con) = self.try_connection()
                // PING fails while an append-only file is loading.
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
                && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut con)
            {
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse::<u32>().ok());
                // Another server on our port: ours cannot bind it.
                return pid == Some(self.child.id());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The server's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(con)
    }

    /// A direct connection, for checking what titus-count wrote.
    pub fn connection(&self) -> redis::Connection {
        self.try_connection()
            .expect("connect to the test redis-server")
    }

    /// The totals hash of a namespace, read directly.
    pub fn totals(&self, namespace: &str) -> BTreeMap<String, u64> {
        redis::cmd("HGETALL")
            .arg(format!("titus:{{{namespace}}}:totals"))
            .query(&mut self.connection())
            .expect("HGETALL the totals")
    }

    /// The text of `INFO section`, read directly; empty if the server does
    /// not answer.
    pub fn info(&self, section: &str) -> String {
        self.try_connection()
            .and_then(|mut con| redis::cmd("INFO").arg(section).query(&mut con))
            .unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn closed_port() -> u16 {
    free_port()
}

/// Polls `done` every 20 ms until it holds; panics naming `what` if it does
/// not within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CHILD_ENV: &str = "TITUS_COUNT_TEST_CHILD";

/// How long a child process may run before it is killed and the test fails.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(180);

/// Whether this process is the child started by [`run_child`] for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|t| t == test)
}

/// Removes every `TITUS_COUNT_*` variable of this process's environment
/// from `command`'s, so the shell a test runs in cannot change it; the
/// caller sets the test's own values afterwards.
fn without_titus_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"TITUS_COUNT_") {
            command.env_remove(key);
        }
    }
    command
}

/// The command that runs the test named `test` of this test binary again,
/// alone, with `envs` set on top of an environment without `TITUS_COUNT_*`.
fn child_command(test: &str, envs: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    without_titus_env(&mut command)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Runs the test named `test` again in a child process and returns its
/// output. The test recognises the child with [`is_child`].
pub fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    ChildGuard::new(spawn_child(test, envs), format!("child `{test}`")).wait()
}

/// Like [`run_child`], and asserts that the child succeeded.
pub fn run_child_ok(test: &str, envs: &[(&str, &str)]) -> Output {
    let output = run_child(test, envs);
    assert!(
        output.status.success(),
        "child `{test}` failed: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts the test named `test` in a child process without waiting.
pub fn spawn_child(test: &str, envs: &[(&str, &str)]) -> Child {
    child_command(test, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary as a child")
}

/// Environment that runs a process with its wall clock moved by `offset`
/// (`"-1d"`, `"+2h"`) through libfaketime (Debian package `faketime`); its
/// monotonic clock is left alone, so timeouts still work.
pub fn wrong_clock(offset: &str) -> [(&'static str, String); 3] {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(LIB).exists(),
        "{LIB} is missing: install the Debian package `faketime`"
    );
    [
        ("LD_PRELOAD", LIB.to_owned()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

/// Starts the test named `test` in a child process without waiting, killed
/// if the guard is dropped before [`ChildGuard::wait`] (a test panicked).
pub fn spawn_child_guarded(test: &str, envs: &[(&str, &str)]) -> ChildGuard {
    ChildGuard::new(spawn_child(test, envs), format!("child `{test}`"))
}

/// A child process that is killed and reaped when dropped unwaited, so a
/// test that panics leaves no process behind.
pub struct ChildGuard {
    child: Option<Child>,
    what: String,
}

impl ChildGuard {
    /// Guards `child`; `what` names it in a timeout's panic message.
    pub fn new(child: Child, what: impl Into<String>) -> Self {
        ChildGuard {
            child: Some(child),
            what: what.into(),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("a child").id()
    }

    /// Waits for the child and returns its output, within
    /// [`CHILD_DEADLINE`]; see [`wait_with_deadline`].
    pub fn wait(mut self) -> Output {
        let child = self.child.take().expect("a child");
        wait_with_deadline(child, &self.what, CHILD_DEADLINE)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit and returns its output (piped stdout and
/// stderr are read meanwhile, so a full pipe cannot stall it). If it has
/// not exited within `deadline`, kills it and panics with what it wrote.
pub fn wait_with_deadline(mut child: Child, what: &str, deadline: Duration) -> Output {
    use std::sync::{Arc, Mutex, mpsc};
    // Each pipe is read into a buffer by a thread of its own, which says
    // when it reached the end.
    let (done, finished) = mpsc::channel::<()>();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (into, done) = (bytes.clone(), done.clone());
        std::thread::spawn(move || {
            if let Some(mut pipe) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    into.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
            let _ = done.send(());
        });
        bytes
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status: Option<ExitStatus> = loop {
        match child.try_wait().expect("wait for a child") {
            Some(status) => break Some(status),
            None if start.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // The pipes close when the child exits, unless a process it started
    // holds them open: wait a little for that, not forever.
    let ends = Instant::now() + Duration::from_secs(10);
    let mut open = 2;
    while open > 0
        && finished
            .recv_timeout(ends.saturating_duration_since(Instant::now()))
            .is_ok()
    {
        open -= 1;
    }
    let take = |bytes: Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *bytes.lock().unwrap());
    let (stdout, stderr) = (take(stdout), take(stderr));
    let Some(status) = status else {
        panic!(
            "{what} did not exit within {deadline:?} and was killed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    assert!(
        open == 0,
        "{what} exited ({status}) but a process it started holds its output open\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// An instance record (JSON, as the batch script writes it) with its last
/// flush moved to `last_flush_ms`: a process gone silent since then.
pub fn aged_record(json: &str, last_flush_ms: u128) -> String {
    let field = "\"last_flush_ms\":";
    let start = json.find(field).expect("a record with last_flush_ms") + field.len();
    let end = start + json[start..].find([',', '}']).expect("a JSON object");
    format!("{}{last_flush_ms}{}", &json[..start], &json[end..])
}

/// Milliseconds since the Unix epoch, `ago` before now.
pub fn epoch_ms_ago(ago: Duration) -> u128 {
    (std::time::SystemTime::now() - ago)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Runs the `titus-count` command against `redis_url` and `namespace` with
/// `args` and extra environment (on top of one without `TITUS_COUNT_*`),
/// asserts that it succeeded, and returns its standard output.
pub fn titus_count_ok(
    redis_url: &str,
    namespace: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_titus-count"));
    let child = without_titus_env(&mut command)
        .args(["--redis-url", redis_url, "--namespace", namespace])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run titus-count");
    let output = ChildGuard::new(child, format!("titus-count {args:?}")).wait();
    assert!(
        output.status.success(),
        "titus-count {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A logger that writes records to stderr, so a child's log can be checked
/// by its parent.
pub struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[{}] {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

/// Installs [`StderrLogger`] at `Info` level (once per process).
pub fn log_to_stderr() {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Runs a future to completion on this thread. The futures in these tests
/// never wait on anything outside themselves, so polling in a loop suffices.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// What a [`FaultProxy`] does to the traffic between a client and Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything both ways.
    None,
    /// Forward requests, then close the connection instead of forwarding
    /// the reply: Redis applied the command, the client cannot know.
    DropReplies,
    /// Like `DropReplies`, with a TCP reset instead of an orderly close.
    ResetReplies,
    /// Accept connections and close them at once.
    Refuse,
    /// Accept connections and swallow everything: no reply ever comes.
    Blackhole,
}

impl Fault {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(code: u8) -> Fault {
        [
            Fault::None,
            Fault::DropReplies,
            Fault::ResetReplies,
            Fault::Refuse,
            Fault::Blackhole,
        ][code as usize]
    }
}

/// A TCP proxy on a loopback port in front of Redis that injects faults.
pub struct FaultProxy {
    port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    fault: std::sync::atomic::AtomicU8,
    stop: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<std::net::TcpStream>>,
    upstream: u16,
}

impl ProxyState {
    fn fault(&self) -> Fault {
        Fault::from_code(self.fault.load(std::sync::atomic::Ordering::SeqCst))
    }
}

fn reset(stream: &std::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream`, forwarding everything.
    pub fn start(upstream: u16) -> Self {
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ProxyState {
            fault: std::sync::atomic::AtomicU8::new(Fault::None.code()),
            stop: std::sync::atomic::AtomicBool::new(false),
            open: std::sync::Mutex::new(Vec::new()),
            upstream,
        });
        let accept_state = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                Self::serve(&accept_state, client);
            }
        });
        FaultProxy { port, state }
    }

    fn serve(state: &std::sync::Arc<ProxyState>, client: std::net::TcpStream) {
        match state.fault() {
            Fault::Refuse => return reset(&client),
            Fault::Blackhole => {
                state.open.lock().unwrap().push(client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &client, &mut std::io::sink());
                });
                return;
            }
            _ => {}
        }
        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", state.upstream)) else {
            return reset(&client);
        };
        {
            let mut open = state.open.lock().unwrap();
            open.push(client.try_clone().unwrap());
            open.push(server.try_clone().unwrap());
        }
        let pump = |from: std::net::TcpStream, to: std::net::TcpStream, replies: bool| {
            let state = state.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 16 * 1024];
                let (mut from_r, mut to_w) = (&from, &to);
                loop {
                    let n = match from_r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    match (state.fault(), replies) {
                        (Fault::DropReplies, true) => {
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        (Fault::ResetReplies, true) => {
                            let _ = from.shutdown(std::net::Shutdown::Both);
                            reset(&to);
                            return;
                        }
                        (Fault::Blackhole, _) => continue,
                        _ => {}
                    }
                    if to_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        };
        pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            false,
        );
        pump(server, client, true);
    }

    /// Switches to `fault`. Open connections see it at their next packet;
    /// `Refuse` also closes them.
    pub fn set(&self, fault: Fault) {
        self.state
            .fault
            .store(fault.code(), std::sync::atomic::Ordering::SeqCst);
        if fault == Fault::Refuse {
            for stream in self.state.open.lock().unwrap().drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.set(Fault::Refuse);
        // Wake the accept loop so it sees the stop flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Joins `nodes` into a cluster with `redis-cli --cluster create`, giving
/// each primary `replicas` replicas; `cli_args` go first (TLS options).
fn create_cluster(nodes: &[RedisServer], replicas: usize, cli_args: &[&str]) {
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let output = Command::new("redis-cli")
        .args(cli_args)
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        output.status.success(),
        "redis-cli --cluster create failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A local Redis Cluster of real `redis-server` nodes, made with
/// `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    /// Primaries first, then replicas.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` primaries, each with `replicas` replicas, and waits
    /// until every node reports the cluster ok.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // Replicas sync at once, and may always take over.
                    "--repl-diskless-sync-delay",
                    "0",
                    "--cluster-replica-validity-factor",
                    "0",
                ])
            })
            .collect();
        create_cluster(&nodes, replicas, &[]);
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster.wait_for_replicas(primaries * replicas);
        cluster
    }

    /// Waits until `expected` replicas in all are online with their primary.
    pub fn wait_for_replicas(&self, expected: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let online: usize = self
                .nodes
                .iter()
                .filter_map(|n| n.try_connection().ok())
                .map(|mut con| {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut con)
                        .unwrap_or_default();
                    info.lines()
                        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                        .count()
                })
                .sum();
            if online >= expected {
                return;
            }
            assert!(Instant::now() < deadline, "replicas did not come online");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a cluster of `primaries` primaries that speaks only TLS, with
    /// the server certificate of `certs`, clients and nodes alike.
    pub fn start_tls(certs: &TestCerts, primaries: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|_| {
                RedisServer::start_tls(
                    certs,
                    "server",
                    "no",
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                    ],
                )
            })
            .collect();
        create_cluster(&nodes, 0, &["--tls", "--cacert", &certs.path("ca.pem")]);
        // Every node agrees the cluster is ok (asked over TLS).
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["--tls", "--cacert", &certs.path("ca.pem")])
                    .args(["-p", &node.port().to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli cluster info");
                let info = String::from_utf8_lossy(&info.stdout);
                if info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{primaries}"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the TLS cluster did not become ok"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The seed-node `rediss://` URL list of a TLS cluster.
    pub fn tls_url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.tls_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every node says `cluster_state:ok` and knows every node.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let expected = self.nodes.len();
        loop {
            let ok = self.nodes.iter().all(|n| {
                let Ok(mut con) = n.try_connection() else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut con)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{expected}"))
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed-node URL list a client is configured with.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A cluster connection, for checking what titus-count wrote.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_connection()
            .expect("connect to the test cluster")
    }

    /// The totals hash of a namespace.
    pub fn totals(&self, namespace: &str) -> BTreeMap<String, u64> {
        redis::cmd("HGETALL")
            .arg(format!("titus:{{{namespace}}}:totals"))
            .query(&mut self.connection())
            .expect("HGETALL the totals")
    }

    /// The hash slot of a key.
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].connection())
            .unwrap()
    }

    /// The node id and index of the primary that owns `slot`.
    pub fn owner(&self, slot: u16) -> (String, usize) {
        self.owner_or_none(slot)
            .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
    }

    /// Like [`owner`](Self::owner), `None` while no live primary owns it.
    pub fn owner_or_none(&self, slot: u16) -> Option<(String, usize)> {
        for (i, node) in self.nodes.iter().enumerate() {
            // A stopped node owns nothing.
            let Ok(mut con) = node.try_connection() else {
                continue;
            };
            let Ok(nodes) = redis::cmd("CLUSTER").arg("NODES").query::<String>(&mut con) else {
                continue;
            };
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if !fields[2].contains("myself") || !fields[2].contains("master") {
                    continue;
                }
                let owns = fields[8..].iter().any(|range| {
                    let mut ends = range
                        .split('-')
                        .map(|n| n.parse::<u16>().unwrap_or(u16::MAX));
                    let lo = ends.next().unwrap();
                    let hi = ends.next().unwrap_or(lo);
                    (lo..=hi).contains(&slot)
                });
                if owns {
                    return Some((fields[0].to_owned(), i));
                }
            }
        }
        None
    }

    fn node_id(&self, index: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[index].connection())
            .unwrap()
    }

    /// Moves `slot` and its keys to the primary at `to`, key by key, the way
    /// `redis-cli --cluster reshard` does: clients meanwhile see `ASK` and
    /// then `MOVED` redirections.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let (from_id, from) = self.owner(slot);
        let to_id = self.node_id(to);
        let setslot = |node: usize, args: &[&str]| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(args)
                .query(&mut self.nodes[node].connection())
                .unwrap();
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut self.nodes[from].connection())
                .unwrap();
            if keys.is_empty() {
                break;
            }
            for key in keys {
                let _: () = redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(self.nodes[to].port())
                    .arg(&key)
                    .arg(0)
                    .arg(5000)
                    .query(&mut self.nodes[from].connection())
                    .unwrap();
            }
        }
        // Every primary learns the new owner at once (replicas follow).
        for node in &self.nodes {
            let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut node.connection());
        }
    }
}

/// Certificates made for one test with the `openssl` command: a CA, a
/// server certificate for 127.0.0.1 and localhost, a client certificate,
/// and a server certificate from another CA.
pub struct TestCerts {
    pub dir: PathBuf,
}

impl TestCerts {
    pub fn generate() -> Self {
        let dir = temp_dir("certs");
        let sh = |script: &str| {
            let output = Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(&dir)
                .output()
                .expect("run openssl (install the Debian package `openssl`)");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let key = "openssl ecparam -name prime256v1 -genkey -noout -out";
        let ca = |name: &str| {
            sh(&format!(
                "{key} {name}.key && openssl req -x509 -new -key {name}.key -out {name}.pem -days 2 -subj /CN={name}"
            ))
        };
        let leaf = |name: &str, ca: &str, ext: &str| {
            sh(&format!(
                "{key} {name}.key && openssl req -new -key {name}.key -out {name}.csr -subj /CN={name} && \
                 printf '{ext}' > {name}.ext && \
                 openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"
            ))
        };
        ca("ca");
        ca("other-ca");
        // Cluster nodes present their server certificate to each other as
        // clients too.
        leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n",
        );
        leaf("client", "ca", "extendedKeyUsage=clientAuth\\n");
        leaf(
            "rogue",
            "other-ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n",
        );
        TestCerts { dir }
    }

    /// The path of `NAME.pem` or `NAME.key`.
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// A server that speaks only TLS, with the certificate `NAME.pem` made
    /// by `certs`, trusting `ca.pem` for client certificates.
    /// `auth_clients` is `no`, `optional` or `yes`; `extra` is appended.
    pub fn start_tls(certs: &TestCerts, server: &str, auth_clients: &str, extra: &[&str]) -> Self {
        let (cert, key, ca) = (
            certs.path(&format!("{server}.pem")),
            certs.path(&format!("{server}.key")),
            certs.path("ca.pem"),
        );
        Self::start_on_a_free_port(extra, |port| {
            let port_text = port.to_string();
            let mut args: Vec<String> = [
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                auth_clients,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            Self::try_launch(port, temp_dir("redis-tls"), args, true)
        })
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}
