//! Runtime of [titus-count](https://docs.rs/titus-count): per-thread counter
//! cells, the flusher thread, the Redis writer, configuration and the read
//! side.
//!
//! Applications use the `titus-count` crate, which re-exports what they need
//! from here together with the `#[counted]` attribute.
//!
//! # Examples
//!
//! ```no_run
//! let _guard = titus_count_runtime::init();
//! titus_count_runtime::count!("messages.in");
//! assert_eq!(titus_count_runtime::local_totals()["messages.in"], 1);
//! ```

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

mod cells;
mod config;
mod error;
mod flusher;
mod health;
mod outcome;
mod read;
mod redis;
mod site;

pub use config::{
    Config, DEFAULT_HISTORY_RETENTION, DEFAULT_INTERVAL, DEFAULT_IO_TIMEOUT, DEFAULT_NAMESPACE,
    DEFAULT_REDIS_URL, DEFAULT_SHUTDOWN_TIMEOUT, ENV_HISTORY_RETENTION, ENV_INTERVAL,
    ENV_NAMESPACE, ENV_REDIS_URL, ENV_SHARDS, ENV_SHUTDOWN_TIMEOUT, ENV_TLS_CA, ENV_TLS_CERT,
    ENV_TLS_KEY, ENV_WAIT_REPLICAS, parse_duration, redact_url,
};
pub use error::{FlushError, InitError, ReadError};
pub use flusher::{FlushGuard, flush, flush_timeout, init, instance_id};
pub use health::{Health, health};
pub use read::{
    Completeness, Instance, MAX_HISTORY_MINUTES, Minute, Reader, Snapshot, epoch_minute,
    read_totals,
};
pub use site::local_totals;

/// Support for macro expansions. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::flusher::json_string;
    pub use crate::outcome::{OnPanic, Outcome, call_once, is_ok, output_of, watch_panics};
    pub use crate::site::{Count, Site, Slot, add, check_count_literal};
    pub use std::thread_local;

    /// Number of per-thread records ever allocated: bounded by the peak
    /// number of live counting threads. For tests of thread churn.
    pub fn thread_records() -> usize {
        crate::cells::registry().record_count()
    }

    /// A batch writer outside the flusher: lets tests prove that a resent
    /// batch is not applied twice, and benchmarks time one batch.
    pub struct BatchWriter(crate::redis::Writer);

    impl BatchWriter {
        /// A writer for `instance` into `namespace` at `redis_url`.
        pub fn new(redis_url: &str, namespace: &str, instance: &str) -> Result<Self, String> {
            Self::sharded(redis_url, namespace, instance, 1)
        }

        /// Like [`new`](Self::new), with the namespace spread over `shards`.
        pub fn sharded(
            redis_url: &str,
            namespace: &str,
            instance: &str,
            shards: u32,
        ) -> Result<Self, String> {
            let config = crate::Config::default()
                .redis_url(redis_url)
                .namespace(namespace)
                .shards(shards)
                .resolve()
                .map_err(|e| e.to_string())?;
            crate::redis::Writer::new(&config, instance.to_owned())
                .map(BatchWriter)
                .map_err(|e| e.to_string())
        }

        /// Sends one batch; `Ok(true)` if applied now, `Ok(false)` if it had
        /// been applied before.
        pub fn apply(&mut self, seq: u64, deltas: &[(&'static str, u64)]) -> Result<bool, String> {
            let batch = crate::redis::Batch {
                seq,
                cut_ms: 0,
                deltas: deltas.to_vec(),
            };
            let records = crate::redis::Records {
                applied: "{}".to_owned(),
                refused: "{}".to_owned(),
            };
            self.0
                .apply(&batch, &records)
                .map(|applied| applied == crate::redis::Applied::Now)
                .map_err(|e| e.error.to_string())
        }
    }

    impl BatchWriter {
        /// Sends one batch as `instance`, on this writer's connection: lets
        /// a load generator play many instances over few connections.
        pub fn apply_as(
            &mut self,
            instance: &str,
            seq: u64,
            deltas: &[(&'static str, u64)],
        ) -> Result<bool, String> {
            self.0.set_instance(instance);
            self.apply(seq, deltas)
        }
    }

    /// Applies one batch on a fresh connection (see [`BatchWriter`]).
    pub fn apply_batch(
        redis_url: &str,
        namespace: &str,
        instance: &str,
        seq: u64,
        deltas: &[(&'static str, u64)],
    ) -> Result<bool, String> {
        BatchWriter::new(redis_url, namespace, instance)?.apply(seq, deltas)
    }
}
