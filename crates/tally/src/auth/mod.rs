//! Who is calling: password hashing, signed tokens, and the extractors that
//! turn an `Authorization: Bearer …` header into a user id.

mod extract;
pub mod password;
pub mod token;

pub use extract::{AuthUser, MaybeUser};
pub use token::{Claims, TokenError, TokenKeys};
