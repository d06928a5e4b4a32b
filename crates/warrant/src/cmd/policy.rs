//! `warrant policy ...`: validate offline, reload, show, schema, check.

use std::process::ExitCode;

use warrant_core::api::{
    PolicyCheck, PolicyCheckResult, PolicyFileText, PolicyStatus, PolicyValidate, PolicyValidation,
};
use warrant_core::decision::Effect;

use crate::cli::{Cli, Output, PolicyCmd};
use crate::cmd::{EXIT_DENIED, client};
use crate::output::{emit, json, safe};

fn policy_dir(cli: &Cli) -> anyhow::Result<std::path::PathBuf> {
    let settings = warrant_server::config::Settings {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        ..Default::default()
    };
    let settings = warrant_server::config::Settings {
        policy_dir: std::env::var_os("WARRANT_POLICY_DIR").map(Into::into),
        ..settings
    };
    Ok(warrant_server::Config::load(&settings)?.policy_dir)
}

/// `1 policy`, `2 policies`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn print_status(s: &PolicyStatus) {
    println!(
        "{} from {} in {} (digest {})",
        count(s.policies.len(), "policy", "policies"),
        count(s.files.len(), "file", "files"),
        s.dir,
        &s.digest[..s.digest.len().min(16)]
    );
    println!("loaded at {}", s.loaded_at);
    for id in &s.policies {
        println!("  {}", safe(id));
    }
    for w in &s.warnings {
        println!("warning: {}", safe(w));
    }
}

/// Validates `dir`: through the broker (against its pinned MCP tools) when
/// one is reachable and `offline` is not set, else locally. Returns the
/// result and, when it was checked locally for want of a broker, a note.
async fn validate(
    cli: &Cli,
    dir: &std::path::Path,
    offline: bool,
) -> anyhow::Result<(PolicyValidation, Option<String>)> {
    let local =
        |problems: Result<warrant_policy::Policies, warrant_policy::Problems>| match problems {
            Ok(p) => PolicyValidation {
                ok: true,
                policies: p.ids().map(str::to_owned).collect(),
                digest: Some(p.digest().to_owned()),
                problems: vec![],
                warnings: p.warnings().0.iter().map(ToString::to_string).collect(),
                tools: None,
            },
            Err(problems) => PolicyValidation {
                ok: false,
                policies: vec![],
                digest: None,
                problems: problems.0.iter().map(ToString::to_string).collect(),
                warnings: vec![],
                tools: None,
            },
        };
    let files = match warrant_control::policy::read_policy_dir(dir) {
        Ok(f) => f,
        Err(problems) => return Ok((local(Err(problems)), None)),
    };
    if offline {
        return Ok((local(warrant_policy::Policies::compile(&files)), None));
    }
    let req = PolicyValidate {
        files: files
            .iter()
            .map(|f| PolicyFileText {
                name: f.name.clone(),
                text: f.text.clone(),
            })
            .collect(),
    };
    match client(cli)?.post::<PolicyValidation>("/policy/validate", &req).await {
        Ok(v) => Ok((v, None)),
        Err(e) if e.is::<crate::client::NoBroker>() => Ok((
            local(warrant_policy::Policies::compile(&files)),
            Some("no broker is running here, so policies on MCP tool arguments were not checked against the tools' schemas; run this where `warrant serve` runs, or with --url".into()),
        )),
        Err(e) => Err(e),
    }
}

pub async fn run(cli: &Cli, cmd: &PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Validate { dir, offline } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => policy_dir(cli)?,
            };
            let shown = dir.display().to_string();
            let (v, note) = validate(cli, &dir, *offline).await?;
            match cli.output {
                Output::Json => json(&v)?,
                Output::Human if v.ok => {
                    for w in &v.warnings {
                        eprintln!("warning: {}", safe(w));
                    }
                    if let Some(n) = note {
                        eprintln!("note: {n}");
                    }
                    let against = match v.tools {
                        Some(n) if n > 0 => format!(
                            ", checked against {}",
                            count(n, "pinned MCP tool", "pinned MCP tools")
                        ),
                        _ => String::new(),
                    };
                    println!(
                        "ok: {shown} is valid ({}{against})",
                        count(v.policies.len(), "policy", "policies")
                    );
                }
                Output::Human => {
                    for p in &v.problems {
                        eprintln!("{}", safe(p));
                    }
                    if let Some(n) = note {
                        eprintln!("note: {n}");
                    }
                    let n = v.problems.len();
                    eprintln!(
                        "error: the policies in {shown} do not validate ({n} problem{})",
                        if n == 1 { "" } else { "s" }
                    );
                }
            }
            return Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        PolicyCmd::Schema => print!("{}", warrant_policy::schema_text()),
        PolicyCmd::Reload => {
            let s: PolicyStatus = client(cli)?
                .post("/policy/reload", &serde_json::json!({}))
                .await?;
            emit(cli.output, &s, |s| {
                println!("reloaded:");
                print_status(s);
            })?;
        }
        PolicyCmd::Show => {
            let s: PolicyStatus = client(cli)?.get("/policy").await?;
            emit(cli.output, &s, print_status)?;
        }
        PolicyCmd::Check(a) => {
            let arguments = match &a.arguments {
                None => None,
                Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(m)) => Some(m),
                    Ok(_) => anyhow::bail!(
                        "--arguments must be a JSON object, e.g. '{{\"path\": \"/tmp/x\"}}'"
                    ),
                    Err(e) => anyhow::bail!("--arguments is not JSON: {e}"),
                },
            };
            let req = PolicyCheck {
                agent: a.agent.clone(),
                instance: a.instance.clone(),
                attestor: a.attestor.clone(),
                action: a.action.clone(),
                resource: a.resource.clone(),
                user: a.user.clone(),
                groups: a.groups.clone(),
                scopes: a.scopes.clone(),
                depth: a.depth,
                chain: a.chain.clone(),
                source_ip: a.source_ip.clone(),
                time: a.time.clone(),
                method: a.method.clone(),
                path: a.path.clone(),
                host: a.host.clone(),
                arguments,
            };
            let r: PolicyCheckResult = client(cli)?.post("/policy/check", &req).await?;
            emit(cli.output, &r, |r| {
                let effect = match r.effect {
                    Effect::Allow => "allow",
                    Effect::Deny => "deny",
                    Effect::ApprovalRequired => "approval required",
                };
                println!("{effect}");
                for reason in r.decision.reasons() {
                    println!("  {}", safe(&reason));
                }
            })?;
            if r.effect != Effect::Allow {
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
