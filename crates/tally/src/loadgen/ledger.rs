//! The ledger: what every answer said, so the run can prove the counts.
//!
//! Every like-state change the generator sends is recorded per (user,
//! post): the state the last answer reported, or "unknown" when a request
//! failed or timed out (it may or may not have landed). A user never has two
//! writes in flight, so "the last answer" is well defined. At the end,
//! unknown pairs are resolved by reading the state back, never guessed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::{PostId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    Liked(bool),
    /// A request got no answer; resolved by reading back.
    Unknown,
}

#[derive(Default)]
pub struct Ledger {
    /// A std mutex: map updates only.
    pairs: Mutex<HashMap<(UserId, PostId), PairState>>,
}

impl Ledger {
    pub fn answered(&self, user: UserId, post: PostId, liked: bool) {
        if let Ok(mut p) = self.pairs.lock() {
            p.insert((user, post), PairState::Liked(liked));
        }
    }

    pub fn unknown(&self, user: UserId, post: PostId) {
        if let Ok(mut p) = self.pairs.lock() {
            p.insert((user, post), PairState::Unknown);
        }
    }

    pub fn snapshot(&self) -> HashMap<(UserId, PostId), PairState> {
        self.pairs.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.pairs.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
