//! `warrant console sessions|end`: who is signed in to the web console, and
//! ending a person's sessions.

use std::process::ExitCode;

use warrant_core::api::{ConsoleSessionInfo, EndConsoleSessions, EndedConsoleSessions};

use crate::cli::{Cli, ConsoleCmd, Output};
use crate::client::AdminClient;
use crate::output::{json, safe, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &ConsoleCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ConsoleCmd::Sessions => {
            let list: Vec<ConsoleSessionInfo> = client.get("/console/sessions").await?;
            if cli.output == Output::Json {
                json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        safe(&s.actor),
                        s.via.clone(),
                        format!("{}s", s.age_seconds),
                        format!("{}s", s.idle_seconds),
                        s.ends_at.to_string(),
                    ]
                })
                .collect();
            table(&["ACTOR", "VIA", "AGE", "IDLE", "ENDS"], &rows);
        }
        ConsoleCmd::End { actor } => {
            let ended: EndedConsoleSessions = client
                .post(
                    "/console/sessions/end",
                    &EndConsoleSessions {
                        actor: actor.clone(),
                    },
                )
                .await?;
            if cli.output == Output::Json {
                json(&ended)?;
            } else {
                println!(
                    "ended {} console sessions of {}",
                    ended.ended,
                    safe(&ended.actor)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
