//! The proof at the end of a run: every post's count and likers equal what
//! the ledger says, once the write-behind has drained.
//!
//! `likeCount` comes from the fast path (in-process or Redis) and the likers
//! list from the durable store (SQLite or PostgreSQL), so agreeing with the
//! ledger on both checks the two stores against the answers the clients got.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use tally_client::{Api, PostId, UserId};
use tally_store::production::Production;

use super::BenchError;
use super::ledger::{Ledger, Pair};

#[derive(Debug, Serialize)]
pub struct Consistency {
    /// `exact`, or `drift`.
    pub verdict: &'static str,
    pub pairs: usize,
    /// Pairs whose outcome was unknown (timeouts, 5xx) and were read back.
    pub resolved_unknown: usize,
    pub posts_checked: usize,
    pub likes_expected: usize,
    /// The differences, when any (first 50).
    pub differences: Vec<String>,
    pub drain_seconds: f64,
    /// Whether Redis's likers sets and PostgreSQL's rows were also compared
    /// directly (when the run was given the deployment's URLs).
    pub stores_checked_directly: bool,
}

/// Compares every post with the ledger until they match or `timeout`
/// passes. Unknown outcomes are read back on every pass, not once: until
/// the write-behind and reconciliation have run, a like whose answer was
/// lost may still change state (a Redis failover loses a like the worker
/// had already written to PostgreSQL, and reconciliation puts it back), and
/// the proof is of the state the system settles on.
pub async fn prove(
    api: &Api,
    users: &[(UserId, String)],
    posts: &[PostId],
    ledger: &Ledger,
    production: Option<&Production>,
    drain_timeout: Duration,
) -> Result<Consistency, BenchError> {
    let tokens: HashMap<UserId, &str> = users.iter().map(|(id, t)| (*id, t.as_str())).collect();
    let pairs = ledger.snapshot();
    let started = Instant::now();
    let unknown: Vec<((UserId, PostId), Pair)> = pairs
        .iter()
        .filter(|(_, pair)| pair.settled().is_none())
        .map(|(key, pair)| (*key, *pair))
        .collect();
    let mut known: HashMap<PostId, BTreeSet<UserId>> =
        posts.iter().map(|p| (*p, BTreeSet::new())).collect();
    for ((user, post), pair) in &pairs {
        if pair.settled() == Some(true) {
            known.entry(*post).or_default().insert(*user);
        }
    }
    let deadline = Instant::now() + drain_timeout;
    loop {
        let mut expected = known.clone();
        let mut differences = Vec::new();
        for ((user, post), pair) in &unknown {
            let token = tokens.get(user).copied().unwrap_or_default();
            let liked = read_back(api, token, *post).await?;
            if !pair.allows(liked) {
                differences.push(format!(
                    "post {post}: user {user} reads back {liked}, which no answer allows"
                ));
            }
            if liked {
                expected.entry(*post).or_default().insert(*user);
            }
        }
        if differences.is_empty() {
            differences = compare(api, &expected).await?;
        }
        if differences.is_empty()
            && let Some(p) = production
        {
            differences = compare_stores(p, &expected).await?;
        }
        if differences.is_empty() || Instant::now() >= deadline {
            return Ok(Consistency {
                verdict: if differences.is_empty() {
                    "exact"
                } else {
                    "drift"
                },
                pairs: pairs.len(),
                resolved_unknown: unknown.len(),
                posts_checked: expected.len(),
                likes_expected: expected.values().map(BTreeSet::len).sum(),
                differences: differences.into_iter().take(50).collect(),
                drain_seconds: started.elapsed().as_secs_f64(),
                stores_checked_directly: production.is_some(),
            });
        }
        // The durable store may still be catching up (write-behind), and
        // reconciliation may still repair Redis.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether `token`'s user likes `post` now, retrying a failed read a few
/// times (an unreadable state must not be taken for "not liked").
async fn read_back(api: &Api, token: &str, post: PostId) -> Result<bool, BenchError> {
    let mut attempt = 0;
    loop {
        match api.post(Some(token), post).await {
            Ok(seen) => return Ok(seen.liked_by_me),
            Err(err) if attempt < 5 && err.outcome_unknown() => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

async fn compare(
    api: &Api,
    expected: &HashMap<PostId, BTreeSet<UserId>>,
) -> Result<Vec<String>, BenchError> {
    let mut differences = Vec::new();
    for (post, users) in expected {
        // A read that fails is a difference for now: the loop retries it
        // until the drain deadline, and the report names it if it stays.
        let count = match api.post(None, *post).await {
            Ok(seen) => seen.like_count,
            Err(err) => {
                differences.push(format!("post {post}: cannot read it: {err}"));
                continue;
            }
        };
        if count != users.len() as i64 {
            differences.push(format!(
                "post {post}: likeCount {count}, ledger {}",
                users.len()
            ));
            continue;
        }
        let likers: BTreeSet<UserId> = match api.all_likers(*post).await {
            Ok(likers) => likers.into_iter().map(|l| l.id).collect(),
            Err(err) => {
                differences.push(format!("post {post}: cannot read its likers: {err}"));
                continue;
            }
        };
        if &likers != users {
            let extra = likers.difference(users).count();
            let missing = users.difference(&likers).count();
            differences.push(format!(
                "post {post}: likers has {extra} the ledger lacks and lacks {missing}"
            ));
        }
    }
    Ok(differences)
}

/// Redis likers sets and PostgreSQL rows against the ledger, directly.
async fn compare_stores(
    p: &Production,
    expected: &HashMap<PostId, BTreeSet<UserId>>,
) -> Result<Vec<String>, BenchError> {
    let store = |e: tally_store::StoreError| BenchError::Setup(e.to_string());
    let mut differences = Vec::new();
    for (post, users) in expected {
        let members: BTreeSet<UserId> = p
            .redis_likers_of(*post)
            .await
            .map_err(store)?
            .into_iter()
            .collect();
        if &members != users {
            differences.push(format!(
                "post {post}: Redis likers differ from the ledger ({} vs {})",
                members.len(),
                users.len()
            ));
        }
        let rows: BTreeSet<UserId> = p
            .likers_of(*post)
            .await
            .map_err(store)?
            .unwrap_or_default()
            .into_iter()
            .collect();
        if &rows != users {
            differences.push(format!(
                "post {post}: PostgreSQL rows differ from the ledger ({} vs {})",
                rows.len(),
                users.len()
            ));
        }
    }
    Ok(differences)
}
