//! `warrant keys ...`: signing keys.

use std::process::ExitCode;

use warrant_core::api::{KeyInfo, RotateKeys};

use crate::cli::{Cli, KeysCmd};
use crate::client::AdminClient;
use crate::output::{emit, table};

pub async fn run(cli: &Cli, client: AdminClient, cmd: &KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::List => {
            let keys: Vec<KeyInfo> = client.get("/keys").await?;
            emit(cli.output, &keys, |keys| {
                let opt = |t: &Option<warrant_core::Timestamp>| {
                    t.map_or("-".to_owned(), |t| t.to_string())
                };
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.kid.clone(),
                            k.alg.to_string(),
                            k.state.clone(),
                            k.activates_at.to_string(),
                            opt(&k.retired_at),
                            opt(&k.published_until),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "KID",
                        "ALG",
                        "STATE",
                        "SIGNS-FROM",
                        "RETIRED",
                        "PUBLISHED-UNTIL",
                    ],
                    &rows,
                );
            })?;
        }
        KeysCmd::Rotate { alg, activate_in } => {
            let k: KeyInfo = client
                .post(
                    "/keys/rotate",
                    &RotateKeys {
                        alg: alg.clone(),
                        activate_in: activate_in.clone(),
                    },
                )
                .await?;
            emit(cli.output, &k, |k| {
                println!(
                    "new {} key {} is published in the JWKS now and signs from {}",
                    k.alg, k.kid, k.activates_at
                );
                println!(
                    "the current key keeps signing until then, and stays published until every token it signed has expired"
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
