//! The policy directory and the policy set in force.
//!
//! [`PolicyService`] holds the current set in an `ArcSwap`: decisions read a
//! snapshot without locking, and a reload swaps in a new set only if every file
//! parses and validates, so a bad edit never replaces a good set.
//! [`PolicyService::authorize`] is how every part of the broker asks for a
//! decision: it decides and writes the audit record before returning, and if the
//! record can't be written the caller gets an error, never an allow.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use warrant_core::audit::{AuditEvent, Kind, Outcome};
use warrant_core::decision::{Decision, DecisionRequest, Effect};
use warrant_core::mcp::ToolArguments;
use warrant_core::time::Timestamp;
use warrant_policy::{Policies, PolicyFile, PolicyProblem, Problems, ToolProblems};
use warrant_store::{Store, StoreError};

use crate::metrics::{DecisionLabels, Metrics, OutcomeLabels};
pub use warrant_policy::Loaded;

/// The file written into a fresh policy directory. It permits nothing.
pub const EXAMPLE_POLICY: &str = include_str!("example.cedar");

/// Files larger than this are refused (a policy file is text a person wrote).
const MAX_POLICY_FILE: u64 = 4 * 1024 * 1024;

/// Creates `dir` (mode 0700) with the example file if it does not exist.
/// Returns whether it was created.
pub fn ensure_policy_dir(dir: &Path) -> std::io::Result<bool> {
    if dir.exists() {
        return Ok(false);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::write(dir.join("example.cedar"), EXAMPLE_POLICY)?;
    Ok(true)
}

/// Reads every `*.cedar` file directly in `dir`, sorted by name. Hidden files
/// and other extensions are ignored; subdirectories are not read.
pub fn read_policy_dir(dir: &Path) -> Result<Vec<PolicyFile>, Problems> {
    let problem = |file: String, message: String| {
        Problems(vec![PolicyProblem {
            file,
            line: 0,
            col: 0,
            message,
        }])
    };
    let shown = dir.display().to_string();
    let entries = fs::read_dir(dir).map_err(|e| {
        problem(
            shown.clone(),
            format!("cannot read the policy directory: {e}"),
        )
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            problem(
                shown.clone(),
                format!("cannot list the policy directory: {e}"),
            )
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".cedar") {
            continue;
        }
        if entry
            .file_type()
            .map(|t| t.is_file() || t.is_symlink())
            .unwrap_or(false)
        {
            names.push(name);
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match fs::metadata(&path) {
            Ok(m) if m.len() > MAX_POLICY_FILE => {
                problems.push(PolicyProblem {
                    file: name,
                    line: 0,
                    col: 0,
                    message: format!("is {} bytes; policy files are limited to 4 MiB", m.len()),
                });
                continue;
            }
            Err(e) => {
                problems.push(PolicyProblem {
                    file: name,
                    line: 0,
                    col: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
            Ok(_) => {}
        }
        match fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => files.push(PolicyFile { name, text }),
                Err(_) => problems.push(PolicyProblem {
                    file: name,
                    line: 0,
                    col: 0,
                    message: "is not UTF-8 text".into(),
                }),
            },
            Err(e) => problems.push(PolicyProblem {
                file: name,
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(Problems(problems))
    }
}

/// Checks that the policy directory and its `*.cedar` files can be changed
/// only by the broker's user or root (see [`warrant_host::trust::check_trusted`]).
pub fn check_policy_dir_trusted(dir: &Path) -> Result<(), Problems> {
    let problem = |message: String| {
        Problems(vec![PolicyProblem {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message,
        }])
    };
    warrant_host::trust::check_trusted(dir, "the policy directory", false).map_err(problem)?;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".cedar") {
                warrant_host::trust::check_trusted(&e.path(), "policy file", false)
                    .map_err(problem)?;
            }
        }
    }
    Ok(())
}

/// Reads and compiles a directory: what `warrant policy validate` does offline.
pub fn compile_dir(dir: &Path) -> Result<Policies, Problems> {
    Policies::compile(&read_policy_dir(dir)?)
}

/// Like [`compile_dir`], with the pinned MCP tools' argument attributes
/// typing `context.arguments` of calls of each tool.
pub fn compile_dir_with(
    dir: &Path,
    tools: &ToolArguments,
    mode: ToolProblems,
) -> Result<Policies, Problems> {
    check_policy_dir_trusted(dir)?;
    Policies::compile_for_tools(&read_policy_dir(dir)?, tools, mode)
}

fn task_failed(e: &tokio::task::JoinError) -> Problems {
    Problems(vec![PolicyProblem {
        file: String::new(),
        line: 0,
        col: 0,
        message: format!("policy compilation failed: {e}"),
    }])
}

/// Says, in the log, which tools' calls a policy that cannot be applied to
/// them refuses.
fn log_tool_problems(p: &Policies) {
    let mut tools: Vec<(&String, &Vec<String>)> = p.tool_problems().iter().collect();
    tools.sort();
    for (tool, why) in tools {
        tracing::error!(tool = %tool, problems = %why.join("; "), "calls of this MCP tool are refused: a policy cannot be applied to its arguments; fix the policy and run `warrant policy reload`");
    }
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new set does not parse or validate; the old set stays.
    #[error("the policy set was not reloaded; the previous set stays in force:\n{0}")]
    Invalid(Problems),
    /// The reload could not be audited, so it was not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The policy set in force and the way to change it.
pub struct PolicyService {
    dir: PathBuf,
    current: ArcSwap<Loaded>,
    /// Serialises reloads so their audit records and swaps happen in one order.
    /// A tokio mutex: it is held across the audit write.
    reload_lock: tokio::sync::Mutex<()>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// The pinned MCP tools' argument attributes, which type
    /// `context.arguments` per tool. A std lock: read or replaced, never
    /// held across an await.
    tools: parking_lot::RwLock<ToolArguments>,
    /// The routes and MCP servers configured, for checking the names
    /// policies use (set by whoever holds the configuration).
    configured: ArcSwap<Configured>,
    /// Where `context.anomaly_score` comes from (set once the detector runs).
    anomaly: std::sync::OnceLock<Arc<crate::anomaly::AnomalyService>>,
}

/// Route and MCP server names in force.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    /// `[[route]]` names.
    pub routes: std::collections::BTreeSet<String>,
    /// `[[mcp_server]]` names.
    pub servers: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyService")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PolicyService {
    /// Loads `dir`. A set that doesn't validate at start-up is an error: the
    /// broker refuses to start rather than run with an unintended policy. A
    /// policy that fails only for some pinned tools refuses those tools'
    /// calls (saying why) and is logged, so a tool that changed while the
    /// broker was down cannot keep it from starting.
    pub fn load(
        dir: &Path,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tools: ToolArguments,
    ) -> Result<Self, Problems> {
        let policies = compile_dir_with(dir, &tools, ToolProblems::Isolate)?;
        log_tool_problems(&policies);
        metrics
            .policies_loaded
            .set(i64::try_from(policies.len()).unwrap_or(i64::MAX));
        Ok(Self {
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(Loaded {
                policies,
                loaded_at: Timestamp::now(),
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            store,
            metrics,
            tools: parking_lot::RwLock::new(tools),
            configured: ArcSwap::from_pointee(Configured::default()),
            anomaly: std::sync::OnceLock::new(),
        })
    }

    /// Says which routes and MCP servers are configured.
    pub fn set_configured(&self, configured: Configured) {
        self.configured.store(Arc::new(configured));
    }

    /// The names policies may refer to: registered agents and pinned tools
    /// (from the store), configured routes and MCP servers.
    pub async fn known_names(&self) -> Result<crate::names::KnownNames, StoreError> {
        let configured = self.configured.load_full();
        let agents = self.store.list_agents().await?;
        let pins = self.store.list_tool_pins(None).await?;
        Ok(crate::names::KnownNames {
            agents: agents.iter().map(|a| a.name.to_string()).collect(),
            routes: configured.routes.clone(),
            servers: configured.servers.clone(),
            tools: pins
                .iter()
                .map(|p| format!("{}/{}", p.server, p.tool))
                .collect(),
        })
    }

    /// Re-types the set in force for the MCP tools' (new) argument
    /// attributes, from the files it was loaded from (an edit on disk that
    /// was not reloaded does not slip in). A policy that fails for some
    /// tools refuses those tools' calls, saying why; nothing else changes.
    /// Audited as `policy.retype`.
    pub async fn set_tools(
        &self,
        tools: ToolArguments,
        base: AuditEvent,
    ) -> Result<Arc<Loaded>, ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let current = self.current.load_full();
        let for_tools = tools.clone();
        let compiled = tokio::task::spawn_blocking(move || current.policies.for_tools(&for_tools))
            .await
            .unwrap_or_else(|e| Err(task_failed(&e)));
        let policies = match compiled {
            Ok(p) => p,
            Err(problems) => {
                // The files compiled before; only a bug gets here.
                let event = AuditEvent {
                    event: Kind::PolicyRetype.into(),
                    ..base
                }
                .action("policy.retype")
                .failed(Outcome::Error, problems.to_string());
                self.record(event).await?;
                return Err(ReloadError::Invalid(problems));
            }
        };
        let mut refused: Vec<&String> = policies.tool_problems().keys().collect();
        refused.sort();
        let event = AuditEvent {
            event: Kind::PolicyRetype.into(),
            decision: Outcome::Allow,
            ..base
        }
        .action("policy.retype")
        .detail(serde_json::json!({
            "tools": tools.len(),
            "digest": policies.digest(),
            "tools_refused": refused,
        }));
        // INVARIANT (audit before effect).
        self.record(event).await?;
        log_tool_problems(&policies);
        {
            let mut t = self.tools.write();
            *t = tools;
        }
        let loaded = Arc::new(Loaded {
            policies,
            loaded_at: Timestamp::now(),
        });
        self.current.store(loaded.clone());
        Ok(loaded)
    }

    /// The MCP tools' argument attributes in force.
    pub fn tools(&self) -> ToolArguments {
        self.tools.read().clone()
    }

    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        match self.store.append_audit(event).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.audit_write_failures.inc();
                Err(e)
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set in force.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Re-reads the directory and swaps the set in if it validates. Audited
    /// either way, with `base` supplying the actor and surface.
    pub async fn reload(&self, base: AuditEvent) -> Result<Arc<Loaded>, ReloadError> {
        let compiled = self.compile_dir().await;
        self.put_in_force(compiled, base).await
    }

    /// Reads and compiles the policy directory as a reload would, for the
    /// MCP tools known now; nothing is installed or recorded.
    pub async fn compile_dir(&self) -> Result<Policies, Problems> {
        let dir = self.dir.clone();
        let tools = self.tools();
        tokio::task::spawn_blocking(move || compile_dir_with(&dir, &tools, ToolProblems::Refuse))
            .await
            .unwrap_or_else(|e| Err(task_failed(&e)))
    }

    /// Puts a compiled set in force (re-typed if the MCP tools changed
    /// since it was compiled), or records why it was not: the set that
    /// was checked is the set installed, whatever the files say by now.
    pub async fn put_in_force(
        &self,
        compiled: Result<Policies, Problems>,
        base: AuditEvent,
    ) -> Result<Arc<Loaded>, ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let tools = self.tools();
        let compiled = match compiled {
            Ok(p) if *p.tools() != tools => {
                tokio::task::spawn_blocking(move || p.for_tools(&tools))
                    .await
                    .unwrap_or_else(|e| Err(task_failed(&e)))
            }
            other => other,
        };
        match compiled {
            Ok(mut policies) => {
                // Names that match nothing are warned about, not refused: an
                // agent may be registered after the policy naming it.
                match self.known_names().await {
                    Ok(known) => {
                        let unknown = crate::names::unknown_names(&policies, &known);
                        for w in &unknown {
                            tracing::warn!("{w}");
                        }
                        policies.add_warnings(unknown);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the inventory to check the names policies use")
                    }
                }
                let previous = self.current.load().policies.digest().to_owned();
                let event = AuditEvent {
                    event: Kind::PolicyReload.into(),
                    decision: Outcome::Allow,
                    ..base
                }
                .action("policy.reload")
                .detail(serde_json::json!({
                    "policies": policies.len(),
                    "files": policies.files(),
                    "digest": policies.digest(),
                    "previous_digest": previous,
                }));
                // INVARIANT (audit before effect): the new set is in force only
                // once its record is durable.
                self.record(event).await?;
                self.metrics
                    .policies_loaded
                    .set(i64::try_from(policies.len()).unwrap_or(i64::MAX));
                self.metrics
                    .policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "ok".into(),
                    })
                    .inc();
                let loaded = Arc::new(Loaded {
                    policies,
                    loaded_at: Timestamp::now(),
                });
                self.current.store(loaded.clone());
                tracing::info!(
                    policies = loaded.policies.len(),
                    digest = loaded.policies.digest(),
                    "policy set reloaded"
                );
                Ok(loaded)
            }
            Err(problems) => {
                self.metrics
                    .policy_reloads
                    .get_or_create(&OutcomeLabels {
                        outcome: "error".into(),
                    })
                    .inc();
                let event = AuditEvent {
                    event: Kind::PolicyReload.into(),
                    ..base
                }
                .action("policy.reload")
                .failed(Outcome::Error, problems.to_string());
                // The refusal is audited; if even that fails, say so.
                self.record(event).await?;
                tracing::warn!(problems = %problems, "policy reload refused; previous set stays in force");
                Err(ReloadError::Invalid(problems))
            }
        }
    }

    /// Takes `context.anomaly_score` from `anomaly` from now on.
    pub fn set_anomaly(&self, anomaly: Arc<crate::anomaly::AnomalyService>) {
        let _ = self.anomaly.set(anomaly);
    }

    /// Decides `req` and fills `event` with the decision (outcome, reasons,
    /// principal, resource, action) without writing it: for callers that
    /// record the decision together with what it allows, in one transaction.
    pub fn decide_for_record(
        &self,
        req: &DecisionRequest,
        event: AuditEvent,
    ) -> (Decision, AuditEvent) {
        // The agent's anomaly score now, from what the detector published
        // (a map look-up; the detector itself runs off the request path).
        let score = self.anomaly.get().map_or(req.context.anomaly_score, |a| {
            a.score(
                req.principal.agent.name.as_str(),
                req.context.user.as_ref().map(|u| u.id.as_str()),
            )
            .max(req.context.anomaly_score)
        });
        let decision = self.current.load().policies.decide_scored(req, score);
        let effect = match decision.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::ApprovalRequired => "approval_required",
        };
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                action: req.action.as_str().to_owned(),
                effect: effect.to_owned(),
            })
            .inc();
        // Users are recorded as everywhere else, `user:<namespace>/<subject>`
        // (a bare id here made `audit list --user` miss every decided
        // record); a decision for no user keeps whom the record names.
        let user = match &req.context.user {
            Some(u) => Some(format!("user:{}", u.id)),
            None => event.user.clone(),
        };
        let event = AuditEvent {
            decision: decision.outcome(),
            reasons: decision.reasons(),
            agent: Some(req.principal.agent.name.clone()),
            instance: Some(req.principal.instance.clone()),
            user,
            chain: req.context.chain.clone(),
            task: req.context.task.clone(),
            txn: req.context.txn.clone(),
            resource: Some(req.resource.to_string()),
            action: Some(req.action.as_str().to_owned()),
            ..event
        };
        // The score the decision saw, when there was one to see.
        let event = if score > 0 {
            let mut event = event;
            match &mut event.detail {
                Some(serde_json::Value::Object(d)) => {
                    d.insert("anomaly_score".into(), score.into());
                }
                d @ None => *d = Some(serde_json::json!({ "anomaly_score": score })),
                Some(_) => {}
            }
            event
        } else {
            event
        };
        (decision, event)
    }

    /// Decides `req` and records the decision as `event` (the caller fills in
    /// kind, actor and any credential facts). Returns the decision once its
    /// record is durable; if the record can't be written, returns the error and
    /// the caller must refuse.
    pub async fn authorize(
        &self,
        req: &DecisionRequest,
        event: AuditEvent,
    ) -> Result<Decision, StoreError> {
        let (decision, event) = self.decide_for_record(req, event);
        self.record(event).await?;
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_permits_nothing_and_its_examples_compile() {
        let p = Policies::compile(&[PolicyFile {
            name: "example.cedar".into(),
            text: EXAMPLE_POLICY.into(),
        }])
        .unwrap();
        assert!(
            p.is_empty(),
            "the example file must permit nothing until edited"
        );
        // Uncommenting the examples gives valid policies. In the example, prose
        // lines end with `:`; every other `// ` line is Cedar.
        let uncommented: String = EXAMPLE_POLICY
            .lines()
            .skip_while(|l| !l.starts_with("// This file permits nothing as shipped."))
            .skip(1)
            .map(|l| match l.strip_prefix("// ") {
                Some(code) if !code.ends_with(':') => code,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let p = Policies::compile(&[PolicyFile {
            name: "u.cedar".into(),
            text: uncommented.clone(),
        }])
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(p.len() >= 3, "{uncommented}");
    }

    #[test]
    fn reads_only_cedar_files_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        fs::write(
            d.path().join("b.cedar"),
            "permit(principal, action, resource) when { false };",
        )
        .unwrap();
        fs::write(d.path().join("a.cedar"), "").unwrap();
        fs::write(d.path().join(".hidden.cedar"), "garbage").unwrap();
        fs::write(d.path().join("README.md"), "garbage").unwrap();
        fs::write(d.path().join("a.cedar.bak"), "garbage").unwrap();
        let files = read_policy_dir(d.path()).unwrap();
        assert_eq!(
            files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["a.cedar", "b.cedar"]
        );
        fs::write(d.path().join("c.cedar"), [0xff, 0xfe]).unwrap();
        assert!(
            read_policy_dir(d.path())
                .unwrap_err()
                .to_string()
                .contains("c.cedar: is not UTF-8")
        );
    }

    #[test]
    fn ensure_creates_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("policies");
        assert!(ensure_policy_dir(&p).unwrap());
        assert!(p.join("example.cedar").exists());
        assert!(!ensure_policy_dir(&p).unwrap());
    }
}
