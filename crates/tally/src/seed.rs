//! Bulk users for load tests: created in one statement, with tokens minted
//! locally from the deployment's signing key (no password hashing, which at
//! tens of milliseconds per user would make a million users take hours).

use std::io::Write;
use std::path::Path;

use crate::auth::{TokenError, TokenKeys};
use crate::store::{Catalog, SeededUsers, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("writing tokens: {0}")]
    Io(#[from] std::io::Error),
}

/// Creates the users and, if `tokens_out` is given, writes `{id} {token}`
/// per line.
pub async fn seed_users(
    catalog: &dyn Catalog,
    keys: &TokenKeys,
    prefix: &str,
    count: u64,
    tokens_out: Option<&Path>,
) -> Result<SeededUsers, SeedError> {
    let seeded = catalog.seed_users(prefix, count).await?;
    if let Some(path) = tokens_out {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for n in 0..seeded.count {
            let id = seeded.first_id + n as i64;
            let (token, _) = keys.issue(id, &format!("{prefix}{n}"))?;
            writeln!(out, "{id} {token}")?;
        }
        out.flush()?;
    }
    Ok(seeded)
}
