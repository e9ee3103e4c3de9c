//! Signed bearer tokens (JWT, HS256): the signature and expiry are checked
//! here without any store lookup, so authenticating a like costs
//! microseconds; whether the session was signed out or its user is gone is
//! the server's cached check on top (see `tally-server`'s `sessions`).
//!
//! Keys come from the catalog ([`crate::Catalog::signing_keys`]), shared by
//! every node of a deployment. Each token names its key (`kid` in the
//! header) and its session (`jti`), so that a key can be rotated without
//! signing everyone out: the newest key signs, every key not yet retired
//! verifies, and a retired key (past its grace period) verifies nothing.
//! The key set is replaced in place when nodes reload it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
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
    /// The session: random per token, what sign-out revokes. Absent from
    /// tokens issued before sessions existed (see [`Verified::session`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    pub fn user_id(&self) -> Result<UserId, TokenError> {
        self.sub.parse().map_err(|_| TokenError::Invalid)
    }
}

/// A token whose signature and expiry hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub claims: Claims,
    /// What revocation is keyed by: the `jti`, or for older tokens without
    /// one, the signature (unique per token, and covered by the check).
    pub session: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token invalid or expired")]
    Invalid,
    /// Signed with a key this node has not loaded (yet): reload and retry.
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("no signing key configured")]
    NoKey,
    #[error("token signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// One signing key as the catalog keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The `kid` of the tokens it signs.
    pub id: i64,
    pub secret: Vec<u8>,
    /// When it stops verifying (ms since the Unix epoch); `None` while it
    /// is current or was never rotated out.
    pub retire_at_ms: Option<i64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("retire_at_ms", &self.retire_at_ms)
            .finish()
    }
}

/// The keys of one load: the newest signs, all verify until retired.
struct KeySet {
    signing_kid: String,
    encoding: EncodingKey,
    /// By `kid`: the key and when it retires (ms).
    verifying: HashMap<String, (DecodingKey, Option<i64>)>,
}

/// Signing and verification keys; [`TokenKeys::replace`] swaps them for a
/// newer set without disturbing requests in flight.
pub struct TokenKeys {
    /// A std lock, not a tokio one: held for a clone of an `Arc`, never
    /// across an await. Written once per reload (every minute or so).
    set: RwLock<Arc<KeySet>>,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("keys", &self.current().verifying.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn now_ms() -> i64 {
    crate::now_ms()
}

impl KeySet {
    fn new(keys: &[SigningKey]) -> Result<Self, TokenError> {
        let newest = keys.iter().max_by_key(|k| k.id).ok_or(TokenError::NoKey)?;
        Ok(Self {
            signing_kid: newest.id.to_string(),
            encoding: EncodingKey::from_secret(&newest.secret),
            verifying: keys
                .iter()
                .map(|k| {
                    (
                        k.id.to_string(),
                        (DecodingKey::from_secret(&k.secret), k.retire_at_ms),
                    )
                })
                .collect(),
        })
    }
}

impl TokenKeys {
    /// `keys` in any order: the one with the highest id signs.
    pub fn new(keys: &[SigningKey], ttl: Duration) -> Result<Self, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            set: RwLock::new(Arc::new(KeySet::new(keys)?)),
            validation,
            ttl,
        })
    }

    /// Swaps in a freshly loaded key set (after a rotation).
    pub fn replace(&self, keys: &[SigningKey]) -> Result<(), TokenError> {
        let set = Arc::new(KeySet::new(keys)?);
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_key_id(&self) -> String {
        self.current().signing_kid.clone()
    }

    /// Issues a token for a user, in a new session; returns it with its
    /// expiry (Unix seconds).
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
            jti: Some(format!("{:032x}", rand::random::<u128>())),
        };
        let set = self.current();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(set.signing_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &set.encoding)?;
        Ok((token, exp))
    }

    /// Verifies signature, expiry and that the key is not retired.
    /// [`TokenError::UnknownKey`] when the token names a key this node has
    /// not loaded: the caller may reload the keys and try again.
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let set = self.current();
        let now = now_ms();
        let live = |retire: &Option<i64>| retire.is_none_or(|at| now < at);
        let claims = match header.kid {
            Some(kid) => {
                let (key, retire) = set.verifying.get(&kid).ok_or(TokenError::UnknownKey)?;
                if !live(retire) {
                    return Err(TokenError::Invalid);
                }
                jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                    .map_err(|_| TokenError::Invalid)?
                    .claims
            }
            // Tokens from before key ids: any live key may have signed it.
            None => {
                set.verifying
                    .values()
                    .filter(|(_, retire)| live(retire))
                    .find_map(|(key, _)| {
                        jsonwebtoken::decode::<Claims>(token, key, &self.validation).ok()
                    })
                    .ok_or(TokenError::Invalid)?
                    .claims
            }
        };
        let session = match &claims.jti {
            Some(jti) => jti.clone(),
            None => token.rsplit('.').next().unwrap_or_default().to_owned(),
        };
        Ok(Verified { claims, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, secret: &[u8], retire_at_ms: Option<i64>) -> SigningKey {
        SigningKey {
            id,
            secret: secret.to_vec(),
            retire_at_ms,
        }
    }

    fn keys(list: &[SigningKey], ttl: Duration) -> TokenKeys {
        TokenKeys::new(list, ttl).unwrap()
    }

    const A: &[u8] = b"key-a-key-a-key-a-key-a-key-a-aa";
    const B: &[u8] = b"key-b-key-b-key-b-key-b-key-b-bb";

    #[test]
    fn issued_tokens_verify_with_a_session_each() {
        let k = keys(&[key(1, A, None)], Duration::from_secs(60));
        let (token, _) = k.issue(42, "ann").unwrap();
        let v = k.verify(&token).unwrap();
        assert_eq!(v.claims.user_id().unwrap(), 42);
        assert_eq!(v.claims.name, "ann");
        assert_eq!(v.session.len(), 32);
        let (again, _) = k.issue(42, "ann").unwrap();
        assert_ne!(k.verify(&again).unwrap().session, v.session);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("1"));
    }

    #[test]
    fn other_keys_and_tampering_fail() {
        let a = keys(&[key(1, A, None)], Duration::from_secs(60));
        let b = keys(&[key(1, B, None)], Duration::from_secs(60));
        let (token, _) = a.issue(1, "ann").unwrap();
        assert!(b.verify(&token).is_err());
        let mut forged = token.clone();
        forged.push('x');
        assert!(a.verify(&forged).is_err());
        assert!(a.verify("not a token").is_err());
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_retires_the_old_one() {
        let k = keys(&[key(1, A, None)], Duration::from_secs(60));
        let (old, _) = k.issue(7, "bob").unwrap();
        // Rotated with a grace period: the old token still verifies.
        let later = now_ms() + 60_000;
        k.replace(&[key(2, B, None), key(1, A, Some(later))])
            .unwrap();
        assert_eq!(k.verify(&old).unwrap().claims.user_id().unwrap(), 7);
        let (new, _) = k.issue(7, "bob").unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
            Some("2")
        );
        // Past the grace period the old key verifies nothing.
        k.replace(&[key(2, B, None), key(1, A, Some(now_ms() - 1))])
            .unwrap();
        assert!(matches!(k.verify(&old), Err(TokenError::Invalid)));
        assert!(k.verify(&new).is_ok());
        // A node that has not loaded key 2 yet asks to reload.
        let stale = keys(&[key(1, A, None)], Duration::from_secs(60));
        assert!(matches!(stale.verify(&new), Err(TokenError::UnknownKey)));
    }

    #[test]
    fn tokens_without_kid_or_jti_still_verify() {
        let k = keys(&[key(1, A, None)], Duration::from_secs(60));
        let claims = Claims {
            sub: "5".into(),
            name: "old".into(),
            exp: u64::MAX / 2,
            jti: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(A),
        )
        .unwrap();
        let v = k.verify(&token).unwrap();
        assert_eq!(v.claims.user_id().unwrap(), 5);
        assert_eq!(v.session, token.rsplit('.').next().unwrap());
    }

    #[test]
    fn expired_tokens_fail() {
        let k = keys(&[key(1, A, None)], Duration::ZERO);
        let claims = Claims {
            sub: "1".into(),
            name: "ann".into(),
            exp: 1_000,
            jti: None,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("1".into());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(A)).unwrap();
        assert!(k.verify(&token).is_err());
    }
}
