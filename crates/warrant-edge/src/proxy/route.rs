//! `[[route]]` tables: what the egress proxy may reach and how.
//!
//! [`RawRoute`] is the TOML as written (unknown keys refused); [`Route`] is
//! validated: an upstream origin (https, or http only to a loopback host or
//! with `allow_plaintext = true`), the audience task tokens must carry, where
//! the agent puts its token, `allow` rules, the credential provider and the
//! limits. Everything a request may do is decided from these types.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;

use crate::boundary::check_name;
use crate::credential::config::{Credential, RawCredential, duration, header_name};
use crate::upstream::{Origin, Scheme};

/// The default most bytes of a request body.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;
/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default wait for the upstream's response headers (LLM calls are slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Names the edge keeps for itself.
const RESERVED: &[&str] = &[
    "mcp",
    "healthz",
    "readyz",
    "metrics",
    ".well-known",
    "v1",
    "oauth2",
];

/// One `[[route]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The first path segment at the edge: `http://<edge>/<name>/...`.
    pub name: String,
    /// The upstream origin, e.g. `https://api.openai.com`.
    pub upstream: String,
    /// The audience task tokens must carry (default: the upstream).
    pub audience: Option<String>,
    /// Where the agent puts its task token (default `authorization`, as
    /// `Bearer <token>`; any other header carries the bare token).
    pub agent_header: Option<String>,
    /// PEM file of the CAs trusted for this upstream, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Permit `http://` to a host that is not loopback (credentials in clear).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Which methods and paths may pass.
    #[serde(default)]
    pub allow: Vec<RawAllow>,
    /// How the upstream credential is obtained.
    pub credential: RawCredential,
    /// Connect timeout (`10s`).
    pub connect_timeout: Option<String>,
    /// Wait for the response headers (`300s`).
    pub timeout: Option<String>,
    /// The most bytes of a request body.
    pub max_request_bytes: Option<u64>,
}

/// One `allow` rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    /// Methods (`["POST"]`, `["*"]` for any).
    pub methods: Vec<String>,
    /// Path patterns below the route: `*` is one segment's characters,
    /// `/**` at the end is anything below.
    pub paths: Vec<String>,
}

/// Methods one rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Any method (but never CONNECT, which the edge refuses outright).
    Any,
    /// These.
    Only(Vec<Method>),
}

/// One validated `allow` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Methods.
    pub methods: Methods,
    /// Path patterns.
    pub paths: Vec<String>,
}

impl std::fmt::Display for AllowRule {
    /// `GET,POST /v1/**` (`*` for any method).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.methods {
            Methods::Any => f.write_str("*")?,
            Methods::Only(m) => {
                let names: Vec<&str> = m.iter().map(Method::as_str).collect();
                f.write_str(&names.join(","))?;
            }
        }
        write!(f, " {}", self.paths.join(" "))
    }
}

impl AllowRule {
    /// Whether the rule admits `method` on `path` (already normalised).
    pub fn admits(&self, method: &Method, path: &str) -> bool {
        let m = match &self.methods {
            Methods::Any => true,
            Methods::Only(list) => list.contains(method),
        };
        m && self.paths.iter().any(|p| path_matches(p, path))
    }
}

/// `*` matches within one segment; a trailing `/**` matches the prefix and
/// anything below it.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/**") {
        if path_matches(prefix, path) {
            return true;
        }
        let segs = prefix.split('/').count();
        let parts: Vec<&str> = path.splitn(segs + 1, '/').collect();
        return parts.len() == segs + 1 && path_matches(prefix, &parts[..segs].join("/"));
    }
    let (ps, xs): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), path.split('/').collect());
    ps.len() == xs.len() && ps.iter().zip(&xs).all(|(p, x)| segment_matches(p, x))
}

/// Whether segment `x` matches pattern `p` (`*`: any run of characters).
/// Greedy with one backtrack point, so at most `|p| * |x|` steps however
/// many `*` a pattern has (trying every split recursively was exponential
/// in them). Byte-wise, which on UTF-8 text gives the same answer as
/// character-wise.
fn segment_matches(p: &str, x: &str) -> bool {
    let (p, x) = (p.as_bytes(), x.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < x.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == x[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// A validated route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The name (first path segment).
    pub name: String,
    /// Where requests go, and nowhere else.
    pub upstream: Origin,
    /// The audience task tokens must carry.
    pub audience: String,
    /// Where the agent puts its task token.
    pub agent_header: HeaderName,
    /// CAs trusted for the upstream instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// What may pass.
    pub allow: Vec<AllowRule>,
    /// How the upstream credential is obtained.
    pub credential: Credential,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Wait for response headers.
    pub timeout: Duration,
    /// Most bytes of a request body.
    pub max_request_bytes: u64,
}

impl Route {
    /// What `authorization` may hold besides a task token: the agent's own
    /// SigV4 signature on a route that signs requests itself.
    pub(crate) fn other_authorization(&self) -> crate::boundary::OtherAuthorization {
        if self.credential.signs_requests() {
            crate::boundary::OtherAuthorization::Signature
        } else {
            crate::boundary::OtherAuthorization::BearerOnly
        }
    }
}

impl RawRoute {
    /// Validates; `resolve` makes relative paths relative to the config file.
    pub fn build(self, resolve: impl Fn(PathBuf) -> PathBuf) -> Result<Route, String> {
        let name = self.name;
        check_name(&name)?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "name `{name}` is reserved by the edge listener; choose another"
            ));
        }
        let upstream = Origin::parse(&self.upstream, "upstream")?;
        let url = url::Url::parse(&self.upstream).map_err(|e| e.to_string())?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "upstream `{}` must be an origin (scheme, host, port) without a path, query or fragment: the agent's path below /{name}/ is forwarded as it is",
                crate::upstream::shown_url(&self.upstream)
            ));
        }
        if upstream.scheme == Scheme::Http && !upstream.is_loopback() && !self.allow_plaintext {
            return Err(format!(
                "upstream `{}` is plain http to a host that is not loopback: the credential would cross the network in clear; use https, or set allow_plaintext = true if you accept that",
                crate::upstream::shown_url(&self.upstream)
            ));
        }
        if self.ca_file.is_some() && upstream.scheme == Scheme::Http {
            return Err("ca_file is set but the upstream is not https".into());
        }
        let audience = self.audience.unwrap_or_else(|| upstream.as_url());
        if audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control) {
            return Err("audience must be 1 to 512 characters without control characters".into());
        }
        // An AWS SDK signs with its own keys: the task token goes where it
        // puts a session token (`aws_session_token` in boto3), and
        // `authorization` holds its signature.
        let signs = matches!(self.credential, RawCredential::AwsSts { .. });
        let agent_header = header_name(
            self.agent_header
                .as_deref()
                .or(signs.then_some("x-amz-security-token")),
            "agent_header",
        )?;
        if signs && agent_header == http::header::AUTHORIZATION {
            return Err("agent_header cannot be `authorization` with credential kind `aws_sts`: that is where an AWS SDK puts its signature; use `x-amz-security-token` (the SDK's session token)".into());
        }
        if self.allow.is_empty() {
            return Err(
                "allow is empty, so nothing could pass; list what may, e.g. allow = [ { methods = [\"POST\"], paths = [\"/v1/chat/completions\"] } ]"
                    .into(),
            );
        }
        let mut allow = Vec::new();
        for (i, r) in self.allow.into_iter().enumerate() {
            let methods = if r.methods.iter().any(|m| m == "*") {
                Methods::Any
            } else {
                let mut list = Vec::new();
                for m in &r.methods {
                    let up = m.to_ascii_uppercase();
                    if up == "CONNECT" {
                        return Err(format!("allow[{i}]: CONNECT is never proxied"));
                    }
                    list.push(Method::from_bytes(up.as_bytes()).map_err(|_| {
                        format!("allow[{i}]: `{}` is not an HTTP method", m.escape_debug())
                    })?);
                }
                if list.is_empty() {
                    return Err(format!("allow[{i}]: methods is empty"));
                }
                Methods::Only(list)
            };
            if r.paths.is_empty() {
                return Err(format!("allow[{i}]: paths is empty"));
            }
            for p in &r.paths {
                let body = p.strip_suffix("/**").unwrap_or(p);
                if !p.starts_with('/')
                    || body.contains("**")
                    || p.split('/').any(|s| s == "." || s == "..")
                    || p.contains('%')
                    || p.contains('?')
                {
                    return Err(format!(
                        "allow[{i}]: path `{}` must start with `/`, use `*` within a segment and `/**` only at the end, with no `.`/`..` segments, `%` or `?`",
                        p.escape_debug()
                    ));
                }
            }
            allow.push(AllowRule {
                methods,
                paths: r.paths,
            });
        }
        let credential = self.credential.build(self.allow_plaintext, &resolve)?;
        if matches!(credential, Credential::Mtls { .. }) && upstream.scheme != Scheme::Https {
            return Err(format!(
                "credential kind `mtls` presents a client certificate in TLS, and upstream `{}` is not https",
                upstream.as_url()
            ));
        }
        Ok(Route {
            name,
            upstream,
            audience,
            agent_header,
            ca_file: self.ca_file.map(&resolve),
            allow,
            credential,
            connect_timeout: duration(
                self.connect_timeout.as_deref(),
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
                Duration::from_secs(120),
            )?,
            timeout: duration(
                self.timeout.as_deref(),
                "timeout",
                DEFAULT_TIMEOUT,
                Duration::from_secs(3600),
            )?,
            max_request_bytes: match self.max_request_bytes {
                None => DEFAULT_MAX_REQUEST_BYTES,
                Some(0) => return Err("max_request_bytes must be more than 0".into()),
                Some(n) => n,
            },
        })
    }
}

impl<'a> From<&'a Route> for crate::credential::Target<'a> {
    fn from(r: &'a Route) -> Self {
        Self {
            name: &r.name,
            credential: &r.credential,
            audience: &r.audience,
            timeout: r.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::config::{AssertionIssuer, ClientAuth};
    use proptest::prelude::*;

    /// The recursive matcher `segment_matches` replaced: every split tried.
    fn reference(p: &str, x: &str) -> bool {
        match p.split_once('*') {
            None => p == x,
            Some((head, rest)) => x.strip_prefix(head).is_some_and(|tail| {
                (0..=tail.len()).any(|i| tail.is_char_boundary(i) && reference(rest, &tail[i..]))
            }),
        }
    }

    proptest! {
        #[test]
        fn wildcards_match_as_before(p in "[ab*]{0,8}", x in "[ab]{0,10}") {
            prop_assert_eq!(segment_matches(&p, &x), reference(&p, &x));
        }
    }

    /// Found in review: a pattern with many `*` in one segment cost time
    /// exponential in them on a long segment that does not match.
    #[test]
    fn many_wildcards_on_a_long_segment_answer() {
        let x = "a".repeat(5000);
        assert!(!segment_matches("*a*a*a*a*a*a*a*a*b", &x));
        assert!(segment_matches("*a*a*a*a*a*a*a*a*", &x));
    }

    fn raw(extra: &str) -> Result<Route, String> {
        let text = format!(
            "name = \"openai\"\nupstream = \"https://api.openai.com\"\nallow = [ {{ methods = [\"POST\"], paths = [\"/v1/chat/completions\", \"/v1/files/*\", \"/v1/batches/**\"] }} ]\n{extra}"
        );
        let text = if text.contains("credential") {
            text
        } else {
            format!("{text}\ncredential = {{ kind = \"secret\", secret = \"openai-key\" }}\n")
        };
        toml::from_str::<RawRoute>(&text)
            .map_err(|e| e.to_string())?
            .build(|p| p)
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/agents";

    #[test]
    fn federated_credentials_are_checked_at_start() {
        let aws = |extra: &str| {
            raw(&format!(
                "credential = {{ kind = \"aws_sts\", role_arn = \"{ROLE}\", region = \"eu-west-1\", service = \"s3\"{extra} }}"
            ))
        };
        let r = aws("").unwrap();
        assert_eq!(r.agent_header.as_str(), "x-amz-security-token");
        assert!(r.credential.signs_requests() && r.credential.is_ephemeral());
        let Credential::AwsSts(a) = &r.credential else {
            panic!()
        };
        assert_eq!(a.sts_url.as_str(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(a.token_audience, "sts.amazonaws.com");
        assert_eq!(
            a.subject.render("orch", "dev", Some("corp/alice")),
            "agent:orch"
        );
        assert!(a.session_tags);
        let build = |role: &str, region: &str, extra: &str| {
            raw(&format!(
                "credential = {{ kind = \"aws_sts\", role_arn = \"{role}\", region = \"{region}\", service = \"s3\"{extra} }}"
            ))
        };
        for (role, region, extra, needle) in [
            ("arn:aws:iam::1:user/x", "eu-west-1", "", "role's ARN"),
            ("arn:aws:iam::1:role/x y", "eu-west-1", "", "role's ARN"),
            (ROLE, "EU WEST", "", "credential.region"),
            (
                ROLE,
                "eu-west-1",
                ", subject = \"user:{user}:agent:{agent}\"",
                "must come last",
            ),
            (
                ROLE,
                "eu-west-1",
                ", subject = \"{agent}:{task}\"",
                "may use only",
            ),
            (ROLE, "eu-west-1", ", subject = \"\"", "1 to 200"),
            (
                ROLE,
                "eu-west-1",
                ", session_duration = \"5m\"",
                "at least 15m",
            ),
            (ROLE, "eu-west-1", ", session_duration = \"13h\"", "at most"),
            (
                ROLE,
                "eu-west-1",
                ", sts_url = \"http://sts.example\"",
                "plain http",
            ),
            (
                ROLE,
                "eu-west-1",
                ", sts_url = \"https://u:p@sts.example\"",
                "must not carry credentials",
            ),
            (
                ROLE,
                "eu-west-1",
                ", session_policies = { \"s3:read\" = \"/nonexistent.json\" }",
                "cannot read",
            ),
            (
                ROLE,
                "eu-west-1",
                ", session_policies = { \"two words\" = \"/x.json\" }",
                "no spaces",
            ),
        ] {
            let e = build(role, region, extra).map(|_| ()).unwrap_err();
            assert!(e.contains(needle), "{role} {region} {extra}: {e}");
        }
        let e = aws_with_header("authorization").unwrap_err();
        assert!(e.contains("signature"), "{e}");
        let x = |extra: &str| {
            raw(&format!(
                "credential = {{ kind = \"token_exchange\", audience = \"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/w\"{extra} }}"
            ))
        };
        let Credential::TokenExchange(t) = x("").unwrap().credential else {
            panic!()
        };
        assert_eq!(t.token_url.as_str(), "https://sts.googleapis.com/v1/token");
        assert!(
            t.token_audience
                .starts_with("https://iam.googleapis.com/projects/1/")
        );
        assert!(t.impersonate.is_none());
        let Credential::TokenExchange(t) =
            x(", service_account = \"sa@p.iam.gserviceaccount.com\"")
                .unwrap()
                .credential
        else {
            panic!()
        };
        assert!(
            t.impersonate
                .unwrap()
                .1
                .as_str()
                .ends_with("/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken")
        );
        assert!(
            x(", service_account = \"a/../b\"")
                .unwrap_err()
                .contains("email")
        );
        assert!(
            x(", impersonation_url = \"https://x.example\"")
                .unwrap_err()
                .contains("needs")
        );
        let pk = |extra: &str| {
            raw(&format!(
                "credential = {{ kind = \"oauth2_private_key_jwt\", token_url = \"https://as.example/token\", client_id = \"c\"{extra} }}"
            ))
        };
        let c = pk("").unwrap().credential;
        assert_eq!(c.kind(), "oauth2_private_key_jwt");
        let Credential::OAuth2ClientCredentials {
            client_auth:
                ClientAuth::PrivateKeyJwt {
                    issuer,
                    subject,
                    audience,
                },
            ..
        } = c
        else {
            panic!()
        };
        assert_eq!(
            (issuer, subject.as_str(), audience.as_str()),
            (AssertionIssuer::ClientId, "c", "https://as.example/token")
        );
        assert!(
            pk(", assertion_issuer = \"me\"")
                .unwrap_err()
                .contains("client_id` or `broker")
        );
        assert!(
            pk(", client_secret = \"s\"").is_err(),
            "no secret with private_key_jwt"
        );
    }

    fn aws_with_header(h: &str) -> Result<Route, String> {
        raw(&format!(
            "agent_header = \"{h}\"\ncredential = {{ kind = \"aws_sts\", role_arn = \"{ROLE}\", region = \"eu-west-1\", service = \"s3\" }}"
        ))
    }

    #[test]
    fn a_route_defaults_safely() {
        let r = raw("").unwrap();
        assert_eq!(r.audience, "https://api.openai.com");
        assert_eq!(r.upstream.authority(), "api.openai.com");
        assert_eq!(r.agent_header, http::header::AUTHORIZATION);
        let Credential::Secret { format, .. } = &r.credential else {
            panic!()
        };
        assert_eq!(format.fill(b"k"), b"Bearer k");
        assert_eq!(r.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    }

    #[test]
    fn paths_match_by_segment() {
        let r = raw("").unwrap();
        let post = Method::POST;
        let a = |p: &str| r.allow.iter().any(|x| x.admits(&post, p));
        assert!(a("/v1/chat/completions"));
        assert!(!a("/v1/chat/completions/x"));
        assert!(a("/v1/files/file-1"));
        assert!(!a("/v1/files/a/b"));
        assert!(!a("/v1/files"), "`*` needs a segment");
        assert!(a("/v1/batches"));
        assert!(a("/v1/batches/b/c"));
        assert!(!a("/v1/batchesX"));
        assert!(
            !r.allow
                .iter()
                .any(|x| x.admits(&Method::GET, "/v1/chat/completions"))
        );
        assert!(path_matches("/a/x*y", "/a/xzzy"));
        assert!(!path_matches("/a/x*y", "/a/xzz"));
    }

    #[test]
    fn bad_routes_say_what_to_fix() {
        let e = raw("upstream = \"x\"").unwrap_err();
        assert!(e.contains("duplicate"), "{e}");
        let bad = |t: &str| {
            toml::from_str::<RawRoute>(t)
                .map_err(|e| e.to_string())
                .and_then(|r| r.build(|p| p))
                .unwrap_err()
        };
        let base = "name = \"r\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n";
        for (t, needle) in [
            ("upstream = \"http://api.example.com\"", "plain http"),
            (
                "upstream = \"https://api.example.com/v1\"",
                "without a path",
            ),
            ("upstream = \"https://u:p@api.example.com\"", "credentials"),
            ("upstream = \"ftp://x\"", "https://"),
        ] {
            let e = bad(&format!("{base}{t}\n"));
            assert!(e.contains(needle), "{t}: {e}");
        }
        let e = bad(
            "name = \"mcp\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("reserved"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("allow is empty"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"CONNECT\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("CONNECT"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/a/../b\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        );
        assert!(e.contains("`..`"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\", format = \"Bearer\" }\n",
        );
        assert!(e.contains("{secret}"), "{e}");
        let e = bad(
            "name = \"r\"\nupstream = \"https://x\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"magic\" }\n",
        );
        assert!(e.contains("magic"), "{e}");
        assert!(raw("upstream_x = 1").is_err(), "unknown keys refused");
        let ok = toml::from_str::<RawRoute>("name = \"r\"\nupstream = \"http://127.0.0.1:9\"\nallow = [ { methods = [\"*\"], paths = [\"/**\"] } ]\ncredential = { kind = \"warrant_jwt\" }\n").unwrap().build(|p| p).unwrap();
        assert_eq!(ok.upstream.port, 9);
        assert!(ok.allow[0].admits(&Method::DELETE, "/x/y"));
    }
}
