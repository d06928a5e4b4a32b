//! `warrant secret ...`: the secret store. Values go in, never out.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use warrant_core::api::SecretInfo;
use zeroize::Zeroizing;

use crate::cli::{Cli, SecretCmd, SecretValueArgs};
use crate::client::{AdminClient, segment};
use crate::output::{emit, safe, table};

/// Reads the value: the file, or standard input; one trailing newline (as
/// `echo` and editors leave) is removed.
fn read_value(args: &SecretValueArgs) -> anyhow::Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new(Vec::new());
    match &args.from_file {
        Some(f) => {
            let mut file =
                std::fs::File::open(f).with_context(|| format!("cannot read `{}`", f.display()))?;
            file.read_to_end(&mut raw)
                .with_context(|| format!("cannot read `{}`", f.display()))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("enter the secret's value, then press Ctrl-D:");
            }
            std::io::stdin()
                .read_to_end(&mut raw)
                .context("cannot read the value from standard input")?;
        }
    }
    if raw.ends_with(b"\n") {
        raw.pop();
        if raw.ends_with(b"\r") {
            raw.pop();
        }
    }
    if raw.is_empty() {
        bail!(
            "the value is empty; pipe it in (`warrant secret put NAME < key.txt`) or use --from-file"
        );
    }
    let text = Zeroizing::new(
        String::from_utf8(std::mem::take(&mut *raw))
            .map_err(|_| anyhow::anyhow!("the value is not UTF-8 text"))?,
    );
    Ok(text)
}

fn body(name: Option<&str>, args: &SecretValueArgs) -> anyhow::Result<serde_json::Value> {
    let value = read_value(args)?;
    Ok(serde_json::json!({
        "name": name,
        "for_user": args.for_user,
        "description": args.description,
        "value": value.as_str(),
    }))
}

fn owner_suffix(owner: Option<&str>) -> String {
    owner
        .map(|o| format!(" for user `{}`", safe(o)))
        .unwrap_or_default()
}

pub async fn run(cli: &Cli, client: AdminClient, cmd: &SecretCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCmd::Put { name, value } => {
            let s: SecretInfo = client.post("/secrets", &body(Some(name), value)?).await?;
            emit(cli.output, &s, |s| {
                println!(
                    "stored secret `{}`{} (version {})",
                    s.name,
                    owner_suffix(s.owner.as_deref()),
                    s.version
                )
            })?;
        }
        SecretCmd::Rotate { name, value } => {
            let s: SecretInfo = client
                .post(
                    &format!("/secrets/{}/rotate", segment(name)),
                    &body(None, value)?,
                )
                .await?;
            emit(cli.output, &s, |s| {
                println!(
                    "rotated secret `{}`{}: now version {}; the previous value is gone",
                    s.name,
                    owner_suffix(s.owner.as_deref()),
                    s.version
                )
            })?;
        }
        SecretCmd::Delete { name, for_user } => {
            let mut path = format!("/secrets/{}", segment(name));
            if let Some(u) = for_user {
                path.push_str(&format!("?for_user={}", segment(u)));
            }
            let s: SecretInfo = client.delete(&path).await?;
            emit(cli.output, &s, |s| {
                println!(
                    "deleted secret `{}`{}",
                    s.name,
                    owner_suffix(s.owner.as_deref())
                )
            })?;
        }
        SecretCmd::List => {
            let all: Vec<SecretInfo> = client.get("/secrets").await?;
            emit(cli.output, &all, |all| {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            safe(s.owner.as_deref().unwrap_or("(shared)")),
                            s.version.to_string(),
                            s.updated_at.to_string(),
                            s.last_used_at.map_or("never".into(), |t| t.to_string()),
                            safe(s.description.as_deref().unwrap_or("-")),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "OWNER",
                        "VERSION",
                        "UPDATED",
                        "LAST-USED",
                        "DESCRIPTION",
                    ],
                    &rows,
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
