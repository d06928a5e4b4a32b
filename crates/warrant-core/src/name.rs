//! Slug names: agent names and environment names.
//!
//! Agent names appear in SPIFFE IDs (`spiffe://<td>/agent/<name>/<instance>`), in
//! Cedar entity ids and in file names, so they are restricted to the shape of a DNS
//! label: lower-case ASCII letters, digits and single hyphens, starting with a
//! letter. That keeps them unambiguous everywhere they are embedded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was refused. The message says what is allowed, so a user can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("{what} must not be empty; {rule}")]
    Empty {
        what: &'static str,
        rule: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{what} `{value}` is {len} characters long; at most {max} are allowed")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    /// The name contained a character or shape outside the slug rule.
    #[error("{what} `{value}` is not allowed; {rule}")]
    Invalid {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
}

const SLUG_RULE: &str = "use lower-case letters a-z, digits and single hyphens, starting with a letter and not ending with a hyphen (for example `support-triage`)";

fn check_slug(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty {
            what,
            rule: SLUG_RULE,
        });
    }
    let len = value.chars().count();
    if len > max {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            len,
            max,
        });
    }
    let bytes = value.as_bytes();
    let ok_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let starts_with_letter = bytes[0].is_ascii_lowercase();
    let ends_ok = bytes[bytes.len() - 1] != b'-';
    let no_double = !value.contains("--");
    if ok_chars && starts_with_letter && ends_ok && no_double {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            value: printable(value),
            rule: SLUG_RULE,
        })
    }
}

/// Render user input for an error message without letting control characters
/// through (a name is echoed back to terminals and logs).
fn printable(value: &str) -> String {
    value.chars().flat_map(char::escape_debug).collect()
}

macro_rules! slug_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest name accepted.
            pub const MAX_LEN: usize = $max;

            /// Validates `value` as a slug.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_slug($what, &value, $max)?;
                Ok(Self(value))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

slug_type!(
    /// The name of an inventoried agent, e.g. `support-triage`: a DNS-label slug of at
    /// most 63 characters.
    AgentName,
    "agent name",
    63
);

slug_type!(
    /// An environment name, e.g. `prod` or `staging`: a slug of at most 32 characters.
    EnvName,
    "environment",
    32
);

#[cfg(test)]
mod tests;
