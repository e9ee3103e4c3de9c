//! The ledger: what every answer said, so a run can prove the counts.
//!
//! Every like-state change a client sends is recorded per (user, post): the
//! state the last answer reported, and whether a later request got no
//! answer (a timeout, a 5xx, a dropped connection: it may or may not have
//! landed). A user never has two writes in flight, so "the last answer" is
//! well defined. The load generator resolves unanswered pairs by reading
//! them back, never by guessing; fault tests, which cannot read back through
//! a dead node, check that the stores hold a state the answers allow.
//!
//! One ledger for the load generator and the tests.

use std::collections::HashMap;
use std::sync::Mutex;

use tally_client::{LikeVerb, PostId, UserId};

/// What the answers say about one (user, post).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pair {
    /// The state the last answer reported (`None`: never answered, so not
    /// liked by this run).
    pub acked: Option<bool>,
    /// A request after that answer that got none.
    pub in_flight: Option<LikeVerb>,
}

impl Pair {
    /// The state the answers prove, if no request is unanswered.
    pub fn settled(&self) -> Option<bool> {
        match self.in_flight {
            None => Some(self.acked.unwrap_or(false)),
            Some(_) => None,
        }
    }

    /// Records an answer (or a state read back).
    pub fn answered(&mut self, liked: bool) {
        self.acked = Some(liked);
        self.in_flight = None;
    }

    /// A `verb` request got no answer. Two unanswered requests of different
    /// verbs in a row (a like, then an unlike, both 503) may have left
    /// either state: recorded as a toggle, which allows both.
    pub fn unanswered(&mut self, verb: LikeVerb) {
        self.in_flight = Some(match self.in_flight {
            Some(earlier) if earlier != verb => LikeVerb::Toggle,
            _ => verb,
        });
    }

    /// Whether the stores may hold `actual`: the answered state, or what
    /// the unanswered request would have made of it.
    pub fn allows(&self, actual: bool) -> bool {
        let before = self.acked.unwrap_or(false);
        match self.in_flight {
            None => actual == before,
            Some(LikeVerb::Like) => actual || actual == before,
            Some(LikeVerb::Unlike) => !actual || actual == before,
            Some(LikeVerb::Toggle) => true,
        }
    }
}

#[derive(Default)]
pub struct Ledger {
    /// A std mutex: map updates only, never held across an await.
    pairs: Mutex<HashMap<(UserId, PostId), Pair>>,
}

impl Ledger {
    fn with(&self, user: UserId, post: PostId, f: impl FnOnce(&mut Pair)) {
        if let Ok(mut pairs) = self.pairs.lock() {
            f(pairs.entry((user, post)).or_default());
        }
    }

    /// An answer said the user now likes the post, or not.
    pub fn answered(&self, user: UserId, post: PostId, liked: bool) {
        self.with(user, post, |p| p.answered(liked));
    }

    /// A `verb` request got no answer: its outcome is unknown.
    pub fn unknown(&self, user: UserId, post: PostId, verb: LikeVerb) {
        self.with(user, post, |p| p.unanswered(verb));
    }

    pub fn snapshot(&self) -> HashMap<(UserId, PostId), Pair> {
        self.pairs.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.pairs.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_request_allows_both_outcomes_and_an_answer_settles_it() {
        let ledger = Ledger::default();
        ledger.answered(1, 10, true);
        ledger.unknown(1, 10, LikeVerb::Unlike);
        let pair = ledger.snapshot()[&(1, 10)];
        assert_eq!(pair.settled(), None);
        assert!(pair.allows(true) && pair.allows(false));

        ledger.unknown(2, 10, LikeVerb::Like);
        let pair = ledger.snapshot()[&(2, 10)];
        assert!(
            pair.allows(true) && pair.allows(false),
            "it may have landed"
        );

        ledger.answered(1, 10, false);
        let pair = ledger.snapshot()[&(1, 10)];
        assert_eq!(pair.settled(), Some(false));
        assert!(!pair.allows(true));
        assert_eq!(
            Pair::default().settled(),
            Some(false),
            "never answered: not liked"
        );
    }
}
