//! `warrant audit ...`: reading and verifying the trail.

use std::process::ExitCode;

use warrant_core::api::{AuditList, AuditListQuery, AuditTrace, AuditVerification};
use warrant_core::task::TaskRecord;

use crate::cli::{AuditCmd, Cli, Output};
use crate::client::AdminClient;
use crate::cmd::EXIT_TAMPERED;
use crate::output::{emit, json, safe, table};

/// The tree: each task under its parent, with the decisions recorded for it.
fn print_trace(t: &AuditTrace) {
    let subject = t.tasks.first().map_or("-", |r| r.subject.as_str());
    println!("txn {}  for {}", t.txn, safe(subject));
    fn walk(t: &AuditTrace, parent: Option<&str>, depth: usize) {
        for task in t.tasks.iter().filter(|x| x.parent.as_deref() == parent) {
            line(t, task, depth);
            walk(t, Some(&task.task), depth + 1);
        }
    }
    fn line(t: &AuditTrace, task: &TaskRecord, depth: usize) {
        let pad = "  ".repeat(depth + 1);
        let state = match task.revoked_at {
            Some(r) => format!("revoked {r}"),
            None => format!("expires {}", task.expires_at),
        };
        println!(
            "{pad}└─ {} {}  agent {} ({})  scope \"{}\"  aud {}  {}",
            task.task,
            if task.parent.is_none() { "(root)" } else { "" },
            task.agent,
            task.instance,
            safe(&task.scope),
            safe(&task.audience.join(",")),
            state
        );
        for r in t
            .records
            .iter()
            .filter(|r| r.event.task.as_deref() == Some(task.task.as_str()))
        {
            println!(
                "{pad}   #{} {} {} {}",
                r.seq,
                safe(&r.event.event),
                r.event.decision,
                safe(&r.event.reasons.join("; "))
            );
        }
    }
    walk(t, None, 0);
    let loose: Vec<_> = t
        .records
        .iter()
        .filter(|r| r.event.task.is_none())
        .collect();
    if !loose.is_empty() {
        println!("  refused or untasked:");
        for r in loose {
            println!(
                "    #{} {} {} {} {}",
                r.seq,
                safe(&r.event.event),
                r.event.decision,
                safe(r.event.agent.as_deref().unwrap_or("-")),
                safe(&r.event.reasons.join("; "))
            );
        }
    }
}

pub async fn run(cli: &Cli, client: AdminClient, cmd: &AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Trace { txn } => {
            let t: AuditTrace = client
                .get(&format!("/audit/trace/{}", crate::client::segment(txn)))
                .await?;
            emit(cli.output, &t, print_trace)?;
        }
        AuditCmd::List {
            agent,
            event,
            since,
            limit,
            user,
            task,
            txn,
            decision,
        } => {
            let q = AuditListQuery {
                decision: decision.clone(),
                agent: agent.clone(),
                event: event.clone(),
                since: since.clone(),
                limit: Some(*limit),
                user: user.clone(),
                task: task.clone(),
                txn: txn.clone(),
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
                            safe(e.task.as_deref().unwrap_or("-")),
                            safe(e.txn.as_deref().unwrap_or("-")),
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
                        "SEQ", "TIME", "EVENT", "DECISION", "AGENT", "ACTOR", "TASK", "TXN",
                        "DETAIL",
                    ],
                    &rows,
                );
            })?;
        }
        AuditCmd::Checkpoint => {
            let cps: Vec<warrant_core::audit::Checkpoint> = client
                .post("/audit/checkpoints", &serde_json::json!({}))
                .await?;
            let Some(cp) = cps.into_iter().next() else {
                anyhow::bail!("the audit trail is empty: there is nothing to checkpoint");
            };
            emit(cli.output, &cp, |cp| println!("{}", cp.signed))?;
        }
        AuditCmd::Verify { checkpoints } => {
            let mut given = Vec::new();
            for f in checkpoints {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", f.display()))?;
                given.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
            }
            let v: AuditVerification = client
                .post(
                    "/audit/verify",
                    &warrant_core::api::AuditVerify { checkpoints: given },
                )
                .await?;
            match cli.output {
                Output::Json => json(&v)?,
                Output::Human => match &v.broken {
                    None if !v.ok => {
                        for c in v.checkpoints.iter().filter(|c| !c.ok) {
                            println!(
                                "TAMPERED: the checkpoint of record {} does not match the chain: {}",
                                c.seq,
                                safe(c.why.as_deref().unwrap_or(""))
                            );
                        }
                    }
                    None => {
                        println!(
                            "ok: {} audit records verified; chain head {}; {} checkpoint{} match",
                            v.verified,
                            v.head,
                            v.checkpoints.len(),
                            if v.checkpoints.len() == 1 { "" } else { "s" }
                        );
                        if v.unkeyed > 0 {
                            println!(
                                "note: records 1 to {} predate the keyed chain and are hash-chained only; this number should never grow",
                                v.unkeyed
                            );
                        }
                    }
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
        AuditCmd::VerifyExport { files } => return verify_export(cli, &client, files).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the export's lines to the broker in parts, checking that each
/// part continues the one before (the broker checks each part against its
/// chain and key).
async fn verify_export(
    cli: &Cli,
    client: &AdminClient,
    files: &[std::path::PathBuf],
) -> anyhow::Result<ExitCode> {
    use warrant_core::api::{ExportVerification, VerifyExport};
    let mut lines = Vec::new();
    for f in files {
        let text = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", f.display()))?
        };
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    if lines.is_empty() {
        anyhow::bail!("the files hold no exported records");
    }
    let (mut verified, mut first, mut last_seq, mut head) = (0u64, None, 0u64, String::new());
    let mut broker_last = 0u64;
    let mut failed = None;
    for part in lines.chunks(2000) {
        let v: ExportVerification = client
            .post(
                "/audit/verify-export",
                &VerifyExport {
                    lines: part.to_vec(),
                },
            )
            .await?;
        first.get_or_insert(v.first_seq);
        if verified > 0 && v.first_seq != last_seq + 1 {
            failed = Some((
                last_seq + 1,
                format!("the export skips from record {last_seq} to {}", v.first_seq),
            ));
            break;
        }
        verified += v.verified;
        if let Some(b) = v.broken {
            failed = Some((b.seq, b.why));
            break;
        }
        last_seq = v.last_seq;
        head = v.head;
        broker_last = v.broker_last_seq;
    }
    let first = first.unwrap_or(0);
    match (&failed, cli.output) {
        (_, Output::Json) => json(&serde_json::json!({
            "ok": failed.is_none(),
            "verified": verified,
            "first_seq": first,
            "last_seq": last_seq,
            "head": head,
            "broker_last_seq": broker_last,
            "broken": failed.as_ref().map(|(seq, why)| serde_json::json!({"seq": seq, "why": why})),
        }))?,
        (None, Output::Human) => {
            println!(
                "ok: {verified} exported audit records verified (records {first} to {last_seq}); they are the broker's, head {head}"
            );
            // What is checked is the part given; where it starts and ends
            // is for the reader to judge against the trail.
            if first > 1 {
                println!(
                    "note: the export starts at record {first}; records 1 to {} are not in it",
                    first - 1
                );
            }
            if broker_last > last_seq {
                println!(
                    "note: the broker's trail is at record {broker_last}; the export ends {} records before it (behind, or cut short)",
                    broker_last - last_seq
                );
            }
        }
        (Some((seq, why)), Output::Human) => {
            println!(
                "TAMPERED: exported record {seq} fails verification: {}",
                safe(why)
            );
            println!("{verified} records before it verified");
        }
    }
    Ok(if failed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_TAMPERED)
    })
}
