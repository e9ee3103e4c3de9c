//! Decoding Redis's stream replies (RESP2 arrays or RESP3 maps: the same
//! code reads both, so the client's protocol choice cannot break it).

use redis::Value;

use super::SyncError;
use crate::production::keys::GROUP;
use crate::production::pg::LikeEvent;

/// The consumer group's view of a stream (from `XINFO GROUPS`).
pub(super) struct GroupInfo {
    pub pending: u64,
    pub last_delivered: String,
    /// Entries not yet delivered; `None` when Redis cannot tell.
    pub lag: Option<u64>,
}

pub(super) fn group_info(reply: &Value) -> Option<GroupInfo> {
    let Value::Array(groups) = reply else {
        return None;
    };
    groups.iter().find_map(|g| {
        let fields: Vec<(String, &Value)> = match g {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| Some((as_string(&kv[0])?, kv.get(1)?)))
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(k, v)| Some((as_string(k)?, v)))
                .collect(),
            _ => return None,
        };
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        if get("name").and_then(as_string).as_deref() != Some(GROUP) {
            return None;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => Some((*n).max(0) as u64),
            Some(other) => as_string(other).and_then(|s| s.parse().ok()),
            None => None,
        };
        Some(GroupInfo {
            pending: int(get("pending")).unwrap_or(0),
            last_delivered: get("last-delivered-id")
                .and_then(as_string)
                .unwrap_or_else(|| "0-0".into()),
            lag: int(get("lag")),
        })
    })
}

impl GroupInfo {
    /// Events of a stream of `len` entries not yet applied: read but not
    /// acknowledged, plus not yet read. When Redis cannot tell how many are
    /// unread (no group yet; `lag` is nil after entries were deleted or
    /// trimmed), the whole stream: an upper bound, so that nothing waiting
    /// for the backlog to drain stops early. The one definition of the
    /// write-behind's backlog (metrics, readiness, the load panel).
    pub(super) fn unapplied(info: Option<&GroupInfo>, len: u64) -> u64 {
        match info {
            Some(GroupInfo {
                pending,
                lag: Some(lag),
                ..
            }) => pending + lag,
            _ => len,
        }
    }
}

pub(super) fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Entries of an `XREADGROUP` reply (RESP2 array or RESP3 map; nil = none).
pub(super) fn stream_entries(reply: Value) -> Vec<(String, Vec<Value>)> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(range_entries).collect()
}

/// Entries of an `XRANGE`-shaped array: `[[id, [field, value, …]], …]`.
pub(super) fn range_entries(value: Value) -> Vec<(String, Vec<Value>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| match e {
            Value::Array(mut pair) if pair.len() == 2 => {
                let fields = match pair.pop() {
                    Some(Value::Array(f)) => f,
                    Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                    _ => Vec::new(),
                };
                Some((as_string(&pair[0])?, fields))
            }
            _ => None,
        })
        .collect()
}

pub(super) fn parse_event(id: &str, fields: &[Value]) -> Result<LikeEvent, SyncError> {
    let malformed = |why| SyncError::Malformed {
        id: id.to_owned(),
        why,
    };
    let get = |name: &str| -> Result<i64, SyncError> {
        fields
            .chunks(2)
            .find(|kv| as_string(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(as_string))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| malformed("missing or non-numeric field"))
    };
    Ok(LikeEvent {
        post: get("p")?,
        user: get("u")?,
        liked: get("l")? == 1,
        version: get("v")?,
        at_ms: get("t")?,
    })
}

pub(super) fn split_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The smallest id after `id`.
pub(super) fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = split_id(id);
    Some(match seq.checked_add(1) {
        Some(seq) => format!("{ms}-{seq}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn event_fields(post: i64, user: i64, liked: i64, version: i64) -> Vec<Value> {
        [
            ("p", post),
            ("u", user),
            ("l", liked),
            ("v", version),
            ("t", 1_700_000_000_000),
        ]
        .into_iter()
        .flat_map(|(k, v)| [bulk(k), bulk(&v.to_string())])
        .collect()
    }

    #[test]
    fn ids_order_and_successors() {
        assert_eq!(split_id("5-10"), (5, 10));
        assert_eq!(split_id("7"), (7, 0));
        assert_eq!(next_id("5-9").as_deref(), Some("5-10"));
        assert_eq!(
            next_id(&format!("5-{}", u64::MAX)).as_deref(),
            Some("6-0"),
            "a full sequence rolls over to the next millisecond"
        );
    }

    #[test]
    fn group_info_reads_resp2_and_resp3_and_skips_other_groups() {
        let other = Value::Array(vec![
            bulk("name"),
            bulk("someone-else"),
            bulk("pending"),
            Value::Int(9),
        ]);
        let resp2 = Value::Array(vec![
            other.clone(),
            Value::Array(vec![
                bulk("name"),
                bulk(GROUP),
                bulk("pending"),
                Value::Int(3),
                bulk("last-delivered-id"),
                bulk("17-2"),
                bulk("lag"),
                Value::Int(5),
            ]),
        ]);
        let info = group_info(&resp2).expect("our group");
        assert_eq!(
            (info.pending, info.last_delivered.as_str(), info.lag),
            (3, "17-2", Some(5))
        );

        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), Value::SimpleString(GROUP.into())),
            (bulk("pending"), Value::Int(0)),
            (bulk("last-delivered-id"), bulk("0-0")),
            // Redis answers nil when it cannot tell the lag.
            (bulk("lag"), Value::Nil),
        ])]);
        let info = group_info(&resp3).expect("our group");
        assert_eq!((info.pending, info.lag), (0, None));

        assert!(group_info(&Value::Array(vec![other])).is_none());
        assert!(group_info(&Value::Nil).is_none());
    }

    #[test]
    fn the_backlog_counts_pending_and_undelivered_else_the_whole_stream() {
        let info = GroupInfo {
            pending: 2,
            last_delivered: "1-0".into(),
            lag: Some(3),
        };
        assert_eq!(GroupInfo::unapplied(Some(&info), 100), 5);
        // Unknown lag: the stream's length, which already holds the
        // pending entries (they are never trimmed): not pending + length.
        let unknown_lag = GroupInfo { lag: None, ..info };
        assert_eq!(GroupInfo::unapplied(Some(&unknown_lag), 100), 100);
        assert_eq!(GroupInfo::unapplied(None, 100), 100);
    }

    #[test]
    fn stream_entries_read_both_protocols_and_nil() {
        let entry = |id: &str| Value::Array(vec![bulk(id), Value::Array(event_fields(1, 2, 1, 3))]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("t:{p0}:events"),
            Value::Array(vec![entry("1-0"), entry("1-1")]),
        ])]);
        let ids: Vec<String> = stream_entries(resp2)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["1-0", "1-1"]);

        let resp3 = Value::Map(vec![(
            bulk("t:{p0}:events"),
            Value::Array(vec![entry("2-0")]),
        )]);
        let entries = stream_entries(resp3);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.len(), 10);

        assert!(stream_entries(Value::Nil).is_empty());
        // An entry whose fields came back as a map (RESP3) reads the same.
        let map_fields = Value::Array(vec![Value::Array(vec![
            bulk("3-0"),
            Value::Map(vec![(bulk("p"), bulk("1"))]),
        ])]);
        assert_eq!(range_entries(map_fields)[0].1, vec![bulk("p"), bulk("1")]);
    }

    #[test]
    fn events_parse_or_fail_loudly() {
        let event = parse_event("1-0", &event_fields(10, 20, 0, 7)).expect("valid");
        assert_eq!(
            (event.post, event.user, event.liked, event.version),
            (10, 20, false, 7)
        );
        let mut missing = event_fields(10, 20, 1, 7);
        missing.truncate(6);
        assert!(matches!(
            parse_event("1-0", &missing),
            Err(SyncError::Malformed { .. })
        ));
        let garbled = vec![bulk("p"), bulk("ten")];
        assert!(parse_event("1-0", &garbled).is_err());
    }
}
