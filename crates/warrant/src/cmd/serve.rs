//! `warrant serve`: configuration, logging, and the broker in the foreground.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use warrant_server::config::Settings;
use warrant_server::{Broker, Config};

use crate::cli::{Cli, LogFormat, Serve};

fn init_logging(args: &Serve) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).with_context(|| {
        format!(
            "--log `{}` is not a valid filter (try `info` or `warrant_server=debug`)",
            args.log
        )
    })?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Builds the configuration from flags, environment and the config file.
pub fn config(cli: &Cli, args: &Serve) -> anyhow::Result<Config> {
    let settings = Settings {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        store: args.store.clone(),
        store_ca_file: args.store_ca_file.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        insecure_http: args.insecure_http,
        api_addr: args.api_addr.clone(),
        edge_addr: args.edge_addr.clone(),
        trust_domain: args.trust_domain.clone(),
        issuer: args.issuer.clone(),
        policy_dir: args.policy_dir.clone(),
        max_delegation_depth: args.max_delegation_depth,
        signing_alg: args.signing_alg.clone(),
    };
    let mut config = Config::load(&settings)?;
    config.dev = args.dev;
    if let Ok(text) = std::env::var("WARRANT_KEK") {
        let text = zeroize::Zeroizing::new(text);
        let kek = warrant_token::Kek::from_base64(&text).context("WARRANT_KEK")?;
        config.kek = Some(Arc::new(kek));
    }
    Ok(config)
}

pub async fn run(cli: &Cli, args: &Serve) -> anyhow::Result<ExitCode> {
    init_logging(args)?;
    let config = config(cli, args)?;
    let broker = Broker::start(config).await?;
    broker.run_until_signalled().await?;
    Ok(ExitCode::SUCCESS)
}
