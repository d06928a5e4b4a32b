//! Who the work is for: users, qualified by the issuer that vouched for them.
//!
//! A user's id is `<namespace>/<subject>`: the namespace of the
//! `[[user_issuer]]` whose token named the user, then the subject that issuer
//! gave. The same subject at two issuers is two users (`alice` at a partner's
//! identity provider is not corporate `alice`), unless the configuration gives
//! both issuers one namespace on purpose. Groups are qualified the same way.
//! Task tokens (`sub: user:<id>`), Cedar `User` and `Group` entities,
//! per-user secrets and the audit trail all use these ids.

use std::fmt;

/// A user issuer's namespace: 1 to 64 lower-case letters, digits, `.`, `-`
/// and `_` (an issuer's host name fits), never `/`, so an id splits at its
/// first `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

/// Why a namespace or user id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    /// The namespace has characters outside its alphabet or is too long.
    #[error("namespace `{0}` must be 1 to 64 lower-case letters, digits, `.`, `-` or `_`")]
    Namespace(String),
    /// The id is not `<namespace>/<subject>`.
    #[error(
        "user `{0}` is not issuer-qualified: user ids are `<namespace>/<subject>`, e.g. `login.example.org/alice`, where the namespace is the user issuer's"
    )]
    Unqualified(String),
    /// The subject is empty, too long or has control characters.
    #[error("the subject of user `{0}` must be 1 to 256 characters without control characters")]
    Subject(String),
}

impl Namespace {
    /// Parses a namespace.
    pub fn new(s: &str) -> Result<Self, UserIdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(UserIdError::Namespace(shown(s)))
        }
    }

    /// `dev`: the namespace of `warrant serve --dev`'s built-in issuer.
    pub fn development() -> Self {
        Self("dev".to_owned())
    }

    /// The default namespace of an issuer URL: its host, with the port when
    /// it is not the scheme's default (lower-cased, `:` written `_`).
    pub fn of_issuer(issuer: &str) -> Result<Self, UserIdError> {
        let rest = issuer
            .strip_prefix("https://")
            .or_else(|| issuer.strip_prefix("http://"))
            .unwrap_or(issuer);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let default_port = if issuer.starts_with("https://") {
            ":443"
        } else {
            ":80"
        };
        let trimmed = host_port.strip_suffix(default_port).unwrap_or(host_port);
        Self::new(&trimmed.to_ascii_lowercase().replace(':', "_"))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A user of this namespace.
    pub fn user(&self, subject: &str) -> Result<UserId, UserIdError> {
        if subject.is_empty()
            || subject.chars().count() > 256
            || subject.chars().any(char::is_control)
        {
            return Err(UserIdError::Subject(shown(subject)));
        }
        Ok(UserId {
            text: format!("{}/{subject}", self.0),
        })
    }

    /// A group of this namespace, as policies name it (`<namespace>/<group>`).
    pub fn group(&self, group: &str) -> String {
        format!("{}/{group}", self.0)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An issuer-qualified user id: `<namespace>/<subject>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    text: String,
}

impl UserId {
    /// Parses `<namespace>/<subject>`.
    pub fn parse(s: &str) -> Result<Self, UserIdError> {
        let Some((ns, subject)) = s.split_once('/') else {
            return Err(UserIdError::Unqualified(shown(s)));
        };
        Namespace::new(ns)
            .map_err(|_| UserIdError::Unqualified(shown(s)))?
            .user(subject)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.text.split_once('/').map_or("", |(n, _)| n)
    }

    /// The subject its issuer gave.
    pub fn subject(&self) -> &str {
        self.text.split_once('/').map_or("", |(_, s)| s)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn shown(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_qualified_and_split_at_the_first_slash() {
        let ns = Namespace::new("login.example.org").unwrap();
        let u = ns.user("auth0|42/x").unwrap();
        assert_eq!(u.as_str(), "login.example.org/auth0|42/x");
        let back = UserId::parse(u.as_str()).unwrap();
        assert_eq!(
            (back.namespace(), back.subject()),
            ("login.example.org", "auth0|42/x")
        );
        assert_eq!(ns.group("support"), "login.example.org/support");
        assert_eq!(Namespace::new("dev").unwrap(), Namespace::development());
        for bad in [
            "alice",
            "/alice",
            "Corp/alice",
            "a b/alice",
            "corp/",
            "corp/a\nb",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_issuers_default_namespace_is_its_host() {
        let n = |s: &str| Namespace::of_issuer(s).unwrap().to_string();
        assert_eq!(n("https://login.example.org"), "login.example.org");
        assert_eq!(
            n("https://Login.Example.org:443/tenant/v2.0"),
            "login.example.org"
        );
        assert_eq!(n("http://127.0.0.1:8700/dev"), "127.0.0.1_8700");
        assert_eq!(n("http://idp.test"), "idp.test");
        assert!(Namespace::of_issuer("https://[::1]:9/x").is_err());
    }
}
