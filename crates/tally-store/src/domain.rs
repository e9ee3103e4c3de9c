//! Domain values parsed once at the edge, so the rest of the code can trust them.

use serde::Deserialize;

pub type UserId = i64;
pub type PostId = i64;

/// A username: 3–32 characters of `[a-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub const MIN: usize = 3;
    pub const MAX: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let len = raw.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&len) {
            return Err(format!(
                "username must be {}–{} characters",
                Self::MIN,
                Self::MAX
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("username may contain only a-z, 0-9 and _".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed: 8–128 characters. Never logged (no `Debug` output of
/// the value).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn check_new(&self) -> Result<(), String> {
        let len = self.0.chars().count();
        if (Self::MIN..=Self::MAX).contains(&len) {
            Ok(())
        } else {
            Err(format!(
                "password must be {}–{} characters",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }
}

/// Caption limit, in characters (Instagram's is 2,200).
pub const MAX_CAPTION_CHARS: usize = 2_200;

/// A client's `Idempotency-Key`: 1–64 characters of `[A-Za-z0-9_-]` (a
/// UUID fits). It names Redis keys, hence the narrow charset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX {
            return Err(format!(
                "Idempotency-Key must be 1–{} characters",
                Self::MAX
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("Idempotency-Key may contain only A-Z, a-z, 0-9, - and _".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::parse("ann").is_ok());
        assert!(Username::parse("a_1_b").is_ok());
        assert!(Username::parse(&"x".repeat(32)).is_ok());
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse(&"x".repeat(33)).is_err());
        assert!(Username::parse("Ann").is_err());
        assert!(Username::parse("a-b").is_err());
        assert!(Username::parse("ａｂｃ").is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("0b6c1a2e-9f3d-4c1b-8a7e-2f5d6c7b8a9e").is_ok());
        assert!(IdempotencyKey::parse("a_B-1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(64)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(65)).is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse("a:b").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
    }

    #[test]
    fn password_is_not_printed() {
        let p = Password::new("hunter2hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(p.check_new().is_ok());
        assert!(Password::new("short").check_new().is_err());
    }
}
