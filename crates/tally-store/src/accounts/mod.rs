//! Accounts: password hashing, signed session tokens, and bulk seeding.
//!
//! Here rather than in the server because the signing secrets live in the
//! store ([`crate::Catalog::signing_secrets`]) and because tokens are minted
//! outside HTTP too: `tally users seed`, the load panel and the tests all
//! seed users through [`seed::seed_users`].

pub mod password;
pub mod seed;
pub mod tokens;

pub use seed::{SeedError, SeededTokens, mint_tokens, read_tokens, seed_users, write_tokens};
pub use tokens::{Claims, SigningKey, TokenError, TokenKeys, Verified};
