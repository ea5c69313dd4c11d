//! Errors returned by `init`, `flush` and the read side.

use std::fmt;
use std::time::Duration;

/// Why [`Config::init`](crate::Config::init) refused to start the flusher.
///
/// An unreachable Redis is not an error: the flusher keeps the counts and
/// retries. These are mistakes in the configuration itself.
#[derive(Debug)]
#[non_exhaustive]
pub enum InitError {
    /// The Redis URL could not be parsed. The URL shown has its password
    /// replaced by `***`.
    InvalidRedisUrl {
        /// The setting the URL came from (`TITUS_COUNT_REDIS_URL` or `redis_url`).
        setting: &'static str,
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The namespace is empty or holds characters that would break the key
    /// layout (`{`, `}`, whitespace, control characters, or an ending of `:`
    /// and digits, which a sharded namespace's hash tags use).
    InvalidNamespace {
        /// The setting the namespace came from.
        setting: &'static str,
        /// The namespace as given.
        namespace: String,
    },
    /// A duration setting could not be parsed or is out of range.
    InvalidDuration {
        /// The setting, such as `TITUS_COUNT_INTERVAL`.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TLS setting is wrong: a file missing or unreadable or not PEM, a
    /// certificate without its key, TLS files for a plain `redis://` URL.
    InvalidTls {
        /// The setting, such as `TITUS_COUNT_TLS_CA` or `tls_ca_file`.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting that takes a whole number got something else, or a number
    /// out of its range.
    InvalidNumber {
        /// The setting, such as `TITUS_COUNT_WAIT_REPLICAS`.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// What it takes, such as "a whole number from 1 to 16384".
        expected: &'static str,
    },
    /// `init` was already called in this process; there is one flusher per
    /// process.
    AlreadyInitialized,
    /// The flusher thread could not be started.
    Spawn(std::io::Error),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::InvalidRedisUrl {
                setting,
                url,
                reason,
            } => write!(
                f,
                "invalid {setting} `{url}`: {reason} (expected a URL such as `redis://127.0.0.1:6379`)"
            ),
            InitError::InvalidNamespace { setting, namespace } => write!(
                f,
                "invalid {setting} `{namespace}`: a namespace must be non-empty and must not \
                 contain `{{`, `}}`, whitespace or control characters, nor end in `:` and digits \
                 (`orders:3` is shard 3 of `orders`)"
            ),
            InitError::InvalidDuration {
                setting,
                value,
                reason,
            } => write!(
                f,
                "invalid {setting} `{value}`: {reason} (expected a number and a unit, such as \
                 `500ms`, `5s`, `1m` or `1h`)"
            ),
            InitError::InvalidTls { setting, reason } => {
                write!(f, "invalid {setting}: {reason}")
            }
            InitError::InvalidNumber {
                setting,
                value,
                expected,
            } => write!(f, "invalid {setting} `{value}`: expected {expected}"),
            InitError::AlreadyInitialized => {
                f.write_str("titus-count is already initialised in this process")
            }
            InitError::Spawn(e) => write!(f, "cannot start the titus-count flusher thread: {e}"),
        }
    }
}

impl std::error::Error for InitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InitError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`flush`](crate::flush) returned before Redis acknowledged every count.
///
/// The counts are not lost: the flusher keeps them and goes on retrying (at
/// process exit, once the exit hook's wait has run out, it writes them to
/// the log at error level instead).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushError {
    /// `init` has not been called, so there is no flusher to deliver counts.
    NotInitialized,
    /// Redis did not acknowledge within the timeout. `last_error` is the most
    /// recent failure the flusher saw, if any.
    Timeout {
        /// The timeout the call was given (it may have waited a little
        /// longer, for a delivery already under way).
        waited: Duration,
        /// The flusher's last error, if a delivery attempt failed.
        last_error: Option<String>,
    },
}

impl fmt::Display for FlushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushError::NotInitialized => {
                f.write_str("titus-count is not initialised: call titus_count::init() first")
            }
            FlushError::Timeout { waited, last_error } => {
                write!(
                    f,
                    "Redis did not acknowledge the counts within {waited:?}; they are kept and retried"
                )?;
                if let Some(e) = last_error {
                    write!(f, " (last error: {e})")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for FlushError {}

/// Why reading the totals from Redis failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The configuration is invalid.
    Config(InitError),
    /// Redis could not be reached or answered with an error.
    Redis(String),
    /// A value in the totals hash is not a non-negative integer.
    Malformed {
        /// The stage whose value is malformed.
        stage: String,
        /// The value found.
        value: String,
    },
    /// A history range longer than the reader reads.
    RangeTooLong {
        /// Minutes asked for.
        minutes: u64,
        /// The most minutes read at once.
        max: u64,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Config(e) => e.fmt(f),
            ReadError::Redis(e) => write!(f, "the request to Redis failed: {e}"),
            ReadError::Malformed { stage, value } => {
                write!(f, "stage `{stage}` holds `{value}`, which is not a count")
            }
            ReadError::RangeTooLong { minutes, max } => write!(
                f,
                "a history of {minutes} minutes was asked for; at most {max} are read at once"
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InitError> for ReadError {
    fn from(e: InitError) -> Self {
        ReadError::Config(e)
    }
}
