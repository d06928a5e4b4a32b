//! docs/deploy.md's three-broker example, run as written.
//!
//! Every `sh` block runs in order in one shell (`sh -eu`) in a fresh
//! directory, with the binary under test first on `PATH`, `WARRANT_STORE`
//! set to a fresh test database, and the page's ports swapped for free
//! ones. `cargo` lines are skipped. Every line of a `text` block must
//! appear in one line of what the commands printed (`…` matches anything).

use std::process::Command;

use warrant_testkit::postgres::Database;

use crate::support::{bin, free_port, matches};

const PAGE: &str = include_str!("../../../../docs/deploy.md");

#[test]
fn the_three_broker_example_runs_as_written() {
    let mut page = PAGE.to_owned();
    for port in ["8711", "8712", "8713", "8721", "8722", "8723"] {
        page = page.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", free_port()),
        );
    }
    let (mut script, mut expected) = (String::new(), Vec::new());
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        match lang {
            "sh" => body
                .iter()
                .filter(|l| !l.starts_with("cargo "))
                .for_each(|l| {
                    script.push_str(l);
                    script.push('\n');
                }),
            // The store copy line is an illustration, not part of the run.
            "text" if body.iter().any(|l| l.starts_with("warrant store copy")) => {}
            "text" => expected.extend(
                body.iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| (*l).to_owned()),
            ),
            other => panic!("deploy.md: a ```{other} block; use sh or text"),
        }
    }
    assert!(script.contains("warrant serve"), "the page starts brokers");
    let db = Database::new();
    let dir = tempfile::Builder::new()
        .prefix("wd")
        .tempdir_in("/tmp")
        .unwrap();
    let path = format!(
        "{}:{}",
        bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Bounded: a broker that does not start must fail the test, not hang it.
    let out = Command::new("timeout")
        .args(["300", "sh", "-eu", "-c", &script])
        .current_dir(dir.path())
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| !k.starts_with("WARRANT_")))
        .env("PATH", &path)
        .env("TMPDIR", dir.path())
        .env("WARRANT_STORE", &db.url)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let logs: String = (1..=3)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("warrant-cluster/node{n}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        out.status.success(),
        "deploy.md's commands failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}\nbrokers:\n{logs}",
        out.status
    );
    assert!(
        !stdout.contains(&db.url) && !logs.contains(&db.url),
        "the store's password is never shown"
    );
    let printed: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    for want in &expected {
        assert!(
            printed.iter().any(|l| matches(want, l)),
            "deploy.md says this is printed, but it was not:\n  {want}\n\nprinted:\n{}",
            printed.join("\n")
        );
    }
}
