//! Bulk users for load tests and demos: created in one statement, with
//! tokens minted locally from the deployment's signing key (no password
//! hashing, which at tens of milliseconds per user would make a million
//! users take hours). The one implementation behind `tally users seed`,
//! `tally bench`, the load panel and the tests.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::tokens::{TokenError, TokenKeys};
use crate::domain::UserId;
use crate::{Catalog, SeededUsers, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("tokens file: {0}")]
    Io(#[from] std::io::Error),
    #[error("minting tokens: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Seeded users with a token each.
#[derive(Debug, Clone)]
pub struct SeededTokens {
    pub users: SeededUsers,
    /// `(id, token)` per user, in id order; user `n` is `{prefix}{n}`.
    pub tokens: Vec<(UserId, String)>,
}

/// Creates `count` users named `{prefix}{n}` and mints a token for each
/// (off the async threads: a million signatures take seconds).
pub async fn seed_users(
    catalog: &dyn Catalog,
    keys: Arc<TokenKeys>,
    prefix: &str,
    count: u64,
) -> Result<SeededTokens, SeedError> {
    let users = catalog.seed_users(prefix, count).await?;
    let prefix = prefix.to_owned();
    let tokens = tokio::task::spawn_blocking(move || {
        mint_tokens(&keys, users, &prefix).collect::<Result<Vec<_>, TokenError>>()
    })
    .await??;
    Ok(SeededTokens { users, tokens })
}

/// The token of each seeded user (`{prefix}{n}`), in id order, minted as
/// the iterator is read (a million at once would hold hundreds of MB).
pub fn mint_tokens<'a>(
    keys: &'a TokenKeys,
    users: SeededUsers,
    prefix: &'a str,
) -> impl Iterator<Item = Result<(UserId, String), TokenError>> + 'a {
    (0..users.count).map(move |n| {
        let id = users.first_id + n as i64;
        let (token, _) = keys.issue(id, &format!("{prefix}{n}"))?;
        Ok((id, token))
    })
}

/// Writes `{id} {token}` per line: the tokens file of `tally users seed
/// --tokens-out`, which `tally bench --tokens` reads with [`read_tokens`].
/// Blocking: call it off the async threads.
pub fn write_tokens(
    path: &Path,
    tokens: impl IntoIterator<Item = Result<(UserId, String), TokenError>>,
) -> Result<(), SeedError> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for token in tokens {
        let (id, token) = token?;
        writeln!(out, "{id} {token}")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a tokens file written by [`write_tokens`].
pub fn read_tokens(path: &Path) -> Result<Vec<(UserId, String)>, std::io::Error> {
    let bad = |line: &str, why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {why} in line {line:?}", path.display()),
        )
    };
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, token) = l.split_once(' ').ok_or_else(|| bad(l, "no space"))?;
            Ok((id.parse().map_err(|_| bad(l, "bad id"))?, token.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.txt");
        let tokens = vec![(7, "a.b.c".to_owned()), (8, "d.e.f".to_owned())];
        write_tokens(&path, tokens.iter().cloned().map(Ok)).unwrap();
        assert_eq!(read_tokens(&path).unwrap(), tokens);
        std::fs::write(&path, "7a.b.c\n").unwrap();
        assert!(read_tokens(&path).is_err());
    }
}
