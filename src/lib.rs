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
//!   another thread writes.
//! - Nothing counted by a process that exits normally is lost: counts of
//!   exited threads, counts made while Redis is unreachable, counts made
//!   since the last interval (the guard and an exit hook deliver them).
//! - Nothing is counted twice: a batch whose reply was lost is resent with the
//!   same instance id and sequence number, and Redis skips it if it was
//!   already applied.
//! - Memory is bounded by threads times stages, never by messages or by how
//!   long Redis is away.
//! - A hard crash (SIGKILL, power loss) loses at most the counts since the
//!   last acknowledged flush: one interval, which [`Config::interval`] sets.
//! - Counting works before and without [`init`]; [`local_totals`] reads this
//!   process's counts at any time.

#![deny(missing_docs)]
// The crate example shows `init` where it belongs: at the top of `main`.
#![allow(clippy::needless_doctest_main)]

/// Counts every call of a function under a stage.
///
/// `#[counted("stage")]` adds one to the calling thread's count for `stage`
/// each time the function is entered, before its body runs. Functions and
/// methods (any receiver) with the same stage name add up. The function's
/// signature, body and behaviour are unchanged.
///
/// The count goes through a `static` site and a thread-local cell: once a
/// thread has counted at a site, a counted call costs a few instructions and
/// never contends with other threads.
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
/// Misuse is a compile error pointing at the attribute's arguments:
///
/// ```compile_fail
/// #[titus_count::counted]
/// fn missing_stage() {}
/// ```
///
/// ```compile_fail
/// #[titus_count::counted("")]
/// fn empty_stage() {}
/// ```
pub use titus_count_macros::counted;

pub use titus_count_runtime::count;
pub use titus_count_runtime::{
    Config, FlushError, FlushGuard, InitError, ReadError, flush, flush_timeout, init, instance_id,
    local_totals, read_totals,
};

/// Names of the environment variables and the defaults, for tools and tests.
pub mod config {
    pub use titus_count_runtime::{
        DEFAULT_HISTORY_RETENTION, DEFAULT_INTERVAL, DEFAULT_IO_TIMEOUT, DEFAULT_NAMESPACE,
        DEFAULT_REDIS_URL, DEFAULT_SHUTDOWN_TIMEOUT, ENV_INTERVAL, ENV_NAMESPACE, ENV_REDIS_URL,
        ENV_SHUTDOWN_TIMEOUT, parse_duration, redact_url,
    };
}

/// Support for the `#[counted]` expansion. Not public API: it may change in
/// any release.
#[doc(hidden)]
pub mod __private {
    pub use titus_count_runtime::__private::*;
    pub use titus_count_runtime::count;
}
