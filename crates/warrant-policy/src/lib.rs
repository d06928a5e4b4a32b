//! Policy: Cedar behind warrant's own types.
//!
//! Callers hand [`Policies::compile`] the files of a policy directory and get
//! either a validated, indexed set or every problem with its file, line and
//! column. [`Policies::decide`] answers a [`warrant_core::decision::DecisionRequest`]
//! with a [`warrant_core::decision::Decision`] and never fails: an evaluation
//! error is a deny that records the error.
//!
//! This is the only crate that imports `cedar-policy` (and `cedar-policy-core`,
//! whose value types it builds requests with; see `entities`); no Cedar type
//! crosses its API. It does no IO: reading the directory is the caller's job.

mod entities;
mod index;
mod load;
mod schema;

pub use load::{PolicyFile, PolicyProblem, Problems, ToolProblems};
pub use schema::{schema_text, schema_text_with};

use cedar_policy::{Authorizer, Effect as CedarEffect, PolicySet};
use cedar_policy_core::ast::{Literal, ValueKind};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use warrant_core::approval::ApprovalTerms;
use warrant_core::decision::{Action, Decision, DecisionRequest, Effect, Resource};
use warrant_core::mcp::{ArgumentSchema, ToolArguments};

/// Static policies bind no template slots.
static NO_SLOTS: std::sync::LazyLock<cedar_policy_core::ast::SlotEnv> =
    std::sync::LazyLock::new(Default::default);

/// The annotation that makes a permit need a person's approval.
pub const APPROVAL_ANNOTATION: &str = "approval";

/// One compiled policy.
#[derive(Debug)]
struct Compiled {
    /// warrant's id: `@id("...")` or `file:line`.
    id: String,
    /// The policy's `when`/`unless` conditions (its scope is checked by the
    /// index, which yields it only when the scope matches), built once:
    /// `ast::Policy::condition()` rebuilds and deep-clones on every call.
    condition: cedar_policy_core::ast::Expr,
    /// Permit or forbid.
    effect: CedarEffect,
    /// `@approval("required")`, with its `@approval_role` and `@approval_ttl`.
    approval: Option<ApprovalTerms>,
}

/// A validated, indexed policy set.
#[derive(Debug)]
pub struct Policies {
    /// Each known tool's argument attributes: what `context.arguments` of a
    /// call of that tool holds.
    tools: ToolArguments,
    /// Tools some policy cannot be applied to, with why: their calls are
    /// refused with it (only when compiled with [`ToolProblems::Isolate`]).
    tool_problems: std::collections::HashMap<String, Vec<String>>,
    /// By tool id: arguments it declares with a type policies cannot read,
    /// each with a policy reaching the tool that reads it.
    unreadable: std::collections::HashMap<String, Vec<(String, String)>>,
    /// The files the set was compiled from, to re-type it when tools change.
    sources: Vec<PolicyFile>,
    all: PolicySet,
    compiled: Vec<Compiled>,
    /// The context keys the conditions read: all a decision builds.
    reads: entities::Reads,
    index: index::ScopeIndex,
    digest: String,
    files: Vec<String>,
    warnings: Problems,
    /// Each policy's file, by index into `sources`.
    where_is: std::collections::HashMap<String, usize>,
}

/// An entity a policy names by its id (`Agent::"triage"`), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRef {
    /// The policy.
    pub policy: String,
    /// The entity type (`Agent`, `Route`, `McpServer`, `Tool`, ...).
    pub kind: String,
    /// The id.
    pub id: String,
    /// The file, line and column of its first mention in the file.
    pub file: String,
    /// 1-based (0 when not found as written).
    pub line: usize,
    /// 1-based.
    pub col: usize,
}

fn deny_with(error: String) -> Decision {
    deny_with_all(vec![error])
}

fn deny_with_all(errors: Vec<String>) -> Decision {
    Decision {
        effect: Effect::Deny,
        policies: Vec::new(),
        errors,
        approval: None,
    }
}

impl Policies {
    /// Parses, validates against the schema and indexes `files`, with no MCP
    /// tools known. On any problem, returns all of them; nothing is
    /// half-loaded.
    pub fn compile(files: &[PolicyFile]) -> Result<Self, Problems> {
        load::compile(files, &ToolArguments::default(), ToolProblems::Refuse)
    }

    /// Like [`compile`](Self::compile), with each pinned tool's argument
    /// attributes typing `context.arguments` of calls of that tool, and each
    /// policy that can reach a tool checked against that tool's arguments.
    /// `mode` says whether a policy that fails for some tools refuses the
    /// set or only those tools.
    pub fn compile_for_tools(
        files: &[PolicyFile],
        tools: &ToolArguments,
        mode: ToolProblems,
    ) -> Result<Self, Problems> {
        load::compile(files, tools, mode)
    }

    /// This set's files compiled again for `tools` (after tools were
    /// listed, approved or changed); problems are isolated to the tools
    /// they concern.
    pub fn for_tools(&self, tools: &ToolArguments) -> Result<Self, Problems> {
        load::compile(&self.sources, tools, ToolProblems::Isolate)
    }

    /// The tools' argument attributes this set was checked against.
    pub fn tools(&self) -> &ToolArguments {
        &self.tools
    }

    /// Tools whose calls are refused because a policy cannot be applied to
    /// them, with why.
    pub fn tool_problems(&self) -> &std::collections::HashMap<String, Vec<String>> {
        &self.tool_problems
    }

    /// The files the set was compiled from.
    pub fn sources(&self) -> &[PolicyFile] {
        &self.sources
    }

    /// The argument attributes a request's `context.arguments` is built
    /// with: those of the tool it calls, or an error that denies it.
    fn arguments_for(&self, req: &DecisionRequest) -> Result<&ArgumentSchema, Vec<String>> {
        static NONE: ArgumentSchema = ArgumentSchema::empty();
        let (Action::McpCallTool, Resource::Tool { .. }) = (req.action, &req.resource) else {
            return Ok(&NONE);
        };
        let id = req.resource.id();
        if let Some(problems) = self.tool_problems.get(&id) {
            return Err(problems.clone());
        }
        self.tools.get(&id).ok_or_else(|| {
            vec![format!(
                "tool `{id}` has no approved definition in the policy set, so its arguments cannot be typed; it is listed and approved through its MCP server"
            )]
        })
    }

    /// A refusal if the call carries an argument that a policy reaching its
    /// tool reads but cannot see (the tool declares it with a type that has
    /// no Cedar counterpart).
    fn unreadable_argument(&self, req: &DecisionRequest, hidden: &[String]) -> Option<Decision> {
        // INVARIANT (no argument unseen by a policy about it): such a call
        // is refused rather than decided without the argument.
        let readers = self.unreadable.get(&req.resource.id())?;
        let (name, policy) = readers.iter().find(|(n, _)| hidden.contains(n))?;
        Some(deny_with(format!(
            "argument `{}` is declared by the tool with a type policies cannot read (only strings, integers, booleans and lists of strings or integers can be), and policy `{policy}` reads it; the call is refused rather than decided without it",
            name.chars().take(64).collect::<String>().escape_debug()
        )))
    }

    /// Decides a request against the whole set. Never fails: any error is a deny.
    pub fn decide(&self, req: &DecisionRequest) -> Decision {
        self.decide_scored(req, req.context.anomaly_score)
    }

    /// [`decide`](Self::decide) with `context.anomaly_score` as given
    /// rather than as `req` says (the broker's detector supplies it per
    /// decision, without copying the request).
    pub fn decide_scored(&self, req: &DecisionRequest, anomaly_score: i64) -> Decision {
        let args = match self.arguments_for(req) {
            Ok(a) => a,
            Err(errors) => return deny_with_all(errors),
        };
        let built = match entities::build(req, args, anomaly_score, self.reads) {
            Ok(b) => b,
            Err(e) => return deny_with(e),
        };
        if let Some(refused) = self.unreadable_argument(req, &built.hidden_arguments) {
            return refused;
        }
        let cands = self.index.candidates(&built.keys);
        let evaluator = Evaluator::new(built.request, &built.entities, Extensions::all_available());
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut errors = Vec::new();
        let mut approval = Approval::default();
        // Each candidate's conditions are evaluated as Cedar's authorizer
        // evaluates them; the index has checked its scope, and skipped the
        // policies whose scope does not match.
        for i in cands {
            let c = &self.compiled[i as usize];
            // What `Evaluator::evaluate` does, on the condition built at load.
            match evaluator
                .interpret(&c.condition, &NO_SLOTS)
                .map(|v| v.value)
            {
                Ok(ValueKind::Lit(Literal::Bool(false))) => {}
                Ok(ValueKind::Lit(Literal::Bool(true))) => match c.effect {
                    CedarEffect::Permit => {
                        approval.permit(c.approval);
                        permits.push(c.id.clone());
                    }
                    CedarEffect::Forbid => forbids.push(c.id.clone()),
                },
                Err(e) => errors.push(format!("policy `{}`: {e}", c.id)),
                // A condition is an `&&` chain, so Cedar yields a boolean or an error.
                Ok(other) => errors.push(format!(
                    "policy `{}`: condition evaluated to `{other}`, not a boolean",
                    c.id
                )),
            }
        }
        combine(permits, forbids, errors, approval.terms())
    }

    /// Whether some arguments could make this tool call (`req`, an
    /// `mcp:call_tool` request whose arguments are ignored) allowed: a permit
    /// applies or depends on the arguments, and no forbid applies whatever
    /// they are. What `tools/list` shows; each call is still decided with
    /// its arguments. An evaluation error hides the tool (its calls would be
    /// denied).
    pub fn could_allow(&self, req: &DecisionRequest) -> bool {
        let Ok(args) = self.arguments_for(req) else {
            return false;
        };
        let Ok(built) =
            entities::build_with(req, args, true, req.context.anomaly_score, self.reads)
        else {
            return false;
        };
        let cands = self.index.candidates(&built.keys);
        let evaluator = Evaluator::new(built.request, &built.entities, Extensions::all_available());
        let mut permit = false;
        for i in cands {
            let c = &self.compiled[i as usize];
            let applies = match evaluator.partial_interpret(&c.condition, &NO_SLOTS) {
                Ok(cedar_policy_core::ast::PartialValue::Value(v)) => {
                    matches!(v.value, ValueKind::Lit(Literal::Bool(true)))
                }
                // Depends on the arguments.
                Ok(cedar_policy_core::ast::PartialValue::Residual(_)) => {
                    c.effect == CedarEffect::Permit
                }
                Err(_) => return false,
            };
            match (c.effect, applies) {
                (CedarEffect::Forbid, true) => return false,
                (CedarEffect::Permit, true) => permit = true,
                _ => {}
            }
        }
        permit
    }

    /// Decides with plain `cedar-policy` over the whole set, without the index:
    /// the reference `decide` is tested against, and the benchmark's baseline.
    pub fn decide_unindexed(&self, req: &DecisionRequest) -> Decision {
        let args = match self.arguments_for(req) {
            Ok(a) => a,
            Err(errors) => return deny_with_all(errors),
        };
        // Every context key: the reference that decisions built with only
        // the keys the set reads are compared with.
        let built =
            match entities::build(req, args, req.context.anomaly_score, entities::Reads::ALL) {
                Ok(b) => b,
                Err(e) => return deny_with(e),
            };
        if let Some(refused) = self.unreadable_argument(req, &built.hidden_arguments) {
            return refused;
        }
        let request = cedar_policy::Request::from(built.request);
        let entities = cedar_policy::Entities::from(built.entities);
        let response = Authorizer::new().is_authorized(&request, &self.all, &entities);
        let errors = response.diagnostics().errors().map(error_text).collect();
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut approval = Approval::default();
        for id in response.diagnostics().reason() {
            if let Some(c) = self.compiled.iter().find(|c| c.id == id.as_ref()) {
                match c.effect {
                    CedarEffect::Permit => {
                        approval.permit(c.approval);
                        permits.push(c.id.clone());
                    }
                    CedarEffect::Forbid => forbids.push(c.id.clone()),
                }
            }
        }
        combine(permits, forbids, errors, approval.terms())
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

    /// Adds warnings found outside the set (names checked against the
    /// inventory and configuration).
    pub fn add_warnings(&mut self, more: Vec<PolicyProblem>) {
        self.warnings.0.extend(more);
    }

    /// Every entity a policy names by id, in scope or condition, once per
    /// policy: for checking the names against the inventory and the
    /// configuration (a typo such as `Agent::"suport-bot"` matches nothing
    /// and is not an error to Cedar).
    pub fn entity_refs(&self) -> Vec<EntityRef> {
        let mut out: Vec<EntityRef> = Vec::new();
        for p in self.all.policies() {
            let policy = p.id().to_string();
            let file = self
                .where_is
                .get(&policy)
                .and_then(|&i| self.sources.get(i));
            let mut seen = std::collections::HashSet::new();
            for uid in p.entity_literals() {
                let kind = uid.type_name().to_string();
                let id: String = uid.id().unescaped().to_owned();
                if !seen.insert((kind.clone(), id.clone())) {
                    continue;
                }
                let (line, col) = file
                    .and_then(|f| {
                        let written = format!("{kind}::{}", serde_json::Value::String(id.clone()));
                        f.text.find(&written).map(|o| load::line_col(&f.text, o))
                    })
                    .unwrap_or((0, 0));
                out.push(EntityRef {
                    policy: policy.clone(),
                    kind,
                    id,
                    file: file.map(|f| f.name.clone()).unwrap_or_default(),
                    line,
                    col,
                });
            }
        }
        out
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
    approval: Option<ApprovalTerms>,
) -> Decision {
    permits.sort();
    forbids.sort();
    if !errors.is_empty() || !forbids.is_empty() {
        return Decision {
            effect: Effect::Deny,
            policies: forbids,
            errors,
            approval: None,
        };
    }
    if permits.is_empty() {
        return Decision {
            effect: Effect::Deny,
            policies: Vec::new(),
            errors,
            approval: None,
        };
    }
    let effect = if approval.is_some() {
        Effect::ApprovalRequired
    } else {
        Effect::Allow
    };
    Decision {
        effect,
        policies: permits,
        errors,
        approval,
    }
}

/// Whether the permits that applied all ask for approval, and the
/// strictest terms among them: one plain permit allows outright.
#[derive(Debug, Default)]
struct Approval {
    plain: bool,
    terms: Option<ApprovalTerms>,
}

impl Approval {
    fn permit(&mut self, terms: Option<ApprovalTerms>) {
        match terms {
            None => self.plain = true,
            Some(t) => self.terms = Some(self.terms.map_or(t, |s| s.and(t))),
        }
    }

    fn terms(&self) -> Option<ApprovalTerms> {
        if self.plain { None } else { self.terms }
    }
}

#[cfg(test)]
mod tests;

/// A set in force.
#[derive(Debug)]
pub struct Loaded {
    /// The policies.
    pub policies: Policies,
    /// When they were loaded.
    pub loaded_at: warrant_core::time::Timestamp,
}

#[cfg(test)]
mod context_keys_tests;

#[cfg(test)]
mod review_tests;
