//! Opaque pagination cursors.
//!
//! Cursors are keyset positions (never offsets, which slow down and skip
//! rows as the feed moves). They are base64url so clients treat them as
//! opaque and we can change their contents later.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use tally_store::domain::PostId;
use tally_store::{LikerCursor, TrendWindow};

const POSTS: &str = "p";
const LIKERS: &str = "l";
const TRENDING: &str = "t";

/// A position in a trending ranking: after the post with this score and
/// id (the ranking is ordered by score, then id), in this window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrendCursor {
    pub window: TrendWindow,
    pub score: i64,
    pub post: PostId,
}

pub fn encode_trend(c: TrendCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{TRENDING}:{}:{}:{}",
        c.window.as_str(),
        c.score,
        c.post
    ))
}

pub fn decode_trend(raw: &str) -> Option<TrendCursor> {
    let text = decode(raw)?;
    let mut parts = text.strip_prefix(TRENDING)?.strip_prefix(':')?.split(':');
    let cursor = TrendCursor {
        window: parts.next()?.parse().ok()?,
        score: parts.next()?.parse().ok()?,
        post: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(cursor)
}

pub fn encode_post(before: PostId) -> String {
    URL_SAFE_NO_PAD.encode(format!("{POSTS}:{before}"))
}

pub fn decode_post(raw: &str) -> Option<PostId> {
    let text = decode(raw)?;
    let id = text.strip_prefix(POSTS)?.strip_prefix(':')?;
    id.parse().ok()
}

pub fn encode_liker(c: LikerCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{LIKERS}:{}:{}", c.liked_at_ms, c.user_id))
}

pub fn decode_liker(raw: &str) -> Option<LikerCursor> {
    let text = decode(raw)?;
    let rest = text.strip_prefix(LIKERS)?.strip_prefix(':')?;
    let (at, user) = rest.split_once(':')?;
    Some(LikerCursor {
        liked_at_ms: at.parse().ok()?,
        user_id: user.parse().ok()?,
    })
}

fn decode(raw: &str) -> Option<String> {
    if raw.len() > 128 {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode_post(&encode_post(42)), Some(42));
        let c = LikerCursor {
            liked_at_ms: 1_700_000_000_000,
            user_id: 7,
        };
        assert_eq!(decode_liker(&encode_liker(c)), Some(c));
        let t = TrendCursor {
            window: TrendWindow::Day,
            score: 12,
            post: 99,
        };
        assert_eq!(decode_trend(&encode_trend(t)), Some(t));
        assert_eq!(decode_post(&encode_trend(t)), None);
        assert_eq!(decode_trend(&encode_post(1)), None);
    }

    #[test]
    fn rejects_garbage_and_the_wrong_kind() {
        assert_eq!(decode_post("!!!"), None);
        assert_eq!(
            decode_post(&encode_liker(LikerCursor {
                liked_at_ms: 1,
                user_id: 2
            })),
            None
        );
        assert_eq!(decode_liker(&encode_post(1)), None);
        assert_eq!(decode_post(&"A".repeat(500)), None);
    }
}
