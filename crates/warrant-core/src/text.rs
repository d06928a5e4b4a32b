//! Bounded free text that the inventory stores and echoes: owners and purposes.
//!
//! Free text ends up in terminals, logs and audit records, so control characters
//! are refused and the length is bounded. It is not an identifier: nothing is
//! matched against it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Untrusted text for a message or a log line: control characters escaped, at
/// most `max` characters, `…` where it was cut.
pub fn shown(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_debug).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A URL as a message may show it: no user name or password (everything
/// between `://` and the last `@` is hidden, whatever characters a mistyped
/// password holds), no query or fragment (where a credential written by
/// mistake would be), so messages, logs and the audit trail never repeat
/// one.
pub fn shown_url(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, value),
    };
    let (hidden, rest) = match rest.rsplit_once('@') {
        Some((_, after)) => (true, after),
        None => (false, rest),
    };
    let cut = rest.find(['?', '#']).unwrap_or(rest.len());
    let shown = &rest[..cut];
    let redacted = if hidden { "[redacted]@" } else { "" };
    match scheme {
        Some(s) => format!("{s}://{redacted}{shown}"),
        None => format!("{redacted}{shown}"),
    }
}

/// Why a piece of free text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The text was empty but is required.
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    /// The text was longer than allowed.
    #[error("{what} is {len} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The text contained a control character (newline, escape, ...).
    #[error("{what} must not contain control characters (newlines, tabs, escapes)")]
    Control { what: &'static str },
}

fn check(what: &'static str, value: &str, max: usize, required: bool) -> Result<(), TextError> {
    if required && value.trim().is_empty() {
        return Err(TextError::Empty { what });
    }
    let len = value.chars().count();
    if len > max {
        return Err(TextError::TooLong { what, len, max });
    }
    if value.chars().any(char::is_control) {
        return Err(TextError::Control { what });
    }
    Ok(())
}

/// Who answers for an agent: a person, a team or a mailing list. Required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Owner(String);

impl Owner {
    /// The longest owner accepted.
    pub const MAX_LEN: usize = 200;

    /// Validates an owner.
    pub fn new(value: impl Into<String>) -> Result<Self, TextError> {
        let value = value.into();
        check("owner", &value, Self::MAX_LEN, true)?;
        Ok(Self(value))
    }

    /// The owner as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an agent is for, in a sentence. May be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Purpose(String);

impl Purpose {
    /// The longest purpose accepted.
    pub const MAX_LEN: usize = 1000;

    /// Validates a purpose.
    pub fn new(value: impl Into<String>) -> Result<Self, TextError> {
        let value = value.into();
        check("purpose", &value, Self::MAX_LEN, false)?;
        Ok(Self(value))
    }

    /// The purpose as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_conversions {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = TextError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
text_conversions!(Owner);
text_conversions!(Purpose);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_rules() {
        assert!(Owner::new("team-support@example.org").is_ok());
        assert_eq!(
            Owner::new("  ").unwrap_err(),
            TextError::Empty { what: "owner" }
        );
        assert!(matches!(Owner::new("a\nb"), Err(TextError::Control { .. })));
        assert!(matches!(
            Owner::new("x".repeat(201)),
            Err(TextError::TooLong { len: 201, .. })
        ));
    }

    #[test]
    fn purpose_may_be_empty() {
        assert_eq!(Purpose::new("").unwrap().as_str(), "");
        assert!(Purpose::new("a\u{7}").is_err());
    }
}

#[cfg(test)]
mod shown_url_tests {
    use super::shown_url;

    #[test]
    fn no_password_or_query_is_repeated() {
        for (url, want) in [
            (
                "https://u:p@h.example:8443/a/b?q=1",
                "https://[redacted]@h.example:8443/a/b",
            ),
            ("https://user:HUNTER2/x@h/", "https://[redacted]@h/"),
            ("https://user:HUNTER2?x@h/", "https://[redacted]@h/"),
            (
                "http://api.example/?api_key=s3cr3t#frag",
                "http://api.example/",
            ),
            ("not a url p4ssw0rd@x?token=s3cr3t", "[redacted]@x"),
            ("https://plain.example/path", "https://plain.example/path"),
        ] {
            assert_eq!(shown_url(url), want, "{url}");
        }
    }
}
