//! The flusher's state, for health checks and dashboards.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::cells::registry;

/// What the flusher has done lately: whether counts are reaching Redis.
///
/// # Examples
///
/// ```no_run
/// let _guard = titus_count_runtime::init();
/// if let Some(health) = titus_count_runtime::health() {
///     if health.consecutive_failures > 0 {
///         eprintln!("counts are waiting: {:?}", health.last_error);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The unique id of this process in Redis.
    pub instance: String,
    /// When Redis last acknowledged a batch.
    pub last_success: Option<SystemTime>,
    /// Delivery attempts that failed since the last success.
    pub consecutive_failures: u32,
    /// The most recent failure, password redacted; cleared by a success.
    pub last_error: Option<String>,
    /// Whether the most recent failure needs an operator (a key of the wrong
    /// type, a command refused by ACL, an overflowing count, a wrong
    /// password) rather than time (Redis down, slow or failing over).
    pub last_error_permanent: bool,
    /// Counts made in this process and not yet acknowledged by Redis (every
    /// thread's cells are collected for the answer).
    pub pending_counts: u64,
    /// Batches sent or about to be sent whose fate is unknown: 0 or 1.
    pub batches_in_doubt: usize,
    /// Sequence number of the batch in doubt.
    pub in_doubt_seq: Option<u64>,
    /// Batches Redis has acknowledged since `init`.
    pub acknowledged_batches: u64,
    /// Delivery attempts that failed since `init`.
    pub failed_attempts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) instance: String,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) consecutive_failures: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_permanent: bool,
    /// Sequence number and count total of the batch in doubt.
    pub(crate) in_doubt: Option<(u64, u64)>,
    pub(crate) acknowledged_batches: u64,
    pub(crate) failed_attempts: u64,
}

pub(crate) static STATE: Mutex<Option<State>> = Mutex::new(None);

pub(crate) fn update(f: impl FnOnce(&mut State)) {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    f(state.get_or_insert_with(State::default));
}

/// The flusher's state, or `None` before [`init`](crate::init).
///
/// # Examples
///
/// ```
/// // Before init there is no flusher to report on.
/// assert!(titus_count_runtime::health().is_none());
/// ```
pub fn health() -> Option<Health> {
    let collected = {
        let mut reg = registry();
        reg.collect();
        reg.pending_total()
    };
    let state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let state = state.as_ref()?;
    let in_doubt_total = state.in_doubt.map_or(0, |(_, total)| total);
    Some(Health {
        instance: state.instance.clone(),
        last_success: state.last_success,
        consecutive_failures: state.consecutive_failures,
        last_error: state.last_error.clone(),
        last_error_permanent: state.last_error_permanent,
        pending_counts: collected.saturating_add(in_doubt_total),
        batches_in_doubt: usize::from(state.in_doubt.is_some()),
        in_doubt_seq: state.in_doubt.map(|(seq, _)| seq),
        acknowledged_batches: state.acknowledged_batches,
        failed_attempts: state.failed_attempts,
    })
}
