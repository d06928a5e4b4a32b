//! Policy: Cedar behind warrant's own types.
//!
//! Callers hand [`Policies::compile`] the files of a policy directory and get
//! either a validated, indexed set or every problem with its file, line and
//! column. [`Policies::decide`] answers a [`warrant_core::decision::DecisionRequest`]
//! with a [`warrant_core::decision::Decision`] and never fails: an evaluation
//! error is a deny that records the error.
//!
//! This is the only crate that imports `cedar-policy`; no Cedar type crosses its
//! API. It does no IO: reading the directory is the caller's job.

mod entities;
mod index;
mod load;
mod schema;

pub use load::{PolicyFile, PolicyProblem, Problems};
pub use schema::schema_text;

use cedar_policy::{Authorizer, Effect as CedarEffect, PolicySet};
use warrant_core::decision::{Decision, DecisionRequest, Effect};

/// The annotation that makes a permit need a person's approval.
pub const APPROVAL_ANNOTATION: &str = "approval";

/// One compiled policy.
#[derive(Debug)]
struct Compiled {
    /// warrant's id: `@id("...")` or `file:line`.
    id: String,
    /// A set holding only this policy, so candidates can be evaluated one by one.
    alone: PolicySet,
    /// Permit or forbid.
    effect: CedarEffect,
    /// `@approval("required")`.
    needs_approval: bool,
}

/// A validated, indexed policy set.
#[derive(Debug)]
pub struct Policies {
    all: PolicySet,
    compiled: Vec<Compiled>,
    index: index::ScopeIndex,
    digest: String,
    files: Vec<String>,
    warnings: Problems,
}

impl Policies {
    /// Parses, validates against the schema and indexes `files`. On any problem,
    /// returns all of them; nothing is half-loaded.
    pub fn compile(files: &[PolicyFile]) -> Result<Self, Problems> {
        load::compile(files)
    }

    /// Decides a request against the whole set. Never fails: any error is a deny.
    pub fn decide(&self, req: &DecisionRequest) -> Decision {
        let (request, entities, keys) = match entities::build(req) {
            Ok(built) => built,
            Err(e) => {
                return Decision {
                    effect: Effect::Deny,
                    policies: Vec::new(),
                    errors: vec![e],
                };
            }
        };
        let candidates = self.index.candidates(&keys);
        let authorizer = Authorizer::new();
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        let mut needs_approval = true;
        for i in candidates {
            let c = &self.compiled[i as usize];
            let response = authorizer.is_authorized(&request, &c.alone, &entities);
            errors.extend(response.diagnostics().errors().map(error_text));
            if response.diagnostics().reason().next().is_some() {
                match c.effect {
                    CedarEffect::Permit => {
                        needs_approval &= c.needs_approval;
                        permits.push(c.id.clone());
                    }
                    CedarEffect::Forbid => forbids.push(c.id.clone()),
                }
            }
        }
        combine(permits, forbids, errors, needs_approval)
    }

    /// Decides with plain Cedar over the whole set, without the index. The
    /// reference `decide` is tested against, and the benchmark's baseline.
    pub fn decide_unindexed(&self, req: &DecisionRequest) -> Decision {
        let (request, entities, _) = match entities::build(req) {
            Ok(built) => built,
            Err(e) => {
                return Decision {
                    effect: Effect::Deny,
                    policies: Vec::new(),
                    errors: vec![e],
                };
            }
        };
        let response = Authorizer::new().is_authorized(&request, &self.all, &entities);
        let errors = response.diagnostics().errors().map(error_text).collect();
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut needs_approval = true;
        for id in response.diagnostics().reason() {
            if let Some(c) = self.compiled.iter().find(|c| c.id == id.as_ref()) {
                match c.effect {
                    CedarEffect::Permit => {
                        needs_approval &= c.needs_approval;
                        permits.push(c.id.clone());
                    }
                    CedarEffect::Forbid => forbids.push(c.id.clone()),
                }
            }
        }
        combine(permits, forbids, errors, needs_approval)
    }

    /// How many policies are loaded.
    pub fn len(&self) -> usize {
        self.compiled.len()
    }

    /// Whether no policy is loaded (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }

    /// The policy ids, in load order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.compiled.iter().map(|c| c.id.as_str())
    }

    /// SHA-256 over the files' names and contents: which set is in force.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The files the set came from.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Validator warnings (the set loaded anyway).
    pub fn warnings(&self) -> &Problems {
        &self.warnings
    }

    /// An empty set: everything is denied. Used before the first load.
    pub fn empty() -> Self {
        // The empty file list cannot fail to compile.
        load::compile(&[]).unwrap_or_else(|_| Self {
            all: PolicySet::new(),
            compiled: Vec::new(),
            index: index::ScopeIndex::default(),
            digest: String::new(),
            files: Vec::new(),
            warnings: Problems::default(),
        })
    }
}

fn error_text(e: &cedar_policy::AuthorizationError) -> String {
    match e {
        cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
            format!("policy `{}`: {}", pe.policy_id(), pe.inner())
        }
    }
}

/// Cedar's combination rule, plus warrant's: any error denies, and a permit
/// needs approval only if every satisfied permit asks for it.
fn combine(
    mut permits: Vec<String>,
    mut forbids: Vec<String>,
    errors: Vec<String>,
    needs_approval: bool,
) -> Decision {
    permits.sort();
    forbids.sort();
    if !errors.is_empty() {
        return Decision {
            effect: Effect::Deny,
            policies: forbids,
            errors,
        };
    }
    if !forbids.is_empty() {
        return Decision {
            effect: Effect::Deny,
            policies: forbids,
            errors,
        };
    }
    if permits.is_empty() {
        return Decision {
            effect: Effect::Deny,
            policies: Vec::new(),
            errors,
        };
    }
    let effect = if needs_approval {
        Effect::ApprovalRequired
    } else {
        Effect::Allow
    };
    Decision {
        effect,
        policies: permits,
        errors,
    }
}

#[cfg(test)]
mod tests;
