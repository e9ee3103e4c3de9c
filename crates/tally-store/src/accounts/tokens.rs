//! Signed bearer tokens (JWT, HS256), checked without any store lookup so
//! that authenticating a like costs microseconds.
//!
//! Keys come from the catalog (shared by every node of a deployment) or from
//! configuration. Tokens are signed with the newest key and verified against
//! all keys, so a new key can be rolled out before the old one is retired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a string per the JWT spec.
    pub sub: String,
    /// The username, for clients' convenience.
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Claims {
    pub fn user_id(&self) -> Result<UserId, TokenError> {
        self.sub.parse().map_err(|_| TokenError::Invalid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token invalid or expired")]
    Invalid,
    #[error("no signing key configured")]
    NoKey,
    #[error("token signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signing and verification keys.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenKeys")
            .field("keys", &self.decoding.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TokenKeys {
    /// `secrets` newest first: the first signs, all verify.
    pub fn new(secrets: &[Vec<u8>], ttl: Duration) -> Result<Self, TokenError> {
        let newest = secrets.first().ok_or(TokenError::NoKey)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(newest),
            decoding: secrets
                .iter()
                .map(|s| DecodingKey::from_secret(s))
                .collect(),
            validation,
            ttl,
        })
    }

    /// Issues a token for a user; returns it with its expiry (Unix seconds).
    pub fn issue(&self, user: UserId, username: &str) -> Result<(String, u64), TokenError> {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.ttl)
            .as_secs();
        let claims = Claims {
            sub: user.to_string(),
            name: username.to_owned(),
            exp,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, exp))
    }

    /// Verifies signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        for key in &self.decoding {
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                return Ok(data.claims);
            }
        }
        Err(TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&[u8]], ttl: Duration) -> TokenKeys {
        let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
        TokenKeys::new(&secrets, ttl).unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys(
            &[b"0123456789abcdef0123456789abcdef"],
            Duration::from_secs(60),
        );
        let (token, _) = k.issue(42, "ann").unwrap();
        let claims = k.verify(&token).unwrap();
        assert_eq!(claims.user_id().unwrap(), 42);
        assert_eq!(claims.name, "ann");
    }

    #[test]
    fn other_keys_and_tampering_fail() {
        let a = keys(
            &[b"key-a-key-a-key-a-key-a-key-a-aa"],
            Duration::from_secs(60),
        );
        let b = keys(
            &[b"key-b-key-b-key-b-key-b-key-b-bb"],
            Duration::from_secs(60),
        );
        let (token, _) = a.issue(1, "ann").unwrap();
        assert!(b.verify(&token).is_err());
        let mut forged = token.clone();
        forged.push('x');
        assert!(a.verify(&forged).is_err());
        assert!(a.verify("not a token").is_err());
    }

    #[test]
    fn old_key_still_verifies_after_rotation() {
        let old = keys(
            &[b"old-old-old-old-old-old-old-old!"],
            Duration::from_secs(60),
        );
        let (token, _) = old.issue(7, "bob").unwrap();
        let rotated = keys(
            &[
                b"new-new-new-new-new-new-new-new!",
                b"old-old-old-old-old-old-old-old!",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(rotated.verify(&token).unwrap().user_id().unwrap(), 7);
    }

    #[test]
    fn expired_tokens_fail() {
        let k = keys(&[b"0123456789abcdef0123456789abcdef"], Duration::ZERO);
        let claims = Claims {
            sub: "1".into(),
            name: "ann".into(),
            exp: 1_000,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap();
        assert!(k.verify(&token).is_err());
    }
}
