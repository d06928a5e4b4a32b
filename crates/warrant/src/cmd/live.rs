//! `warrant reload`, `warrant status`, `warrant route list` and `warrant
//! mcp servers`: the running configuration.

use std::process::ExitCode;

use warrant_core::api::{BrokerStatus, Changed, ClusterStatus, McpServerInfo, Reloaded, RouteInfo};

use crate::cli::{Cli, RouteCmd};
use crate::client::AdminClient;
use crate::output::{emit, safe, table};

pub async fn reload(cli: &Cli, client: AdminClient) -> anyhow::Result<ExitCode> {
    let r: Reloaded = client.post("/reload", &serde_json::json!({})).await?;
    emit(cli.output, &r, |r| {
        println!(
            "reloaded {} (sha256 {})",
            r.config
                .file
                .as_deref()
                .map_or("(no config file)".into(), safe),
            r.config
                .digest
                .as_deref()
                .map_or("-", |d| &d[..d.len().min(16)])
        );
        for (what, c) in [
            ("routes", &r.routes),
            ("MCP servers", &r.mcp_servers),
            ("user issuers", &r.user_issuers),
            ("trust providers", &r.trust_providers),
        ] {
            println!("{what}: {}", describe(c));
        }
        for k in &r.restart_needed {
            println!("note: `{}` changed; it applies at the next start", safe(k));
        }
        crate::cmd::policy::print_status(&r.policy);
    })?;
    Ok(ExitCode::SUCCESS)
}

fn describe(c: &Changed) -> String {
    if c.is_empty() {
        return "unchanged".into();
    }
    let mut parts = Vec::new();
    for (label, names) in [
        ("added", &c.added),
        ("removed", &c.removed),
        ("changed", &c.changed),
    ] {
        if !names.is_empty() {
            let names: Vec<String> = names.iter().map(|n| safe(n)).collect();
            parts.push(format!("{label} {}", names.join(", ")));
        }
    }
    parts.join("; ")
}

pub async fn status(cli: &Cli, client: AdminClient) -> anyhow::Result<ExitCode> {
    let s: BrokerStatus = client.get("/status").await?;
    emit(cli.output, &s, |s| {
        let rows = [
            ("version", s.version.clone()),
            ("issuer", safe(&s.issuer)),
            ("trust domain", safe(&s.trust_domain)),
            ("api", s.api_addr.clone()),
            ("edge", s.edge_addr.clone()),
            ("admin socket", safe(&s.admin_socket)),
            ("agent socket", safe(&s.agent_socket)),
            ("store", safe(&s.store)),
            (
                "started",
                format!("{} (up {}s)", s.started_at, s.uptime_secs),
            ),
            (
                "config",
                format!(
                    "{} sha256 {} loaded {}",
                    s.config.file.as_deref().map_or("(none)".into(), safe),
                    s.config.digest.as_deref().unwrap_or("-"),
                    s.config.loaded_at
                ),
            ),
            (
                "policy",
                format!("{} policies, sha256 {}", s.policies, s.policy_digest),
            ),
            ("keys", s.key_ids.join(", ")),
            ("routes", s.routes.to_string()),
            ("mcp servers", s.mcp_servers.to_string()),
            ("broker", s.broker.clone()),
        ];
        for (k, v) in rows {
            println!("{k:<13} {v}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `warrant status --all`: every broker sharing the store.
pub async fn cluster(cli: &Cli, client: AdminClient) -> anyhow::Result<ExitCode> {
    let c: ClusterStatus = client.get("/cluster").await?;
    emit(cli.output, &c, |c| {
        println!("store {}", safe(&c.store));
        if c.members.is_empty() {
            println!(
                "no broker reports to this store: it is not shared (SQLite), or none reported in the last 10 s"
            );
            return;
        }
        let rows: Vec<Vec<String>> = c
            .members
            .iter()
            .map(|m| {
                vec![
                    safe(&m.broker),
                    safe(&m.version),
                    safe(&m.api_addr),
                    // Reports come from the database: shown safely.
                    safe(&m.policy_digest.chars().take(12).collect::<String>()),
                    m.config_digest.as_deref().map_or("-".into(), |d| {
                        safe(&d.chars().take(12).collect::<String>())
                    }),
                    m.feed_position.to_string(),
                    if m.feed_connected {
                        format!("{} ms", m.feed_lag_ms)
                    } else {
                        "DEAF".into()
                    },
                    m.seen_at.to_string(),
                ]
            })
            .collect();
        table(
            &[
                "BROKER", "VERSION", "API", "POLICY", "CONFIG", "FEED", "LAG", "SEEN",
            ],
            &rows,
        );
        for d in &c.diverged {
            println!("DIVERGED: {}", safe(d));
        }
    })?;
    Ok(if c.diverged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn routes(cli: &Cli, client: AdminClient, cmd: &RouteCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        RouteCmd::List => {
            let routes: Vec<RouteInfo> = client.get("/routes").await?;
            emit(cli.output, &routes, |routes| {
                let rows: Vec<Vec<String>> = routes
                    .iter()
                    .map(|r| {
                        vec![
                            safe(&r.name),
                            safe(&r.upstream),
                            safe(&r.audience),
                            safe(&r.agent_header),
                            safe(&r.credential),
                            safe(&r.allow.join("; ")),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ROUTE",
                        "UPSTREAM",
                        "AUDIENCE",
                        "TOKEN-IN",
                        "CREDENTIAL",
                        "ALLOW",
                    ],
                    &rows,
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn mcp_servers(cli: &Cli, client: &AdminClient) -> anyhow::Result<()> {
    let servers: Vec<McpServerInfo> = client.get("/mcp/servers").await?;
    emit(cli.output, &servers, |servers| {
        let rows: Vec<Vec<String>> = servers
            .iter()
            .map(|s| {
                vec![
                    safe(&s.name),
                    s.transport.clone(),
                    safe(&s.target),
                    safe(&s.audience),
                    s.scope.as_deref().map_or("-".into(), safe),
                    if s.listed {
                        format!("{} usable, {} changed, {} held", s.tools, s.changed, s.held)
                    } else {
                        "(not listed yet)".into()
                    },
                ]
            })
            .collect();
        table(
            &[
                "SERVER",
                "TRANSPORT",
                "TARGET",
                "AUDIENCE",
                "SCOPE",
                "TOOLS",
            ],
            &rows,
        );
    })
}
