//! `warrant revoke`: task tokens, with their descendants.

use std::process::ExitCode;

use warrant_core::api::Revoked;
use warrant_core::task::RevokeTarget;

use crate::cli::{Cli, RevokeArgs};
use crate::client::AdminClient;
use crate::output::emit;

pub async fn run(cli: &Cli, client: AdminClient, a: &RevokeArgs) -> anyhow::Result<ExitCode> {
    let target = match (&a.jti, &a.task, &a.txn, &a.instance, &a.agent) {
        (Some(v), ..) => RevokeTarget::Jti(v.clone()),
        (_, Some(v), ..) => RevokeTarget::Task(v.clone()),
        (_, _, Some(v), ..) => RevokeTarget::Txn(v.clone()),
        (_, _, _, Some(v), _) => RevokeTarget::Instance(v.clone()),
        (_, _, _, _, Some(v)) => RevokeTarget::Agent(v.clone()),
        _ => anyhow::bail!("say what to revoke: --jti, --task, --txn, --instance or --agent"),
    };
    let r: Revoked = client.post("/revoke", &target).await?;
    emit(cli.output, &r, |r| {
        println!(
            "revoked {}: {} task{} ({} µs)",
            r.target,
            r.tasks.len(),
            if r.tasks.len() == 1 { "" } else { "s" },
            r.micros
        );
        for t in &r.tasks {
            println!("  {t}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
