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

use crate::{APPROVAL_ANNOTATION, Compiled, Policies, index, schema};

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
        if self.line == 0 {
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
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

pub(crate) fn compile(
    files: &[PolicyFile],
    args: &warrant_core::mcp::ArgumentSchema,
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
    let mut where_is: HashMap<String, usize> = HashMap::new();
    for p in &parsed {
        let renamed = p.policy.new_id(PolicyId::new(p.id.clone()));
        where_is.insert(p.id.clone(), p.file_idx);
        if let Err(e) = all.add(renamed) {
            problems.push(PolicyProblem {
                file: files[p.file_idx].name.clone(),
                line: p.line,
                col: 1,
                message: e.to_string(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let schema = schema::schema_with(args).map_err(|message| {
        Problems(vec![PolicyProblem {
            file: String::new(),
            line: 0,
            col: 0,
            message,
        }])
    })?;
    let validator = Validator::new((*schema).clone());
    let result = validator.validate(&all, ValidationMode::Strict);
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
    for e in result.validation_errors() {
        problems.push(locate(e.policy_id(), e, e.to_string()));
    }
    let warnings: Vec<PolicyProblem> = result
        .validation_warnings()
        .map(|w| locate(w.policy_id(), w, format!("warning: {w}")))
        .collect();
    if !problems.is_empty() {
        return Err(Problems(problems));
    }

    let mut compiled = Vec::with_capacity(parsed.len());
    let mut scopes = Vec::with_capacity(parsed.len());
    for p in &parsed {
        let policy = p.policy.new_id(PolicyId::new(p.id.clone()));
        scopes.push(index::Scope::of(&policy));
        compiled.push(Compiled {
            id: p.id.clone(),
            condition: AsRef::<cedar_policy_core::ast::Policy>::as_ref(&policy).condition(),
            effect: policy.effect(),
            needs_approval: policy.annotation(APPROVAL_ANNOTATION) == Some("required"),
        });
    }

    let mut hasher = Sha256::new();
    for f in files {
        hasher.update((f.name.len() as u64).to_be_bytes());
        hasher.update(f.name.as_bytes());
        hasher.update((f.text.len() as u64).to_be_bytes());
        hasher.update(f.text.as_bytes());
    }

    Ok(Policies {
        args: args.clone(),
        all,
        compiled,
        index: index::ScopeIndex::build(&scopes),
        digest: hex::encode(hasher.finalize()),
        files: files.iter().map(|f| f.name.clone()).collect(),
        warnings: Problems(warnings),
    })
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
