//! Redis trouble seen by this node, so that it reconciles soon after a
//! failover instead of at the next periodic pass.
//!
//! In fast mode a Redis master acknowledges a like before its replica has
//! it. When that master dies, its promoted replica lacks the tail of its
//! writes, while the write-behind may already have written some of them to
//! PostgreSQL (it reads the master's stream directly). Until reconciliation
//! runs, the two stores disagree: counts (Redis) and likers (PostgreSQL)
//! tell different stories, and a client reading back a like whose answer
//! was lost may see it vanish and come back. The write-behind and the like
//! path note every Redis error here; once Redis has answered without one
//! for a quiet spell, the node runs a reconciliation pass
//! (`reconcile_after_trouble_secs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::now_ms;

/// When this node last saw a Redis error (ms since the epoch; 0: none
/// since the reconciliation that followed the last one). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct RedisTrouble(Arc<AtomicI64>);

impl RedisTrouble {
    /// A Redis command failed other than by a timeout (a dead master, a
    /// moving slot, a refused or dropped connection, a restarted Redis): a
    /// slow reply says nothing about lost writes.
    pub fn note(&self) {
        self.0.store(now_ms().max(1), Ordering::Relaxed);
    }

    /// When trouble was last noted, if none was for `quiet` since.
    pub fn settled(&self, quiet: Duration) -> Option<i64> {
        let at = self.0.load(Ordering::Relaxed);
        (at != 0 && now_ms().saturating_sub(at) >= quiet.as_millis() as i64).then_some(at)
    }

    /// Clears the trouble noted at `at` (a reconciliation that started
    /// after it covers it), unless newer trouble was noted meanwhile.
    pub fn covered(&self, at: i64) {
        let _ = self
            .0
            .compare_exchange(at, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_settles_after_a_quiet_spell_until_covered() {
        let trouble = RedisTrouble::default();
        assert_eq!(trouble.settled(Duration::ZERO), None, "nothing noted");
        trouble.note();
        assert_eq!(
            trouble.settled(Duration::from_secs(60)),
            None,
            "not quiet yet"
        );
        let at = trouble
            .clone()
            .settled(Duration::ZERO)
            .expect("clones share it");
        trouble.covered(at - 1);
        assert_eq!(
            trouble.settled(Duration::ZERO),
            Some(at),
            "older pass: still due"
        );
        trouble.covered(at);
        assert_eq!(trouble.settled(Duration::ZERO), None, "covered");
    }
}
