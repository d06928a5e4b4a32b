//! `warrant approval ...`: deciding step-up approvals.

use std::process::ExitCode;

use warrant_core::approval::Approval;

use crate::cli::{ApprovalCmd, Cli};
use crate::client::{AdminClient, segment};
use crate::output::{emit, safe, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &ApprovalCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalCmd::List { state, limit } => {
            let list: Vec<Approval> = client
                .get(&format!(
                    "/approvals?state={}&limit={limit}",
                    segment(state)
                ))
                .await?;
            emit(cli.output, &list, |list| {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|a| {
                        vec![
                            a.id.clone(),
                            a.state.to_string(),
                            safe(&a.subject.agent),
                            safe(a.subject.user.as_deref().unwrap_or("-")),
                            safe(&a.subject.action),
                            safe(&a.subject.resource),
                            a.created_at.to_string(),
                            a.expires_at.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "STATE", "AGENT", "USER", "ACTION", "RESOURCE", "ASKED", "EXPIRES",
                    ],
                    &rows,
                );
            })?;
        }
        ApprovalCmd::Show { id } => {
            let a: Approval = client.get(&format!("/approvals/{}", segment(id))).await?;
            emit(cli.output, &a, show)?;
        }
        ApprovalCmd::Approve { id, reason } | ApprovalCmd::Deny { id, reason } => {
            let verb = if matches!(cmd, ApprovalCmd::Approve { .. }) {
                "approve"
            } else {
                "deny"
            };
            let a: Approval = client
                .post(
                    &format!("/approvals/{}/{verb}", segment(id)),
                    &serde_json::json!({ "reason": reason }),
                )
                .await?;
            emit(cli.output, &a, |a| {
                if verb == "approve" {
                    println!(
                        "approval {} is granted until {}: the same request, sent again, goes ahead once",
                        a.id, a.expires_at
                    );
                } else {
                    println!(
                        "approval {} is denied: the same request is refused until {}",
                        a.id, a.expires_at
                    );
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(a: &Approval) {
    let s = &a.subject;
    let line = |k: &str, v: &str| println!("{k:<11} {}", safe(v));
    line("id", &a.id);
    line("state", a.state.as_str());
    line("agent", &s.agent);
    line("instance", &s.instance);
    line(
        "user",
        s.user.as_deref().unwrap_or("- (the agent acts for itself)"),
    );
    line("chain", &s.chain.join(" -> "));
    line("task", s.task.as_deref().unwrap_or("-"));
    line("txn", s.txn.as_deref().unwrap_or("-"));
    line("action", &s.action);
    line("resource", &s.resource);
    // Invisible and direction-changing characters are written \u{...}, so
    // what is read is what is approved.
    let visible = |v: &serde_json::Value| warrant_core::approval::escape_invisible(&v.to_string());
    line("request", &visible(&s.request));
    if !a.shown.is_null() {
        line("shown", &visible(&a.shown));
    }
    line("policies", &a.policies.join(", "));
    line("needs role", a.role.as_str());
    line("asked", &a.created_at.to_string());
    line("expires", &a.expires_at.to_string());
    if let Some(by) = &a.decided_by {
        line("decided by", by);
    }
    if let Some(at) = a.decided_at {
        line("decided", &at.to_string());
    }
    if let Some(r) = &a.reason {
        line("reason", r);
    }
    if let Some(at) = a.used_at {
        line("used", &at.to_string());
    }
}
