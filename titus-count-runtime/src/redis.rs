//! The Redis side: key layout, the batch script and the connection.
//!
//! A batch is applied by one Lua script in one round trip. The script skips a
//! batch whose sequence number that instance has already applied, so a batch
//! whose reply was lost can be resent unchanged without being counted twice.

use std::time::Duration;

use crate::config::Resolved;

/// How long an instance's sequence mark outlives its last applied batch.
/// A batch left in doubt for longer than this could be applied twice.
pub(crate) const SEQ_MARK_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The keys of one namespace. All share the hash tag `{NS}`, so one batch
/// touches a single Redis Cluster slot.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        Keys {
            prefix: format!("titus:{{{namespace}}}"),
        }
    }

    /// The keys of every shard of a namespace: `{NS}` alone, or `{NS:0}` ..
    /// `{NS:N-1}`. Each instance writes all its batches to one shard.
    pub(crate) fn shards(namespace: &str, shards: u32) -> Vec<Keys> {
        if shards <= 1 {
            return vec![Keys::new(namespace)];
        }
        (0..shards)
            .map(|k| Keys {
                prefix: format!("titus:{{{namespace}:{k}}}"),
            })
            .collect()
    }

    /// Hash: stage -> all-time count.
    pub(crate) fn totals(&self) -> String {
        format!("{}:totals", self.prefix)
    }

    /// Hash: stage -> count in batches cut during that minute.
    pub(crate) fn minute(&self, epoch_minute: u64) -> String {
        format!("{}:minute:{epoch_minute}", self.prefix)
    }

    /// Hash: instance id -> JSON record of the instance.
    pub(crate) fn instances(&self) -> String {
        format!("{}:instances", self.prefix)
    }

    /// String: last sequence number applied for the instance.
    pub(crate) fn seq(&self, instance: &str) -> String {
        format!("{}:seq:{instance}", self.prefix)
    }
}

/// Applies one batch. KEYS: totals, seq mark, minute bucket, instances.
/// ARGV: seq, seq mark TTL (s), minute TTL (s), instance id, instance record,
/// the instance record for a refused batch, then stage and delta pairs.
/// Returns 1 if applied, 0 if already applied.
///
/// Every check comes before the first count is written, so an error leaves
/// nothing half applied (Redis does not roll a script back). A refused batch
/// still writes the instance's record, saying how far its counts are in and
/// that more are pending, so readers neither take the process for gone nor
/// its counts for complete.
pub(crate) const BATCH_SCRIPT: &str = r#"
-- Replicate effects, not the script: it reads the clock (Redis 3.2 to 4
-- need this; later versions always do it).
if redis.replicate_commands then redis.replicate_commands() end
-- The instance record is written on every path below, so its key is
-- checked first.
local it = redis.call('TYPE', KEYS[4])['ok']
if it ~= 'hash' and it ~= 'none' then
  return redis.error_reply('WRONGTYPE titus-count key ' .. KEYS[4] .. ' holds a ' .. it .. ', not a hash')
end
-- The record's last flush is stamped by Redis's clock, which readers also
-- read: a writer's or reader's wrong clock cannot make a live process
-- look stale. (A user whose ACL refuses TIME keeps the writer's stamp.)
local now = redis.pcall('TIME')
local function stamped(record)
  if now.err then
    return record
  end
  local now_ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  return (string.gsub(record, '"last_flush_ms":%d+', '"last_flush_ms":' .. now_ms, 1))
end
local function refuse(message)
  redis.call('HSET', KEYS[4], ARGV[4], stamped(ARGV[6]))
  return redis.error_reply(message)
end
local seq = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last ~= nil and seq <= last then
  redis.call('HSET', KEYS[4], ARGV[4], stamped(ARGV[5]))
  return 0
end
-- Whether a string is an integer as HINCRBY reads it: canonical decimal
-- within a signed 64-bit integer (the upper bound is checked by fits).
local function integer(s)
  if not string.match(s, '^(0)$') and not string.match(s, '^-?[1-9]%d*$') then
    return false
  end
  if string.sub(s, 1, 1) == '-' then
    local digits = string.sub(s, 2)
    return #digits < 19 or (#digits == 19 and digits <= '9223372036854775808')
  end
  return true
end
-- Whether the integer strings a + b stay within a signed 64-bit integer,
-- in two base-1e9 limbs (Lua numbers are doubles).
local function fits(a, b)
  if string.sub(a, 1, 1) == '-' or (#a < 18 and #b < 18) then
    return true
  end
  local function split(s)
    if #s <= 9 then return 0, tonumber(s) end
    return tonumber(string.sub(s, 1, #s - 9)), tonumber(string.sub(s, #s - 8))
  end
  local ah, al = split(a)
  local bh, bl = split(b)
  local h, l = ah + bh, al + bl
  if l >= 1000000000 then h, l = h + 1, l - 1000000000 end
  return h < 9223372036 or (h == 9223372036 and l <= 854775807)
end
for _, key in ipairs({KEYS[1], KEYS[3]}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'hash' and t ~= 'none' then
    return refuse('WRONGTYPE titus-count key ' .. key .. ' holds a ' .. t .. ', not a hash')
  end
  for i = 7, #ARGV, 2 do
    local cur = redis.call('HGET', key, ARGV[i])
    if cur then
      if not integer(cur) then
        return refuse('ERR titus-count key ' .. key .. ' field ' .. ARGV[i] .. ' holds ' .. cur .. ', not an integer')
      end
      if not fits(cur, ARGV[i + 1]) then
        return refuse('ERR titus-count key ' .. key .. ' field ' .. ARGV[i] .. ' would overflow a signed 64-bit integer')
      end
    end
  end
end
for i = 7, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
-- Last, so the record never claims a batch that was refused.
redis.call('HSET', KEYS[4], ARGV[4], stamped(ARGV[5]))
return 1
"#;

/// One batch of deltas, sent unchanged until Redis acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) seq: u64,
    /// When the batch was cut, in milliseconds since the Unix epoch; decides
    /// its minute bucket, so a resent batch lands in the same minute.
    pub(crate) cut_ms: u64,
    pub(crate) deltas: Vec<(&'static str, u64)>,
}

/// The instance's record in `titus:{NS}:instances`, as the batch script
/// writes it: one for a batch applied (now or before), one for a batch
/// refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Records {
    pub(crate) applied: String,
    pub(crate) refused: String,
}

/// What Redis did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The deltas were added.
    Now,
    /// The batch had been applied before (its reply was lost).
    Before,
}

/// Whether an error will go away by itself (Redis down, slow, failing over)
/// rather than need an operator (a key of the wrong type, a refused command,
/// an overflowing count).
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as S;
    match e.kind() {
        redis::ErrorKind::Server(kind) => matches!(
            kind,
            S::BusyLoading
                | S::TryAgain
                | S::ClusterDown
                | S::MasterDown
                | S::ReadOnly
                | S::Moved
                | S::Ask
                | S::NoScript
        ),
        redis::ErrorKind::Io => !is_certificate_error(e),
        // No node for the slot yet: the cluster is failing over.
        redis::ErrorKind::ClusterConnectionNotFound => true,
        // Codes the client has no kind for. BUSY: another script runs long;
        // NOREPLICAS: too few replicas for `min-replicas-to-write` (they
        // come back). OOM and MISCONF (persistence failing) need an operator.
        redis::ErrorKind::Extension => matches!(e.code(), Some("BUSY" | "NOREPLICAS")),
        _ => false,
    }
}

/// Whether an error is a TLS certificate refusal: the server's certificate
/// did not verify, or the server refused this client's. Trying again does
/// not help until an operator fixes the certificates.
#[cfg(feature = "tls")]
fn is_certificate_error(e: &redis::RedisError) -> bool {
    use rustls::AlertDescription as A;
    use std::error::Error;
    use std::sync::Arc;

    fn rustls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.get_ref().and_then(|inner| inner.downcast_ref());
        }
        // The client keeps the I/O error behind an `Arc`.
        let shared = e.downcast_ref::<Arc<dyn Error + Send + Sync>>()?;
        rustls_error(&**shared)
    }
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(error) = next {
        if let Some(tls) = rustls_error(error) {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        A::BadCertificate
                            | A::UnsupportedCertificate
                            | A::CertificateRevoked
                            | A::CertificateExpired
                            | A::CertificateUnknown
                            | A::UnknownCA
                            | A::CertificateRequired
                            | A::AccessDenied
                    )
            );
        }
        next = error.source();
    }
    false
}

#[cfg(not(feature = "tls"))]
fn is_certificate_error(_: &redis::RedisError) -> bool {
    false
}

/// Whether the connection is still good after this error: a clean reply
/// about the script or the data from the right server.
fn keeps_connection(e: &redis::RedisError) -> bool {
    use redis::ServerErrorKind as S;
    match e.kind() {
        redis::ErrorKind::Extension => true,
        redis::ErrorKind::Server(kind) => {
            matches!(
                kind,
                S::ResponseError | S::ExecAbort | S::NoScript | S::NoPerm
            )
        }
        _ => false,
    }
}

/// A failed send.
#[derive(Debug)]
pub(crate) struct SendError {
    pub(crate) error: redis::RedisError,
    /// False if the batch certainly never reached Redis (no connection).
    pub(crate) maybe_applied: bool,
}

/// Where the counts go: one Redis server, or a Redis Cluster.
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// An open connection to a [`Target`].
pub(crate) enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    pub(crate) fn get(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }
}

impl Target {
    /// The target of a configuration: several comma-separated URLs are the
    /// seed nodes of a cluster; `rediss://` URLs use TLS.
    pub(crate) fn open(config: &Resolved) -> redis::RedisResult<Target> {
        let timeout = config.io_timeout;
        let nodes: Vec<String> = crate::config::nodes(&config.redis_url)
            .into_iter()
            .map(|n| tls_url(n, &config.tls))
            .collect();
        #[cfg(feature = "tls")]
        let certs = tls_certificates(&config.tls, &nodes);
        if nodes.len() == 1 {
            #[cfg(feature = "tls")]
            if let Some(certs) = certs {
                return Ok(Target::Single(redis::Client::build_with_tls(
                    nodes[0].as_str(),
                    certs,
                )?));
            }
            return Ok(Target::Single(redis::Client::open(nodes[0].as_str())?));
        }
        // Bounded timeouts (the default is to wait forever for a reply) and
        // few automatic retries: a retry re-sends a batch whose reply was
        // lost, which the batch script makes harmless, but it should not
        // stretch a failing delivery far past the I/O timeout.
        let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        #[cfg(feature = "tls")]
        let builder = match certs {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        Ok(Target::Cluster(builder.build()?))
    }

    /// Opens a connection with connect, read and write timeouts.
    pub(crate) fn connect(&self, timeout: Duration) -> redis::RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let con = client.get_connection_with_timeout(timeout)?;
                // The client does not keep read and write timeouts: set them
                // on the connection.
                con.set_read_timeout(Some(timeout))?;
                con.set_write_timeout(Some(timeout))?;
                Ok(Conn::Single(con))
            }
            Target::Cluster(client) => Ok(Conn::Cluster(Box::new(client.get_connection()?))),
        }
    }
}

/// The shard an instance writes to: FNV-1a (64-bit) of its id, modulo the
/// number of shards. Stable across processes, versions and platforms.
pub(crate) fn shard_of(instance: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in instance.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// The Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag,
/// modulo 16384.
pub(crate) fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key
        .find('{')
        .and_then(|open| {
            let close = key[open + 1..].find('}')? + open + 1;
            (close > open + 1).then(|| &bytes[open + 1..close])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &b in tagged {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A node URL with the TLS options that live in the URL itself.
fn tls_url(node: &str, tls: &crate::config::Tls) -> String {
    if tls.insecure && node.starts_with("rediss://") && !node.contains('#') {
        // The client's switch for skipping certificate verification.
        return format!("{node}#insecure");
    }
    node.to_owned()
}

/// The CA and client certificates for `rediss://` nodes, if any were set.
#[cfg(feature = "tls")]
fn tls_certificates(tls: &crate::config::Tls, nodes: &[String]) -> Option<redis::TlsCertificates> {
    if !nodes.iter().any(|n| n.starts_with("rediss://")) {
        return None;
    }
    // Install ring as the process's TLS crypto provider (a no-op if the
    // application installed one already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if tls.ca.is_none() && tls.client.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: tls
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.ca.clone(),
    })
}

/// A connection to Redis, reopened after any failure.
pub(crate) struct Writer {
    target: Target,
    con: Option<Conn>,
    shards: Vec<Keys>,
    instance: String,
    sha: String,
    io_timeout: Duration,
    history_retention: Duration,
    wait_replicas: u32,
}

impl Writer {
    pub(crate) fn new(config: &Resolved, instance: String) -> redis::RedisResult<Self> {
        Ok(Writer {
            target: Target::open(config)?,
            con: None,
            shards: Keys::shards(&config.namespace, config.shards),
            instance,
            sha: redis::Script::new(BATCH_SCRIPT).get_hash().to_owned(),
            io_timeout: config.io_timeout,
            history_retention: config.history_retention,
            wait_replicas: config.wait_replicas,
        })
    }

    /// Waits until `wait_replicas` replicas of the namespace's primary have
    /// every write of this connection (the batch just applied).
    fn wait_for_replicas(&mut self, slot: u16) -> redis::RedisResult<()> {
        let wanted = self.wait_replicas;
        let timeout_ms = self.io_timeout.as_millis().max(1) as u64;
        let mut wait = redis::cmd("WAIT");
        wait.arg(wanted).arg(timeout_ms);
        let acked: i64 = match self.con.as_mut() {
            Some(Conn::Cluster(con)) => {
                // WAIT has no key: send it to the node that ran the script.
                let route = redis::cluster_routing::Route::new(
                    slot,
                    redis::cluster_routing::SlotAddr::Master,
                );
                let reply = con.route_command(
                    &wait,
                    redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(route),
                    ),
                )?;
                redis::from_redis_value(reply)?
            }
            Some(Conn::Single(con)) => wait.query(con)?,
            None => 0,
        };
        if acked < i64::from(wanted) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "too few replicas have the batch",
                format!("WAIT: {acked} of {wanted} within {timeout_ms} ms"),
            )));
        }
        Ok(())
    }

    /// Writes as another instance from now on (load simulation only).
    pub(crate) fn set_instance(&mut self, instance: &str) {
        instance.clone_into(&mut self.instance);
    }

    fn connection(&mut self) -> redis::RedisResult<&mut dyn redis::ConnectionLike> {
        if self.con.is_none() {
            self.con = Some(self.target.connect(self.io_timeout)?);
        }
        Ok(self.con.as_mut().expect("connected above").get())
    }

    /// Sends `batch` in one round trip (one more if the server does not
    /// have the script cached, and one for `WAIT` when replicas are waited
    /// for) to the instance's shard. Any I/O failure drops the
    /// connection; the caller keeps the batch and resends it unchanged, and
    /// the shard skips it if it was applied.
    pub(crate) fn apply(&mut self, batch: &Batch, records: &Records) -> Result<Applied, SendError> {
        if let Err(error) = self.connection() {
            return Err(SendError {
                error,
                maybe_applied: false,
            });
        }
        self.apply_batch(batch, records).map_err(|error| {
            // Only a clean error about the script or the data keeps the
            // connection: after a timeout a late reply could be read as the
            // answer to the next command, and after READONLY, MOVED and the
            // like it leads to the wrong server.
            if !keeps_connection(&error) {
                self.con = None;
            }
            SendError {
                error,
                maybe_applied: true,
            }
        })
    }

    /// The keys of the shard this instance writes to.
    fn keys(&self) -> &Keys {
        &self.shards[shard_of(&self.instance, self.shards.len())]
    }

    /// The key holding the last sequence number Redis applied for this
    /// instance: a batch was applied if it is at least the batch's number.
    pub(crate) fn seq_key(&self) -> String {
        self.keys().seq(&self.instance)
    }

    fn apply_batch(&mut self, batch: &Batch, records: &Records) -> redis::RedisResult<Applied> {
        let keys = self.keys();
        let keys = [
            keys.totals(),
            keys.seq(&self.instance),
            keys.minute(batch.cut_ms / 60_000),
            keys.instances(),
        ];
        let mut args: Vec<String> = Vec::with_capacity(6 + 2 * batch.deltas.len());
        args.push(batch.seq.to_string());
        args.push(SEQ_MARK_TTL.as_secs().to_string());
        args.push(self.history_retention.as_secs().max(60).to_string());
        args.push(self.instance.clone());
        args.push(records.applied.clone());
        args.push(records.refused.clone());
        for (stage, delta) in &batch.deltas {
            args.push((*stage).to_owned());
            args.push(delta.to_string());
        }
        let applied = self.eval(&keys, &args)?;
        if self.wait_replicas > 0 {
            self.wait_for_replicas(hash_slot(&keys[0]))?;
        }
        Ok(if applied == 0 {
            Applied::Before
        } else {
            Applied::Now
        })
    }

    fn eval(&mut self, keys: &[String; 4], args: &[String]) -> redis::RedisResult<i64> {
        let sha = self.sha.clone();
        let con = self.connection()?;
        let reply = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(keys.len())
            .arg(keys)
            .arg(args)
            .query(con);
        match reply {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // The script cache was flushed or this is a new server: send
                // the script itself, which also caches it again.
                redis::cmd("EVAL")
                    .arg(BATCH_SCRIPT)
                    .arg(keys.len())
                    .arg(keys)
                    .arg(args)
                    .query(con)
            }
            other => other,
        }
    }
}

/// A Redis error as text safe to log: never includes the password.
pub(crate) fn describe(e: &redis::RedisError, url: &str) -> String {
    let text = e.to_string();
    // Errors do not echo credentials today; make sure they never leak if a
    // future version does.
    crate::config::nodes(url)
        .into_iter()
        .filter_map(crate::config::password_of)
        .filter(|p| !p.is_empty())
        .fold(text, |text, pass| text.replace(pass, "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_code() {
        let error = |code: &str| redis::make_extension_error(code.to_owned(), None);
        assert!(is_transient(&error("BUSY")));
        assert!(is_transient(&error("NOREPLICAS")));
        assert!(!is_transient(&error("OOM")));
        assert!(!is_transient(&error("MISCONF")));
        let wrongtype = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        assert!(!is_transient(&wrongtype));
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = Keys::new("orders");
        assert_eq!(keys.totals(), "titus:{orders}:totals");
        assert_eq!(keys.minute(29_000_000), "titus:{orders}:minute:29000000");
        assert_eq!(keys.instances(), "titus:{orders}:instances");
        assert_eq!(keys.seq("abc"), "titus:{orders}:seq:abc");
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let keys = Keys::shards("orders", 4);
        assert_eq!(keys[3].totals(), "titus:{orders:3}:totals");
        assert_eq!(
            Keys::shards("orders", 1)[0].totals(),
            "titus:{orders}:totals"
        );
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(shard_of("a", 7), (0xaf63_dc4c_8601_ec8c_u64 % 7) as usize);
        let mut used = [0; 4];
        for i in 0..400u64 {
            let id = format!("{:016x}{:08x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), 4242);
            used[shard_of(&id, 4)] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "{used:?}");
    }

    #[test]
    fn hash_slots_follow_the_cluster_spec() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(hash_slot("123456789"), 0x31C3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("titus:{orders}:totals"), hash_slot("orders"));
        assert_eq!(hash_slot("a{}b"), hash_slot("a{}b"));
    }
}
