//! `warrant admin-token ...`: bearer tokens for the HTTP admin API.

use std::process::ExitCode;

use warrant_core::admin::AdminTokenRecord;
use warrant_core::api::{CreateAdminToken, CreatedAdminToken};
use warrant_core::time::Timestamp;

use crate::cli::{AdminTokenCmd, Cli, Output};
use crate::client::{AdminClient, segment};
use crate::output::{emit, json, safe, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &AdminTokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminTokenCmd::Create {
            role,
            ttl,
            name,
            person,
        } => {
            let t: CreatedAdminToken = client
                .post(
                    "/admin-tokens",
                    &CreateAdminToken {
                        role: role.clone(),
                        ttl: ttl.clone(),
                        name: name.clone(),
                        person: person.clone(),
                    },
                )
                .await?;
            match cli.output {
                Output::Json => json(&t)?,
                Output::Human => {
                    // The token alone on stdout, so `export WARRANT_ADMIN_TOKEN=$(warrant admin-token create ...)` works.
                    eprintln!(
                        "admin token {} (role {}) expires {}; it is shown only once, warrant keeps only its hash",
                        t.id, t.role, t.expires_at
                    );
                    println!("{}", t.token);
                }
            }
        }
        AdminTokenCmd::List => {
            let tokens: Vec<AdminTokenRecord> = client.get("/admin-tokens").await?;
            emit(cli.output, &tokens, |tokens| {
                let now = Timestamp::now();
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        let state = if t.revoked_at.is_some() {
                            "revoked"
                        } else if t.is_valid_at(now) {
                            "valid"
                        } else {
                            "expired"
                        };
                        vec![
                            t.id.clone(),
                            t.role.to_string(),
                            state.to_owned(),
                            t.expires_at.to_string(),
                            safe(&t.created_by),
                            safe(t.name.as_deref().unwrap_or("-")),
                            safe(t.person.as_deref().unwrap_or("-")),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "ROLE",
                        "STATE",
                        "EXPIRES",
                        "CREATED-BY",
                        "NAME",
                        "PERSON",
                    ],
                    &rows,
                );
            })?;
        }
        AdminTokenCmd::Revoke { id } => {
            let t: AdminTokenRecord = client
                .delete(&format!("/admin-tokens/{}", segment(id)))
                .await?;
            emit(cli.output, &t, |t| {
                println!("admin token {} is revoked", t.id)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
