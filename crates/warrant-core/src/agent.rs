//! The agent inventory's record: an agent is a workload class, not a process.
//!
//! Instances (one attested execution each) arrive with the attestation issue and
//! refer to an agent by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::name::{AgentName, EnvName};
use crate::selector::SelectorSet;
use crate::text::{Owner, Purpose};
use crate::time::{MAX_TOKEN_LIFETIME, TimeError, Timestamp, Ttl};

/// How far an agent is trusted; policies compare it (`principal.trust == "high"`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    /// The default: nothing about the agent has been reviewed.
    #[default]
    Low,
    /// Reviewed for its purpose.
    Medium,
    /// Reviewed and allowed near sensitive systems.
    High,
}

impl TrustLevel {
    /// The level as policies see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl FromStr for TrustLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            _ => Err(format!(
                "trust level `{}` is unknown; use low, medium or high",
                s.escape_debug()
            )),
        }
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an agent may be issued anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// May attest and be issued credentials.
    Active,
    /// Switched off by an operator; gets nothing until enabled.
    Disabled,
    /// Switched off automatically (anomaly detection); gets nothing until enabled.
    Quarantined,
}

impl AgentStatus {
    /// The status as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Quarantined => "quarantined",
        }
    }
}

impl FromStr for AgentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "quarantined" => Ok(Self::Quarantined),
            _ => Err(format!("unknown agent status `{}`", s.escape_debug())),
        }
    }
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shortest `max_ttl` an agent may have.
pub const MIN_MAX_TTL: Ttl = Ttl::from_secs(10);
/// The default and longest `max_ttl`: the hard cap on token lifetimes.
pub const DEFAULT_MAX_TTL: Ttl = Ttl::from_secs(MAX_TOKEN_LIFETIME.as_secs());

/// Checks an agent's `--max-ttl`.
pub fn check_max_ttl(ttl: Ttl) -> Result<Ttl, TimeError> {
    ttl.within("max-ttl", MIN_MAX_TTL, DEFAULT_MAX_TTL)
}

/// What an operator supplies to register an agent. Every field is already valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Unique name.
    pub name: AgentName,
    /// Who answers for it.
    pub owner: Owner,
    /// The environment it runs in.
    pub env: EnvName,
    /// What it is for.
    #[serde(default)]
    pub purpose: Purpose,
    /// How far it is trusted.
    #[serde(default)]
    pub trust: TrustLevel,
    /// Facts its instances must prove at attestation.
    #[serde(default)]
    pub selectors: SelectorSet,
    /// The longest lifetime of anything issued to it.
    #[serde(default = "default_max_ttl", deserialize_with = "de_max_ttl")]
    pub max_ttl: Ttl,
}

fn default_max_ttl() -> Ttl {
    DEFAULT_MAX_TTL
}

fn de_max_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Ttl, D::Error> {
    let t = Ttl::deserialize(d)?;
    check_max_ttl(t).map_err(serde::de::Error::custom)
}

/// An inventoried agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable id (`agt_...`), never reused even if the name is.
    pub id: String,
    /// Unique name.
    pub name: AgentName,
    /// Who answers for it.
    pub owner: Owner,
    /// The environment it runs in.
    pub env: EnvName,
    /// What it is for.
    pub purpose: Purpose,
    /// How far it is trusted.
    pub trust: TrustLevel,
    /// Facts its instances must prove at attestation.
    pub selectors: SelectorSet,
    /// The longest lifetime of anything issued to it.
    pub max_ttl: Ttl,
    /// Whether it may be issued anything.
    pub status: AgentStatus,
    /// When it was registered.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Agent {
    /// A new active agent record.
    pub fn from_new(id: String, new: NewAgent, now: Timestamp) -> Self {
        Self {
            id,
            name: new.name,
            owner: new.owner,
            env: new.env,
            purpose: new.purpose,
            trust: new.trust,
            selectors: new.selectors,
            max_ttl: new.max_ttl,
            status: AgentStatus::Active,
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_agent_from_json_validates_every_field() {
        let ok: NewAgent = serde_json::from_str(
            r#"{"name":"triage","owner":"support","env":"prod","selectors":["k8s:ns=agents"],"max_ttl":"15m"}"#,
        )
        .unwrap();
        assert_eq!(ok.trust, TrustLevel::Low);
        assert_eq!(ok.max_ttl.as_secs(), 900);

        for (json, want) in [
            (
                r#"{"name":"Triage","owner":"s","env":"prod"}"#,
                "agent name",
            ),
            (
                r#"{"name":"t","owner":"","env":"prod"}"#,
                "owner must not be empty",
            ),
            (
                r#"{"name":"t","owner":"s","env":"prod","trust":"max"}"#,
                "unknown variant",
            ),
            (
                r#"{"name":"t","owner":"s","env":"prod","max_ttl":"2h"}"#,
                "out of range",
            ),
            (
                r#"{"name":"t","owner":"s","env":"prod","selectors":["x"]}"#,
                "KIND:KEY=VALUE",
            ),
            (
                r#"{"name":"t","owner":"s","env":"prod","colour":"red"}"#,
                "unknown field",
            ),
        ] {
            let err = serde_json::from_str::<NewAgent>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
