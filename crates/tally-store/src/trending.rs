//! Trending posts: likes gained in a recent window (likes minus unlikes),
//! counted in time buckets.
//!
//! Both backends count the same way. A change adds ±1 to the post in the
//! bucket of the current minute and in the bucket of the current hour
//! (Unix time divided by 60 s or 3,600 s). A window is read from the
//! buckets that overlap it:
//!
//! - `1h`: the last 60 minute buckets, the current (partial) one included,
//!   so it covers between 59 and 60 minutes;
//! - `24h`: the last 24 hour buckets, likewise between 23 and 24 hours.
//!
//! Buckets older than their window are dropped (the embedded backend prunes
//! them; Redis expires them, see [`MINUTE_BUCKET_TTL_MS`]).

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;

use crate::domain::PostId;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;

/// How long Redis keeps a minute bucket after its last change: the 60
/// minutes it is read for, plus one for the minute it is written in.
pub const MINUTE_BUCKET_TTL_MS: i64 = 61 * MINUTE_MS;
/// How long Redis keeps an hour bucket after its last change (24 + 1 hours).
pub const HOUR_BUCKET_TTL_MS: i64 = 25 * HOUR_MS;

/// The windows a ranking is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrendWindow {
    /// The last hour, in minute buckets.
    Hour,
    /// The last 24 hours, in hour buckets.
    Day,
}

/// A window name the API does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown trending window {0:?}: use 1h or 24h")]
pub struct UnknownWindow(pub String);

impl FromStr for TrendWindow {
    type Err = UnknownWindow;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "1h" => Ok(Self::Hour),
            "24h" => Ok(Self::Day),
            other => Err(UnknownWindow(other.to_owned())),
        }
    }
}

impl TrendWindow {
    pub const ALL: [Self; 2] = [Self::Hour, Self::Day];

    /// The name in the API (`1h`, `24h`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
        }
    }

    /// The granularity of this window's buckets.
    pub fn granularity(self) -> Granularity {
        match self {
            Self::Hour => Granularity::Minute,
            Self::Day => Granularity::Hour,
        }
    }

    /// How many buckets the window sums.
    pub fn buckets(self) -> i64 {
        match self {
            Self::Hour => 60,
            Self::Day => 24,
        }
    }

    /// The bucket numbers the window reads at `now_ms`, oldest first.
    pub fn bucket_range(self, now_ms: i64) -> std::ops::RangeInclusive<i64> {
        let current = self.granularity().bucket(now_ms);
        (current - self.buckets() + 1)..=current
    }
}

/// The two bucket sizes: minutes (for `1h`) and hours (for `24h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    Minute,
    Hour,
}

impl Granularity {
    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => MINUTE_MS,
            Self::Hour => HOUR_MS,
        }
    }

    /// The bucket `at_ms` falls in (Unix minutes or hours).
    pub fn bucket(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.millis())
    }

    /// The short name used in Redis keys (`m`, `h`).
    pub fn tag(self) -> &'static str {
        match self {
            Self::Minute => "m",
            Self::Hour => "h",
        }
    }
}

/// One post of a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trend {
    pub post: PostId,
    /// Likes minus unlikes in the window; always > 0 in a ranking.
    pub score: i64,
}

impl Trend {
    /// The ranking order: higher score first, then lower id (stable, so
    /// keyset cursors on (score, post) work).
    pub fn rank_key(&self) -> (std::cmp::Reverse<i64>, PostId) {
        (std::cmp::Reverse(self.score), self.post)
    }
}

/// Drops scores ≤ 0, sorts in ranking order and keeps the first `limit`.
/// The merge of per-partition top lists is a global top list, since every
/// post lives in exactly one partition.
pub fn rank(mut trends: Vec<Trend>, limit: usize) -> Vec<Trend> {
    trends.retain(|t| t.score > 0);
    trends.sort_unstable_by_key(Trend::rank_key);
    trends.truncate(limit);
    trends
}

/// In-process buckets (the embedded backend): the minute buckets of the
/// last hour and the hour buckets of the last day, pruned as they age.
#[derive(Debug, Default)]
pub struct Buckets {
    minutes: VecDeque<(i64, HashMap<PostId, i64>)>,
    hours: VecDeque<(i64, HashMap<PostId, i64>)>,
}

impl Buckets {
    /// Adds `delta` (+1 like, -1 unlike) to `post` at `at_ms`.
    pub fn record(&mut self, post: PostId, delta: i64, at_ms: i64) {
        self.prune(at_ms);
        for window in TrendWindow::ALL {
            let bucket = window.granularity().bucket(at_ms);
            let list = self.list_mut(window);
            // Buckets are appended in time order; a change stamped a moment
            // before the newest bucket (two threads racing across a
            // boundary) goes into the bucket it belongs to.
            let at = match list.iter().rposition(|(b, _)| *b <= bucket) {
                Some(i) if list[i].0 == bucket => i,
                Some(i) => {
                    list.insert(i + 1, (bucket, HashMap::new()));
                    i + 1
                }
                None => {
                    list.push_front((bucket, HashMap::new()));
                    0
                }
            };
            let counts = &mut list[at].1;
            let score = counts.entry(post).or_insert(0);
            *score += delta;
            if *score == 0 {
                counts.remove(&post);
            }
        }
    }

    /// The window's ranking at `now_ms`, at most `limit` posts.
    pub fn top(&mut self, window: TrendWindow, now_ms: i64, limit: usize) -> Vec<Trend> {
        self.prune(now_ms);
        let range = window.bucket_range(now_ms);
        let mut sums: HashMap<PostId, i64> = HashMap::new();
        for (bucket, counts) in self.list_mut(window).iter() {
            if range.contains(bucket) {
                for (&post, &delta) in counts {
                    *sums.entry(post).or_insert(0) += delta;
                }
            }
        }
        rank(
            sums.into_iter()
                .map(|(post, score)| Trend { post, score })
                .collect(),
            limit,
        )
    }

    /// Drops the buckets no window at `now_ms` reads any more.
    pub fn prune(&mut self, now_ms: i64) {
        for window in TrendWindow::ALL {
            let oldest = *window.bucket_range(now_ms).start();
            let list = self.list_mut(window);
            while list.front().is_some_and(|(b, _)| *b < oldest) {
                list.pop_front();
            }
        }
    }

    /// How many buckets are held (minute, hour): for tests of pruning.
    pub fn held(&self) -> (usize, usize) {
        (self.minutes.len(), self.hours.len())
    }

    fn list_mut(&mut self, window: TrendWindow) -> &mut VecDeque<(i64, HashMap<PostId, i64>)> {
        match window {
            TrendWindow::Hour => &mut self.minutes,
            TrendWindow::Day => &mut self.hours,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z, a whole hour.
    const T0: i64 = 1_767_225_600_000;

    fn posts(ranking: &[Trend]) -> Vec<(PostId, i64)> {
        ranking.iter().map(|t| (t.post, t.score)).collect()
    }

    #[test]
    fn windows_parse_and_name_their_buckets() {
        assert_eq!("1h".parse::<TrendWindow>().ok(), Some(TrendWindow::Hour));
        assert_eq!("24h".parse::<TrendWindow>().ok(), Some(TrendWindow::Day));
        assert!("7d".parse::<TrendWindow>().is_err());
        assert!("".parse::<TrendWindow>().is_err());
        let minute = T0 / MINUTE_MS;
        assert_eq!(
            TrendWindow::Hour.bucket_range(T0 + 59_999),
            (minute - 59)..=minute
        );
        let hour = T0 / HOUR_MS;
        assert_eq!(TrendWindow::Day.bucket_range(T0), (hour - 23)..=hour);
        assert_eq!(Granularity::Minute.bucket(-1), -1, "floors before 1970");
    }

    #[test]
    fn ranks_by_score_then_id_and_drops_non_positive() {
        let ranked = rank(
            vec![
                Trend { post: 5, score: 2 },
                Trend { post: 3, score: 2 },
                Trend { post: 9, score: 7 },
                Trend { post: 1, score: 0 },
                Trend { post: 2, score: -3 },
            ],
            10,
        );
        assert_eq!(posts(&ranked), [(9, 7), (3, 2), (5, 2)]);
        assert_eq!(posts(&rank(ranked, 2)), [(9, 7), (3, 2)]);
    }

    #[test]
    fn a_window_sums_its_buckets_and_forgets_older_ones() {
        let mut b = Buckets::default();
        // Post 1: two likes 90 minutes ago (in the day, not in the hour).
        b.record(1, 1, T0 - 90 * MINUTE_MS);
        b.record(1, 1, T0 - 90 * MINUTE_MS);
        // Post 2: a like 59 minutes ago and one now; post 3: liked and
        // unliked now (cancels out), post 4: unliked only (negative).
        b.record(2, 1, T0 - 59 * MINUTE_MS);
        b.record(2, 1, T0);
        b.record(3, 1, T0);
        b.record(3, -1, T0);
        b.record(4, -1, T0);
        assert_eq!(posts(&b.top(TrendWindow::Hour, T0, 10)), [(2, 2)]);
        assert_eq!(posts(&b.top(TrendWindow::Day, T0, 10)), [(1, 2), (2, 2)]);

        // One minute later the like from 59 minutes before T0 has left the
        // hour (its bucket is 60 buckets old).
        assert_eq!(
            posts(&b.top(TrendWindow::Hour, T0 + MINUTE_MS, 10)),
            [(2, 1)]
        );
        // 23 hours later, T0's hour is the oldest the day reads; the hour
        // of the likes 90 minutes before T0 is gone.
        let later = T0 + 23 * HOUR_MS;
        assert_eq!(posts(&b.top(TrendWindow::Day, later, 10)), [(2, 1)]);
        assert!(b.top(TrendWindow::Hour, later, 10).is_empty());
        assert_eq!(b.held(), (0, 1), "minute buckets pruned, one hour left");
        assert!(b.top(TrendWindow::Day, later + HOUR_MS, 10).is_empty());
        assert_eq!(b.held(), (0, 0));
    }

    #[test]
    fn a_late_change_lands_in_its_own_bucket() {
        let mut b = Buckets::default();
        b.record(1, 1, T0 + MINUTE_MS);
        // Stamped just before the newest bucket (a racing thread).
        b.record(2, 1, T0 + 59_000);
        b.record(2, 1, T0 - 30 * MINUTE_MS);
        assert_eq!(b.held(), (3, 2));
        let at = T0 + 60 * MINUTE_MS;
        // At T0 + 60 min the window starts at T0 + 1 min: only post 1.
        assert_eq!(posts(&b.top(TrendWindow::Hour, at, 10)), [(1, 1)]);
    }
}
