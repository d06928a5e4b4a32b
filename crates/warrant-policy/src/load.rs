//! Parsing and validating a policy directory's files.
//!
//! Each policy gets a stable id: its `@id("...")` annotation if it has one
//! (unique across the set), else `<file>:<line>` of where it starts. Every
//! problem names the file, line and column and says what to fix.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

use warrant_core::mcp::{ArgumentSchema, ToolArguments};

use warrant_core::approval::{APPROVAL_ROLE_ANNOTATION, APPROVAL_TTL_ANNOTATION, ApprovalTerms};

use crate::{APPROVAL_ANNOTATION, Compiled, Policies, entities, index, schema};

/// One policy file: a name (relative to the policy directory) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    /// The file name, as shown in errors.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// A problem in a policy file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// The file.
    pub file: String,
    /// 1-based line, 0 when the problem is not tied to a place.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong and, where Cedar knows, how to fix it.
    pub message: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}", self.message)
        } else if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

/// A list of problems (errors or warnings).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<PolicyProblem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn describe(d: &dyn Diagnostic, fallback: String) -> String {
    match d.help() {
        Some(help) => format!("{fallback} (help: {help})"),
        None => fallback,
    }
}

fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

struct Parsed {
    file_idx: usize,
    id: String,
    policy: cedar_policy::Policy,
    line: usize,
}

/// How a problem that concerns only some tools is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolProblems {
    /// As an error: the set is refused (reload, `policy validate`).
    Refuse,
    /// Recorded on the tools concerned, whose calls are then refused with
    /// it: for re-typing after tools were (re)listed, when the policy files
    /// did not change and refusing the whole set would help nobody.
    Isolate,
}

pub(crate) fn compile(
    files: &[PolicyFile],
    tools: &ToolArguments,
    mode: ToolProblems,
) -> Result<Policies, Problems> {
    let mut problems = Vec::new();
    let mut parsed: Vec<Parsed> = Vec::new();

    for (file_idx, file) in files.iter().enumerate() {
        let set = match PolicySet::from_str(&file.text) {
            Ok(set) => set,
            Err(errs) => {
                for e in errs.iter() {
                    let (line, col) = first_offset(e).map_or((0, 0), |o| line_col(&file.text, o));
                    problems.push(PolicyProblem {
                        file: file.name.clone(),
                        line,
                        col,
                        message: describe(e, e.to_string()),
                    });
                }
                continue;
            }
        };
        if set.templates().next().is_some() {
            problems.push(PolicyProblem {
                file: file.name.clone(),
                line: 0,
                col: 0,
                message: "contains a template (a policy with ?principal or ?resource slots); warrant loads static policies only".into(),
            });
            continue;
        }
        // Policies come back in source order; find each one's text to know its line.
        let mut search_from = 0;
        let mut in_file: Vec<cedar_policy::Policy> = set.policies().cloned().collect();
        in_file.sort_by_key(|p| {
            AsRef::<str>::as_ref(p.id())
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        for policy in in_file {
            let src = policy.to_string();
            let offset = file.text[search_from..].find(&src).map(|o| o + search_from);
            let (line, _) = offset.map_or((0, 0), |o| line_col(&file.text, o));
            if let Some(o) = offset {
                search_from = o + src.len();
            }
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{}:{line}", file.name),
            };
            parsed.push(Parsed {
                file_idx,
                id,
                policy,
                line,
            });
        }
    }

    // Ids must be unique across the set.
    let mut seen: HashMap<&str, &Parsed> = HashMap::new();
    for p in &parsed {
        if let Some(first) = seen.insert(p.id.as_str(), p) {
            problems.push(PolicyProblem {
                file: files[p.file_idx].name.clone(),
                line: p.line,
                col: 1,
                message: format!(
                    "policy id `{}` is already used by the policy at {}:{}; give each @id(\"...\") a unique value",
                    p.id, files[first.file_idx].name, first.line
                ),
            });
        }
    }
    for p in &parsed {
        let role = p.policy.annotation(APPROVAL_ROLE_ANNOTATION);
        let ttl = p.policy.annotation(APPROVAL_TTL_ANNOTATION);
        let problem = |message: String| PolicyProblem {
            file: files[p.file_idx].name.clone(),
            line: p.line,
            col: 1,
            message,
        };
        if (role.is_some() || ttl.is_some())
            && p.policy.annotation(APPROVAL_ANNOTATION) != Some("required")
        {
            problems.push(problem(
                "@approval_role and @approval_ttl only apply with @approval(\"required\") on the same permit".into(),
            ));
        } else if let Err(e) = ApprovalTerms::parse(role, ttl) {
            problems.push(problem(e));
        }
        if let Some(v) = p.policy.annotation(APPROVAL_ANNOTATION) {
            if v != "required" {
                problems.push(PolicyProblem {
                    file: files[p.file_idx].name.clone(),
                    line: p.line,
                    col: 1,
                    message: format!("@approval(\"{}\") is not understood; the only value is @approval(\"required\")", v.escape_debug()),
                });
            } else if p.policy.effect() == cedar_policy::Effect::Forbid {
                problems.push(PolicyProblem {
                    file: files[p.file_idx].name.clone(),
                    line: p.line,
                    col: 1,
                    message: "@approval(\"required\") only makes sense on a permit; a forbid is never approved".into(),
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let mut all = PolicySet::new();
    let mut renamed: Vec<cedar_policy::Policy> = Vec::with_capacity(parsed.len());
    let mut where_is: HashMap<String, usize> = HashMap::new();
    for p in &parsed {
        let policy = p.policy.new_id(PolicyId::new(p.id.clone()));
        where_is.insert(p.id.clone(), p.file_idx);
        if let Err(e) = all.add(policy.clone()) {
            problems.push(PolicyProblem {
                file: files[p.file_idx].name.clone(),
                line: p.line,
                col: 1,
                message: e.to_string(),
            });
        }
        renamed.push(policy);
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let scopes: Vec<index::Scope> = renamed.iter().map(index::Scope::of).collect();
    let checked = validate(files, &renamed, &scopes, &where_is, tools)?;
    if mode == ToolProblems::Refuse && !checked.tool_problems.is_empty() {
        return Err(Problems(checked.located));
    }

    let mut compiled = Vec::with_capacity(parsed.len());
    for (p, policy) in parsed.iter().zip(&renamed) {
        compiled.push(Compiled {
            id: p.id.clone(),
            // The `when`/`unless` part only: a policy is evaluated only when
            // the index found its scope matching (INVARIANT index is exact,
            // which also checks the scope itself, `ScopeIndex::candidates`),
            // and a scope check raises no error, so evaluating it again
            // could change nothing but the time taken.
            condition: AsRef::<cedar_policy_core::ast::Policy>::as_ref(policy)
                .non_scope_constraints()
                .cloned()
                .unwrap_or_else(|| cedar_policy_core::ast::Expr::val(true)),
            effect: policy.effect(),
            approval: (policy.annotation(APPROVAL_ANNOTATION) == Some("required")).then(|| {
                ApprovalTerms::parse(
                    policy.annotation(APPROVAL_ROLE_ANNOTATION),
                    policy.annotation(APPROVAL_TTL_ANNOTATION),
                )
                .unwrap_or_default()
            }),
        });
    }

    let mut hasher = Sha256::new();
    for f in files {
        hasher.update((f.name.len() as u64).to_be_bytes());
        hasher.update(f.name.as_bytes());
        hasher.update((f.text.len() as u64).to_be_bytes());
        hasher.update(f.text.as_bytes());
    }

    let mut warnings = checked.warnings;
    if mode == ToolProblems::Isolate {
        warnings.extend(checked.located);
    }
    Ok(Policies {
        tools: tools.clone(),
        tool_problems: checked.tool_problems,
        unreadable: checked.unreadable,
        sources: files.to_vec(),
        all,
        reads: entities::Reads::of(compiled.iter().map(|c| &c.condition)),
        compiled,
        index: index::ScopeIndex::build(&scopes),
        digest: hex::encode(hasher.finalize()),
        files: files.iter().map(|f| f.name.clone()).collect(),
        warnings: Problems(warnings),
        where_is,
    })
}

/// What validation found beyond outright errors.
struct Checked {
    /// Validator warnings, and policies not yet checked against any tool.
    warnings: Vec<PolicyProblem>,
    /// Problems of policies with the tools they concern, located.
    located: Vec<PolicyProblem>,
    /// The same, by tool id: what a call of that tool is refused with.
    tool_problems: HashMap<String, Vec<String>>,
    /// By tool id: its arguments policies cannot read, with a policy that
    /// reaches the tool and reads the argument.
    unreadable: HashMap<String, Vec<(String, String)>>,
}

/// Whether a warning says the policy can never apply.
fn never_applies(w: &cedar_policy::ValidationWarning) -> bool {
    matches!(
        w,
        cedar_policy::ValidationWarning::ImpossiblePolicy(_)
            | cedar_policy::ValidationWarning::InvalidActionApplication(_)
    )
}

/// Whether a policy reads `context.arguments` (or the whole `context`).
fn reads_arguments(p: &cedar_policy::Policy) -> bool {
    use cedar_policy_core::ast::{ExprKind, Var};
    let ast: &cedar_policy_core::ast::Policy = p.as_ref();
    let cond = ast.condition();
    let is_context =
        |e: &cedar_policy_core::ast::Expr| matches!(e.expr_kind(), ExprKind::Var(Var::Context));
    let mut contexts = 0usize;
    let mut other_fields = 0usize;
    for e in cond.subexpressions() {
        match e.expr_kind() {
            ExprKind::Var(Var::Context) => contexts += 1,
            ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
                if is_context(expr) && attr != "arguments" =>
            {
                other_fields += 1;
            }
            ExprKind::ExtHasAttr { expr, attrs }
                if is_context(expr) && attrs.first() != "arguments" =>
            {
                other_fields += 1;
            }
            _ => {}
        }
    }
    contexts > other_fields
}

/// The tool arguments a policy reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ArgumentReads {
    /// `context.arguments.<name>` (or `has <name>`) appears.
    pub(crate) names: std::collections::BTreeSet<String>,
    /// `context.arguments` appears whole (compared, passed on): every
    /// argument counts as read.
    pub(crate) all: bool,
}

impl ArgumentReads {
    /// Whether the policy reads argument `name`.
    pub(crate) fn reads(&self, name: &str) -> bool {
        self.all || self.names.contains(name)
    }
}

/// Which tool arguments `p` reads.
pub(crate) fn argument_reads(p: &cedar_policy::Policy) -> ArgumentReads {
    use cedar_policy_core::ast::{Expr, ExprKind, Var};
    let ast: &cedar_policy_core::ast::Policy = p.as_ref();
    let cond = ast.condition();
    let is_arguments = |e: &Expr| {
        matches!(e.expr_kind(), ExprKind::GetAttr { expr, attr }
            if attr == "arguments" && matches!(expr.expr_kind(), ExprKind::Var(Var::Context)))
    };
    let mut out = ArgumentReads::default();
    let (mut whole, mut as_base) = (0usize, 0usize);
    for e in cond.subexpressions() {
        if is_arguments(e) {
            whole += 1;
        }
        match e.expr_kind() {
            ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
                if is_arguments(expr) =>
            {
                as_base += 1;
                out.names.insert(attr.to_string());
            }
            ExprKind::ExtHasAttr { expr, attrs } if is_arguments(expr) => {
                as_base += 1;
                out.names.insert(attrs.first().to_string());
            }
            ExprKind::ExtHasAttr { expr, attrs }
                if matches!(expr.expr_kind(), ExprKind::Var(Var::Context))
                    && attrs.first() == "arguments" =>
            {
                if let Some(name) = attrs.iter().nth(1) {
                    out.names.insert(name.to_string());
                }
            }
            _ => {}
        }
    }
    out.all = whole > as_base;
    out
}

/// Validates every policy: those that cannot reach an MCP tool against the
/// schema without tool arguments, the others against the schema of each
/// group of tools (same argument types) their scope reaches. A policy with
/// a type error for a tool, or that can never apply to any tool it reaches,
/// is a problem of those tools. Outright errors are returned as `Err`.
fn validate(
    files: &[PolicyFile],
    policies: &[cedar_policy::Policy],
    scopes: &[index::Scope],
    where_is: &HashMap<String, usize>,
    tools: &ToolArguments,
) -> Result<Checked, Problems> {
    let locate = |policy_id: &PolicyId, d: &dyn Diagnostic, message: String| {
        let file_idx = where_is
            .get(AsRef::<str>::as_ref(policy_id))
            .copied()
            .unwrap_or(0);
        let file = files.get(file_idx);
        let (line, col) = match (file, first_offset(d)) {
            (Some(f), Some(o)) => line_col(&f.text, o),
            _ => (0, 0),
        };
        PolicyProblem {
            file: file.map(|f| f.name.clone()).unwrap_or_default(),
            line,
            col,
            message: describe(d, message),
        }
    };
    let schema_for = |args: &ArgumentSchema| {
        schema::schema_with(args).map_err(|message| {
            Problems(vec![PolicyProblem {
                file: String::new(),
                line: 0,
                col: 0,
                message,
            }])
        })
    };
    let set_of = |which: &[usize]| {
        let mut set = PolicySet::new();
        for &i in which {
            // Ids are unique: `compile` added them all to one set already.
            let _ = set.add(policies[i].clone());
        }
        set
    };

    // Which tools each policy reaches, and the tools grouped by argument types.
    let tool_list: Vec<(&str, &ArgumentSchema)> = tools.iter().collect();
    let reach: Vec<Vec<usize>> = scopes
        .iter()
        .map(|sc| {
            tool_list
                .iter()
                .enumerate()
                .filter(|(_, (id, _))| sc.reaches_tool(id))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let mut groups: Vec<(&ArgumentSchema, Vec<usize>)> = Vec::new();
    for (i, (_, args)) in tool_list.iter().enumerate() {
        match groups.iter_mut().find(|(a, _)| a == args) {
            Some((_, members)) => members.push(i),
            None => groups.push((args, vec![i])),
        }
    }

    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    // Policies that reach no known tool.
    let base: Vec<usize> = (0..policies.len())
        .filter(|&i| reach[i].is_empty())
        .collect();
    if !base.is_empty() {
        let result = Validator::new((*schema_for(&ArgumentSchema::empty())?).clone())
            .validate(&set_of(&base), ValidationMode::Strict);
        let pending = |id: &PolicyId| {
            policies
                .iter()
                .zip(scopes)
                .find(|(p, _)| p.id() == id)
                .is_some_and(|(p, sc)| sc.reaches_any_tool() && reads_arguments(p))
        };
        for e in result.validation_errors() {
            if pending(e.policy_id()) {
                warnings.push(locate(
                    e.policy_id(),
                    e,
                    format!("not yet checked: it reads tool arguments, but no tool it applies to has been listed by its MCP server yet ({e})"),
                ));
            } else {
                errors.push(locate(e.policy_id(), e, e.to_string()));
            }
        }
        for w in result.validation_warnings() {
            if never_applies(w) && pending(w.policy_id()) {
                warnings.push(locate(
                    w.policy_id(),
                    w,
                    "not yet checked: it reads tool arguments, but no tool it applies to has been listed by its MCP server yet".into(),
                ));
            } else if never_applies(w) {
                errors.push(locate(
                    w.policy_id(),
                    w,
                    format!("{w}; a policy that can never apply is refused (is a name or type misspelt?)"),
                ));
            } else {
                warnings.push(locate(w.policy_id(), w, format!("warning: {w}")));
            }
        }
    }

    // Policies that reach tools, per group of tools.
    let mut located = Vec::new();
    let mut tool_problems: HashMap<String, Vec<String>> = HashMap::new();
    // For each policy: in how many of its groups it can never apply.
    let mut impossible_in: Vec<usize> = vec![0; policies.len()];
    let mut groups_of: Vec<usize> = vec![0; policies.len()];
    let mut impossible_why: Vec<Option<PolicyProblem>> = vec![None; policies.len()];
    for (args, members) in &groups {
        let subset: Vec<usize> = (0..policies.len())
            .filter(|&i| reach[i].iter().any(|t| members.contains(t)))
            .collect();
        if subset.is_empty() {
            continue;
        }
        for &i in &subset {
            groups_of[i] += 1;
        }
        let index_of = |id: &PolicyId| policies.iter().position(|p| p.id() == id);
        let result = Validator::new((*schema_for(args)?).clone())
            .validate(&set_of(&subset), ValidationMode::Strict);
        for e in result.validation_errors() {
            let Some(i) = index_of(e.policy_id()) else {
                continue;
            };
            let hit: Vec<&str> = reach[i]
                .iter()
                .filter(|t| members.contains(t))
                .map(|&t| tool_list[t].0)
                .collect();
            let mut problem = locate(e.policy_id(), e, e.to_string());
            problem.message = format!(
                "{} (checked against the arguments of tool{} {})",
                problem.message,
                if hit.len() == 1 { "" } else { "s" },
                quoted(&hit)
            );
            for t in &hit {
                tool_problems
                    .entry((*t).to_owned())
                    .or_default()
                    .push(format!(
                        "policy `{}` does not type-check against this tool's arguments: {e}",
                        policies[i].id()
                    ));
            }
            located.push(problem);
        }
        for w in result.validation_warnings() {
            let Some(i) = index_of(w.policy_id()) else {
                continue;
            };
            if never_applies(w) {
                impossible_in[i] += 1;
                impossible_why[i].get_or_insert_with(|| locate(w.policy_id(), w, w.to_string()));
            } else {
                warnings.push(locate(w.policy_id(), w, format!("warning: {w}")));
            }
        }
    }
    // Arguments a policy reads that a tool it reaches declares untyped:
    // calls carrying them are refused (see `Policies::decide`).
    let mut unreadable: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut reads_unreadable = vec![false; policies.len()];
    for (i, p) in policies.iter().enumerate() {
        let reads = argument_reads(p);
        for &t in &reach[i] {
            let (id, args) = tool_list[t];
            for name in args.untyped().filter(|n| reads.reads(n)) {
                reads_unreadable[i] = true;
                unreadable
                    .entry(id.to_owned())
                    .or_default()
                    .push((name.to_owned(), p.id().to_string()));
                warnings.push(PolicyProblem {
                    file: where_is
                        .get(AsRef::<str>::as_ref(p.id()))
                        .and_then(|&f| files.get(f))
                        .map(|f| f.name.clone())
                        .unwrap_or_default(),
                    line: 0,
                    col: 0,
                    message: format!(
                        "warning: policy `{}` reads argument `{}`, which tool `{id}` declares with a type policies cannot read (not a string, integer, boolean or list of strings or integers); calls of `{id}` that pass it are refused",
                        p.id(),
                        name.escape_debug()
                    ),
                });
            }
        }
    }
    for i in 0..policies.len() {
        // A policy about an argument its tools declare without a usable
        // type is not dead code: their calls with it are refused instead.
        if groups_of[i] == 0 || impossible_in[i] < groups_of[i] || reads_unreadable[i] {
            continue;
        }
        let hit: Vec<&str> = reach[i].iter().map(|&t| tool_list[t].0).collect();
        let mut problem = impossible_why[i].take().unwrap_or(PolicyProblem {
            file: String::new(),
            line: 0,
            col: 0,
            message: String::new(),
        });
        problem.message = format!(
            "policy `{}` can never apply to the tool{} it is about ({}): it names arguments, or argument types, those tools do not have; a policy that can never apply is refused",
            policies[i].id(),
            if hit.len() == 1 { "" } else { "s" },
            quoted(&hit)
        );
        for t in &hit {
            tool_problems.entry((*t).to_owned()).or_default().push(format!(
                "policy `{}` can never apply to this tool: it names arguments, or argument types, the tool does not have",
                policies[i].id()
            ));
        }
        located.push(problem);
    }
    if !errors.is_empty() {
        return Err(Problems(errors));
    }
    Ok(Checked {
        warnings,
        located,
        tool_problems,
        unreadable,
    })
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn offsets_to_line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 5), (2, 3));
        assert_eq!(line_col(t, 8), (3, 1));
        assert_eq!(line_col(t, 999), (3, 2));
    }
}
