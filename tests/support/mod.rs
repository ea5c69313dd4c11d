//! Shared test support: real `redis-server` processes on free loopback ports,
//! and running one test again in a child process (titus-count has one
//! flusher per process, so tests that call `init` each get their own).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own, on a free loopback port, with no persistence
/// and its log in a temporary directory. Killed and reaped on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn redis_server_binary() -> String {
    std::env::var("TITUS_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

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
        // Another process can take the port between our probe and the
        // server's bind; try a few ports before giving up.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir("redis");
            let log = dir.join("redis.log");
            let child = Command::new(redis_server_binary())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(&log)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (install the Debian package `redis-server`)");
            let mut server = RedisServer { child, port, dir };
            if server.wait_until_ready() {
                return server;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("redis-server did not start; its last log:\n{last_log}");
    }

    fn wait_until_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut con) = self.try_connection()
                && redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return true;
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

const CHILD_ENV: &str = "TITUS_COUNT_TEST_CHILD";

/// Whether this process is the child started by [`run_child`] for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|t| t == test)
}

/// The command that runs the test named `test` of this test binary again,
/// alone, with `envs` set on top of an environment without `TITUS_COUNT_*`.
fn child_command(test: &str, envs: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env_remove("TITUS_COUNT_REDIS_URL")
        .env_remove("TITUS_COUNT_NAMESPACE")
        .env_remove("TITUS_COUNT_INTERVAL")
        .env_remove("TITUS_COUNT_SHUTDOWN_TIMEOUT")
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    command
}

/// Runs the test named `test` again in a child process and returns its
/// output. The test recognises the child with [`is_child`].
pub fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    child_command(test, envs)
        .output()
        .expect("run the test binary as a child")
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
