//! The read side: global totals from Redis.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::ReadError;
use crate::redis::{Keys, connect, describe};

/// The global totals of the configured namespace, summed over every process
/// that has flushed to it: stage -> count.
///
/// Reads the hash `titus:{NAMESPACE}:totals`. Counts still waiting in some
/// process's memory (at most one interval's worth while it runs) are not in
/// it yet.
///
/// # Errors
///
/// [`ReadError::Config`] for a malformed configuration, [`ReadError::Redis`]
/// if Redis cannot be reached or answers with an error, and
/// [`ReadError::Malformed`] if the hash holds a value that is not a count.
///
/// # Examples
///
/// ```no_run
/// let totals = titus_count_runtime::read_totals(&titus_count_runtime::Config::from_env())?;
/// for (stage, count) in &totals {
///     println!("{stage}: {count}");
/// }
/// # Ok::<(), titus_count_runtime::ReadError>(())
/// ```
pub fn read_totals(config: &Config) -> Result<BTreeMap<String, u64>, ReadError> {
    let config = config.resolve()?;
    let redis_error = |e: redis::RedisError| ReadError::Redis(describe(&e, &config.redis_url));
    let client = redis::Client::open(config.redis_url.as_str()).map_err(redis_error)?;
    let mut con = connect(&client, config.io_timeout).map_err(redis_error)?;
    let raw: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(Keys::new(&config.namespace).totals())
        .query(&mut con)
        .map_err(redis_error)?;
    raw.into_iter()
        .map(|(stage, value)| match value.parse::<u64>() {
            Ok(count) => Ok((stage, count)),
            Err(_) => Err(ReadError::Malformed { stage, value }),
        })
        .collect()
}
