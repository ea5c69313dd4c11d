//! The read side: global totals, per-minute history, the instances that
//! flush, and up to when the totals are complete.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Config, Resolved};
use crate::error::ReadError;
use crate::redis::{Conn, Keys, Target, describe};

/// Deletes the instance records it is given if they are unchanged, and
/// returns the ids deleted. KEYS: instances. ARGV: id and record pairs.
const PRUNE_SCRIPT: &str = r#"
local deleted = {}
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    deleted[#deleted + 1] = ARGV[i]
  end
end
return deleted
"#;

/// An instance not heard from for this many intervals, plus the longest
/// back-off between two delivery attempts and a margin for clock skew, is
/// stale: presumed gone. A live process that Redis can reach writes its
/// record at least that often, in back-off too.
const STALE_INTERVALS: u32 = 3;
const STALE_MARGIN: Duration = Duration::from_secs(5);

/// How long an instance may stay silent before it is stale.
fn stale_after(interval: Duration) -> Duration {
    interval
        .saturating_mul(STALE_INTERVALS)
        .saturating_add(crate::flusher::MAX_BACKOFF)
        .saturating_add(STALE_MARGIN)
}

/// The global totals of the configured namespace, summed over every process
/// that has flushed to it: stage -> count.
///
/// Reads the hash `titus:{NAMESPACE}:totals`. Counts still waiting in some
/// process's memory (at most one interval's worth while it runs) are not in
/// it yet; [`Reader::snapshot`] says up to when the totals are complete.
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
    Reader::connect(config)?.totals()
}

/// A process that flushes to the namespace, as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// The instance id (unique per process run).
    pub id: String,
    /// Host name of the process.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the process started its flusher.
    pub started: SystemTime,
    /// When it last sent a batch.
    pub last_flush: SystemTime,
    /// Every count the process made before this time is in the totals.
    pub complete: SystemTime,
    /// Its flush interval.
    pub interval: Duration,
    /// Sequence number of its last batch.
    pub seq: u64,
    /// Whether it had more counts waiting when it last flushed.
    pub pending: bool,
    /// Whether its last batch carried no counts and none were waiting: it
    /// counted nothing in the interval before.
    pub quiet: bool,
    /// Whether its last batch was the final one of a process that exited
    /// (its exit hook ran) with everything delivered: it sends no more.
    pub exited: bool,
    /// Not heard from for three intervals plus the flusher's longest
    /// back-off (30 s) and 5 s, without saying it exited: presumed gone,
    /// and left out of the completeness time.
    pub stale: bool,
}

/// Up to when the totals are complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completeness {
    /// The oldest completeness time over live instances: the totals include
    /// every count made before it. Without live instances, the latest
    /// completeness time of those that exited (everything they counted is
    /// in); `None` if none did either.
    pub complete_up_to: Option<SystemTime>,
    /// The totals are final for now: at least one instance has flushed, and
    /// every live one counted nothing in its last interval (its last batch
    /// was empty, with nothing pending); exited instances sent everything.
    pub settled: bool,
    /// Instances heard from lately that have not exited.
    pub live: usize,
    /// Instances presumed gone.
    pub stale: usize,
    /// Instances that exited with everything delivered.
    pub exited: usize,
    /// Instance records that could not be read (not written by a
    /// titus-count writer): left out of the instances and of the
    /// completeness time.
    pub unreadable: usize,
}

/// Totals, instances and completeness, read at one point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The namespace read.
    pub namespace: String,
    /// stage -> all-time count.
    pub totals: BTreeMap<String, u64>,
    /// Every instance that has flushed, live or stale, oldest first.
    pub instances: Vec<Instance>,
    /// Up to when `totals` is complete.
    pub completeness: Completeness,
}

/// The counts flushed during one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Minute {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    /// stage -> count, for the stages asked for (0 where none).
    pub counts: BTreeMap<String, u64>,
}

/// A connection for reading a namespace, reused across reads (for tools
/// that refresh or serve the counts).
///
/// # Examples
///
/// ```no_run
/// use titus_count_runtime::{Config, Reader};
///
/// let mut reader = Reader::connect(&Config::from_env())?;
/// let snapshot = reader.snapshot()?;
/// println!("{} stages, settled: {}", snapshot.totals.len(), snapshot.completeness.settled);
/// # Ok::<(), titus_count_runtime::ReadError>(())
/// ```
pub struct Reader {
    config: Resolved,
    /// One per shard; each instance writes to one of them.
    shards: Vec<Keys>,
    con: Conn,
    /// False once Redis refused `TIME` (an ACL without `+time`): liveness
    /// is then judged by this machine's clock.
    server_clock: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Connects to the configured Redis.
    ///
    /// # Errors
    ///
    /// [`ReadError::Config`] for a malformed configuration,
    /// [`ReadError::Redis`] if Redis cannot be reached.
    pub fn connect(config: &Config) -> Result<Self, ReadError> {
        let config = config.resolve()?;
        let redis_error = |e: redis::RedisError| ReadError::Redis(describe(&e, &config.redis_url));
        let target = Target::open(&config).map_err(redis_error)?;
        let con = target.connect(config.io_timeout).map_err(redis_error)?;
        Ok(Reader {
            shards: Keys::shards(&config.namespace, config.shards),
            config,
            con,
            server_clock: true,
        })
    }

    /// The namespace this reader reads.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    fn error(&self, e: redis::RedisError) -> ReadError {
        ReadError::Redis(describe(&e, &self.config.redis_url))
    }

    /// Runs `commands` in one round trip: a transaction on one server; on a
    /// cluster (whose client runs no transactions) a pipeline, each command
    /// sent to the node that owns its key, in order per node.
    fn pipeline<T: redis::FromRedisValue>(
        &mut self,
        commands: Vec<redis::Cmd>,
    ) -> Result<T, ReadError> {
        self.pipeline_raw(commands).map_err(|e| self.error(e))
    }

    /// [`pipeline`](Self::pipeline), with the client's error.
    fn pipeline_raw<T: redis::FromRedisValue>(
        &mut self,
        commands: Vec<redis::Cmd>,
    ) -> redis::RedisResult<T> {
        match &mut self.con {
            Conn::Single(con) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query(con)
            }
            Conn::Cluster(con) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query(con)
            }
        }
    }

    /// The hashes `commands` read, and Redis's clock: in one round trip on
    /// one server, in two on a cluster (whose pipelines take no `TIME`).
    /// If Redis refuses `TIME` (an ACL without `+time`), this machine's
    /// clock stands in for it.
    ///
    /// Liveness is judged by Redis's clock, which also stamps every
    /// record's last flush, so neither the writers' nor this machine's
    /// clock can make a live process look stale.
    fn hashes_and_time(
        &mut self,
        commands: Vec<redis::Cmd>,
    ) -> Result<(Vec<RawFields>, SystemTime), ReadError> {
        let parsing = |e: redis::ParsingError| ReadError::Redis(format!("unexpected reply: {e}"));
        // A refused `TIME` aborts the whole transaction: then read again
        // without it.
        let refused = |e: &redis::RedisError| {
            matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::NoPerm | redis::ServerErrorKind::ExecAbort
                )
            )
        };
        let mut replies = None;
        let mut time = None;
        if self.server_clock {
            match &mut self.con {
                Conn::Single(_) => {
                    let mut with_time = commands.clone();
                    with_time.push(redis::cmd("TIME"));
                    match self.pipeline_raw::<Vec<redis::Value>>(with_time) {
                        Ok(mut all) => {
                            time = all.pop();
                            replies = Some(all);
                        }
                        Err(e) if refused(&e) => self.server_clock = false,
                        Err(e) => return Err(self.error(e)),
                    }
                }
                Conn::Cluster(con) => match redis::cmd("TIME").query(con) {
                    Ok(t) => time = Some(t),
                    Err(e) if refused(&e) => self.server_clock = false,
                    Err(e) => return Err(self.error(e)),
                },
            }
        }
        let replies: Vec<redis::Value> = match replies {
            Some(replies) => replies,
            None => self.pipeline(commands)?,
        };
        let now = match time {
            Some(time) => {
                let (secs, micros): (u64, u64) = redis::from_redis_value(time).map_err(parsing)?;
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
            }
            None => SystemTime::now(),
        };
        let hashes = replies
            .into_iter()
            .map(|v| redis::from_redis_value(v).map_err(parsing))
            .collect::<Result<_, _>>()?;
        Ok((hashes, now))
    }

    /// The global totals: stage -> all-time count, merged over the shards.
    ///
    /// # Errors
    ///
    /// As [`read_totals`].
    pub fn totals(&mut self) -> Result<BTreeMap<String, u64>, ReadError> {
        let commands = self
            .shards
            .iter()
            .map(|keys| redis::cmd("HGETALL").arg(keys.totals()).clone())
            .collect();
        let shards: Vec<RawFields> = self.pipeline(commands)?;
        merge_counts(shards)
    }

    /// Totals, instances and completeness in one round trip (atomically,
    /// with `MULTI`/`EXEC`, on one server; in two on a cluster, the second
    /// for Redis's clock).
    ///
    /// # Errors
    ///
    /// As [`read_totals`], and [`ReadError::Malformed`] for an instance
    /// record that cannot be read.
    pub fn snapshot(&mut self) -> Result<Snapshot, ReadError> {
        // Each shard's instance records, then each shard's totals. Without
        // a transaction (on a cluster) a batch may land between the two
        // reads; this order lets it only add to the totals, never make a
        // record claim counts the totals lack.
        let commands: Vec<redis::Cmd> = [Keys::instances, Keys::totals]
            .iter()
            .flat_map(|key| {
                self.shards
                    .iter()
                    .map(move |keys| redis::cmd("HGETALL").arg(key(keys)).clone())
            })
            .collect();
        let (mut instances, now) = self.hashes_and_time(commands)?;
        let replies = instances.split_off(self.shards.len());
        let records: Vec<_> = instances.into_iter().flatten().collect();
        let read = records.len();
        let records: Vec<(String, String)> = records.into_iter().filter_map(text_pair).collect();
        // One foreign record must not hide every other view.
        let mut instances: Vec<Instance> = records
            .into_iter()
            .filter_map(|(id, json)| parse_instance(id, &json, now).ok())
            .collect();
        instances.sort_by_key(|i| (i.started, i.id.clone()));
        let mut completeness = completeness(&instances);
        completeness.unreadable = read - instances.len();
        Ok(Snapshot {
            namespace: self.config.namespace.clone(),
            totals: merge_counts(replies)?,
            completeness,
            instances,
        })
    }

    /// The stale or exited instances not heard from for at least
    /// `not_heard_for`:
    /// what [`prune_instances`](Self::prune_instances) would delete now.
    /// Records that cannot be read are left out.
    ///
    /// # Errors
    ///
    /// As [`read_totals`].
    pub fn prunable_instances(
        &mut self,
        not_heard_for: Duration,
    ) -> Result<Vec<Instance>, ReadError> {
        let mut found: Vec<Instance> = self
            .prunable(not_heard_for)?
            .into_iter()
            .map(|(_, instance, _)| instance)
            .collect();
        found.sort_by_key(|i| (i.last_flush, i.id.clone()));
        Ok(found)
    }

    /// Deletes the records of the stale or exited instances not heard from
    /// for at least `not_heard_for`, in every shard, and returns them. The one
    /// write a reader makes: it needs `EVAL`, `HGET` and `HDEL` on the
    /// namespace's keys.
    ///
    /// Records of processes that are gone stay in the instances hash, shown
    /// as stale or exited, until pruned. Only those records go (stale: not
    /// heard from for three intervals plus the flusher's longest back-off,
    /// 30 s, and a margin of 5 s; exited: the process said so), so pruning
    /// never removes a process that may still send counts, whatever
    /// `not_heard_for` is. A record is
    /// deleted only if it is still the one that was read (a script compares
    /// them), so a process that flushes meanwhile keeps its record. Pruning
    /// touches no count: totals and history stay as they are, and a process
    /// that was only cut off writes its record again with its next batch.
    ///
    /// # Errors
    ///
    /// As [`read_totals`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use titus_count_runtime::{Config, Reader};
    ///
    /// let mut reader = Reader::connect(&Config::from_env())?;
    /// let gone = reader.prune_instances(Duration::from_secs(24 * 60 * 60))?;
    /// println!("pruned {} instances", gone.len());
    /// # Ok::<(), titus_count_runtime::ReadError>(())
    /// ```
    pub fn prune_instances(&mut self, not_heard_for: Duration) -> Result<Vec<Instance>, ReadError> {
        let prunable = self.prunable(not_heard_for)?;
        let mut by_shard: Vec<Vec<(Instance, String)>> = vec![Vec::new(); self.shards.len()];
        for (shard, instance, json) in prunable {
            by_shard[shard].push((instance, json));
        }
        let (mut commands, mut asked) = (Vec::new(), Vec::new());
        for (keys, records) in self.shards.iter().zip(by_shard) {
            if records.is_empty() {
                continue;
            }
            let mut eval = redis::cmd("EVAL");
            eval.arg(PRUNE_SCRIPT).arg(1).arg(keys.instances());
            for (instance, json) in &records {
                eval.arg(&instance.id).arg(json);
            }
            commands.push(eval);
            asked.extend(records.into_iter().map(|(instance, _)| instance));
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let deleted: Vec<Vec<String>> = self.pipeline(commands)?;
        let deleted: std::collections::HashSet<String> = deleted.into_iter().flatten().collect();
        let mut pruned: Vec<Instance> = asked
            .into_iter()
            .filter(|i| deleted.contains(&i.id))
            .collect();
        pruned.sort_by_key(|i| (i.last_flush, i.id.clone()));
        Ok(pruned)
    }

    /// Every prunable instance: its shard, the instance and its record as read.
    fn prunable(
        &mut self,
        not_heard_for: Duration,
    ) -> Result<Vec<(usize, Instance, String)>, ReadError> {
        let commands: Vec<redis::Cmd> = self
            .shards
            .iter()
            .map(|keys| redis::cmd("HGETALL").arg(keys.instances()).clone())
            .collect();
        let (shards, now) = self.hashes_and_time(commands)?;
        let mut found = Vec::new();
        for (shard, records) in shards.into_iter().enumerate() {
            for (id, json) in records.into_iter().filter_map(text_pair) {
                let Ok(instance) = parse_instance(id, &json, now) else {
                    continue;
                };
                let silent = now
                    .duration_since(instance.last_flush)
                    .is_ok_and(|age| age >= not_heard_for);
                if (instance.stale || instance.exited) && silent {
                    found.push((shard, instance, json));
                }
            }
        }
        Ok(found)
    }

    /// How long the per-minute history is kept, as configured
    /// (`TITUS_COUNT_HISTORY_RETENTION`): older minutes read as zero.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use titus_count_runtime::{Config, Reader};
    ///
    /// let reader = Reader::connect(&Config::from_env())?;
    /// println!("history goes back {:?}", reader.history_retention());
    /// # Ok::<(), titus_count_runtime::ReadError>(())
    /// ```
    pub fn history_retention(&self) -> std::time::Duration {
        self.config.history_retention
    }

    /// The per-minute counts of `stages` for the minutes `from..=to`
    /// (minutes since the Unix epoch), oldest first: one round trip for up
    /// to 4096 minutes times shards, more for longer ranges. Minutes older
    /// than the history retention read as zero.
    ///
    /// # Errors
    ///
    /// As [`read_totals`], and [`ReadError::RangeTooLong`] for more than
    /// [`MAX_HISTORY_MINUTES`] minutes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use titus_count_runtime::{Config, Reader, epoch_minute};
    ///
    /// let mut reader = Reader::connect(&Config::from_env())?;
    /// let now = epoch_minute(std::time::SystemTime::now());
    /// for minute in reader.history(&["in".to_owned()], now - 59, now)? {
    ///     println!("{}: {}", minute.minute, minute.counts["in"]);
    /// }
    /// # Ok::<(), titus_count_runtime::ReadError>(())
    /// ```
    pub fn history(
        &mut self,
        stages: &[String],
        from: u64,
        to: u64,
    ) -> Result<Vec<Minute>, ReadError> {
        if stages.is_empty() || from > to {
            return Ok(Vec::new());
        }
        let minutes = (to - from).saturating_add(1);
        if minutes > MAX_HISTORY_MINUTES {
            return Err(ReadError::RangeTooLong {
                minutes,
                max: MAX_HISTORY_MINUTES,
            });
        }
        // A stage asked for twice is read, and counted, once.
        let mut unique: Vec<String> = Vec::with_capacity(stages.len());
        for stage in stages {
            if !unique.contains(stage) {
                unique.push(stage.clone());
            }
        }
        let stages = &unique[..];
        let shards = self.shards.len();
        // Whole minutes per round trip, so a long range or many shards
        // never build one huge request.
        let per_trip = (HISTORY_COMMANDS_PER_TRIP / shards).max(1);
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        for start in (from..=to).step_by(per_trip) {
            let end = start.saturating_add(per_trip as u64 - 1).min(to);
            let commands = (start..=end)
                .flat_map(|minute| {
                    self.shards.iter().map(move |keys| {
                        redis::cmd("HMGET")
                            .arg(keys.minute(minute))
                            .arg(stages)
                            .clone()
                    })
                })
                .collect();
            let trip: Vec<Vec<Option<String>>> = self.pipeline(commands)?;
            rows.extend(trip);
        }
        (from..=to)
            .zip(rows.chunks(shards))
            .map(|(minute, shard_rows)| {
                let mut counts: BTreeMap<String, u64> =
                    stages.iter().map(|s| (s.clone(), 0)).collect();
                for values in shard_rows {
                    for (stage, value) in stages.iter().zip(values) {
                        if let Some(v) = value {
                            let n: u64 = v.parse().map_err(|_| ReadError::Malformed {
                                stage: stage.clone(),
                                value: v.clone(),
                            })?;
                            let sum = counts.get_mut(stage).expect("every stage has a count");
                            *sum = sum.checked_add(n).ok_or_else(|| ReadError::Malformed {
                                stage: stage.clone(),
                                value: format!("{v}, which summed over the shards exceeds u64"),
                            })?;
                        }
                    }
                }
                Ok(Minute { minute, counts })
            })
            .collect()
    }
}

/// The longest range [`Reader::history`] reads: 366 days of minutes, more
/// than the longest history retention.
pub const MAX_HISTORY_MINUTES: u64 = 366 * 24 * 60;

/// How many commands (minutes times shards) [`Reader::history`] sends in
/// one round trip.
const HISTORY_COMMANDS_PER_TRIP: usize = 4096;

/// Minutes since the Unix epoch of a time.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// assert_eq!(titus_count_runtime::epoch_minute(UNIX_EPOCH + Duration::from_secs(125)), 2);
/// ```
pub fn epoch_minute(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// The field-value pairs of a hash.
/// The field-value pairs of a hash, as bytes: a field or value that is not
/// UTF-8 (written by another program) is then one bad entry, not a failed
/// read of the whole hash.
type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// A field and value as text, if both are UTF-8.
fn text_pair((field, value): (Vec<u8>, Vec<u8>)) -> Option<(String, String)> {
    Some((
        String::from_utf8(field).ok()?,
        String::from_utf8(value).ok()?,
    ))
}

/// Sums the totals hashes of several shards.
fn merge_counts(shards: Vec<RawFields>) -> Result<BTreeMap<String, u64>, ReadError> {
    let mut totals = BTreeMap::new();
    for shard in shards {
        for (stage, n) in parse_counts(shard)? {
            let sum = totals.entry(stage.clone()).or_insert(0u64);
            *sum = sum.checked_add(n).ok_or_else(|| ReadError::Malformed {
                stage,
                value: format!("{n}, which summed over the shards exceeds u64"),
            })?;
        }
    }
    Ok(totals)
}

fn parse_counts(raw: RawFields) -> Result<BTreeMap<String, u64>, ReadError> {
    raw.into_iter()
        .map(|(stage, value)| {
            let count = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match (String::from_utf8(stage), count) {
                (Ok(stage), Some(count)) => Ok((stage, count)),
                (stage, _) => Err(ReadError::Malformed {
                    stage: stage
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    value: String::from_utf8_lossy(&value).into_owned(),
                }),
            }
        })
        .collect()
}

fn completeness(instances: &[Instance]) -> Completeness {
    let live: Vec<&Instance> = instances.iter().filter(|i| !i.stale && !i.exited).collect();
    let exited: Vec<&Instance> = instances.iter().filter(|i| i.exited).collect();
    let complete_up_to = if live.is_empty() {
        exited.iter().map(|i| i.complete).max()
    } else {
        live.iter().map(|i| i.complete).min()
    };
    Completeness {
        complete_up_to,
        settled: !(live.is_empty() && exited.is_empty())
            && live.iter().all(|i| i.quiet && !i.pending),
        live: live.len(),
        stale: instances.len() - live.len() - exited.len(),
        exited: exited.len(),
        unreadable: 0,
    }
}

fn parse_instance(id: String, json: &str, now: SystemTime) -> Result<Instance, ReadError> {
    let malformed = || ReadError::Malformed {
        stage: format!("instance {id}"),
        value: json.to_owned(),
    };
    let fields = parse_flat_json(json).ok_or_else(malformed)?;
    let number = |key: &str| -> Result<u64, ReadError> {
        fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(malformed)
    };
    let ms = |key: &str| number(key).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let last_flush = ms("last_flush_ms")?;
    let interval = Duration::from_millis(number("interval_ms")?);
    let flag = |key: &str| fields.get(key).is_some_and(|v| v == "true");
    let exited = flag("exited");
    let stale = !exited
        && now
            .duration_since(last_flush)
            .is_ok_and(|age| age > stale_after(interval));
    Ok(Instance {
        host: fields.get("host").cloned().unwrap_or_default(),
        pid: u32::try_from(number("pid")?).map_err(|_| malformed())?,
        started: ms("started_ms")?,
        last_flush,
        // Records written before `complete_ms` existed: the flush time.
        complete: ms("complete_ms").unwrap_or(last_flush),
        interval,
        seq: number("seq")?,
        pending: flag("pending"),
        // Records of writers from before `quiet` existed: quiet when
        // nothing was pending, as `settled` read them then.
        quiet: fields
            .get("quiet")
            .map_or(!flag("pending"), |v| v == "true"),
        exited,
        stale,
        id,
    })
}

/// Four hex digits of a `\u` escape.
fn hex4(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<u32> {
    let mut unit = 0;
    for _ in 0..4 {
        unit = unit * 16 + chars.next()?.to_digit(16)?;
    }
    Some(unit)
}

/// Parses a flat JSON object of strings, numbers and booleans into its
/// fields as text (strings unescaped). `None` if it is not one.
fn parse_flat_json(json: &str) -> Option<BTreeMap<String, String>> {
    let mut chars = json.trim().chars().peekable();
    let mut fields = BTreeMap::new();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    let string = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        let mut out = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'u' => {
                        let mut unit = hex4(chars)?;
                        // A character beyond the Basic Multilingual Plane
                        // comes as a surrogate pair: `\ud83d\ude00`.
                        if (0xD800..0xDC00).contains(&unit) {
                            if chars.next()? != '\\' || chars.next()? != 'u' {
                                return None;
                            }
                            let low = hex4(chars)?;
                            if !(0xDC00..0xE000).contains(&low) {
                                return None;
                            }
                            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        }
                        out.push(char::from_u32(unit)?);
                    }
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    c @ ('"' | '\\' | '/') => out.push(c),
                    _ => return None,
                },
                c => out.push(c),
            }
        }
    };
    if chars.next()? != '{' {
        return None;
    }
    loop {
        skip_ws(&mut chars);
        match chars.next()? {
            '}' => return Some(fields),
            '"' => {}
            _ => return None,
        }
        let key = string(&mut chars)?;
        skip_ws(&mut chars);
        if chars.next()? != ':' {
            return None;
        }
        skip_ws(&mut chars);
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            string(&mut chars)?
        } else {
            let mut v = String::new();
            while chars
                .peek()
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
            {
                v.push(chars.next()?);
            }
            v
        };
        fields.insert(key, value);
        skip_ws(&mut chars);
        match chars.peek()? {
            ',' => {
                chars.next();
            }
            '}' => {}
            _ => return None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn instance_records_parse() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let json = r#"{"host":"web-\"1\"","pid":42,"started_ms":900000,"last_flush_ms":999000,"complete_ms":998500,"interval_ms":2000,"seq":7,"pending":false}"#;
        let i = parse_instance("abc".into(), json, now).unwrap();
        assert_eq!(i.host, "web-\"1\"");
        assert_eq!((i.pid, i.seq, i.pending, i.stale), (42, 7, false, false));
        assert_eq!(i.complete, UNIX_EPOCH + Duration::from_millis(998_500));
        // Not heard from for 3 intervals, the longest back-off and the
        // margin: stale. A process in back-off is not stale yet.
        let in_backoff = now + Duration::from_secs(1 + 6 + 30);
        assert!(
            !parse_instance("abc".into(), json, in_backoff)
                .unwrap()
                .stale
        );
        let later = now + Duration::from_secs(1 + 6 + 30 + 5 + 1);
        assert!(parse_instance("abc".into(), json, later).unwrap().stale);
        // A record from before `quiet` existed: quiet when not pending.
        assert!(i.quiet);
        let busy = json.replace("\"pending\":false", "\"pending\":true");
        assert!(!parse_instance("abc".into(), &busy, now).unwrap().quiet);
        // A process that said it exited is never stale.
        let exited = json.replace(
            "\"pending\":false",
            "\"pending\":false,\"quiet\":true,\"exited\":true",
        );
        let i = parse_instance("abc".into(), &exited, later).unwrap();
        assert_eq!((i.quiet, i.exited, i.stale), (true, true, false));
        assert!(parse_instance("abc".into(), "{\"pid\":", now).is_err());
    }

    #[test]
    fn json_strings_unescape() {
        let fields =
            parse_flat_json(r#"{"a":"x\ud83d\ude00y","b":"\r\b\f\/\"\\","n":12}"#).unwrap();
        assert_eq!(fields["a"], "x\u{1f600}y");
        assert_eq!(fields["b"], "\r\u{8}\u{c}/\"\\");
        assert_eq!(fields["n"], "12");
        // A lone surrogate or an unknown escape is not JSON.
        assert!(parse_flat_json(r#"{"a":"\ud83d"}"#).is_none());
        assert!(parse_flat_json(r#"{"a":"\q"}"#).is_none());
    }

    #[test]
    fn completeness_is_the_oldest_live_instance() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let instance = |complete, pending, stale| Instance {
            id: String::new(),
            host: String::new(),
            pid: 1,
            started: at(0),
            last_flush: at(complete),
            complete: at(complete),
            interval: Duration::from_secs(2),
            seq: 1,
            pending,
            quiet: !pending,
            exited: false,
            stale,
        };
        let c = completeness(&[
            instance(100, false, false),
            instance(90, false, false),
            instance(10, true, true),
        ]);
        assert_eq!(c.complete_up_to, Some(at(90)));
        assert!(c.settled);
        assert_eq!((c.live, c.stale, c.exited), (2, 1, 0));
        assert!(!completeness(&[instance(100, true, false)]).settled);
        assert_eq!(completeness(&[]).complete_up_to, None);
        assert!(!completeness(&[]).settled);

        // A live instance that counted in its last interval: complete up
        // to its last batch, but not settled.
        let busy = Instance {
            quiet: false,
            ..instance(100, false, false)
        };
        let c = completeness(&[busy.clone(), instance(90, false, false)]);
        assert_eq!(c.complete_up_to, Some(at(90)));
        assert!(!c.settled);

        // Exited instances hold nothing back; alone, the last one to exit
        // says how far the totals are complete.
        let exited = |complete| Instance {
            exited: true,
            quiet: false,
            ..instance(complete, false, false)
        };
        let c = completeness(&[exited(50), exited(70), instance(90, false, false)]);
        assert_eq!(c.complete_up_to, Some(at(90)));
        assert!(c.settled);
        assert_eq!((c.live, c.stale, c.exited), (1, 0, 2));
        let c = completeness(&[exited(50), exited(70)]);
        assert_eq!(c.complete_up_to, Some(at(70)));
        assert!(c.settled);
        assert!(!completeness(&[exited(50), busy]).settled);
    }
}
