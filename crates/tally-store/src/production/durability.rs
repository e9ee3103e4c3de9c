//! When a like may be acknowledged: the deployment's durability mode.

use std::str::FromStr;

/// When an acknowledgement may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After Redis applied the like (and queued its event). Redis's own
    /// persistence bounds what a Redis crash can lose.
    Fast,
    /// After Redis applied the like and at least one replica of its
    /// master acknowledged it (`WAIT 1`): it survives the loss of the
    /// master (a promoted replica has it).
    Replicated,
    /// After PostgreSQL committed the event (batched by the write-behind).
    Strict,
}

impl Durability {
    pub const ALL: [Durability; 3] = [Durability::Fast, Durability::Replicated, Durability::Strict];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Replicated => "replicated",
            Self::Strict => "strict",
        }
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown durability {s:?} (fast, replicated, strict)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_names() {
        for d in Durability::ALL {
            assert_eq!(d.as_str().parse::<Durability>(), Ok(d));
        }
        assert!("eventual".parse::<Durability>().is_err());
    }
}
