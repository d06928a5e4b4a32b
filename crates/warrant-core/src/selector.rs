//! Attestation selectors: `KIND:KEY=VALUE` facts an instance must prove.
//!
//! An agent lists the facts its instances must show at attestation
//! (`unix:uid=1001`, `unix:sha256=<hash>`, `k8s:ns=agents`). This module only
//! checks that a selector is well formed and normalises it; matching evidence
//! against selectors belongs to the attestors.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The attestor family a selector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelectorKind {
    /// Kernel peer credentials and the executable, from the agent socket.
    Unix,
    /// Claims of a platform JWT from a trusted issuer.
    Oidc,
    /// Shorthands for the Kubernetes claims of a projected service-account token.
    K8s,
}

impl SelectorKind {
    /// The kind as written in a selector.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Oidc => "oidc",
            Self::K8s => "k8s",
        }
    }

    /// The keys the kind accepts, for error messages.
    fn keys_help(self) -> &'static str {
        match self {
            Self::Unix => "uid, gid, user, group, path, sha256, cgroup, systemd_unit, container",
            Self::Oidc => {
                "provider (the [[trust_provider]] name), iss, sub, claim.<name> (each dot a nesting level), claim/<JSON pointer> (for claim names with dots)"
            }
            Self::K8s => "ns, sa, pod",
        }
    }
}

/// Why a selector was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Not of the form `KIND:KEY=VALUE`.
    #[error(
        "selector `{0}` is not of the form KIND:KEY=VALUE (for example `unix:uid=1001` or `k8s:ns=agents`)"
    )]
    Shape(String),
    /// The kind is not one warrant knows.
    #[error("selector `{0}` has unknown kind `{1}`; use unix, oidc or k8s")]
    Kind(String, String),
    /// The key is not one the kind accepts.
    #[error("selector `{selector}` has unknown key `{key}` for kind {kind}; use one of: {help}")]
    Key {
        selector: String,
        key: String,
        kind: &'static str,
        help: &'static str,
    },
    /// The value does not fit the key.
    #[error("selector `{selector}` has an invalid value: {why}")]
    Value { selector: String, why: &'static str },
    /// The same single-valued key was given twice.
    #[error(
        "selector key `{0}` is given more than once; an instance must match every selector, so two different values could never match"
    )]
    Duplicate(String),
}

/// One validated selector. The value is normalised (`sha256` lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    kind: SelectorKind,
    key: String,
    value: String,
}

impl Selector {
    /// The attestor family.
    pub fn kind(&self) -> SelectorKind {
        self.kind
    }
    /// The key, e.g. `uid` or `claim.repository`.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The expected value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

const MAX_VALUE_LEN: usize = 1024;

fn printable(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_posix_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// The claim names of a selector's claim path, one per nesting level:
/// `claim.a.b` is claim `b` inside claim `a` (each dot is a level, so a
/// claim whose name has a dot cannot be named this way); `claim/a.b/c` is
/// an RFC 6901 JSON Pointer (`~1` is `/`, `~0` is `~`), for claim names
/// with dots. Every path names exactly one place.
pub fn claim_path(key: &str) -> Option<Vec<String>> {
    if let Some(dotted) = key.strip_prefix("claim.") {
        return Some(dotted.split('.').map(str::to_owned).collect());
    }
    let pointer = key.strip_prefix("claim/")?;
    Some(
        pointer
            .split('/')
            .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

fn is_claim_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':')
        })
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = printable(s);
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::Shape(shown.clone()))?;
        let (key, value) = rest
            .split_once('=')
            .ok_or_else(|| SelectorError::Shape(shown.clone()))?;
        if key.is_empty() || value.is_empty() {
            return Err(SelectorError::Shape(shown));
        }
        let kind = match kind {
            "unix" => SelectorKind::Unix,
            "oidc" => SelectorKind::Oidc,
            "k8s" => SelectorKind::K8s,
            other => return Err(SelectorError::Kind(shown, printable(other))),
        };
        let bad_value = |why| SelectorError::Value {
            selector: shown.clone(),
            why,
        };
        if value.chars().count() > MAX_VALUE_LEN {
            return Err(bad_value("values are at most 1024 characters"));
        }
        if value.chars().any(char::is_control) {
            return Err(bad_value("values must not contain control characters"));
        }
        let mut value = value.to_owned();
        match (kind, key) {
            (SelectorKind::Unix, "uid" | "gid") => {
                if value.parse::<u32>().is_err() {
                    return Err(bad_value(
                        "uid and gid are decimal numbers, e.g. `unix:uid=1001`",
                    ));
                }
            }
            (SelectorKind::Unix, "user" | "group") => {
                if !is_posix_name(&value) {
                    return Err(bad_value(
                        "user and group are POSIX names (lower-case letters, digits, `_`, `-`)",
                    ));
                }
            }
            (SelectorKind::Unix, "path") => {
                if !value.starts_with('/') || value.split('/').any(|seg| seg == "." || seg == "..")
                {
                    return Err(bad_value(
                        "path is an absolute path to the executable without `.` or `..` segments",
                    ));
                }
            }
            (SelectorKind::Unix, "sha256") => {
                value.make_ascii_lowercase();
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_value(
                        "sha256 is the 64 hex digits of the executable's SHA-256 (`sha256sum <file>`)",
                    ));
                }
            }
            (SelectorKind::Unix, "cgroup") => {
                if value == "/" {
                    return Err(bad_value(
                        "cgroup `/` is the root cgroup, which holds every process not placed elsewhere; name the agent's own cgroup",
                    ));
                }
                if !value.starts_with('/')
                    || value.ends_with('/')
                    || value
                        .split('/')
                        .skip(1)
                        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
                {
                    return Err(bad_value(
                        "cgroup is the process's cgroup v2 path as in /proc/<pid>/cgroup (`0::/system.slice/triage.service`), without `.` or `..` segments",
                    ));
                }
            }
            (SelectorKind::Unix, "systemd_unit") => {
                let ok = (value.ends_with(".service") || value.ends_with(".scope"))
                    && value.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b':' | b'_' | b'.' | b'-' | b'@' | b'\\')
                    });
                if !ok {
                    return Err(bad_value(
                        "systemd_unit is a system service or scope name, e.g. `triage.service`",
                    ));
                }
            }
            (SelectorKind::Unix, "container") => {
                value.make_ascii_lowercase();
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_value(
                        "container is the container's full 64-hex-digit id (`docker inspect --format '{{.Id}}' NAME`)",
                    ));
                }
            }
            (SelectorKind::Oidc, "iss") => {
                if !(value.starts_with("https://") || value.starts_with("http://")) {
                    return Err(bad_value(
                        "iss is the issuer URL exactly as in the token's `iss` claim",
                    ));
                }
            }
            (SelectorKind::Oidc, "sub") => {}
            (SelectorKind::Oidc, "provider") => {
                if !value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(bad_value(
                        "provider is the name of a [[trust_provider]] (lower-case letters, digits, hyphens)",
                    ));
                }
            }
            (SelectorKind::Oidc, k) if k.starts_with("claim.") => {
                if !is_claim_path(&k["claim.".len()..]) {
                    return Err(bad_value(
                        "claim.<a>.<b> names claim b inside claim a: dot-separated names of letters, digits, `_`, `-`, `:` (for a claim name with a dot, use claim/<JSON pointer>, e.g. `oidc:claim/kubernetes.io/namespace=...`)",
                    ));
                }
            }
            (SelectorKind::Oidc, k) if k.starts_with("claim/") => {
                // Every `~` starts an escape (`~0`, `~1`), and no name is empty.
                let escapes_ok = k
                    .split('~')
                    .skip(1)
                    .all(|r| r.starts_with('0') || r.starts_with('1'));
                let names_ok = claim_path(k).is_some_and(|segs| {
                    segs.iter().all(|seg| {
                        !seg.is_empty() && seg.len() <= 256 && !seg.chars().any(char::is_control)
                    })
                });
                if !(escapes_ok && names_ok) {
                    return Err(bad_value(
                        "claim/<pointer> is an RFC 6901 JSON Pointer to the claim: `/`-separated non-empty names (`~1` for `/`, `~0` for `~`)",
                    ));
                }
            }
            (SelectorKind::K8s, "ns") => {
                if !is_dns_label(&value) {
                    return Err(bad_value("ns is a Kubernetes namespace (a DNS label)"));
                }
            }
            (SelectorKind::K8s, "sa" | "pod") => {
                if !is_dns_subdomain(&value) {
                    return Err(bad_value(
                        "sa and pod are Kubernetes object names (DNS subdomains)",
                    ));
                }
            }
            (kind, key) => {
                return Err(SelectorError::Key {
                    selector: shown,
                    key: printable(key),
                    kind: kind.as_str(),
                    help: kind.keys_help(),
                });
            }
        }
        Ok(Self {
            kind,
            key: key.to_owned(),
            value,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.kind.as_str(), self.key, self.value)
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An agent's selectors: each `kind:key` at most once, kept in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Selector>", into = "Vec<Selector>")]
pub struct SelectorSet(Vec<Selector>);

impl SelectorSet {
    /// Builds a set, refusing a `kind:key` given twice.
    pub fn new(selectors: Vec<Selector>) -> Result<Self, SelectorError> {
        let mut seen = BTreeSet::new();
        for s in &selectors {
            let key = format!("{}:{}", s.kind.as_str(), s.key);
            if !seen.insert(key.clone()) {
                return Err(SelectorError::Duplicate(key));
            }
        }
        let mut selectors = selectors;
        selectors.sort();
        Ok(Self(selectors))
    }

    /// Parses each `KIND:KEY=VALUE` string and builds a set.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, SelectorError> {
        Self::new(
            items
                .iter()
                .map(|s| s.as_ref().parse())
                .collect::<Result<_, _>>()?,
        )
    }

    /// The selectors, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The selectors of one attestor family.
    pub fn of_kind(&self, kind: SelectorKind) -> impl Iterator<Item = &Selector> {
        self.0.iter().filter(move |s| s.kind == kind)
    }

    /// A warning when these selectors let any program of a uid pass as the
    /// agent: `unix:path` names an interpreter (Python, Node, a shell, ...)
    /// or `warrant` itself, and nothing else tells the agent's processes
    /// from every other script that uid runs with it (`unix:cgroup`,
    /// `unix:systemd_unit`, `unix:container`).
    pub fn interpreter_warning(&self) -> Option<String> {
        let path = self.of_kind(SelectorKind::Unix).find(|s| s.key == "path")?;
        let base = path
            .value
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let base = base.as_str();
        // A name of three letters or more counts as a prefix (`luajit`,
        // `nodejs`, `vim.basic`); `sh`, `R` and `vi` only whole or followed
        // by a version (`sh`, not `shellcheck`).
        let interpreter = INTERPRETERS.iter().any(|i| {
            base.strip_prefix(i).is_some_and(|rest| {
                i.len() >= 3
                    || rest.is_empty()
                    || rest.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
            })
        });
        if !interpreter {
            return None;
        }
        let told_apart = self
            .of_kind(SelectorKind::Unix)
            .any(|s| matches!(s.key.as_str(), "cgroup" | "systemd_unit" | "container"));
        if told_apart {
            return None;
        }
        Some(format!(
            "`unix:path={}` is an interpreter or a general tool: every script or command any process of this uid runs with it would pass as this agent; add `unix:systemd_unit=...`, `unix:cgroup=...` or `unix:container=...` to tell the agent's processes apart (docs/agents.md, interpreted agents)",
            path.value
        ))
    }
}

/// Executables that run whatever program or request they are given (by
/// name prefix, so versioned names such as `python3.12-dbg`, `tclsh8.6` or
/// `php-fpm8.2` count): a `unix:path` of one of them says nothing about
/// which program runs. `curl`, `wget` and `warrant` are here because any
/// script can drive them to attest.
const INTERPRETERS: [&str; 58] = [
    "python",
    "platform-python",
    "pypy",
    "ipython",
    "node",
    "deno",
    "bun",
    "ruby",
    "irb",
    "perl",
    "php",
    "java",
    "jshell",
    "dotnet",
    "bash",
    "rbash",
    "sh",
    "dash",
    "zsh",
    "fish",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "busybox",
    "toybox",
    "lua",
    "r",
    "rscript",
    "pwsh",
    "tclsh",
    "wish",
    "expect",
    "guile",
    "racket",
    "sbcl",
    "gdb",
    "vim",
    "vi",
    "nvim",
    "emacs",
    "beam.smp",
    "erl",
    "elixir",
    "julia",
    "tcc",
    "qemu",
    "uwsgi",
    "ld-linux",
    "ld.so",
    "curl",
    "wget",
    "socat",
    "ncat",
    "nc",
    "openssl",
    "ssh",
    "warrant",
];

/// What the kernel's cgroup path of a process says about it: the system
/// service or scope it runs in, and the container id, when the path has
/// the shape systemd, Docker, containerd, CRI-O or Podman give it.
pub fn systemd_unit_of(cgroup: &str) -> Option<&str> {
    // Only system units: a user's own units (`user@<uid>.service/...`) are
    // delegated to that user, who can move its processes among them.
    let rest = cgroup.strip_prefix("/system.slice/")?;
    let unit = rest.split('/').next()?;
    (unit.ends_with(".service") || unit.ends_with(".scope")).then_some(unit)
}

/// The container id in a cgroup path: the last component, as a runtime
/// names it (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, or a bare id under `docker` or a
/// Kubernetes `pod…` cgroup), and no container above it: a cgroup a
/// container's root made inside its own container is not another
/// container (attacker round).
pub fn container_of(cgroup: &str) -> Option<&str> {
    fn hex64(s: &str) -> bool {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
    fn scoped(c: &str) -> Option<&str> {
        ["docker-", "cri-containerd-", "crio-", "libpod-"]
            .iter()
            .find_map(|p| c.strip_prefix(p))
            .and_then(|r| r.strip_suffix(".scope"))
            .filter(|id| hex64(id))
    }
    let parts: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    let (last, above) = parts.split_last()?;
    if above.iter().any(|c| scoped(c).is_some() || hex64(c)) {
        return None;
    }
    if let Some(id) = scoped(last) {
        return Some(id);
    }
    let parent = above.last().copied().unwrap_or_default();
    (hex64(last) && (parent == "docker" || parent.starts_with("pod"))).then_some(*last)
}

impl TryFrom<Vec<Selector>> for SelectorSet {
    type Error = SelectorError;
    fn try_from(v: Vec<Selector>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<SelectorSet> for Vec<Selector> {
    fn from(s: SelectorSet) -> Self {
        s.0
    }
}

#[cfg(test)]
mod tests;
