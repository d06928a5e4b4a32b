//! One module per subcommand.

mod admin_token;
mod agent;
mod approval;
mod audit;
mod console;
mod dev;
mod health;
mod keys;
mod live;
mod mcp;
mod policy;
mod revoke;
mod secret;
mod serve;
mod sidecar;
mod store;
mod token;

use std::path::PathBuf;

use anyhow::Context as _;
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
        Command::Approval(c) => approval::run(&cli, client(&cli)?, c).await,
        Command::Audit(c) => audit::run(&cli, client(&cli)?, c).await,
        Command::Policy(c) => policy::run(&cli, c).await,
        Command::Revoke(a) => revoke::run(&cli, client(&cli)?, a).await,
        Command::Dev(c) => dev::run(&cli, client(&cli)?, c).await,
        Command::Reload => live::reload(&cli, client(&cli)?).await,
        Command::Health => health::run(&cli, client(&cli)?).await,
        Command::Console(c) => console::run(&cli, client(&cli)?, c).await,
        Command::Status { all: false } => live::status(&cli, client(&cli)?).await,
        Command::Status { all: true } => live::cluster(&cli, client(&cli)?).await,
        Command::Route(c) => live::routes(&cli, client(&cli)?, c).await,
        Command::Store(c) => store::run(&cli, c).await,
        Command::Token(c) => token::run(&cli, c).await,
        Command::Sidecar(a) => sidecar::run(&cli, a).await,
    }
}

/// The data directory's run file, if its broker is one this user trusts:
/// the directory and the file owned by this user or root and writable by no
/// one else. Both are opened without following a symlink and the file is
/// read from the descriptor that was checked, so a directory swapped in
/// between (a symlink race in a shared directory) is never read (attacker
/// round). A broker run by another user keeps its run file private anyway
/// (0600): name it with `--url`.
fn trusted_run_info(dir: &std::path::Path) -> Option<warrant_server::data_dir::RunInfo> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read as _;
    let me = rustix::process::geteuid().as_raw();
    let trusted =
        |st: &rustix::fs::Stat| (st.st_uid == me || st.st_uid == 0) && st.st_mode & 0o022 == 0;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let d = rustix::fs::open(dir, flags | OFlags::DIRECTORY, Mode::empty()).ok()?;
    let ds = rustix::fs::fstat(&d).ok()?;
    let file = rustix::fs::openat(&d, "run.json", flags, Mode::empty()).ok()?;
    let fs = rustix::fs::fstat(&file).ok()?;
    let regular = fs.st_mode & 0o170_000 == 0o100_000;
    if !(trusted(&ds) && trusted(&fs) && regular && fs.st_uid == ds.st_uid) {
        tracing::warn!(dir = %dir.display(), "not using the run file: its data directory is not one this user trusts (owned by you or root, writable by no one else)");
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The agent-side client for `warrant token` and `warrant sidecar`: the
/// broker from `--url` (or the data directory's run file, or the default
/// address), attesting in exactly one way (the agent socket by default).
pub fn agent_client(cli: &Cli, a: &crate::cli::AgentArgs) -> anyhow::Result<crate::agent::Agent> {
    use crate::agent::{Agent, AgentConfig, Attestation};
    let dir = data_dir(cli)?;
    // INVARIANT (tokens go only to the broker you named): the run file is
    // believed only when its broker is trusted as the admin CLI trusts an
    // admin socket; otherwise the URLs must be given. A default address
    // would send join tokens, platform tokens and users' tokens to whatever
    // local process bound it first.
    let run = trusted_run_info(&dir);
    let api = match (&cli.url, &run) {
        (Some(u), _) => u.clone(),
        (None, Some(r)) => format!("http://{}", r.api_addr),
        (None, None) => anyhow::bail!(
            "say where the broker is: --url (or WARRANT_URL) with its API address, or --data-dir naming a running broker's data directory owned by you or root and writable by no one else"
        ),
    };
    let edge = match (&a.edge_url, &run) {
        (Some(u), _) => u.clone(),
        (None, Some(r)) => format!("http://{}", r.edge_addr),
        // Only the sidecar reaches the edge; it checks this before use.
        (None, None) => String::new(),
    };
    let given = [
        a.agent_socket.is_some(),
        a.oidc_token_file.is_some(),
        a.join_token.is_some(),
        a.join_token_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        anyhow::bail!(
            "more than one attestation is given (--agent-socket, --oidc-token-file, --join-token, --join-token-file, or their WARRANT_* variables); give exactly one"
        );
    }
    let attestation = if let Some(f) = &a.oidc_token_file {
        Attestation::OidcFile(f.clone())
    } else if let Some(t) = &a.join_token {
        Attestation::Join(parking_lot::Mutex::new(Some(zeroize::Zeroizing::new(
            t.trim().to_owned(),
        ))))
    } else if let Some(f) = &a.join_token_file {
        let t = zeroize::Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the join token file `{}`", f.display()))?,
        );
        Attestation::Join(parking_lot::Mutex::new(Some(zeroize::Zeroizing::new(
            t.trim().to_owned(),
        ))))
    } else {
        Attestation::Socket(
            a.agent_socket
                .clone()
                .unwrap_or_else(|| dir.join("agent.sock")),
        )
    };
    Agent::new(AgentConfig {
        api,
        edge,
        attestation,
        ca_file: cli.ca_file.clone(),
    })
}
