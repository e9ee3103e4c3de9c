//! The Redis key layout, in one place.
//!
//! Every key of a post carries the hash tag of its partition (`{p17}`), so
//! the like script touches one Redis Cluster slot, and the partition's
//! stream and counters live in the same slot as its posts. Every key starts
//! with a configurable prefix so tenants and tests never collide.
//!
//! ```text
//! {prefix}:{p17}:post:123:n     count (its presence marks the post as loaded)
//! {prefix}:{p17}:post:123:u     likers set
//! {prefix}:{p17}:events         the partition's stream (the outbox)
//! {prefix}:{p17}:seq            last version handed out in the partition
//! {prefix}:{p17}:applied        every version up to this is committed to PostgreSQL
//! {prefix}:{p17}:lease          which worker applies the partition now
//! {prefix}:{p17}:fence          written before a replicated-durability WAIT
//! {prefix}:{p17}:live           the partition's sharded Pub/Sub channel (cluster)
//! {prefix}:{p17}:req:{id}       a toggle's answer, kept for replays
//! {prefix}:{p17}:trend:m:{min}  likes gained per post in a Unix minute (sorted set)
//! {prefix}:{p17}:trend:h:{hour} likes gained per post in a Unix hour (sorted set)
//! {prefix}:{p17}:trend:m:sum:{min}  the hour's minute buckets before {min} - 1, summed
//! {prefix}:{p17}:trend:h:sum:{hour} the day's hour buckets before {hour} - 1, summed
//! {prefix}:live                 the Pub/Sub channel (one Redis)
//! ```
//!
//! The lease's fencing token is not in Redis: it is the partition stream's
//! epoch in PostgreSQL's `sync_fence` (see `sync::worker`), checked where
//! the batches commit. (The `fence` key above is unrelated: it serves
//! replicated durability's `WAIT`.)

use crate::domain::PostId;
use crate::trending::Granularity;

/// The consumer group of the write-behind.
pub const GROUP: &str = "tally-sync";

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partitions: u32,
}

impl Keys {
    pub fn new(prefix: &str, partitions: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            partitions: partitions.max(1),
        }
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The partition of a post. Fixed at deploy time: changing the number
    /// of partitions needs a migration of the keys.
    pub fn partition(&self, post: PostId) -> u32 {
        (post.unsigned_abs() % u64::from(self.partitions)) as u32
    }

    fn tag(&self, partition: u32) -> String {
        format!("{}:{{p{partition}}}", self.prefix)
    }

    pub fn count(&self, post: PostId) -> String {
        format!("{}:post:{post}:n", self.tag(self.partition(post)))
    }

    pub fn likers(&self, post: PostId) -> String {
        format!("{}:post:{post}:u", self.tag(self.partition(post)))
    }

    /// A scratch key for building a post's likers set before swapping it in.
    pub fn loading(&self, post: PostId, nonce: u64) -> String {
        format!(
            "{}:post:{post}:load:{nonce:x}",
            self.tag(self.partition(post))
        )
    }

    /// Where a toggle keeps its answer for replays of the same request
    /// (`request`: a random id, or one derived from an `Idempotency-Key`).
    pub fn reply(&self, post: PostId, request: &str) -> String {
        format!("{}:req:{request}", self.tag(self.partition(post)))
    }

    /// A trending bucket of the partition: post → likes gained in Unix
    /// minute or hour `bucket` (see [`crate::trending`]).
    pub fn trend(&self, partition: u32, granularity: Granularity, bucket: i64) -> String {
        format!(
            "{}:trend:{}:{bucket}",
            self.tag(partition),
            granularity.tag()
        )
    }

    /// The sum of the buckets a window reads during `bucket`, but for the
    /// current and the previous one: stored by the first read of that
    /// period (see `scripts::TREND_TOP`).
    pub fn trend_sum(&self, partition: u32, granularity: Granularity, bucket: i64) -> String {
        format!(
            "{}:trend:{}:sum:{bucket}",
            self.tag(partition),
            granularity.tag()
        )
    }

    pub fn stream(&self, partition: u32) -> String {
        format!("{}:events", self.tag(partition))
    }

    /// Written before a replicated-durability `WAIT`, so that the wait
    /// covers everything the master applied so far (a `WAIT` only covers
    /// its own connection's writes).
    pub fn fence(&self, partition: u32) -> String {
        format!("{}:fence", self.tag(partition))
    }

    pub fn seq(&self, partition: u32) -> String {
        format!("{}:seq", self.tag(partition))
    }

    /// The partition's contiguous watermark: every version up to it is in
    /// PostgreSQL (see `scripts::RAISE`); strict durability waits on it.
    pub fn applied(&self, partition: u32) -> String {
        format!("{}:applied", self.tag(partition))
    }

    /// Which worker applies the partition: its node id, with a TTL of
    /// `sync.lease_ttl_ms`, renewed every third of it.
    pub fn lease(&self, partition: u32) -> String {
        format!("{}:lease", self.tag(partition))
    }

    /// The Redis Pub/Sub channel the like script announces changes on.
    pub fn live_channel(&self) -> String {
        format!("{}:live", self.prefix)
    }

    /// On a cluster: the partition's sharded Pub/Sub channel, in its slot,
    /// which the like script `SPUBLISH`es on.
    pub fn shard_channel(&self, partition: u32) -> String {
        format!("{}:live", self.tag(partition))
    }

    /// Keys spread over the partitions (at most 16), whose slots spread over
    /// a cluster's masters: "does any master answer?" asks these.
    pub fn probes(&self) -> Vec<String> {
        let n = self.partitions.min(16);
        (0..n).map(|i| self.seq(i * self.partitions / n)).collect()
    }

    /// Lease for the periodic reconciliation (one node at a time).
    pub fn reconcile_lease(&self) -> String {
        format!("{}:reconcile:lease", self.prefix)
    }

    /// Lease for the reconciliation after Redis trouble (one node at a time).
    pub fn reconcile_after_trouble_lease(&self) -> String {
        format!("{}:reconcile:after-trouble:lease", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_post_share_its_partition_tag() {
        let k = Keys::new("t", 64);
        assert_eq!(k.partition(130), 2);
        assert_eq!(k.count(130), "t:{p2}:post:130:n");
        assert_eq!(k.likers(130), "t:{p2}:post:130:u");
        assert_eq!(k.stream(2), "t:{p2}:events");
        assert_eq!(k.seq(2), "t:{p2}:seq");
        assert_eq!(k.trend(2, Granularity::Minute, 7), "t:{p2}:trend:m:7");
        assert_eq!(k.trend(2, Granularity::Hour, 9), "t:{p2}:trend:h:9");
        assert_eq!(
            k.trend_sum(2, Granularity::Minute, 7),
            "t:{p2}:trend:m:sum:7"
        );
    }
}
