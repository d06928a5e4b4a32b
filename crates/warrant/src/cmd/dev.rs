//! `warrant dev ...`: development helpers (need `warrant serve --dev`).

use std::process::ExitCode;

use warrant_core::api::{CreateDevUserToken, CreatedDevUserToken};

use crate::cli::{Cli, DevCmd};
use crate::client::AdminClient;
use crate::output::emit;

pub async fn run(cli: &Cli, client: AdminClient, cmd: &DevCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCmd::UserToken { user, groups, ttl } => {
            let t: CreatedDevUserToken = client
                .post(
                    "/dev/user-token",
                    &CreateDevUserToken {
                        user: user.clone(),
                        groups: groups.clone(),
                        ttl: Some(ttl.clone()),
                    },
                )
                .await?;
            emit(cli.output, &t, |t| {
                println!("{}", t.token);
                eprintln!(
                    "development user token for {} (issuer {}), expires {}; not for production",
                    t.user, t.issuer, t.expires_at
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
