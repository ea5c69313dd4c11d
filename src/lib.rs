//! Exact counts of the messages flowing through a distributed system, at no
//! cost to its throughput.
//!
//! Every thread counts in its own memory; a dedicated flusher thread, out of
//! band, periodically adds the deltas to shared totals in Redis, as one
//! idempotent batch per interval. The totals are exact once the system has
//! been quiet for one flush interval, and a close lower bound while it runs.
//!
//! # Usage
//!
//! Annotate the handlers of each stage and call [`init`] once at start-up:
//!
//! ```no_run
//! use titus_count::counted;
//!
//! #[counted("parse")]
//! fn parse(raw: &str) -> Option<u64> {
//!     raw.trim().parse().ok()
//! }
//!
//! struct Sink;
//!
//! impl Sink {
//!     #[counted("emit")]
//!     fn emit(&mut self, _value: u64) {}
//! }
//!
//! fn main() {
//!     // Reads TITUS_COUNT_REDIS_URL, TITUS_COUNT_NAMESPACE, TITUS_COUNT_INTERVAL.
//!     let _guard = titus_count::init();
//!     let mut sink = Sink;
//!     for line in ["1", "2", "x"] {
//!         titus_count::count!("lines.in");
//!         if let Some(v) = parse(line) {
//!             sink.emit(v);
//!         }
//!     }
//! } // dropping the guard delivers the last counts to Redis
//! ```
//!
//! The totals then live in the Redis hash `titus:{titus}:totals`
//! (`HGETALL titus:{titus}:totals`), field = stage, value = count, summed
//! over every thread of every process that uses the namespace `titus`.
//!
//! # Guarantees
//!
//! - A counted call is one thread-local load, test and add: no lock, no
//!   allocation, no atomic read-modify-write, no write to a cache line that
//!   another thread writes. (A thread's first count at a site takes a lock
//!   once and may allocate its cell.)
//! - Nothing counted by a process that exits normally is lost: counts of
//!   exited threads, counts made while Redis is unreachable, counts made
//!   since the last interval (the guard and an exit hook deliver them).
//! - Nothing is counted twice: a batch whose reply was lost is resent with the
//!   same instance id and sequence number, and Redis skips it if it was
//!   already applied.
//! - Memory is bounded by threads times stages, never by messages or by how
//!   long Redis is away.
//! - A hard crash (SIGKILL, power loss) loses at most the counts since the
//!   last acknowledged flush: one interval, which [`Config::interval`] sets,
//!   plus the time Redis was unreachable before it.
//! - Counting works before and without [`init`]; [`local_totals`] reads this
//!   process's counts at any time.

#![deny(missing_docs)]
// The crate example shows `init` where it belongs: at the top of `main`.
#![allow(clippy::needless_doctest_main)]

/// Counts every call of a function under a stage.
///
/// `#[counted("stage")]` adds one to the calling thread's count for `stage`
/// each time the function is entered, before its body runs. Functions with
/// the same stage name add up. The function's signature, spans and
/// documentation are unchanged, and without `outcome` or `panics` so is its
/// body: the count is a prefix, not a wrapper. (`outcome` and `panics` run
/// the body inside a closure or a watched future to see how it ends.)
///
/// The count goes through a `static` site and a thread-local cell: once a
/// thread has counted at a site, a counted call costs a few instructions and
/// never contends with other threads.
///
/// # Stage names
///
/// 1 to 120 bytes of ASCII letters, digits and `_ . - : /`, so that every
/// consumer (Redis hash fields, Prometheus labels, JSON, terminal tables,
/// shell arguments) carries them unchanged. Anything else is a compile error
/// at the literal.
///
/// # Where it applies
///
/// Free functions, associated functions and methods with any receiver
/// (`self`, `&self`, `&mut self`, `mut self`, `self: Box<Self>`,
/// `self: Arc<Self>`, ...), trait impls and default methods, generic
/// functions (one site shared by every instantiation), `unsafe fn`,
/// `extern "C" fn`, functions in modules, nested in other functions or made
/// by `macro_rules!`. Not on a `const fn`, or on an item that is not a
/// function.
///
/// `async fn` (free, methods, in traits) is counted when its body first
/// runs, once per call however often it is polled. `#[async_trait]` methods
/// and sync functions returning an `async` block are counted when called.
///
/// # Arguments
///
/// | argument | counts |
/// | --- | --- |
/// | `"stage"` (first, required) | one under `stage` per call, on entry |
/// | `by = EXPR` | `EXPR` instead of one, evaluated on entry with the parameters in scope; an unsigned integer |
/// | `outcome` | also one under `stage.ok` or `stage.err` by the `Result` the function returns, early `return` and `?` included; the function must return a `Result` (aliases such as `io::Result` work) |
/// | `crate = PATH` | nothing more: the expansion reaches titus-count through `PATH` instead of `::titus_count`, for a crate that re-exports it (`crate = my_facade::titus_count`) or depends on it under another name |
/// | `panics` | also one under `stage.panic` when the body panics (not when the function is merely called, or an unfinished future dropped, while another panic unwinds); refused on an `extern "C"` function, where a panic aborts (`extern "C-unwind"` works), and never counts in a `panic = "abort"` build |
///
/// With `outcome` or `panics`, a sync function that returns a future must
/// return it as its tail expression, `async move { .. }`,
/// `Box::pin(async move { .. })` or `async move { .. }.boxed()`, with no
/// earlier `return`: the outcome and the panics are the future's, and a
/// future returned some other way is a compile error rather than a
/// miscount. A future is recognised by the return type as written (`impl
/// Future`, `Pin<Box<dyn Future>>`, `Box<dyn Future>`, `BoxFuture`), not
/// through a type alias; `Result<BoxFuture<..>, E>` is a `Result`. `outcome` on a sync function runs
/// the body in a closure, so it does not combine with `#[track_caller]`.
///
/// Stack the attribute to count one call under several stages. It combines
/// with other attributes such as `#[tracing::instrument]`, `#[inline]`,
/// `#[must_use]`, `#[cfg]` and `#[test]`.
///
/// # Examples
///
/// ```
/// use titus_count::counted;
///
/// #[counted("orders.validate")]
/// fn validate(order: &str) -> bool {
///     !order.is_empty()
/// }
///
/// struct Queue(Vec<String>);
///
/// impl Queue {
///     #[counted("orders.enqueue")]
///     fn push(&mut self, order: String) {
///         self.0.push(order);
///     }
/// }
///
/// let mut queue = Queue(Vec::new());
/// if validate("book") {
///     queue.push("book".to_owned());
/// }
/// assert_eq!(titus_count::local_totals()["orders.validate"], 1);
/// assert_eq!(titus_count::local_totals()["orders.enqueue"], 1);
/// ```
///
/// Counting a batch by its size, and successes and failures apart:
///
/// ```
/// use titus_count::counted;
///
/// #[counted("emit.messages", by = batch.len())]
/// #[counted("emit.batches", outcome)]
/// fn emit(batch: Vec<u32>) -> Result<usize, String> {
///     if batch.is_empty() {
///         return Err("empty batch".to_owned());
///     }
///     Ok(batch.len())
/// }
///
/// emit(vec![1, 2, 3]).unwrap();
/// emit(vec![]).unwrap_err();
/// let totals = titus_count::local_totals();
/// assert_eq!(totals["emit.messages"], 3);
/// assert_eq!(totals["emit.batches"], 2);
/// assert_eq!(totals["emit.batches.ok"], 1);
/// assert_eq!(totals["emit.batches.err"], 1);
/// ```
///
/// Counting panics:
///
/// ```
/// #[titus_count::counted("risky", panics)]
/// fn risky(x: u32) -> u32 {
///     100 / x
/// }
///
/// assert!(std::panic::catch_unwind(|| risky(0)).is_err());
/// assert_eq!(titus_count::local_totals()["risky"], 1);
/// assert_eq!(titus_count::local_totals()["risky.panic"], 1);
/// ```
///
/// Async functions count when their body first runs:
///
/// ```
/// #[titus_count::counted("fetch")]
/// async fn fetch(id: u32) -> u32 {
///     id
/// }
///
/// let future = fetch(7);
/// assert_eq!(titus_count::local_totals().get("fetch"), None);
/// # let mut future = std::pin::pin!(future);
/// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// # assert!(future.as_mut().poll(&mut cx).is_ready());
/// // ... once polled:
/// assert_eq!(titus_count::local_totals()["fetch"], 1);
/// ```
///
/// Misuse is a compile error pointing at the offending tokens (the
/// attribute's arguments, or the return type for `outcome` on a function
/// that does not return a `Result`):
///
/// ```compile_fail
/// #[titus_count::counted]
/// fn missing_stage() {}
/// ```
///
/// ```compile_fail
/// #[titus_count::counted("orders in")]
/// fn space_in_stage() {}
/// ```
///
/// ```compile_fail
/// #[titus_count::counted("parse", outcome)]
/// fn not_a_result() -> u32 { 1 }
/// ```
pub use titus_count_macros::counted;

pub use titus_count_runtime::count;
pub use titus_count_runtime::{
    Completeness, Config, FlushError, FlushGuard, Health, InitError, Instance, MAX_HISTORY_MINUTES,
    Minute, ReadError, Reader, Snapshot, epoch_minute, flush, flush_timeout, health, init,
    instance_id, local_totals, read_totals,
};

/// Names of the environment variables and the defaults, for tools and tests.
pub mod config {
    pub use titus_count_runtime::{
        DEFAULT_HISTORY_RETENTION, DEFAULT_INTERVAL, DEFAULT_IO_TIMEOUT, DEFAULT_NAMESPACE,
        DEFAULT_REDIS_URL, DEFAULT_SHUTDOWN_TIMEOUT, ENV_HISTORY_RETENTION, ENV_INTERVAL,
        ENV_NAMESPACE, ENV_REDIS_URL, ENV_SHARDS, ENV_SHUTDOWN_TIMEOUT, ENV_TLS_CA, ENV_TLS_CERT,
        ENV_TLS_KEY, ENV_WAIT_REPLICAS, parse_duration, redact_url,
    };
}

/// Support for the `#[counted]` expansion. Not public API: it may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use titus_count_runtime::__private::*;
    pub use titus_count_runtime::count;
}
