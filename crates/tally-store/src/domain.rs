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
    fn password_is_not_printed() {
        let p = Password::new("hunter2hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(p.check_new().is_ok());
        assert!(Password::new("short").check_new().is_err());
    }
}
