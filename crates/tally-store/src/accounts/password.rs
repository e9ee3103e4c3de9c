//! Password hashing with argon2id (OWASP's first choice).
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on the
//! blocking pool, never on the async workers that serve likes.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::domain::Password;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Hashes a password into a PHC string (`$argon2id$…`).
pub async fn hash(password: Password) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await?
}

/// Checks a password against a stored hash. Unparseable hashes (such as
/// those of seeded users) never verify.
pub async fn verify(password: Password, stored: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(PasswordError::from)
}

/// A hash computed once, to verify against when the user does not exist, so
/// that response time does not reveal which usernames exist.
pub async fn dummy_hash() -> Result<String, PasswordError> {
    hash(Password::new("not-a-real-password")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash(Password::new("correct horse")).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify(Password::new("correct horse"), h.clone())
                .await
                .unwrap()
        );
        assert!(!verify(Password::new("wrong horse"), h).await.unwrap());
        assert!(!verify(Password::new("x"), "!seeded".into()).await.unwrap());
    }
}
