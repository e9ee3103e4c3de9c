//! A typed client of Tally's public API: the HTTP endpoints ([`Api`]) and
//! the live WebSocket ([`LiveSocket`]).
//!
//! The load generator, the server's load panel and the tests build their
//! requests here instead of by hand, so the API's paths, verbs and answers
//! are written down once on the client side. The types are the client's
//! view of the JSON (only the fields a client reads), deserialized rather
//! than shared with the server: a client that reads the wire format is
//! also a check that the wire format holds.
//!
//! It depends on nothing else of Tally's.

mod api;
mod live;

pub use api::{Api, ApiError, LikeAnswer, LikeVerb, LikerSummary, Page, PostSummary};
pub use live::{LiveCount, LiveError, LiveSocket, Next};
pub use reqwest::StatusCode;

pub type PostId = i64;
pub type UserId = i64;

/// A valid 8×8 PNG, for tools that need to create posts.
pub fn tiny_png() -> Vec<u8> {
    include_bytes!("tiny.png").to_vec()
}
