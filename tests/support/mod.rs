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
    extra: Vec<String>,
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
            match Self::try_start_on(free_port(), extra) {
                Ok(server) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server did not start; its last log:\n{last_log}");
    }

    /// Starts a server on `port`, which the caller chose (and may already
    /// have pointed a client at).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start_on(port, extra)
            .unwrap_or_else(|log| panic!("redis-server did not start on {port}:\n{log}"))
    }

    fn try_start_on(port: u16, extra: &[&str]) -> Result<Self, String> {
        let dir = temp_dir("redis");
        let mut server = RedisServer {
            child: Self::spawn(port, &dir, extra),
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        if server.wait_until_ready() {
            Ok(server)
        } else {
            Err(std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default())
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

    /// Stops the server (SIGKILL) and waits for it to exit; its directory,
    /// and with it any append-only file, stays for [`restart`](Self::restart).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.dir, &self.extra);
        assert!(self.wait_until_ready(), "redis-server did not restart");
    }

    /// Freezes the server with SIGSTOP: connections are accepted by the
    /// kernel but nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server with SIGCONT.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
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
/// `args` and extra environment, asserts that it succeeded, and returns its
/// standard output.
pub fn titus_count_ok(
    redis_url: &str,
    namespace: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_titus-count"))
        .args(["--redis-url", redis_url, "--namespace", namespace])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run titus-count");
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
        let port = free_port();
        let dir = temp_dir("redis-tls");
        let port_text = port.to_string();
        let (cert, key, ca) = (
            certs.path(&format!("{server}.pem")),
            certs.path(&format!("{server}.key")),
            certs.path("ca.pem"),
        );
        let mut args: Vec<&str> = vec![
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
        ];
        args.extend_from_slice(extra);
        let mut server = RedisServer {
            child: Self::spawn(port, &dir, &args),
            port,
            dir,
            extra: args.iter().map(|s| (*s).to_owned()).collect(),
        };
        // No plain port to PING: wait for the server's own word in its log.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
            if log.contains("Ready to accept connections") {
                return server;
            }
            if let Ok(Some(_)) = server.child.try_wait() {
                panic!("redis-server with TLS exited:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `rediss://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}
