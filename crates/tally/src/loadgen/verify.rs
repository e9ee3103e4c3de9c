//! The proof at the end of a run: every post's count and likers equal what
//! the ledger says, once the write-behind has drained.
//!
//! `likeCount` comes from the fast path (in-process or Redis) and the likers
//! list from the durable store (SQLite or PostgreSQL), so agreeing with the
//! ledger on both checks the two stores against the answers the clients got.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde::Serialize;
use serde_json::Value;

use super::BenchError;
use super::ledger::{Ledger, PairState};
use crate::domain::{PostId, UserId};

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

/// Resolves unknown outcomes by reading them back, then compares every post
/// until it matches or `timeout` passes.
pub async fn prove(
    client: &Client,
    base: &str,
    users: &[(UserId, String)],
    posts: &[PostId],
    ledger: &Ledger,
    production: Option<&crate::store::production::Production>,
    drain_timeout: Duration,
) -> Result<Consistency, BenchError> {
    let tokens: HashMap<UserId, &str> = users.iter().map(|(id, t)| (*id, t.as_str())).collect();
    let mut pairs = ledger.snapshot();
    let started = Instant::now();
    let mut resolved = 0;
    for ((user, post), state) in pairs.iter_mut() {
        if *state == PairState::Unknown {
            let token = tokens.get(user).copied().unwrap_or_default();
            let v: Value = client
                .get(format!("{base}/v1/posts/{post}"))
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            *state = PairState::Liked(v["likedByMe"].as_bool().unwrap_or(false));
            resolved += 1;
        }
    }
    let mut expected: HashMap<PostId, BTreeSet<UserId>> =
        posts.iter().map(|p| (*p, BTreeSet::new())).collect();
    for ((user, post), state) in &pairs {
        if *state == PairState::Liked(true) {
            expected.entry(*post).or_default().insert(*user);
        }
    }
    let likes_expected = expected.values().map(BTreeSet::len).sum();
    let deadline = Instant::now() + drain_timeout;
    loop {
        let mut differences = compare(client, base, &expected).await?;
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
                resolved_unknown: resolved,
                posts_checked: expected.len(),
                likes_expected,
                differences: differences.into_iter().take(50).collect(),
                drain_seconds: started.elapsed().as_secs_f64(),
                stores_checked_directly: production.is_some(),
            });
        }
        // The durable store may still be catching up (write-behind).
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn compare(
    client: &Client,
    base: &str,
    expected: &HashMap<PostId, BTreeSet<UserId>>,
) -> Result<Vec<String>, BenchError> {
    let mut differences = Vec::new();
    for (post, users) in expected {
        let v: Value = client
            .get(format!("{base}/v1/posts/{post}"))
            .send()
            .await?
            .json()
            .await?;
        let count = v["likeCount"].as_i64().unwrap_or(-1);
        if count != users.len() as i64 {
            differences.push(format!(
                "post {post}: likeCount {count}, ledger {}",
                users.len()
            ));
            continue;
        }
        let likers = likers(client, base, *post).await?;
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

async fn likers(client: &Client, base: &str, post: PostId) -> Result<BTreeSet<UserId>, BenchError> {
    let mut out = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!("{base}/v1/posts/{post}/likers?limit=100{cursor}"))
            .send()
            .await?
            .json()
            .await?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["id"].as_i64() {
                out.insert(id);
            }
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(out),
        }
    }
}

/// Redis likers sets and PostgreSQL rows against the ledger, directly.
async fn compare_stores(
    p: &crate::store::production::Production,
    expected: &HashMap<PostId, BTreeSet<UserId>>,
) -> Result<Vec<String>, BenchError> {
    let store = |e: String| BenchError::Setup(e);
    let mut redis = p.redis.clone();
    let mut differences = Vec::new();
    for (post, users) in expected {
        let members: BTreeSet<i64> = redis::cmd("SMEMBERS")
            .arg(p.keys.likers(*post))
            .query_async(&mut redis)
            .await
            .map_err(|e| store(e.to_string()))?;
        if &members != users {
            differences.push(format!(
                "post {post}: Redis likers differ from the ledger ({} vs {})",
                members.len(),
                users.len()
            ));
        }
        let rows: BTreeSet<i64> =
            sqlx::query_scalar("SELECT user_id FROM likes WHERE post_id = $1 AND liked")
                .bind(post)
                .fetch_all(&p.pg)
                .await
                .map_err(|e| store(e.to_string()))?
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
