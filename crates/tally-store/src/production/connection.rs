//! One Redis or a Redis Cluster, behind one connection type.
//!
//! Everything above this module speaks commands, scripts and pipelines and
//! does not care which of the two it talks to, with two exceptions kept
//! here:
//!
//! - A pipeline on a cluster goes whole to the node of its first key, so it
//!   must stay inside one slot. Work that spans partitions (leases, stream
//!   reads, a feed page's counts) goes through [`Spread`]: one pipeline on a
//!   single Redis, one pipeline per partition (each partition is one slot,
//!   by its hash tag) sent together on a cluster.
//! - "Is Redis there?" ([`RedisConn::ping`]): one server, or any master of
//!   the cluster (asked through keys, like the data). A cluster that loses
//!   one master for the seconds of its failover is not down; the requests
//!   on that master's slots answer 503 until its replica takes over.
//! - A cluster client that stops answering can be replaced for every clone
//!   at once ([`RedisConn::renew`]).
//!
//! A cluster is named by `redis+cluster://host:port,host:port` (any of its
//! nodes; the client discovers the rest).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};

use crate::StoreError;

/// The URL scheme of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone)]
pub enum RedisTarget {
    Single(String),
    /// `redis://` URLs of some of the cluster's nodes.
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    /// Without passwords: a target may be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisTarget::Single"),
            Self::Cluster(nodes) => write!(f, "RedisTarget::Cluster({} seed nodes)", nodes.len()),
        }
    }
}

impl RedisTarget {
    /// `redis://…` or `rediss://…` (one server), or
    /// `redis+cluster://[user:password@]host:port,host:port` (a cluster).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Self::Single(url.to_owned()));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (Some(auth), hosts),
            None => (None, rest),
        };
        let hosts = hosts.split('/').next().unwrap_or_default();
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| match auth {
                Some(auth) => format!("redis://{auth}@{h}"),
                None => format!("redis://{h}"),
            })
            .collect();
        if nodes.is_empty() {
            return Err(StoreError::Internal(anyhow::anyhow!(
                "a Redis Cluster URL names at least one node: {CLUSTER_SCHEME}host:port,host:port"
            )));
        }
        Ok(Self::Cluster(nodes))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection that reconnects by itself. `response_timeout` bounds
    /// each request; on a cluster, redirections (MOVED, ASK, TRYAGAIN, a
    /// failover's CLUSTERDOWN) are followed a few times within it, then the
    /// error is the caller's.
    pub async fn connect(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<RedisConn> {
        match self {
            Self::Single(url) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let client = redis::Client::open(url.as_str())?;
                Ok(RedisConn::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Self::Cluster(nodes) => {
                let conn = cluster_builder(nodes, connect_timeout, response_timeout)
                    .build()?
                    .get_async_connection()
                    .await?;
                Ok(RedisConn::Cluster(Arc::new(Cluster {
                    conn: std::sync::RwLock::new(conn),
                    nodes: nodes.clone(),
                    connect_timeout,
                    response_timeout,
                })))
            }
        }
    }
}

/// The cluster client's settings, shared by commands and Pub/Sub.
pub(super) fn cluster_builder(
    nodes: &[String],
    connect_timeout: Duration,
    response_timeout: Duration,
) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        // Up to four tries, 50 ms to 400 ms apart, for MOVED, ASK and
        // TRYAGAIN; the response timeout bounds a request with its retries,
        // so a like on a failing master answers 503 within it instead of
        // hanging through the failover.
        .retries(4)
        .min_retry_wait(50)
        .max_retry_wait(400)
}

/// A connection to one Redis or to a cluster. Cheap to clone: clones share
/// the underlying multiplexed connections.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// The cluster client, replaceable by [`RedisConn::renew`] for every clone
/// at once: redis 1.8's cluster client was seen here to hold every request,
/// on live masters too, for about twenty seconds after a master died (its
/// slot refresh waits on the dead node under a lock), while a new client
/// works at once.
pub struct Cluster {
    conn: std::sync::RwLock<ClusterConnection>,
    nodes: Vec<String>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Cluster {
    fn current(&self) -> ClusterConnection {
        match self.conn.read() {
            Ok(conn) => conn.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl RedisConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// On a cluster: connects a new client and puts it in place of the
    /// current one, for this connection and all its clones (see
    /// [`Cluster`]). A no-op on one Redis.
    pub async fn renew(&self) -> RedisResult<()> {
        let Self::Cluster(cluster) = self else {
            return Ok(());
        };
        let fresh = cluster_builder(
            &cluster.nodes,
            cluster.connect_timeout,
            cluster.response_timeout,
        )
        .build()?
        .get_async_connection()
        .await?;
        match cluster.conn.write() {
            Ok(mut conn) => *conn = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Whether Redis answers: the server, or at least one master of the
    /// cluster (see the module docs), within `wait`.
    ///
    /// On a cluster the question goes where data goes: an `EXISTS` of each
    /// of `probes` (keys spread over the partitions, so over the masters),
    /// routed by slot like every like, the first answer settling it. The
    /// client's keyless routings (all masters, a random master) were seen
    /// to fail or hang for as long as one master is dead, which is exactly
    /// what must not count as "Redis is down".
    pub async fn ping(&mut self, wait: Duration, probes: &[String]) -> RedisResult<()> {
        let conn = match self {
            Self::Single(conn) => return redis::cmd("PING").query_async(conn).await,
            Self::Cluster(cluster) => cluster.current(),
        };
        let asks: Vec<_> = probes
            .iter()
            .map(|key| {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(key);
                Box::pin(async move { cmd.query_async::<Value>(&mut conn).await })
            })
            .collect();
        if asks.is_empty() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "no probe keys for a cluster ping",
            )));
        }
        match tokio::time::timeout(wait, futures::future::select_ok(asks)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(cluster) => {
                let mut conn = cluster.current();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => {
                let mut conn = cluster.current();
                Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(cluster) => cluster.current().get_db(),
        }
    }
}

/// Commands on several partitions, in one round trip: one pipeline on a
/// single Redis; on a cluster, one pipeline per partition (one slot each),
/// sent at once. Replies come back in the order the commands were added,
/// one per command; a server error in any fails the whole (as a pipeline).
#[derive(Default)]
pub struct Spread {
    cmds: Vec<(u32, Cmd)>,
}

impl Spread {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Adds a command on keys of `partition`; returns it for its arguments.
    pub fn cmd(&mut self, partition: u32, name: &str) -> &mut Cmd {
        self.cmds.push((partition, redis::cmd(name)));
        let last = self.cmds.len() - 1;
        &mut self.cmds[last].1
    }

    /// Adds a script call (`EVALSHA`: run [`super::scripts::load_all`]
    /// when it reports `NOSCRIPT`) on keys of `partition`.
    pub fn script(&mut self, partition: u32, invocation: &ScriptInvocation<'_>) {
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation);
        if let Some(cmd) = pipe.cmd_iter().next() {
            self.cmds.push((partition, cmd.clone()));
        }
    }

    /// One result per partition, its replies in the order added: on a
    /// cluster a failing shard fails only its own partitions, so work on
    /// the others goes on (the write-behind while one master fails over).
    /// On one Redis everything shares one pipeline and one fate.
    pub async fn query_each(&self, conn: &mut RedisConn) -> BTreeMap<u32, RedisResult<Vec<Value>>> {
        let mut out: BTreeMap<u32, RedisResult<Vec<Value>>> = BTreeMap::new();
        if self.cmds.is_empty() {
            return out;
        }
        match conn {
            RedisConn::Single(_) => {
                let all = self.one_pipeline(conn).await;
                for (partition, _) in &self.cmds {
                    out.entry(*partition).or_insert_with(|| Ok(Vec::new()));
                }
                match all {
                    Ok(values) => {
                        for ((partition, _), value) in self.cmds.iter().zip(values) {
                            if let Some(Ok(replies)) = out.get_mut(partition) {
                                replies.push(value);
                            }
                        }
                    }
                    Err(err) => {
                        for result in out.values_mut() {
                            *result = Err(err.clone());
                        }
                    }
                }
                out
            }
            RedisConn::Cluster(cluster) => self.per_partition(&cluster.current()).await,
        }
    }

    /// Everything as one pipeline (one Redis).
    async fn one_pipeline(&self, conn: &mut RedisConn) -> RedisResult<Vec<Value>> {
        let mut pipe = Pipeline::with_capacity(self.cmds.len());
        for (_, cmd) in &self.cmds {
            pipe.add_command(cmd.clone());
        }
        pipe.query_async(conn).await
    }

    /// One pipeline per partition, sent at once (a cluster).
    async fn per_partition(
        &self,
        cluster: &ClusterConnection,
    ) -> BTreeMap<u32, RedisResult<Vec<Value>>> {
        let mut groups: BTreeMap<u32, Pipeline> = BTreeMap::new();
        for (partition, cmd) in &self.cmds {
            groups
                .entry(*partition)
                .or_default()
                .add_command(cmd.clone());
        }
        let results = futures::future::join_all(groups.into_iter().map(|(partition, pipe)| {
            let mut conn = cluster.clone();
            async move { (partition, pipe.query_async::<Vec<Value>>(&mut conn).await) }
        }))
        .await;
        results.into_iter().collect()
    }

    /// The replies, converted as one array (`Vec<i64>`, tuples…).
    pub async fn query_as<T: redis::FromRedisValue>(&self, conn: &mut RedisConn) -> RedisResult<T> {
        Ok(redis::from_redis_value(Value::Array(
            self.query(conn).await?,
        ))?)
    }

    pub async fn query(&self, conn: &mut RedisConn) -> RedisResult<Vec<Value>> {
        if self.cmds.is_empty() {
            return Ok(Vec::new());
        }
        let cluster = match conn {
            RedisConn::Single(_) => return self.one_pipeline(conn).await,
            RedisConn::Cluster(cluster) => cluster.current(),
        };
        // The per-partition replies, put back in the order the commands
        // were added.
        let mut replies = BTreeMap::new();
        for (partition, result) in self.per_partition(&cluster).await {
            replies.insert(partition, result?.into_iter());
        }
        Ok(self
            .cmds
            .iter()
            .map(|(partition, _)| {
                replies
                    .get_mut(partition)
                    .and_then(Iterator::next)
                    .unwrap_or(Value::Nil)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_cluster_urls() {
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379").unwrap(),
            RedisTarget::Single(u) if u == "redis://127.0.0.1:6379"
        ));
        let RedisTarget::Cluster(nodes) =
            RedisTarget::parse("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001/").unwrap()
        else {
            panic!("a cluster")
        };
        assert_eq!(nodes, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        let RedisTarget::Cluster(nodes) =
            RedisTarget::parse("redis+cluster://u:secret@h1:7000,h2:7001").unwrap()
        else {
            panic!("a cluster")
        };
        assert_eq!(
            nodes,
            ["redis://u:secret@h1:7000", "redis://u:secret@h2:7001"]
        );
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        let shown = format!(
            "{:?}",
            RedisTarget::parse("redis+cluster://u:secret@h1:7000").unwrap()
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
