//! The flusher thread: collects every thread's deltas each interval and
//! delivers them to Redis as one idempotent batch.
//!
//! At most one batch is in flight. If sending it fails in any way it stays
//! "in doubt" and is resent unchanged (same instance, same sequence number)
//! until Redis acknowledges it; deltas collected meanwhile wait in the
//! registry for the next batch. Memory is therefore bounded by the number of
//! stages, however long Redis is away.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use once_cell::sync::OnceCell;

use crate::cells::registry;
use crate::config::{Config, Resolved, redact_url};
use crate::error::{FlushError, InitError};
use crate::health;
use crate::redis::{Applied, Batch, Records, Writer, describe, is_transient};

/// First retry delay after a failed delivery; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two delivery attempts while Redis is failing.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait between tries while a caller waits for a flush (a
/// `flush()`, a guard drop, the exit hook): a long back-off must not use up
/// a shutdown timeout that Redis comes back within.
const WAITING_RETRY: Duration = Duration::from_secs(1);

/// The running flusher of this process.
struct Handle {
    tx: Sender<Request>,
    config: Resolved,
    instance: String,
}

static FLUSHER: OnceCell<Handle> = OnceCell::new();

/// Set when the guard's final flush timed out: the exit hook then makes one
/// last short try instead of waiting the whole shutdown timeout again.
static GUARD_TIMED_OUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the last counts from being lost: dropping it flushes everything
/// counted so far and waits, up to the shutdown timeout (plus the time a
/// delivery already under way takes to end, at most four I/O timeouts and
/// a second), for Redis to acknowledge it.
///
/// The flusher itself keeps running after the guard is dropped, and an exit
/// hook flushes once more when the process returns from `main` or calls
/// `std::process::exit`. Holding the guard in `main` makes the final flush
/// explicit and lets it happen before other teardown.
///
/// # Examples
///
/// ```no_run
/// let _guard = titus_count_runtime::init();
/// // ... run the pipeline ...
/// drop(_guard); // or let it go out of scope at the end of `main`
/// ```
#[must_use = "dropping the FlushGuard flushes at once; hold it in `main` (`let _guard = titus_count::init();`) so the final flush happens at the end"]
#[derive(Debug)]
pub struct FlushGuard {
    _private: (),
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let Some(handle) = FLUSHER.get() else { return };
        if let Err(e) = handle.request(handle.config.shutdown_timeout, false) {
            GUARD_TIMED_OUT.store(true, Ordering::Relaxed);
            log::warn!("titus-count: final flush at guard drop incomplete: {e}");
        }
    }
}

/// A caller waiting for its counts to be acknowledged.
struct Request {
    timeout: Duration,
    deadline: Instant,
    /// At process exit: report undelivered counts at error level on timeout.
    at_exit: bool,
    reply: Sender<Result<(), FlushError>>,
}

struct Waiter {
    /// Satisfied once the batch with this sequence number is acknowledged.
    need_seq: u64,
    request: Request,
}

impl Handle {
    /// Asks the flusher to deliver everything counted so far and waits for
    /// the acknowledgement, or until `timeout`.
    fn request(&self, timeout: Duration, at_exit: bool) -> Result<(), FlushError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let now = Instant::now();
        // A timeout too large to add is as good as none.
        let deadline = now.checked_add(timeout).unwrap_or_else(far_future);
        let request = Request {
            timeout,
            deadline,
            at_exit,
            reply,
        };
        if self.tx.send(request).is_err() {
            return Err(FlushError::NotInitialized);
        }
        // The flusher answers by the deadline; the margin covers a delivery
        // already under way when it passes (connect, EVALSHA, then EVAL).
        let margin = self.config.io_timeout.saturating_mul(4) + Duration::from_secs(1);
        match answer.recv_deadline(deadline.checked_add(margin).unwrap_or(deadline)) {
            Ok(result) => result,
            Err(_) => Err(FlushError::Timeout {
                waited: timeout,
                last_error: None,
            }),
        }
    }
}

/// Starts the flusher with the configuration from the environment.
///
/// Counting works without it; `init` only starts the thread that sends the
/// counts to Redis. An unreachable Redis is not an error: the counts are kept
/// and the flusher retries.
///
/// # Panics
///
/// If a `TITUS_COUNT_*` environment variable is malformed, or if the flusher
/// is already running. Use [`Config::init`] to get these as errors.
///
/// # Examples
///
/// ```no_run
/// let _guard = titus_count_runtime::init();
/// ```
pub fn init() -> FlushGuard {
    match Config::from_env().init() {
        Ok(guard) => guard,
        Err(e) => panic!("titus-count: {e}"),
    }
}

impl Config {
    /// Validates the configuration and starts the flusher thread.
    ///
    /// # Errors
    ///
    /// An [`InitError`] for a malformed setting, or if `init` already ran in
    /// this process (there is one flusher per process).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use titus_count_runtime::{Config, InitError};
    ///
    /// match Config::from_env().namespace("orders").init() {
    ///     Ok(guard) => drop(guard),
    ///     Err(InitError::AlreadyInitialized) => {}
    ///     Err(e) => panic!("{e}"),
    /// }
    /// ```
    pub fn init(&self) -> Result<FlushGuard, InitError> {
        let config = self.resolve()?;
        let mut fresh = false;
        FLUSHER.get_or_try_init(|| {
            let instance = new_instance_id();
            let writer =
                Writer::new(&config, instance.clone()).map_err(|e| InitError::InvalidRedisUrl {
                    setting: "redis_url",
                    url: redact_url(&config.redis_url),
                    reason: describe(&e, &config.redis_url),
                })?;
            let (tx, rx) = crossbeam_channel::unbounded();
            health::update(|h| h.instance = instance.clone());
            let flusher = Flusher::new(&config, writer, rx);
            std::thread::Builder::new()
                .name("titus-count-flusher".to_owned())
                .spawn(move || flusher.run())
                .map_err(InitError::Spawn)?;
            register_exit_hook();
            if config.tls.insecure {
                log::warn!(
                    "titus-count: TLS certificate verification is OFF \
                     (dangerously_accept_invalid_tls_certificates): anyone on the path can read and change the counts"
                );
            }
            log::info!(
                "titus-count: flushing to {} namespace `{}` every {:?} as instance {instance}",
                redact_url(&config.redis_url),
                config.namespace,
                config.interval,
            );
            fresh = true;
            Ok::<_, InitError>(Handle {
                tx,
                config: config.clone(),
                instance,
            })
        })?;
        if !fresh {
            return Err(InitError::AlreadyInitialized);
        }
        Ok(FlushGuard { _private: () })
    }
}

/// Delivers everything counted before the call and returns once Redis has
/// acknowledged it, or with an error after the shutdown timeout.
///
/// # Errors
///
/// [`FlushError::NotInitialized`] before [`init`]; [`FlushError::Timeout`] if
/// Redis did not acknowledge in time (the counts are kept and retried).
///
/// # Examples
///
/// ```no_run
/// let _guard = titus_count_runtime::init();
/// titus_count_runtime::count!("jobs.done");
/// titus_count_runtime::flush().expect("Redis acknowledged the counts");
/// ```
pub fn flush() -> Result<(), FlushError> {
    let handle = FLUSHER.get().ok_or(FlushError::NotInitialized)?;
    handle.request(handle.config.shutdown_timeout, false)
}

/// Like [`flush`], waiting at most `timeout`.
///
/// # Errors
///
/// As [`flush`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let _guard = titus_count_runtime::init();
/// if titus_count_runtime::flush_timeout(Duration::from_millis(100)).is_err() {
///     // Redis is slow or away; the counts are kept and retried.
/// }
/// ```
pub fn flush_timeout(timeout: Duration) -> Result<(), FlushError> {
    let handle = FLUSHER.get().ok_or(FlushError::NotInitialized)?;
    handle.request(timeout, false)
}

/// The unique id of this process's flusher in Redis (the `INSTANCE` in the
/// sequence-mark key), or `None` before [`init`].
///
/// # Examples
///
/// ```
/// assert_eq!(titus_count_runtime::instance_id(), None);
/// ```
pub fn instance_id() -> Option<&'static str> {
    FLUSHER.get().map(|h| h.instance.as_str())
}

fn register_exit_hook() {
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn at_exit() {
        if let Some(handle) = FLUSHER.get() {
            let mut timeout = handle.config.shutdown_timeout;
            if GUARD_TIMED_OUT.load(Ordering::Relaxed) {
                timeout = timeout.min(handle.config.io_timeout.saturating_mul(2));
            }
            // Errors were logged by the flusher, with the undelivered counts.
            let _ = std::panic::catch_unwind(|| handle.request(timeout, true));
        }
    }
    // SAFETY: `atexit` is the C library's, and `at_exit` is a plain function
    // that does not unwind (panics are caught) and stays valid for the
    // whole life of the process.
    let rc = unsafe { atexit(at_exit) };
    if rc != 0 {
        log::warn!("titus-count: cannot register the exit hook; keep the FlushGuard in main");
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random 64-bit number from the standard library's per-process hash keys.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A process-unique id: no two processes, including restarts of the same
/// program, share one, so their sequence marks never collide.
fn new_instance_id() -> String {
    format!(
        "{:016x}{:08x}",
        random_u64() ^ random_u64().rotate_left(17),
        std::process::id()
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `s` as a JSON string: quotes and backslashes escaped, control
/// characters as `\u00XX`. Instance records use it, and so does the
/// `titus-count` command's JSON output (through `__private`).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Flusher {
    rx: Receiver<Request>,
    writer: Writer,
    url: String,
    interval: Duration,
    host: String,
    started_ms: u64,
    /// Sequence number of the last batch cut.
    seq: u64,
    /// Sequence number of the last batch Redis acknowledged.
    acked: u64,
    /// When that batch was cut (when the flusher started, before the first).
    acked_cut_ms: u64,
    in_doubt: Option<Batch>,
    /// Set once undelivered counts were reported at exit: nothing more is sent.
    closed: bool,
    /// Set once the exit hook asked for the last flush: a final batch goes
    /// out even with no counts, and records say the process has exited.
    exiting: bool,
    io_timeout: Duration,
    /// Whether the batch in doubt may have reached Redis.
    maybe_applied: bool,
    waiters: Vec<Waiter>,
    failures: u32,
    retry_at: Instant,
    /// When the last try failed, and whether its error needs an operator.
    failed_at: Instant,
    failed_permanently: bool,
    last_error: Option<String>,
}

impl Flusher {
    fn new(config: &Resolved, writer: Writer, rx: Receiver<Request>) -> Self {
        Flusher {
            rx,
            writer,
            url: config.redis_url.clone(),
            interval: config.interval,
            host: host_name(),
            started_ms: now_ms(),
            seq: 0,
            acked: 0,
            acked_cut_ms: now_ms(),
            in_doubt: None,
            closed: false,
            exiting: false,
            io_timeout: config.io_timeout,
            maybe_applied: false,
            waiters: Vec::new(),
            failures: 0,
            retry_at: Instant::now(),
            failed_at: Instant::now(),
            failed_permanently: false,
            last_error: None,
        }
    }

    fn run(mut self) {
        let mut next_tick = Instant::now() + self.interval;
        loop {
            // While a batch is in doubt, the back-off decides the next try.
            let mut wake = if self.closed {
                // After the exit report nothing is sent: wake only for
                // requests, to answer them.
                far_future()
            } else if self.in_doubt.is_some() {
                self.retry_at
            } else {
                next_tick
            };
            if let Some(deadline) = self.waiters.iter().map(|w| w.request.deadline).min() {
                wake = wake.min(deadline);
            }
            let mut urgent = false;
            match self.rx.recv_deadline(wake) {
                Ok(request) => {
                    self.accept(request);
                    urgent = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(request) = self.rx.try_recv() {
                self.accept(request);
            }
            let now = Instant::now();
            let tick = now >= next_tick;
            if tick {
                next_tick = now + self.interval;
            }
            let retry_due = self.in_doubt.is_some() && now >= self.retry_at;
            let waiting = !self.waiters.is_empty() && now >= self.retry_at;
            if self.closed {
                // After the exit report: answer requests, send nothing.
                self.expire_waiters();
                continue;
            }
            // A request is served at once unless a batch is in doubt: then
            // the back-off (shortened for waiting callers) decides, so
            // callers asking again and again cannot hammer a Redis that
            // is struggling.
            let idle = self.in_doubt.is_none();
            if (urgent && idle) || retry_due || waiting || (tick && idle) {
                self.deliver(tick);
            } else if tick {
                // In back-off: still collect, so finished threads' records
                // are recycled and local totals stay fresh.
                registry().collect();
            }
            self.expire_waiters();
        }
    }

    /// Registers a flush request: it is satisfied once the batch holding
    /// everything collected now is acknowledged.
    fn accept(&mut self, mut request: Request) {
        let mut reg = registry();
        reg.collect();
        let has_pending = reg.has_pending();
        drop(reg);
        // At exit, the last batch's record says the process has exited,
        // so readers need not wait for it to turn stale: the batch in doubt
        // (its resend says so), or else a final batch, with no counts if
        // none are left.
        let need_seq = match (&self.in_doubt, has_pending) {
            (Some(b), true) => b.seq + 1,
            (Some(b), false) => b.seq,
            (None, true) => self.seq + 1,
            (None, false) if request.at_exit => self.seq + 1,
            (None, false) => self.acked,
        };
        if request.at_exit {
            self.exiting = true;
            // With no counts left to deliver, the record alone is not
            // worth a long wait.
            if !self.counts_in_doubt() && !has_pending {
                // `io_timeout` is at most an hour: the sum cannot overflow.
                request.deadline = request.deadline.min(Instant::now() + self.io_timeout);
            }
        }
        if need_seq <= self.acked {
            let _ = request.reply.send(Ok(()));
        } else {
            self.waiters.push(Waiter { need_seq, request });
            // A waiting caller brings the next try forward: to a second
            // after a transient failure, to an interval after one that
            // needs an operator (who may have fixed it meanwhile).
            if self.in_doubt.is_some() {
                let soonest = if self.failed_permanently {
                    self.interval
                } else {
                    WAITING_RETRY
                };
                self.retry_at = self.retry_at.min(self.failed_at + soonest);
            }
        }
    }

    /// Sends the batch in doubt, or cuts a new one; keeps going while a
    /// waiter needs a later batch.
    ///
    /// On a tick, a batch goes out even with no counts: it tells readers
    /// this instance is alive and how far its counts are complete.
    fn deliver(&mut self, mut heartbeat: bool) {
        loop {
            // An exit waiting past its deadline gets its report, not another try.
            let now = Instant::now();
            if self
                .waiters
                .iter()
                .any(|w| w.request.at_exit && w.request.deadline <= now)
            {
                break;
            }
            if self.in_doubt.is_none() {
                let deltas = {
                    let mut reg = registry();
                    reg.collect();
                    reg.take_pending()
                };
                if deltas.is_empty() && !heartbeat && !self.exiting {
                    break;
                }
                heartbeat = false;
                self.seq += 1;
                let total = deltas.iter().fold(0u64, |a, (_, d)| a.saturating_add(*d));
                let seq = self.seq;
                health::update(|h| h.in_doubt = Some((seq, total)));
                self.in_doubt = Some(Batch {
                    seq,
                    cut_ms: now_ms(),
                    deltas,
                });
            }
            let batch = self.in_doubt.as_ref().expect("a batch is in doubt");
            let records = self.instance_records(batch);
            match self.writer.apply(batch, &records) {
                Ok(applied) => {
                    if applied == Applied::Before {
                        log::debug!(
                            "titus-count: batch {} had already been applied; not applied again",
                            batch.seq
                        );
                    }
                    if self.failures > 0 {
                        log::info!(
                            "titus-count: Redis is back after {} failed attempts",
                            self.failures
                        );
                    }
                    self.acked = batch.seq;
                    self.acked_cut_ms = batch.cut_ms;
                    health::update(|h| {
                        h.last_success = Some(SystemTime::now());
                        h.consecutive_failures = 0;
                        h.last_error = None;
                        h.last_error_permanent = false;
                        h.in_doubt = None;
                        h.acknowledged_batches += 1;
                    });
                    self.in_doubt = None;
                    self.maybe_applied = false;
                    self.failures = 0;
                    self.last_error = None;
                    self.answer_waiters();
                    if !self.waiters.iter().any(|w| w.need_seq > self.acked) {
                        break;
                    }
                }
                Err(e) => {
                    self.maybe_applied |= e.maybe_applied;
                    let text = describe(&e.error, &self.url);
                    let permanent = !is_transient(&e.error);
                    self.failures += 1;
                    // An error that needs an operator is retried at the
                    // interval, never faster; a transient one backs off.
                    // While a caller waits, tries are at most a second apart
                    // (an interval for an error that needs an operator).
                    let mut wait = backoff(self.failures);
                    if !self.waiters.is_empty() {
                        wait = wait.min(WAITING_RETRY);
                    }
                    if permanent {
                        wait = wait.max(self.interval);
                    }
                    self.failed_at = Instant::now();
                    self.failed_permanently = permanent;
                    self.retry_at = self.failed_at + wait;
                    let new_error = self.last_error.as_deref() != Some(text.as_str());
                    if permanent && (new_error || self.failures.is_power_of_two()) {
                        log::error!(
                            "titus-count: Redis refused batch {} ({} failures in a row, next try in {:?}): {text}; counts are kept until this is fixed",
                            batch.seq,
                            self.failures,
                            wait,
                        );
                    } else if self.failures == 1 || self.failures.is_power_of_two() {
                        log::warn!(
                            "titus-count: cannot deliver batch {} to {} ({} failures in a row, next try in {:?}): {text}; counts are kept",
                            batch.seq,
                            redact_url(&self.url),
                            self.failures,
                            wait,
                        );
                    }
                    let failures = self.failures;
                    let error = text.clone();
                    health::update(|h| {
                        h.consecutive_failures = failures;
                        h.failed_attempts += 1;
                        h.last_error = Some(error);
                        h.last_error_permanent = permanent;
                    });
                    self.last_error = Some(text);
                    break;
                }
            }
        }
    }

    /// The instance's records in `titus:{NS}:instances`, sent with each
    /// batch. `complete_ms` is when the batch was cut: every count this
    /// process made before it is in this batch or an earlier one. If Redis
    /// refuses the batch, the record says what is true then: complete up to
    /// the last batch applied, and more pending.
    fn instance_records(&self, batch: &Batch) -> Records {
        let pending = {
            let mut reg = registry();
            reg.collect();
            reg.has_pending()
        };
        // Quiet: the batch carries no counts and none wait behind it.
        let quiet = batch.deltas.is_empty() && !pending;
        let record = |complete_ms: u64, seq: u64, pending: bool, quiet: bool, exited: bool| {
            format!(
                "{{\"host\":{},\"pid\":{},\"started_ms\":{},\"last_flush_ms\":{},\"complete_ms\":{},\"interval_ms\":{},\"seq\":{},\"pending\":{},\"quiet\":{},\"exited\":{}}}",
                json_string(&self.host),
                std::process::id(),
                self.started_ms,
                now_ms(),
                complete_ms,
                self.interval.as_millis(),
                seq,
                pending,
                quiet,
                exited,
            )
        };
        // Before any batch is applied, counts made before `init()` may be
        // waiting: a refused batch's record then claims nothing.
        let refused_complete_ms = if self.acked == 0 {
            0
        } else {
            self.acked_cut_ms
        };
        Records {
            applied: record(
                batch.cut_ms,
                batch.seq,
                pending,
                quiet,
                self.exiting && !pending,
            ),
            refused: record(refused_complete_ms, self.acked, true, false, false),
        }
    }

    fn answer_waiters(&mut self) {
        let acked = self.acked;
        self.waiters.retain(|w| {
            if w.need_seq <= acked {
                let _ = w.request.reply.send(Ok(()));
                false
            } else {
                true
            }
        });
    }

    fn expire_waiters(&mut self) {
        let now = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.request.deadline <= now);
        self.waiters = waiting;
        // Log before answering: at exit, the answer lets the process end.
        if expired.iter().any(|w| w.request.at_exit) {
            self.report_undelivered();
            // The process is ending and the operator has the counts from the
            // log: sending them now could count them twice.
            self.closed = true;
        }
        for w in expired {
            let _ = w.request.reply.send(Err(FlushError::Timeout {
                waited: w.request.timeout,
                last_error: self.last_error.clone(),
            }));
        }
    }

    /// Whether a batch in doubt holds counts (not only a record to write).
    fn counts_in_doubt(&self) -> bool {
        self.in_doubt.as_ref().is_some_and(|b| !b.deltas.is_empty())
    }

    /// At exit with Redis still away: write what was not delivered to the log,
    /// so an operator can add it by hand.
    fn report_undelivered(&self) {
        let pending = {
            let mut reg = registry();
            reg.collect();
            reg.take_pending()
        };
        let instance = instance_id().unwrap_or("?");
        if !self.counts_in_doubt() && pending.is_empty() {
            // Only the final batch, with no counts, did not go out.
            log::warn!(
                "titus-count: at exit every count was delivered, but not the record saying instance {instance} exited ({}); readers will list it as stale",
                self.last_error.as_deref().unwrap_or("timed out")
            );
            return;
        }
        match &self.in_doubt {
            Some(batch) if self.maybe_applied => {
                log::error!(
                    "titus-count: at exit, batch {} of instance {instance} is in doubt: it was applied if `{}` is at least {}; its counts:",
                    batch.seq,
                    self.writer.seq_key(),
                    batch.seq,
                );
                for (stage, delta) in &batch.deltas {
                    log::error!("titus-count: in doubt: stage `{stage}`: {delta}");
                }
            }
            Some(batch) => {
                for (stage, delta) in &batch.deltas {
                    log::error!("titus-count: not delivered: stage `{stage}`: {delta}");
                }
            }
            None => {}
        }
        for (stage, delta) in pending {
            log::error!("titus-count: not delivered: stage `{stage}`: {delta}");
        }
        if let Some(e) = &self.last_error {
            log::error!("titus-count: last Redis error: {e}");
        }
    }
}

/// A wake-up time that never comes: a century from now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Exponential back-off with jitter: a random delay in the upper half of
/// `MIN_BACKOFF * 2^(failures-1)`, capped at `MAX_BACKOFF`.
fn backoff(failures: u32) -> Duration {
    let exp = MIN_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let ceiling = exp.min(MAX_BACKOFF);
    let half = ceiling / 2;
    let jitter = (random_u64() % (half.as_millis() as u64 + 1)) as u32;
    half + Duration::from_millis(u64::from(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let d = backoff(failures);
            assert!(d <= MAX_BACKOFF, "{failures}: {d:?}");
            assert!(d >= MIN_BACKOFF / 2, "{failures}: {d:?}");
        }
        assert!(backoff(20) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn instance_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_instance_id()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
