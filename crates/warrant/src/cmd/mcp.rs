//! `warrant mcp ...`: the gateway's tool pins.

use std::process::ExitCode;

use warrant_core::mcp::ToolPin;

use crate::cli::{Cli, McpCmd};
use crate::client::{AdminClient, segment};
use crate::output::{emit, safe, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &McpCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        McpCmd::Servers => crate::cmd::live::mcp_servers(cli, &client).await?,
        McpCmd::Tools { server } => {
            let path = match server {
                Some(s) => format!("/mcp/tools?server={}", segment(s)),
                None => "/mcp/tools".to_owned(),
            };
            let pins: Vec<ToolPin> = client.get(&path).await?;
            emit(cli.output, &pins, |pins| {
                let rows: Vec<Vec<String>> = pins
                    .iter()
                    .map(|p| {
                        vec![
                            safe(&p.server),
                            safe(&p.tool),
                            p.state.as_str().to_owned(),
                            p.digest.chars().take(12).collect(),
                            p.pending_digest
                                .as_deref()
                                .map_or("-".into(), |d| d.chars().take(12).collect()),
                            p.updated_at.to_string(),
                            safe(p.approved_by.as_deref().unwrap_or(
                                if p.state == warrant_core::mcp::PinState::New {
                                    "(waiting)"
                                } else {
                                    "(first seen)"
                                },
                            )),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "SERVER",
                        "TOOL",
                        "STATE",
                        "PINNED",
                        "PENDING",
                        "UPDATED",
                        "APPROVED-BY",
                    ],
                    &rows,
                );
            })?;
        }
        McpCmd::Approve {
            server,
            tool,
            digest: None,
        } => {
            // Show what would be approved; approve nothing.
            let pins: Vec<ToolPin> = client
                .get(&format!("/mcp/tools?server={}", segment(server)))
                .await?;
            let Some(pin) = pins.iter().find(|p| p.tool == *tool) else {
                anyhow::bail!(
                    "MCP server `{}` has no tool `{}` (see `warrant mcp tools {}`)",
                    safe(server),
                    safe(tool),
                    safe(server)
                );
            };
            let (Some(digest), Some(definition)) = (&pin.pending_digest, &pin.pending_definition)
            else {
                anyhow::bail!(
                    "tool `{}/{}` has no new or changed definition waiting for approval",
                    safe(server),
                    safe(tool)
                );
            };
            emit(cli.output, pin, |_| {
                println!(
                    "the definition of `{}/{}` waiting for approval:",
                    safe(server),
                    safe(tool)
                );
                println!(
                    "{}",
                    safe(&serde_json::to_string_pretty(definition).unwrap_or_default())
                );
                println!("digest: {digest}");
                println!(
                    "nothing is approved yet; to approve exactly this definition, run:\n  warrant mcp approve {} {} --digest {digest}",
                    safe(server),
                    safe(tool)
                );
            })?;
            return Ok(ExitCode::from(super::EXIT_REVIEW));
        }
        McpCmd::Approve {
            server,
            tool,
            digest: Some(digest),
        } => {
            let pin: ToolPin = client
                .post(
                    &format!("/mcp/{}/tools/{}/approve", segment(server), segment(tool)),
                    &serde_json::json!({ "digest": digest }),
                )
                .await?;
            emit(cli.output, &pin, |p| {
                println!(
                    "approved the announced definition of `{}/{}` ({})",
                    safe(&p.server),
                    safe(&p.tool),
                    safe(&p.digest.chars().take(12).collect::<String>())
                );
                if p.policy_problems.is_empty() {
                    println!("it is listed, and its calls are decided by policy");
                } else {
                    println!("but its calls are refused until the policies are fixed:");
                    for why in &p.policy_problems {
                        println!("  {}", safe(why));
                    }
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
