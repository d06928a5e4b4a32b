//! docs/quickstart.md and docs/agents.md, run as written.
//!
//! Every `sh` block runs in order in one shell (`sh -eu`) in a fresh directory,
//! with the binary under test first on `PATH`, then the test venv (for
//! `python3`). `cargo` lines are skipped (the binary is already built), and
//! `pip install` lines (the venv has what they install). The block that is only `warrant serve` runs in the
//! background, as the page's first terminal, in the directory the blocks
//! before it went to (they write the configuration it reads); `TMPDIR` is
//! the test's fresh directory, so the page's `${TMPDIR:-/tmp}` is inside it. The page's ports (8700, 8701) are
//! swapped for free ones. Every line of a `text` block must appear in one line
//! of what the commands and the broker printed, `…` matching anything.

use crate::support::{bin, free_port, matches};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("../../../../docs/quickstart.md");

struct Blocks {
    setup: String,
    serve: String,
    script: String,
    expected: Vec<String>,
}

fn blocks(page: &str) -> Blocks {
    let mut out = Blocks {
        setup: String::new(),
        serve: String::new(),
        script: String::new(),
        expected: Vec::new(),
    };
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        match lang {
            "sh" if body.len() == 1 && body[0].starts_with("warrant serve") => {
                assert!(out.serve.is_empty(), "one `warrant serve` block");
                out.serve = body[0].to_owned();
            }
            "sh" => {
                let to = if out.serve.is_empty() {
                    &mut out.setup
                } else {
                    &mut out.script
                };
                for l in body
                    .iter()
                    .filter(|l| !l.starts_with("cargo ") && !l.starts_with("pip install "))
                {
                    to.push_str(l);
                    to.push('\n');
                }
            }
            "text" => out.expected.extend(
                body.iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| (*l).to_owned()),
            ),
            other => panic!(
                "a ```{other} block; use sh or text (write files with `cat > f <<'EOF'`, so they run)"
            ),
        }
    }
    assert!(!out.serve.is_empty(), "the page starts the broker");
    out
}

#[test]
fn matcher_needs_every_piece_in_order() {
    assert!(matches("a … c", "a b c"));
    assert!(matches("ok: … records", "ok: 3 records"));
    assert!(!matches("a … c", "c b a"));
    assert!(!matches("allow", "deny"));
}

#[test]
fn quickstart_runs_as_written() {
    let work = run_page(PAGE, "warrant-quickstart", &[]);
    assert!(
        Path::new(
            &work
                .path()
                .join("warrant-quickstart/warrant-data/policies/quickstart.cedar")
        )
        .exists(),
        "the page wrote its policy into the data directory"
    );
}

/// docs/agents.md, run as written (its extra port: the sidecar's 8780).
#[test]
fn agents_page_runs_as_written() {
    run_page(AGENTS, "warrant-agents", &[8780]);
}

const AGENTS: &str = include_str!("../../../../docs/agents.md");

/// Runs a page as the module says; `work` is the directory its set-up goes
/// to, `extra` more of its ports to swap for free ones. Returns the temp
/// directory it ran in.
fn run_page(page: &str, work_name: &str, extra: &[u16]) -> tempfile::TempDir {
    let (api, edge) = (free_port(), free_port());
    let mut page = page
        .replace("127.0.0.1:8700", &format!("127.0.0.1:{api}"))
        .replace("127.0.0.1:8701", &format!("127.0.0.1:{edge}"));
    for p in extra {
        page = page.replace(
            &format!("127.0.0.1:{p}"),
            &format!("127.0.0.1:{}", free_port()),
        );
    }
    let b = blocks(&page);
    let dir = tempfile::Builder::new()
        .prefix("wq")
        .tempdir_in("/tmp")
        .unwrap();
    let bin_dir = bin().parent().unwrap();
    // The page's `python3` is the test venv's, where `pip install` put the
    // SDK and the clients (the page's `pip` lines are skipped).
    let venv = crate::support::repo().join("target/interop-venv/bin");
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = |c: &mut Command| {
        c.current_dir(dir.path())
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| !k.starts_with("WARRANT_")))
            .env("PATH", &path)
            .env("TMPDIR", dir.path())
            .env("WARRANT_API_ADDR", format!("127.0.0.1:{api}"))
            .env("WARRANT_EDGE_ADDR", format!("127.0.0.1:{edge}"));
    };

    // What the page does before starting the broker.
    let mut setup = Command::new("sh");
    env(&mut setup);
    let out = setup.args(["-eu", "-c", &b.setup]).output().unwrap();
    assert!(
        out.status.success(),
        "the page's set-up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The first terminal, in the directory the set-up went to.
    let work = dir.path().join(work_name);
    let log = dir.path().join("serve.log");
    let mut serve = Command::new("sh");
    env(&mut serve);
    let mut serve = serve
        .current_dir(&work)
        .args(["-c", &format!("exec {}", b.serve)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{api}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = serve.try_wait().unwrap() {
            panic!(
                "`{}` exited ({s}):\n{}",
                b.serve,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if std::net::TcpStream::connect(addr).is_ok()
            && warrant_testkit::http(addr, "GET", "/readyz", &[], None).status == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the broker never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The second terminal.
    let mut sh = Command::new("sh");
    env(&mut sh);
    let out = sh.args(["-eu", "-c", &b.script]).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );

    // Stop it as the page says, with SIGTERM.
    let pid = rustix::process::Pid::from_child(&serve);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = serve.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();

    assert!(
        out.status.success(),
        "the page's commands failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker:\n{logs}",
        out.status
    );
    assert!(status.success(), "the broker did not stop cleanly:\n{logs}");
    let printed: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .chain(logs.lines())
        .collect();
    for want in &b.expected {
        assert!(
            printed.iter().any(|l| matches(want, l)),
            "the page says this is printed, but it was not:\n  {want}\n\nprinted:\n{}",
            printed.join("\n")
        );
    }
    // Everything the page wrote is in its own directory, none of it where
    // it was started (a clone's root).
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "serve.log")
        .collect();
    left.sort();
    assert_eq!(left, [work_name], "files left where the page started");
    dir
}
