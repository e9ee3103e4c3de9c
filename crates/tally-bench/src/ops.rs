//! The operations the load generator sends, and how they are mixed.

use std::str::FromStr;

use rand::Rng;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Like,
    Unlike,
    Toggle,
    Feed,
    Likers,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Like, Op::Unlike, Op::Toggle, Op::Feed, Op::Likers];

    pub fn name(self) -> &'static str {
        match self {
            Op::Like => "like",
            Op::Unlike => "unlike",
            Op::Toggle => "toggle",
            Op::Feed => "feed",
            Op::Likers => "likers",
        }
    }

    /// Whether it changes a like state (and so goes through the ledger).
    pub fn writes(self) -> bool {
        matches!(self, Op::Like | Op::Unlike | Op::Toggle)
    }
}

/// Weights of each operation, e.g. `like=60,unlike=20,toggle=5,feed=10,likers=5`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Mix(pub Vec<(Op, u32)>);

impl Mix {
    pub fn pick(&self, rng: &mut impl Rng) -> Op {
        let total: u32 = self.0.iter().map(|(_, w)| w).sum();
        let mut n = rng.random_range(0..total.max(1));
        for &(op, w) in &self.0 {
            if n < w {
                return op;
            }
            n -= w;
        }
        Op::Like
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("expected op=weight, got {part:?}"))?;
            let op = Op::ALL
                .into_iter()
                .find(|o| o.name() == name.trim())
                .ok_or_else(|| format!("unknown operation {name:?}"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("bad weight in {part:?}"))?;
            out.push((op, weight));
        }
        if out.iter().map(|(_, w)| w).sum::<u32>() == 0 {
            return Err("the mix needs a positive weight".into());
        }
        Ok(Self(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_picks_by_weight() {
        let mix: Mix = "like=3,feed=1".parse().unwrap();
        let mut rng = rand::rng();
        let likes = (0..10_000)
            .filter(|_| mix.pick(&mut rng) == Op::Like)
            .count();
        assert!((7000..8000).contains(&likes), "{likes}");
        assert!("like=0".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());
    }
}
