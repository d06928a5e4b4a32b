//! `warrant agent ...`: the inventory.

use std::process::ExitCode;

use warrant_core::agent::Agent;
use warrant_core::api::{CreateAgent, CreateJoinToken, CreatedJoinToken};
use warrant_core::identity::Instance;

use crate::cli::{AgentCmd, Cli};
use crate::client::{AdminClient, segment};
use crate::output::{emit, safe, table};

fn selectors(a: &Agent) -> String {
    let v: Vec<String> = a.selectors.iter().map(ToString::to_string).collect();
    if v.is_empty() {
        "-".into()
    } else {
        safe(&v.join(","))
    }
}

fn show(a: &Agent) {
    println!("name:       {}", a.name);
    println!("id:         {}", a.id);
    println!("status:     {}", a.status);
    println!("owner:      {}", safe(a.owner.as_str()));
    println!("env:        {}", a.env);
    println!("trust:      {}", a.trust);
    println!("purpose:    {}", safe(a.purpose.as_str()));
    println!("max-ttl:    {}", a.max_ttl);
    println!("selectors:  {}", selectors(a));
    println!("created:    {}", a.created_at);
    println!("updated:    {}", a.updated_at);
}

pub async fn run(cli: &Cli, client: AdminClient, cmd: &AgentCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCmd::Create(c) => {
            let req = CreateAgent {
                name: c.name.clone(),
                owner: c.owner.clone(),
                env: c.env.clone(),
                purpose: c.purpose.clone(),
                trust: c.trust.clone(),
                selectors: c.selectors.clone(),
                max_ttl: c.max_ttl.clone(),
            };
            let a: Agent = client.post("/agents", &req).await?;
            if let Some(w) = a.selectors.interpreter_warning() {
                eprintln!("warning: {w}");
            }
            emit(cli.output, &a, |a| {
                println!("registered agent {} ({})", a.name, a.id);
                show(a);
            })?;
        }
        AgentCmd::List => {
            let agents: Vec<Agent> = client.get("/agents").await?;
            emit(cli.output, &agents, |agents| {
                if agents.is_empty() {
                    println!(
                        "no agents; register one with `warrant agent create NAME --owner OWNER --env ENV`"
                    );
                    return;
                }
                let rows: Vec<Vec<String>> = agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.to_string(),
                            a.status.to_string(),
                            a.env.to_string(),
                            a.trust.to_string(),
                            a.max_ttl.to_string(),
                            safe(a.owner.as_str()),
                            selectors(a),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "STATUS",
                        "ENV",
                        "TRUST",
                        "MAX-TTL",
                        "OWNER",
                        "SELECTORS",
                    ],
                    &rows,
                );
            })?;
        }
        AgentCmd::Show { name } => {
            let a: Agent = client.get(&format!("/agents/{}", segment(name))).await?;
            emit(cli.output, &a, show)?;
        }
        AgentCmd::Disable { name } => {
            let a: Agent = client
                .post(
                    &format!("/agents/{}/disable", segment(name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(cli.output, &a, |a| {
                println!(
                    "agent {} is disabled: nothing will be issued to it until `warrant agent enable {}`",
                    a.name, a.name
                )
            })?;
        }
        AgentCmd::Enable { name } => {
            let a: Agent = client
                .post(
                    &format!("/agents/{}/enable", segment(name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(cli.output, &a, |a| println!("agent {} is active", a.name))?;
        }
        AgentCmd::Quarantine { name } => {
            let a: Agent = client
                .post(
                    &format!("/agents/{}/quarantine", segment(name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(cli.output, &a, |a| {
                println!(
                    "agent {} is quarantined: its live tasks are revoked and nothing is issued to it until `warrant agent release {}`",
                    a.name, a.name
                );
            })?;
        }
        AgentCmd::Release { name } => {
            let a: Agent = client
                .post(
                    &format!("/agents/{}/release", segment(name)),
                    &serde_json::json!({}),
                )
                .await?;
            emit(cli.output, &a, |a| {
                println!("agent {} is released and active again", a.name)
            })?;
        }
        AgentCmd::Delete { name } => {
            let a: Agent = client.delete(&format!("/agents/{}", segment(name))).await?;
            emit(cli.output, &a, |a| {
                println!("deleted agent {} ({})", a.name, a.id)
            })?;
        }
        AgentCmd::JoinToken { name, ttl } => {
            let t: CreatedJoinToken = client
                .post(
                    &format!("/agents/{}/join-tokens", segment(name)),
                    &CreateJoinToken {
                        ttl: Some(ttl.clone()),
                    },
                )
                .await?;
            emit(cli.output, &t, |t| {
                // The token alone on stdout, so `$(warrant agent join-token x)` works.
                println!("{}", t.token);
                eprintln!(
                    "join token {} admits one instance of agent {} until {}; it is shown only once, warrant keeps only its hash",
                    t.id, t.agent, t.expires_at
                );
            })?;
        }
        AgentCmd::Discovered { since } => {
            let list: Vec<warrant_core::discovery::Candidate> = client
                .get(&format!("/discovered?since={}", segment(since)))
                .await?;
            emit(cli.output, &list, |list| {
                if list.is_empty() {
                    println!("no unregistered workload tried to attest since {since}");
                    return;
                }
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.attestor.clone(),
                            c.attempts.to_string(),
                            c.last_seen.to_string(),
                            c.evidence
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" "),
                        ]
                    })
                    .collect();
                table(&["ATTESTOR", "ATTEMPTS", "LAST-SEEN", "EVIDENCE"], &rows);
                println!();
                for c in list {
                    println!("{}", c.command);
                }
            })?;
        }
        AgentCmd::Instances { name } => {
            let list: Vec<Instance> = client
                .get(&format!("/agents/{}/instances", segment(name)))
                .await?;
            let now = warrant_core::time::Timestamp::now();
            emit(cli.output, &list, |list| {
                if list.is_empty() {
                    println!("no instances of {name} have attested yet");
                    return;
                }
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.to_string(),
                            i.attestor.to_string(),
                            if i.expires_at > now {
                                "live"
                            } else {
                                "expired"
                            }
                            .to_owned(),
                            i.first_seen.to_string(),
                            i.last_seen.to_string(),
                            safe(&i.evidence),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "INSTANCE",
                        "ATTESTOR",
                        "STATE",
                        "FIRST-SEEN",
                        "LAST-SEEN",
                        "EVIDENCE",
                    ],
                    &rows,
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
