//! `warrant`: the broker and its command-line interface.
//!
//! `main` only parses and dispatches; each subcommand lives in [`cmd`]. Exit
//! codes: 0 success, 1 error, 2 bad usage, 3 a policy check that did not
//! allow, 4 an audit chain that failed verification.

mod agent;
mod cli;
mod client;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// Whether a panic is `println!` failing on a reader that went away
/// (`warrant ... | head -1`): the output was not wanted, so the process
/// ends quietly, as a program killed by SIGPIPE does.
fn broken_pipe(info: &std::panic::PanicHookInfo<'_>) -> bool {
    let text = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or_default();
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}

fn main() -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if broken_pipe(info) {
            // 128 + SIGPIPE, what a shell reports for a program it killed.
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = cli::Cli::parse();
    let serving = matches!(cli.command, cli::Command::Serve(_));
    let runtime = if serving {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let output = cli.output;
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            report(output, &e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error to stderr: a line of text, or with `--output json`
/// `{"error": {"code", "status", "message"}}` (status only when the broker
/// answered; code `no_broker` when it could not be reached, `cli` for the
/// CLI's own errors).
fn report(output: cli::Output, e: &anyhow::Error) {
    if output != cli::Output::Json {
        // The broker's message may quote names an operator or a file chose:
        // each line is shown without escapes or reordering characters.
        let text = format!("{e:#}");
        let lines: Vec<String> = text.lines().map(output::safe).collect();
        eprintln!("error: {}", lines.join("\n"));
        return;
    }
    let (code, status) = if let Some(f) = e.downcast_ref::<client::ApiFailure>() {
        (f.code.as_str(), Some(f.status))
    } else if e.is::<client::NoBroker>() {
        ("no_broker", None)
    } else {
        ("cli", None)
    };
    let body = serde_json::json!({
        "error": { "code": code, "status": status, "message": format!("{e:#}") }
    });
    eprintln!("{body}");
}
