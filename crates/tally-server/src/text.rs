//! Text hygiene: the one check every route that takes text from a client
//! runs before the text goes anywhere (a store, a log, another client).
//!
//! Why one place: PostgreSQL refuses NUL in `TEXT` (the request then failed
//! with a 500 and a backtrace) while SQLite stores it, so the two backends
//! answered the same request differently. Checked here, both answer 400
//! `invalid_text` before a store sees the value. Control characters and
//! invisible format characters are refused too: they make captions and names
//! that look alike but differ (a zero-width space in `ann`), reorder what a
//! reader sees (bidi overrides, the "Trojan Source" trick) or corrupt logs.

use crate::error::ApiError;

/// What a piece of text is, which decides what it may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Names people tell apart by eye: no control and no format characters.
    Username,
    /// Never shown; control characters refused, format characters allowed
    /// (a password manager may generate anything printable).
    Password,
    /// Free text shown to others: line breaks and tabs allowed; the joiners
    /// emoji and some scripts need (U+200C, U+200D) allowed; other control
    /// and invisible format characters refused.
    Caption,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::Password => "password",
            Self::Caption => "caption",
        }
    }
}

/// Checks `value` for characters `kind` may not contain; the error names
/// the field and the first offending character's code point.
pub fn check(kind: Kind, value: &str) -> Result<(), ApiError> {
    match value.chars().find(|&c| !allowed(kind, c)) {
        None => Ok(()),
        Some(c) => Err(ApiError::InvalidText(format!(
            "{} contains a character that is not allowed: U+{:04X}",
            kind.field(),
            c as u32
        ))),
    }
}

/// Decodes a text field that arrived as bytes (a multipart field), refusing
/// invalid UTF-8 instead of replacing it, then [`check`]s it.
pub fn decode(kind: Kind, bytes: &[u8]) -> Result<String, ApiError> {
    let value = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::InvalidText(format!(
            "{} is not valid UTF-8 (at byte {})",
            kind.field(),
            e.valid_up_to()
        ))
    })?;
    check(kind, value)?;
    Ok(value.to_owned())
}

fn allowed(kind: Kind, c: char) -> bool {
    if c.is_control() {
        return kind == Kind::Caption && matches!(c, '\n' | '\r' | '\t');
    }
    match kind {
        Kind::Password => true,
        Kind::Username => !is_format(c),
        Kind::Caption => matches!(c, '\u{200C}' | '\u{200D}') || !is_format(c),
    }
}

/// Unicode's general category Cf (format characters: invisible, they change
/// how neighbouring text is shown), as of Unicode 15.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD
        | 0x0600..=0x0605
        | 0x061C
        | 0x06DD
        | 0x070F
        | 0x0890..=0x0891
        | 0x08E2
        | 0x180E
        | 0x200B..=0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0xFFF9..=0xFFFB
        | 0x110BD
        | 0x110CD
        | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A
        | 0xE0001
        | 0xE0020..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: Kind, s: &str) -> bool {
        check(kind, s).is_ok()
    }

    #[test]
    fn nul_and_controls_are_refused_everywhere() {
        for kind in [Kind::Username, Kind::Password, Kind::Caption] {
            assert!(!ok(kind, "ann\0"), "{kind:?}");
            assert!(!ok(kind, "a\u{1b}[31m"), "{kind:?}");
            assert!(!ok(kind, "a\u{7f}"), "{kind:?}");
            assert!(!ok(kind, "a\u{85}"), "{kind:?}");
        }
    }

    #[test]
    fn captions_keep_line_breaks_and_emoji_joiners() {
        assert!(ok(Kind::Caption, "line one\r\nline two\tend"));
        assert!(ok(Kind::Caption, "👨\u{200D}👩\u{200D}👧 family"));
        assert!(ok(Kind::Caption, "héllo wörld 日本"));
        assert!(!ok(Kind::Caption, "zero\u{200B}width"));
        assert!(!ok(Kind::Caption, "\u{FEFF}bom"));
        assert!(!ok(Kind::Caption, "abc\u{202E}fed"));
        assert!(!ok(Kind::Username, "line\nbreak"));
    }

    #[test]
    fn usernames_refuse_every_format_character() {
        assert!(ok(Kind::Username, "ann_1"));
        for c in ['\u{200B}', '\u{200D}', '\u{FEFF}', '\u{00AD}', '\u{2066}'] {
            assert!(
                !ok(Kind::Username, &format!("ann{c}")),
                "U+{:04X}",
                c as u32
            );
        }
        assert!(ok(Kind::Password, "pass\u{200B}word"));
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        assert_eq!(decode(Kind::Caption, "ok ✓".as_bytes()).unwrap(), "ok ✓");
        assert!(decode(Kind::Caption, b"bad \xff\xfe bytes").is_err());
        assert!(decode(Kind::Caption, b"nul \0").is_err());
    }
}
