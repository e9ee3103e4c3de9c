//! The embedded backend: SQLite (WAL) for durability, in-process state for
//! speed. It needs nothing installed, so `tally serve` works on a fresh
//! machine, and it keeps the same promises as the production backend:
//! exact counts and nothing acknowledged lost, even on `kill -9`.

mod catalog;
mod likes;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

pub use catalog::SqliteCatalog;
pub use likes::{EmbeddedLikes, LikesConfig};

use super::StoreError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "tally.db";

/// Opens (creating if needed) the database in `data_dir` and migrates it.
pub async fn open(data_dir: &Path) -> Result<SqlitePool, StoreError> {
    let options = connect_options(data_dir)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&pool)
        .await
        .map_err(|e| StoreError::Internal(e.into()))?;
    Ok(pool)
}

/// Options shared by the pool and the like writer's own connection.
///
/// `synchronous = FULL`: a commit is on disk (fsync) before we acknowledge,
/// so acknowledged likes survive power loss, not just a process crash. Group
/// commit makes that affordable: one fsync covers a whole batch.
pub(crate) fn connect_options(data_dir: &Path) -> Result<SqliteConnectOptions, StoreError> {
    let url = format!("sqlite://{}", data_dir.join(DB_FILE).display());
    Ok(SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .disable_statement_logging())
}
