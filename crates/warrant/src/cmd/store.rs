//! `warrant store copy`: moving a single node to PostgreSQL.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::cli::{Cli, StoreCmd};
use crate::output::{emit, safe};

pub async fn run(cli: &Cli, cmd: &StoreCmd) -> anyhow::Result<ExitCode> {
    let StoreCmd::Copy {
        from,
        to,
        to_ca_file,
    } = cmd;
    if !from.join("warrant.db").is_file() {
        bail!(
            "`{}` holds no warrant store (warrant.db); name the data directory of the broker to move",
            from.display()
        );
    }
    warrant_store::check_postgres_url(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    // The broker must be stopped: its lock is taken for the copy.
    let dir = warrant_server::data_dir::DataDir::open(from)?;
    let kek = match std::env::var("WARRANT_KEK") {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            Some(Arc::new(
                warrant_token::Kek::from_base64(&text).context("WARRANT_KEK")?,
            ))
        }
        Err(_) if dir.root().join("kek").is_file() => None,
        Err(_) => bail!(
            "no key-encryption key: set WARRANT_KEK to the key the broker at `{}` used",
            from.display()
        ),
    };
    let (kek, _) = dir.kek(kek)?;
    let chain: Arc<dyn warrant_core::audit::ChainLinker> = Arc::new(
        warrant_token::AuditChainKey::derive(&kek).context("deriving the audit chain key")?,
    );
    let (db, to, ca) = (dir.db_path(), to.clone(), to_ca_file.clone());
    let runtime = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        warrant_store::copy::sqlite_to_postgres(&db, &to, chain, ca.as_deref(), &runtime)
    })
    .await
    .context("the copy stopped")??;
    drop(dir);
    emit(
        cli.output,
        &serde_json::json!({
            "tables": report.tables.iter().map(|(t, n)| serde_json::json!({"table": t, "rows": n})).collect::<Vec<_>>(),
            "audit_records": report.audit_records,
            "head": report.head,
        }),
        |_| {
            for (t, n) in &report.tables {
                println!("{:<18} {n} rows", safe(t));
            }
            println!(
                "ok: {} audit records copied and verified in PostgreSQL; chain head {}",
                report.audit_records, report.head
            );
            println!("start every broker with --store <the URL> and the same WARRANT_KEK");
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
