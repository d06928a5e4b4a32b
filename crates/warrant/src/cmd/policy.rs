//! `warrant policy ...`: validate offline, reload, show, schema, check.

use std::process::ExitCode;

use serde::Serialize;
use warrant_core::api::{PolicyCheck, PolicyCheckResult, PolicyStatus};
use warrant_core::decision::Effect;

use crate::cli::{Cli, Output, PolicyCmd};
use crate::cmd::{EXIT_DENIED, client};
use crate::output::{emit, json};

#[derive(Serialize)]
struct Validation {
    ok: bool,
    dir: String,
    policies: Vec<String>,
    digest: Option<String>,
    problems: Vec<String>,
    warnings: Vec<String>,
}

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

fn print_status(s: &PolicyStatus) {
    println!(
        "{} from {} in {} (digest {})",
        count(s.policies.len(), "policy", "policies"),
        count(s.files.len(), "file", "files"),
        s.dir,
        &s.digest[..s.digest.len().min(16)]
    );
    println!("loaded at {}", s.loaded_at);
    for id in &s.policies {
        println!("  {id}");
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}

pub async fn run(cli: &Cli, cmd: &PolicyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCmd::Validate { dir } => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => policy_dir(cli)?,
            };
            let shown = dir.display().to_string();
            let result = warrant_server::policy::compile_dir(&dir);
            let v = match &result {
                Ok(p) => Validation {
                    ok: true,
                    dir: shown,
                    policies: p.ids().map(str::to_owned).collect(),
                    digest: Some(p.digest().to_owned()),
                    problems: vec![],
                    warnings: p.warnings().0.iter().map(ToString::to_string).collect(),
                },
                Err(problems) => Validation {
                    ok: false,
                    dir: shown,
                    policies: vec![],
                    digest: None,
                    problems: problems.0.iter().map(ToString::to_string).collect(),
                    warnings: vec![],
                },
            };
            match cli.output {
                Output::Json => json(&v)?,
                Output::Human if v.ok => {
                    for w in &v.warnings {
                        eprintln!("warning: {w}");
                    }
                    println!(
                        "ok: {} is valid ({})",
                        v.dir,
                        count(v.policies.len(), "policy", "policies")
                    );
                }
                Output::Human => {
                    for p in &v.problems {
                        eprintln!("{p}");
                    }
                    let n = v.problems.len();
                    eprintln!(
                        "error: the policies in {} do not validate ({n} problem{})",
                        v.dir,
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
                    println!("  {reason}");
                }
            })?;
            if r.effect != Effect::Allow {
                return Ok(ExitCode::from(EXIT_DENIED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
