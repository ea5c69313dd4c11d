//! Configuration: environment variables, overridden by a builder.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::InitError;

/// Environment variable naming the Redis server.
pub const ENV_REDIS_URL: &str = "TITUS_COUNT_REDIS_URL";
/// Environment variable naming the namespace (the `NS` in `titus:{NS}:totals`).
pub const ENV_NAMESPACE: &str = "TITUS_COUNT_NAMESPACE";
/// Environment variable setting the flush interval.
pub const ENV_INTERVAL: &str = "TITUS_COUNT_INTERVAL";
/// Environment variable setting how long a final flush may wait for Redis.
pub const ENV_SHUTDOWN_TIMEOUT: &str = "TITUS_COUNT_SHUTDOWN_TIMEOUT";
/// Environment variable: over how many hash tags the namespace's writers are
/// spread, each process writing to one (1, the default, keeps them all under
/// `{NS}`).
pub const ENV_SHARDS: &str = "TITUS_COUNT_SHARDS";

/// The longest `io_timeout`: an hour is already "wait for ever" for a
/// command, and bounded values keep the deadlines built on it finite.
const MAX_IO_TIMEOUT: Duration = Duration::from_secs(3600);

/// The most shards a namespace can have: one per Redis Cluster slot.
const MAX_SHARDS: u32 = 16_384;
/// Environment variable: how many replicas must have a batch (Redis `WAIT`)
/// before it counts as delivered; 0 (the default) does not wait.
pub const ENV_WAIT_REPLICAS: &str = "TITUS_COUNT_WAIT_REPLICAS";
/// Environment variable setting how long the per-minute history hashes are
/// kept (and so how far back `titus-count history` can look).
pub const ENV_HISTORY_RETENTION: &str = "TITUS_COUNT_HISTORY_RETENTION";
/// Environment variable naming a PEM file of CA certificates to trust for
/// `rediss://` (instead of the system's roots).
pub const ENV_TLS_CA: &str = "TITUS_COUNT_TLS_CA";
/// Environment variable naming a PEM client certificate (mutual TLS).
pub const ENV_TLS_CERT: &str = "TITUS_COUNT_TLS_CERT";
/// Environment variable naming the PEM private key of the client certificate.
pub const ENV_TLS_KEY: &str = "TITUS_COUNT_TLS_KEY";

/// Redis URL used when none is configured.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Namespace used when none is configured.
pub const DEFAULT_NAMESPACE: &str = "titus";
/// Flush interval used when none is configured.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// How long dropping the guard, `flush()` and the exit hook wait for Redis by
/// default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout and per-command read and write timeout, by default.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the per-minute history buckets are kept, by default.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// A value and where it came from, for error messages.
#[derive(Clone)]
struct Setting<T> {
    value: T,
    source: &'static str,
}

/// How titus-count reaches Redis and how often it flushes.
///
/// [`Config::from_env`] reads the `TITUS_COUNT_*` environment variables; the
/// builder methods override them. Nothing is validated until
/// [`init`](Config::init) (or a read), which reports every malformed setting
/// as an [`InitError`].
///
/// | setting | environment | default |
/// | --- | --- | --- |
/// | [`redis_url`](Config::redis_url) | `TITUS_COUNT_REDIS_URL` | `redis://127.0.0.1:6379` |
/// | [`namespace`](Config::namespace) | `TITUS_COUNT_NAMESPACE` | `titus` |
/// | [`interval`](Config::interval) | `TITUS_COUNT_INTERVAL` | `2s` |
/// | [`shutdown_timeout`](Config::shutdown_timeout) | `TITUS_COUNT_SHUTDOWN_TIMEOUT` | `10s` |
/// | [`io_timeout`](Config::io_timeout) | | `2s` |
/// | [`history_retention`](Config::history_retention) | `TITUS_COUNT_HISTORY_RETENTION` | `24h` |
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let _guard = titus_count_runtime::Config::from_env()
///     .namespace("checkout")
///     .interval(Duration::from_secs(1))
///     .init()
///     .expect("valid titus-count configuration");
/// ```
#[derive(Clone)]
pub struct Config {
    redis_url: Setting<String>,
    namespace: Setting<String>,
    interval: Setting<String>,
    shutdown_timeout: Setting<String>,
    io_timeout: Duration,
    history_retention: Setting<String>,
    tls_ca: Option<Setting<PathBuf>>,
    tls_cert: Option<Setting<PathBuf>>,
    tls_key: Option<Setting<PathBuf>>,
    accept_invalid_tls_certificates: bool,
    wait_replicas: Setting<String>,
    shards: Setting<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &redact_url(&self.redis_url.value))
            .field("namespace", &self.namespace.value)
            .field("interval", &self.interval.value)
            .field("shutdown_timeout", &self.shutdown_timeout.value)
            .field("io_timeout", &self.io_timeout)
            .field("history_retention", &self.history_retention.value)
            .finish()
    }
}

impl Default for Config {
    /// The defaults, ignoring the environment.
    fn default() -> Self {
        Config {
            redis_url: Setting {
                value: DEFAULT_REDIS_URL.to_owned(),
                source: "redis_url",
            },
            namespace: Setting {
                value: DEFAULT_NAMESPACE.to_owned(),
                source: "namespace",
            },
            interval: Setting {
                value: "2s".to_owned(),
                source: "interval",
            },
            shutdown_timeout: Setting {
                value: "10s".to_owned(),
                source: "shutdown_timeout",
            },
            io_timeout: DEFAULT_IO_TIMEOUT,
            history_retention: Setting {
                value: "24h".to_owned(),
                source: "history_retention",
            },
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            accept_invalid_tls_certificates: false,
            wait_replicas: Setting {
                value: "0".to_owned(),
                source: "wait_for_replicas",
            },
            shards: Setting {
                value: "1".to_owned(),
                source: "shards",
            },
        }
    }
}

/// A validated configuration.
#[derive(Clone)]
pub(crate) struct Resolved {
    pub(crate) redis_url: String,
    pub(crate) namespace: String,
    pub(crate) interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) history_retention: Duration,
    pub(crate) tls: Tls,
    /// Replicas that must acknowledge a batch (`WAIT`) before it is delivered.
    pub(crate) wait_replicas: u32,
    /// Hash tags the writers are spread over.
    pub(crate) shards: u32,
}

/// TLS material, read from the configured files (read even without the
/// `tls` feature, so a bad file is reported the same way).
#[derive(Clone, Default)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) struct Tls {
    /// PEM CA certificates to trust instead of the system's roots.
    pub(crate) ca: Option<Vec<u8>>,
    /// PEM client certificate and key, for mutual TLS.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
    /// Skip certificate and hostname verification.
    pub(crate) insecure: bool,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("namespace", &self.namespace)
            .field("interval", &self.interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("history_retention", &self.history_retention)
            .finish()
    }
}

impl Config {
    /// The defaults overridden by whichever `TITUS_COUNT_*` environment
    /// variables are set.
    ///
    /// # Examples
    ///
    /// ```
    /// // With no TITUS_COUNT_* variables set, this is the default configuration.
    /// let config = titus_count_runtime::Config::from_env();
    /// # let _ = config;
    /// ```
    pub fn from_env() -> Self {
        let mut config = Config::default();
        let read = |name: &'static str, setting: &mut Setting<String>| {
            if let Ok(value) = std::env::var(name) {
                *setting = Setting {
                    value,
                    source: name,
                };
            }
        };
        read(ENV_REDIS_URL, &mut config.redis_url);
        read(ENV_NAMESPACE, &mut config.namespace);
        read(ENV_INTERVAL, &mut config.interval);
        read(ENV_SHUTDOWN_TIMEOUT, &mut config.shutdown_timeout);
        read(ENV_WAIT_REPLICAS, &mut config.wait_replicas);
        read(ENV_SHARDS, &mut config.shards);
        read(ENV_HISTORY_RETENTION, &mut config.history_retention);
        let path = |name: &'static str| {
            std::env::var_os(name).map(|value| Setting {
                value: PathBuf::from(value),
                source: name,
            })
        };
        config.tls_ca = path(ENV_TLS_CA);
        config.tls_cert = path(ENV_TLS_CERT);
        config.tls_key = path(ENV_TLS_KEY);
        config
    }

    /// The Redis server to flush to, such as `redis://:password@host:6379/0`;
    /// several comma-separated node URLs select Redis Cluster
    /// (`redis://10.0.0.1:7001,redis://10.0.0.2:7002`).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default().redis_url("redis://10.0.0.5:6379");
    /// # let _ = config;
    /// ```
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Setting {
            value: url.into(),
            source: "redis_url",
        };
        self
    }

    /// The namespace: totals go to the hash `titus:{NAMESPACE}:totals`.
    /// Processes that should add into the same totals use the same namespace.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default().namespace("orders");
    /// # let _ = config;
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Setting {
            value: namespace.into(),
            source: "namespace",
        };
        self
    }

    /// How often the flusher sends the counts to Redis. A hard crash loses at
    /// most the counts since the last acknowledged flush, so this is the knob
    /// that bounds it. Must be at least one millisecond.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = titus_count_runtime::Config::default().interval(Duration::from_millis(500));
    /// # let _ = config;
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Setting {
            value: format_duration(interval),
            source: "interval",
        };
        self
    }

    /// How long dropping the [`FlushGuard`](crate::FlushGuard), [`flush`](crate::flush)
    /// and the exit hook wait for Redis to acknowledge the last counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = titus_count_runtime::Config::default().shutdown_timeout(Duration::from_secs(3));
    /// # let _ = config;
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Setting {
            value: format_duration(timeout),
            source: "shutdown_timeout",
        };
        self
    }

    /// Connect timeout, and read and write timeout of every Redis command
    /// (more than zero, at most an hour).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = titus_count_runtime::Config::default().io_timeout(Duration::from_secs(1));
    /// # let _ = config;
    /// ```
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// How long the per-minute history hashes are kept in Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = titus_count_runtime::Config::default()
    ///     .history_retention(Duration::from_secs(7 * 24 * 3600));
    /// # let _ = config;
    /// ```
    pub fn history_retention(mut self, retention: Duration) -> Self {
        self.history_retention = Setting {
            value: format_duration(retention),
            source: "history_retention",
        };
        self
    }

    /// Trust the CA certificates in this PEM file for `rediss://` servers,
    /// instead of the system's roots. Needs the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default()
    ///     .redis_url("rediss://redis.internal:6380")
    ///     .tls_ca_file("/etc/titus/redis-ca.pem");
    /// # let _ = config;
    /// ```
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(Setting {
            value: path.into(),
            source: "tls_ca_file",
        });
        self
    }

    /// Present this client certificate and key (PEM files) to `rediss://`
    /// servers that ask for one (mutual TLS). Needs the `tls` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default()
    ///     .redis_url("rediss://redis.internal:6380")
    ///     .tls_client_cert("/etc/titus/client.pem", "/etc/titus/client-key.pem");
    /// # let _ = config;
    /// ```
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(Setting {
            value: cert.into(),
            source: "tls_client_cert",
        });
        self.tls_key = Some(Setting {
            value: key.into(),
            source: "tls_client_cert",
        });
        self
    }

    /// Turns off certificate and hostname verification for `rediss://`:
    /// anyone on the path can then read and change the counts. For tests
    /// against self-signed servers only; `init` logs a warning.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default()
    ///     .redis_url("rediss://127.0.0.1:6380")
    ///     .dangerously_accept_invalid_tls_certificates();
    /// # let _ = config;
    /// ```
    pub fn dangerously_accept_invalid_tls_certificates(mut self) -> Self {
        self.accept_invalid_tls_certificates = true;
        self
    }

    /// Counts a batch as delivered only once `replicas` replicas have it
    /// (Redis `WAIT`, bounded by the I/O timeout; a batch that misses it
    /// stays in doubt and is resent, which the batch script skips). Without
    /// it, a failover can lose batches Redis had acknowledged: replication
    /// is asynchronous.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default().wait_for_replicas(1);
    /// # let _ = config;
    /// ```
    pub fn wait_for_replicas(mut self, replicas: u32) -> Self {
        self.wait_replicas = Setting {
            value: replicas.to_string(),
            source: "wait_for_replicas",
        };
        self
    }

    /// Spreads the namespace's writers over `shards` hash tags,
    /// `{NS:0}` .. `{NS:N-1}`, so that a very large fleet's writes land on
    /// several cluster nodes. Each process writes all its batches to one
    /// shard, chosen by a stable hash of its instance id, so a flush stays
    /// one round trip and each node takes its share of the fleet. Each
    /// shard has its own totals, history, sequence marks and instance
    /// records; readers add the shards up. Writers and readers of a
    /// namespace must use the same number (1 to 16384; 1, the default, is
    /// the plain `{NS}` layout).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = titus_count_runtime::Config::default().shards(8);
    /// # let _ = config;
    /// ```
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = Setting {
            value: shards.to_string(),
            source: "shards",
        };
        self
    }

    fn resolve_tls(&self, url: &str) -> Result<Tls, InitError> {
        let read = |setting: &Setting<PathBuf>| -> Result<Vec<u8>, InitError> {
            let error = |reason: String| InitError::InvalidTls {
                setting: setting.source,
                reason: format!("`{}`: {reason}", setting.value.display()),
            };
            let bytes = std::fs::read(&setting.value).map_err(|e| error(e.to_string()))?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(error("not a PEM file".to_owned()));
            }
            Ok(bytes)
        };
        let ca = self.tls_ca.as_ref().map(read).transpose()?;
        let client = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) => {
                return Err(InitError::InvalidTls {
                    setting: only.source,
                    reason: format!(
                        "a client certificate needs both {ENV_TLS_CERT} and {ENV_TLS_KEY}"
                    ),
                });
            }
        };
        let tls_url = nodes(url).iter().any(|n| n.starts_with("rediss://"));
        let any_file = ca.is_some() || client.is_some();
        if any_file && !tls_url {
            let setting = [&self.tls_ca, &self.tls_cert]
                .into_iter()
                .flatten()
                .next()
                .map_or("tls", |s| s.source);
            return Err(InitError::InvalidTls {
                setting,
                reason: "TLS files are set but the Redis URL is not `rediss://`".to_owned(),
            });
        }
        Ok(Tls {
            ca,
            client,
            insecure: self.accept_invalid_tls_certificates,
        })
    }

    /// Validates every setting.
    pub(crate) fn resolve(&self) -> Result<Resolved, InitError> {
        let redis_url = self.redis_url.value.trim().to_owned();
        validate_url(&redis_url, self.redis_url.source)?;
        let namespace = self.namespace.value.clone();
        if namespace.is_empty()
            || namespace
                .chars()
                .any(|c| matches!(c, '{' | '}') || c.is_whitespace() || c.is_control())
            || ends_like_a_shard(&namespace)
        {
            return Err(InitError::InvalidNamespace {
                setting: self.namespace.source,
                namespace,
            });
        }
        let interval = parse_setting(&self.interval)?;
        let shutdown_timeout = parse_setting(&self.shutdown_timeout)?;
        let check = |d: Duration, setting: &'static str| {
            if d.is_zero() {
                Err(InitError::InvalidDuration {
                    setting,
                    value: format_duration(d),
                    reason: "must be greater than zero",
                })
            } else {
                Ok(d)
            }
        };
        let tls = self.resolve_tls(&redis_url)?;
        let wait_replicas = self
            .wait_replicas
            .value
            .trim()
            .parse::<u32>()
            .map_err(|_| InitError::InvalidNumber {
                setting: self.wait_replicas.source,
                value: self.wait_replicas.value.clone(),
                expected: "a whole number such as `1`",
            })?;
        let shards = self
            .shards
            .value
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_SHARDS).contains(n))
            .ok_or_else(|| InitError::InvalidNumber {
                setting: self.shards.source,
                value: self.shards.value.clone(),
                expected: "a whole number from 1 to 16384",
            })?;
        Ok(Resolved {
            tls,
            wait_replicas,
            shards,
            redis_url,
            namespace,
            interval,
            shutdown_timeout,
            io_timeout: check(self.io_timeout, "io_timeout").and_then(|d| {
                if d > MAX_IO_TIMEOUT {
                    Err(InitError::InvalidDuration {
                        setting: "io_timeout",
                        value: format_duration(d),
                        reason: "must be at most 1h",
                    })
                } else {
                    Ok(d)
                }
            })?,
            history_retention: parse_setting(&self.history_retention)?.max(Duration::from_secs(60)),
        })
    }
}

/// Whether a namespace ends in `:` and digits, as `orders:3`: shard 3 of
/// the namespace `orders` has the hash tag `{orders:3}`, which it would
/// share.
fn ends_like_a_shard(namespace: &str) -> bool {
    namespace
        .rsplit_once(':')
        .is_some_and(|(_, tail)| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_setting(setting: &Setting<String>) -> Result<Duration, InitError> {
    let d = parse_duration(&setting.value).map_err(|reason| InitError::InvalidDuration {
        setting: setting.source,
        value: setting.value.clone(),
        reason,
    })?;
    if d < Duration::from_millis(1) {
        return Err(InitError::InvalidDuration {
            setting: setting.source,
            value: setting.value.clone(),
            reason: "must be at least 1ms",
        });
    }
    Ok(d)
}

fn validate_url(url: &str, setting: &'static str) -> Result<(), InitError> {
    let error = |reason: &str| InitError::InvalidRedisUrl {
        setting,
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let nodes = nodes(url);
    if nodes.iter().any(|n| n.is_empty()) {
        return Err(error(
            "an empty node in the list (expected `redis://host:port,redis://host:port`)",
        ));
    }
    let tls = nodes.iter().filter(|n| n.starts_with("rediss://")).count();
    if tls != 0 && tls != nodes.len() {
        return Err(error(
            "the node list mixes `redis://` and `rediss://`: use TLS for every node or none",
        ));
    }
    if tls != 0 && !cfg!(feature = "tls") {
        return Err(error(
            "TLS (`rediss://`) needs titus-count's `tls` cargo feature",
        ));
    }
    for node in &nodes {
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(*node) {
            // The parser's message can echo the URL; describe the error by kind.
            return Err(error(&format!(
                "`{}` is not a valid Redis URL ({:?})",
                redact_url(node),
                e.kind()
            )));
        }
    }
    Ok(())
}

/// The nodes of a setting: one URL, or several separated by commas (which
/// selects Redis Cluster).
///
/// A comma separates nodes only where the next node's `scheme://` follows
/// (or nothing, which is an empty node): a password may hold a comma, and
/// splitting it there would show part of it in an error.
pub(crate) fn nodes(url: &str) -> Vec<&str> {
    let starts_a_node = |rest: &str| {
        let rest = rest.trim_start();
        rest.is_empty()
            || rest.starts_with(',')
            || rest.find("://").is_some_and(|end| {
                let scheme = &rest[..end];
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            })
    };
    let mut nodes = Vec::new();
    let mut start = 0;
    for (comma, _) in url.match_indices(',') {
        if starts_a_node(&url[comma + 1..]) {
            nodes.push(url[start..comma].trim());
            start = comma + 1;
        }
    }
    nodes.push(url[start..].trim());
    nodes
}

/// Parses a humane duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`),
/// such as `500ms`, `5s`, `1.5s`, `1m`, `1h` or `7d`.
///
/// # Errors
///
/// A short reason when the text is not of that form.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use titus_count_runtime::parse_duration;
///
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("missing unit")?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("missing number");
    }
    let number: f64 = number.parse().map_err(|_| "malformed number")?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err("unknown unit"),
    };
    let secs = number * scale;
    if !secs.is_finite() || secs > 365.0 * 24.0 * 3600.0 {
        return Err("too large");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn format_duration(d: Duration) -> String {
    format!("{}ms", d.as_secs_f64() * 1000.0)
}

/// The URL (or comma-separated list of node URLs) with any password replaced
/// by `***`, safe to log or show.
///
/// # Examples
///
/// ```
/// use titus_count_runtime::redact_url;
///
/// assert_eq!(redact_url("redis://user:s3cret@host:6379/0"), "redis://user:***@host:6379/0");
/// assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let nodes = nodes(url);
    if nodes.len() > 1 {
        return nodes
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some((scheme, userinfo, rest)) = split_userinfo(url) else {
        // Not a URL; it may still hold a secret, so show only its shape.
        return "<unparsable>".to_owned();
    };
    let mut out = scheme.to_owned();
    if let Some(userinfo) = userinfo {
        match userinfo.find(':') {
            // A user name holds none of `/ ? #`; if the part before the `@`
            // does, it is not a clean user name: hide all of it.
            Some(colon) if !userinfo[..colon].contains(['/', '?', '#']) => {
                out.push_str(&userinfo[..colon]);
                out.push_str(":***");
            }
            _ if userinfo.contains(['/', '?', '#']) => out.push_str("***"),
            _ => out.push_str(userinfo),
        }
    }
    // A password can also be passed as a `pass=` query parameter.
    match rest.find("pass=") {
        Some(_) => out.push_str(&rest[..rest.find('?').unwrap_or(rest.len())]),
        None => out.push_str(rest),
    }
    out
}

/// A URL cut into `scheme://`, the user information before the last `@` (if
/// any), and the rest from that `@` on.
///
/// A URL parser ends the user information at the first `/`, `?` or `#`, so a
/// password holding one of them makes the URL invalid; the error that says
/// so must still hide the password. So the user information runs to the
/// last `@` of the URL, wherever it is.
fn split_userinfo(url: &str) -> Option<(&str, Option<&str>, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    Some(match rest.rfind('@') {
        Some(at) => (&url[..scheme_end], Some(&rest[..at]), &rest[at..]),
        None => (&url[..scheme_end], None, rest),
    })
}

/// The password in a URL's user information, if any.
pub(crate) fn password_of(url: &str) -> Option<&str> {
    let userinfo = split_userinfo(url)?.1?;
    Some(&userinfo[userinfo.find(':')? + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Err("missing unit"));
        assert_eq!(parse_duration("s"), Err("missing number"));
        assert_eq!(parse_duration("5 parsecs"), Err("unknown unit"));
        assert_eq!(parse_duration("1.2.3s"), Err("malformed number"));
        assert_eq!(parse_duration("99999999h"), Err("too large"));
    }

    #[test]
    fn password_is_found_for_redaction() {
        assert_eq!(password_of("redis://u:pw@h:1/0"), Some("pw"));
        assert_eq!(password_of("redis://u:p@ss@h"), Some("p@ss"));
        assert_eq!(password_of("redis://h:1"), None);
        assert_eq!(password_of("redis://:abc#123@h"), Some("abc#123"));
    }

    #[test]
    fn a_comma_separates_nodes_only_before_a_scheme() {
        assert_eq!(
            nodes("redis://a:1, redis://b:2"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(nodes("redis://:hunter,2@h"), ["redis://:hunter,2@h"]);
        assert_eq!(
            nodes("rediss://:p,w@a,rediss://:p,w@b"),
            ["rediss://:p,w@a", "rediss://:p,w@b"]
        );
        assert_eq!(nodes("redis://a,"), ["redis://a", ""]);
        assert_eq!(
            nodes("redis://a,,redis://b"),
            ["redis://a", "", "redis://b"]
        );
        assert_eq!(redact_url("redis://:hunter,2@h"), "redis://:***@h");
        assert_eq!(password_of("redis://:hunter,2@h"), Some("hunter,2"));
        let err = Config::default()
            .redis_url("redis://:hunter,2@h:6379/x")
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://u:p@ss@h"), "redis://u:***@h");
        assert_eq!(redact_url("redis://h/0?pass=pw"), "redis://h/0");
        assert_eq!(redact_url("pw-without-scheme"), "<unparsable>");
        // Passwords a URL parser cuts short, which make the URL invalid.
        assert_eq!(redact_url("redis://:abc#123@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://u:12/ss@h"), "redis://u:***@h");
        assert_eq!(redact_url("redis://u:a?b@h/0"), "redis://u:***@h/0");
        assert_eq!(redact_url("redis://h/0?pass=a@b"), "redis://***@b");
        assert_eq!(
            redact_url("redis://:a@h:1, redis://:b@h:2"),
            "redis://:***@h:1,redis://:***@h:2"
        );
    }

    #[test]
    fn malformed_settings_are_errors() {
        let bad_url = Config::default().redis_url("redis://:hunter2@[::1");
        let err = bad_url.resolve().expect_err("an error").to_string();
        assert!(err.contains("redis_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let err = Config::default()
            .namespace("a{b}")
            .resolve()
            .expect_err("an error")
            .to_string();
        assert!(err.contains("namespace"), "{err}");
        // `orders:3` would share its keys with shard 3 of `orders`.
        let err = Config::default()
            .namespace("orders:3")
            .resolve()
            .expect_err("an error")
            .to_string();
        assert!(err.contains("`:` and digits"), "{err}");
        for fine in ["app:orders", "orders:v2", "a:1b", "x:"] {
            Config::default().namespace(fine).resolve().unwrap();
        }

        let err = Config::default()
            .io_timeout(Duration::MAX)
            .resolve()
            .expect_err("an error")
            .to_string();
        assert!(
            err.contains("io_timeout") && err.contains("at most 1h"),
            "{err}"
        );

        let err = Config::default()
            .interval(Duration::ZERO)
            .resolve()
            .expect_err("an error")
            .to_string();
        assert!(err.contains("interval"), "{err}");

        for shards in [0, MAX_SHARDS + 1] {
            let err = Config::default()
                .shards(shards)
                .resolve()
                .expect_err("an error")
                .to_string();
            assert!(
                err.contains("shards") && err.contains("1 to 16384"),
                "{err}"
            );
        }
        assert_eq!(
            Config::default()
                .shards(MAX_SHARDS)
                .resolve()
                .unwrap()
                .shards,
            MAX_SHARDS
        );
    }

    #[test]
    fn debug_hides_password() {
        let config = Config::default().redis_url("redis://u:hunter2@h");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
