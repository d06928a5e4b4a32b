//! `warrant health`: is the identity programme reducing risk?

use std::process::ExitCode;

use warrant_core::api::Health;

use crate::cli::{Cli, Output};
use crate::client::AdminClient;
use crate::output::{json, safe};

pub async fn run(cli: &Cli, client: AdminClient) -> anyhow::Result<ExitCode> {
    let h: Health = client.get("/health").await?;
    if cli.output == Output::Json {
        json(&h)?;
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{:.0}%", s * 100.0));
    let names = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            let shown: Vec<String> = v.iter().take(10).map(|s| safe(s)).collect();
            format!(
                ": {}{}",
                shown.join(", "),
                if v.len() > 10 { ", …" } else { "" }
            )
        }
    };
    let line = |k: &str, v: String| println!("{k:<22} {v}");
    let s = &h.secrets;
    line(
        "standing credentials",
        format!(
            "{} stored secrets ({} per user){}; {} unused for 30 days{}",
            s.stored,
            s.per_user,
            s.oldest_rotation_days
                .map(|d| format!(", the oldest set {d} days ago"))
                .unwrap_or_default(),
            s.unused_30d.len(),
            names(&s.unused_30d)
        ),
    );
    line(
        "ephemeral share",
        format!(
            "{} of {} upstream requests since start used a credential minted per use",
            pct(h.upstream.ephemeral_share),
            h.upstream.requests
        ),
    );
    line(
        "grants",
        format!(
            "{} delegated, {} self-acting ({} delegated)",
            h.grants.delegated,
            h.grants.self_acting,
            pct(h.grants.delegated_share)
        ),
    );
    let a = &h.agents;
    line(
        "agents",
        format!(
            "{} ({} active, {} disabled, {} quarantined)",
            a.total, a.active, a.disabled, a.quarantined
        ),
    );
    line(
        "  without an owner",
        format!("{}{}", a.without_owner.len(), names(&a.without_owner)),
    );
    line(
        "  not attested 30 days",
        format!("{}{}", a.not_attested_30d.len(), names(&a.not_attested_30d)),
    );
    line("instances alive", h.instances_alive.to_string());
    if h.enforcement.is_empty() {
        line(
            "enforcement",
            "nothing revoked or quarantined since start".into(),
        );
    }
    for (trigger, e) in &h.enforcement {
        line(
            &format!("enforcement ({trigger})"),
            format!(
                "mean {:.1} ms, slowest {:.1} ms, over {}",
                e.mean_ms, e.max_ms, e.count
            ),
        );
    }
    line(
        "approvals pending",
        format!(
            "{}{}",
            h.approvals.pending,
            h.approvals
                .oldest_pending_seconds
                .map(|s| format!(" (the oldest waiting {s} s)"))
                .unwrap_or_default()
        ),
    );
    let anomalies: Vec<String> = h
        .anomalies
        .iter()
        .take(10)
        .map(|a| format!("{} {}", safe(&a.agent), a.score))
        .collect();
    line(
        "anomaly scores",
        if anomalies.is_empty() {
            "every agent at 0".into()
        } else {
            anomalies.join(", ")
        },
    );
    Ok(ExitCode::SUCCESS)
}
