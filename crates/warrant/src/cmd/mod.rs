//! One module per subcommand.

mod admin_token;
mod agent;
mod audit;
mod dev;
mod keys;
mod live;
mod mcp;
mod policy;
mod revoke;
mod secret;
mod serve;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::client::AdminClient;

/// Exit code of a policy check that did not allow.
pub const EXIT_DENIED: u8 = 3;
/// Exit code of an audit chain that failed verification.
pub const EXIT_TAMPERED: u8 = 4;
/// Exit code of `mcp approve` without `--digest`: shown, not approved.
pub const EXIT_REVIEW: u8 = 5;

/// The data directory: flag or environment, then the config file, then the default.
pub fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(d) = &cli.data_dir {
        return Ok(d.clone());
    }
    let settings = warrant_server::config::Settings {
        config: cli.config.clone(),
        ..Default::default()
    };
    Ok(warrant_server::Config::load(&settings)?.data_dir)
}

pub fn client(cli: &Cli) -> anyhow::Result<AdminClient> {
    // Named, not defaulted: an absolute path the user gave (flag,
    // environment, or a config file's `data_dir`, resolved from the file's
    // directory). A relative one depends on the current directory, which
    // may be anyone's.
    let dir = data_dir(cli)?;
    let explicit = dir.is_absolute();
    AdminClient::new(&dir, explicit, cli.url.as_deref(), cli.ca_file.as_deref())
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve(args) => serve::run(&cli, args).await,
        Command::Agent(c) => agent::run(&cli, client(&cli)?, c).await,
        Command::Keys(c) => keys::run(&cli, client(&cli)?, c).await,
        Command::AdminToken(c) => admin_token::run(&cli, client(&cli)?, c).await,
        Command::Secret(c) => secret::run(&cli, client(&cli)?, c).await,
        Command::Mcp(c) => mcp::run(&cli, client(&cli)?, c).await,
        Command::Audit(c) => audit::run(&cli, client(&cli)?, c).await,
        Command::Policy(c) => policy::run(&cli, c).await,
        Command::Revoke(a) => revoke::run(&cli, client(&cli)?, a).await,
        Command::Dev(c) => dev::run(&cli, client(&cli)?, c).await,
        Command::Reload => live::reload(&cli, client(&cli)?).await,
        Command::Status { all: false } => live::status(&cli, client(&cli)?).await,
        Command::Status { all: true } => live::cluster(&cli, client(&cli)?).await,
        Command::Route(c) => live::routes(&cli, client(&cli)?, c).await,
        Command::Store(c) => store::run(&cli, c).await,
    }
}
