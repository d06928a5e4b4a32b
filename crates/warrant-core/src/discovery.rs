//! Discovered workloads: what tried to attest and matched no agent.
//!
//! Built from the audit records warrant already keeps (an attestation
//! refused because "no agent's selectors match" records the evidence), so
//! discovery needs no table of its own and cannot be used to fill the store:
//! those refusals are within the refusal budget, and past it gathered into
//! one record with a count. Candidates are grouped by what identifies a
//! workload (unix: uid, executable, hash, cgroup; oidc: provider and
//! subject), a workload attested since is left out, and each comes with the
//! `warrant agent create` line that would register it. Not here: the IO
//! (the caller reads the records).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::time::Timestamp;

/// The reason an attestation refusal records when no agent matched.
pub const NO_AGENT_MATCHES: &str = "no agent's selectors match";

/// A workload that tried to attest and matched no agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// `unix` or `oidc`.
    pub attestor: String,
    /// What identifies it (the evidence without per-process facts).
    pub evidence: BTreeMap<String, String>,
    /// Refused attempts seen (aggregated records counted in full).
    pub attempts: u64,
    /// First and last refusal.
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Selectors it would satisfy.
    pub selectors: Vec<String>,
    /// A name for it, from its executable or service account.
    pub suggested_name: String,
    /// The command that registers it (owner and environment to fill in).
    pub command: String,
}

/// `key=value` pairs of an evidence summary (values without spaces; a value
/// with a note after it, such as an executable not at its path for the
/// broker, keeps only what precedes the note).
fn fields(summary: &str) -> BTreeMap<String, String> {
    summary
        .split(' ')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A valid agent name from `s` (lower-case letters, digits, single hyphens,
/// starting with a letter), or `discovered-agent`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(40).collect();
    let out = out.trim_end_matches('-').to_owned();
    if out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out
    } else {
        "discovered-agent".to_owned()
    }
}

/// A value for a POSIX shell, single-quoted when it needs to be.
fn shell(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What identifies the workload, and the selectors and name to suggest.
fn describe(attestor: &str, all: &BTreeMap<String, String>) -> Option<Candidate> {
    let pick = |keys: &[&str]| -> BTreeMap<String, String> {
        keys.iter()
            .filter_map(|k| all.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect()
    };
    let (evidence, selectors, name) = match attestor {
        "unix" => {
            let e = pick(&["uid", "gid", "exe", "sha256", "cgroup"]);
            let uid = e.get("uid")?;
            let mut sel = vec![format!("unix:uid={uid}")];
            let exe = e.get("exe").cloned().unwrap_or_default();
            // A path the broker could not confirm is pinned by its hash.
            let path_ok =
                exe.starts_with('/') && !exe.contains("(not") && !exe.contains("(deleted");
            match (path_ok, e.get("sha256")) {
                (true, _) => sel.push(format!("unix:path={exe}")),
                (false, Some(h)) => sel.push(format!("unix:sha256={h}")),
                (false, None) => {}
            }
            if let Some(c) = e.get("cgroup").filter(|c| c.as_str() != "/") {
                sel.push(format!("unix:cgroup={c}"));
            }
            let name = slug(exe.rsplit('/').next().unwrap_or_default());
            (e, sel, name)
        }
        "oidc" => {
            let e = pick(&["provider", "iss", "sub", "pod"]);
            let provider = e.get("provider")?;
            let sub = e.get("sub")?;
            let mut sel = vec![format!("oidc:provider={provider}")];
            let name = match sub
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split_once(':'))
            {
                Some((ns, sa)) => {
                    sel.push(format!("k8s:ns={ns}"));
                    sel.push(format!("k8s:sa={sa}"));
                    slug(sa)
                }
                None => {
                    sel.push(format!("oidc:sub={sub}"));
                    slug(sub)
                }
            };
            // The pod differs per instance: shown, not a selector.
            (e, sel, name)
        }
        _ => return None,
    };
    let mut command = format!("warrant agent create {name} --owner OWNER --env ENV");
    for s in &selectors {
        command.push_str(" --selector ");
        command.push_str(&shell(s));
    }
    Some(Candidate {
        attestor: attestor.to_owned(),
        evidence,
        attempts: 0,
        first_seen: Timestamp::from_millis(i64::MAX),
        last_seen: Timestamp::from_millis(0),
        selectors,
        suggested_name: name,
        command,
    })
}

/// The identity of a workload in its evidence (not the pid or pod, which
/// change per instance).
fn key(attestor: &str, all: &BTreeMap<String, String>) -> String {
    let get = |k: &str| all.get(k).map_or("", String::as_str);
    match attestor {
        "unix" => format!(
            "unix|{}|{}|{}|{}",
            get("uid"),
            get("exe"),
            get("sha256"),
            get("cgroup")
        ),
        _ => format!("{attestor}|{}|{}", get("provider"), get("sub")),
    }
}

/// The candidates in `records` (any order): workloads refused because no
/// agent matched, not attested since, most recent first.
pub fn candidates(records: &[AuditRecord]) -> Vec<Candidate> {
    let mut found: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut attested: BTreeMap<String, Timestamp> = BTreeMap::new();
    for r in records {
        let e = &r.event;
        let Some(detail) = e.detail.as_ref() else {
            continue;
        };
        let (Some(attestor), Some(summary)) = (
            detail.get("attestor").and_then(|v| v.as_str()),
            detail.get("evidence").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let all = fields(summary);
        let k = key(attestor, &all);
        let refused =
            e.decision.as_str() == "deny" && e.reasons.iter().any(|r| r == NO_AGENT_MATCHES);
        if !refused {
            if e.decision.as_str() == "allow" {
                let t = attested.entry(k).or_insert(r.time);
                *t = (*t).max(r.time);
            }
            continue;
        }
        let Some(fresh) = describe(attestor, &all) else {
            continue;
        };
        let c = found.entry(k).or_insert(fresh);
        let agg = detail.get("aggregated");
        c.attempts += agg
            .and_then(|a| a.get("count"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        let seen = |f: &str| {
            agg.and_then(|a| a.get(f))
                .and_then(|v| v.as_str())
                .and_then(|s| Timestamp::parse_rfc3339(s).ok())
        };
        c.first_seen = c.first_seen.min(seen("first_seen").unwrap_or(r.time));
        c.last_seen = c.last_seen.max(seen("last_seen").unwrap_or(r.time));
    }
    let mut out: Vec<Candidate> = found
        .into_iter()
        .filter(|(k, c)| attested.get(k).is_none_or(|t| *t < c.last_seen))
        .map(|(_, c)| c)
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_commands_are_safe_to_paste() {
        assert_eq!(slug("python3.11"), "python3-11");
        assert_eq!(slug("My Agent!"), "my-agent");
        assert_eq!(slug("3rd"), "discovered-agent");
        assert_eq!(shell("unix:path=/usr/bin/x"), "unix:path=/usr/bin/x");
        assert_eq!(shell("unix:path=/a b/it's"), r"'unix:path=/a b/it'\''s'");
        let c = describe(
            "oidc",
            &fields("provider=k8s iss=https://k sub=system:serviceaccount:agents:triage pod=p-1"),
        )
        .unwrap();
        assert_eq!(
            c.command,
            "warrant agent create triage --owner OWNER --env ENV --selector oidc:provider=k8s --selector k8s:ns=agents --selector k8s:sa=triage"
        );
        let u = describe(
            "unix",
            &fields("uid=1000 gid=1000 pid=7 exe=/opt/x/bin/fetcher sha256=ab cgroup=/system.slice/f.service"),
        )
        .unwrap();
        assert_eq!(
            u.selectors,
            [
                "unix:uid=1000",
                "unix:path=/opt/x/bin/fetcher",
                "unix:cgroup=/system.slice/f.service"
            ]
        );
        assert!(!u.evidence.contains_key("pid"));
    }
}
