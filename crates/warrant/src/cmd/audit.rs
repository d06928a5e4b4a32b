//! `warrant audit ...`: reading and verifying the trail.

use std::process::ExitCode;

use warrant_core::api::{AuditList, AuditListQuery, AuditVerification};

use crate::cli::{AuditCmd, Cli, Output};
use crate::client::AdminClient;
use crate::cmd::EXIT_TAMPERED;
use crate::output::{emit, json, safe, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::List {
            agent,
            event,
            since,
            limit,
        } => {
            let q = AuditListQuery {
                agent: agent.clone(),
                event: event.clone(),
                since: since.clone(),
                limit: Some(*limit),
            };
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(
                    serde_json::to_value(&q)?
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        }),
                )
                .finish();
            let list: AuditList = client.get(&format!("/audit?{query}")).await?;
            emit(cli.output, &list.records, |records| {
                let rows: Vec<Vec<String>> = records
                    .iter()
                    .map(|r| {
                        let e = &r.event;
                        let what = e
                            .resource
                            .clone()
                            .or_else(|| e.action.clone())
                            .unwrap_or_default();
                        vec![
                            r.seq.to_string(),
                            r.time.to_string(),
                            safe(&e.event),
                            e.decision.to_string(),
                            safe(e.agent.as_deref().unwrap_or("-")),
                            safe(e.actor.as_deref().unwrap_or("-")),
                            safe(
                                &format!("{what} {}", e.reasons.join("; "))
                                    .trim()
                                    .chars()
                                    .take(160)
                                    .collect::<String>(),
                            ),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "SEQ", "TIME", "EVENT", "DECISION", "AGENT", "ACTOR", "DETAIL",
                    ],
                    &rows,
                );
            })?;
        }
        AuditCmd::Verify => {
            let v: AuditVerification = client.get("/audit/verify").await?;
            match cli.output {
                Output::Json => json(&v)?,
                Output::Human => match &v.broken {
                    None => println!(
                        "ok: {} audit records verified; chain head {}",
                        v.verified, v.head
                    ),
                    Some(b) => {
                        println!(
                            "TAMPERED: audit record {} fails verification: {}",
                            b.seq,
                            safe(&b.why)
                        );
                        println!(
                            "{} records before it verified; everything from record {} on is untrusted",
                            v.verified, b.seq
                        );
                    }
                },
            }
            if !v.ok {
                return Ok(ExitCode::from(EXIT_TAMPERED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
