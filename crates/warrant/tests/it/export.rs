//! Audit export through the real binary: a rotated file that verifies as
//! the broker's chain (and fails when edited), RFC 5424 syslog over UDP,
//! and HTTP batches that chain to each other, retried while the receiver
//! fails, with the lag in /metrics; positions survive a restart.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::Value;
use warrant_testkit::{Broker, Options};

use crate::support::{Receiver, bin};

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn head(b: &Broker) -> u64 {
    let v = b.cli(&["audit", "verify", "--output", "json"]).json();
    v["verified"].as_u64().unwrap()
}

#[test]
fn the_trail_is_exported_to_a_file_syslog_and_http_and_the_file_verifies() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("audit.jsonl");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let siem = Receiver::start(&["/ingest"], 2);
    let port = siem.port;
    let config = format!(
        r#"
[[audit_export]]
name = "local-file"
kind = "file"
path = "{file}"
max_bytes = 8192
keep = 50

[[audit_export]]
name = "syslog"
kind = "syslog"
address = "udp://{udp}"

[[audit_export]]
name = "siem"
kind = "http"
url = "http://127.0.0.1:{port}/ingest"
batch = 7
bearer_token_env = "SIEM_TOKEN"
"#,
        file = file.display(),
        udp = udp.local_addr().unwrap(),
    );
    let mut b = Broker::start_with(
        bin(),
        Options {
            config: Some(config.clone()),
            env: vec![("SIEM_TOKEN".into(), "siem-secret-0123".into())],
            ..Default::default()
        },
    );
    for i in 0..40 {
        b.cli(&[
            "agent",
            "create",
            &format!("a{i}"),
            "--owner",
            "o",
            "--env",
            "dev",
        ])
        .ok();
    }
    let want = head(&b);

    // The file: every record, in order, rotated.
    let files = || {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("audit.jsonl")
            })
            .collect();
        // Oldest first: audit.jsonl.N … audit.jsonl.1, audit.jsonl.
        let n = |p: &std::path::Path| {
            p.extension()
                .and_then(|e| e.to_str())
                .and_then(|e| e.parse::<u32>().ok())
                .unwrap_or(0)
        };
        v.sort_by_key(|p| std::cmp::Reverse(n(p)));
        v
    };
    let (lines, parts) = until("the file export to reach the head", || {
        let mut all: Vec<Value> = Vec::new();
        let mut parts: Vec<String> = Vec::new();
        for f in files() {
            // A file listed may be rotated (renamed) before it is read, or
            // read while a line is half written: look again.
            let text = std::fs::read_to_string(&f).ok()?;
            for l in text.lines() {
                all.push(serde_json::from_str::<Value>(l).ok()?);
            }
            parts.push(text);
        }
        // A rotation between listing and reading shifts the names, so a
        // part can be read twice or not at all: only a run with no gap
        // counts (a real gap in the export still times out here).
        let unbroken = all
            .iter()
            .enumerate()
            .all(|(i, l)| l["seq"].as_u64() == Some(i as u64 + 1));
        (unbroken && all.last().and_then(|l| l["seq"].as_u64()) >= Some(want))
            .then_some((all, parts))
    });
    assert!(parts.len() > 2, "rotated into {} parts", parts.len());
    for (i, w) in lines.windows(2).enumerate() {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "record {} links", i + 2);
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The broker keeps writing (audit verify is itself audited) and so
    // keeps rotating: verify the parts as read, copied where nothing renames
    // them.
    let snap = tempfile::tempdir().unwrap();
    let paths: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let p = snap.path().join(format!("part-{i:03}.jsonl"));
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        })
        .collect();
    let mut args = vec!["audit", "verify-export"];
    args.extend(paths.iter().map(String::as_str));
    let ok = b.cli(&args);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("ok:"), "{}", ok.stdout);

    // An edited record, a dropped one, a forged tail: each is caught.
    let edited = out.path().join("edited.jsonl");
    let text: String = parts.concat();
    std::fs::write(&edited, text.replacen("\"a7\"", "\"a8\"", 1)).unwrap();
    let r = b.cli(&["audit", "verify-export", edited.to_str().unwrap()]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("TAMPERED"), "{}", r.stdout);
    let dropped: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 10)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&edited, dropped).unwrap();
    assert_eq!(
        b.cli(&["audit", "verify-export", edited.to_str().unwrap()])
            .code,
        4
    );

    // Syslog: RFC 5424, facility 13 (log audit), one record per datagram.
    let mut buf = vec![0u8; 65536];
    let n = udp.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        msg.starts_with("<110>1 ") || msg.starts_with("<109>1 "),
        "{msg}"
    );
    assert!(msg.contains(" warrant "), "{msg}");
    assert!(msg.contains("[warrant@32473 seq=\"1\""), "{msg}");
    let json = msg.split_once('\u{feff}').unwrap().1;
    assert_eq!(serde_json::from_str::<Value>(json).unwrap()["seq"], 1);

    // HTTP: after the receiver's failures, batches that chain, in order.
    let got = until("the http export to reach the head", || {
        let g = siem.all();
        (g.last().and_then(|b| b.body["last_seq"].as_u64()) >= Some(want)).then_some(g)
    });
    assert_eq!(got[0].body["first_seq"], 1);
    assert_eq!(got[0].authorization, "Bearer siem-secret-0123");
    let got: Vec<Value> = got.into_iter().map(|r| r.body).collect();
    for w in got.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["head_hash"]);
        assert_eq!(
            w[1]["first_seq"].as_u64().unwrap(),
            w[0]["last_seq"].as_u64().unwrap() + 1
        );
        assert!(w[0]["records"].as_array().unwrap().len() <= 7);
    }
    let metrics = b.http("GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("warrant_audit_export_failures_total{sink=\"siem\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("warrant_audit_export_lag_records{sink=\"local-file\"}"));
    assert!(
        !metrics.contains("siem-secret"),
        "the receiver's token is not shown"
    );
    assert!(!b.logs().contains("siem-secret"));

    // A restart resumes where each sink was: nothing exported twice (the
    // records written since are the only new lines).
    let before = lines.len();
    b.stop();
    b.restart(Options {
        config: Some(config),
        env: vec![("SIEM_TOKEN".into(), "siem-secret-0123".into())],
        ..Default::default()
    });
    b.cli(&["agent", "create", "late", "--owner", "o", "--env", "dev"])
        .ok();
    let now = head(&b);
    let after = until("the file export to resume", || {
        let n: Vec<u64> = files()
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        serde_json::from_str::<Value>(l).unwrap()["seq"]
                            .as_u64()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        (n.last() >= Some(&now)).then_some(n)
    });
    assert!(after.len() > before);
    assert_eq!(
        after,
        (1..=after.len() as u64).collect::<Vec<_>>(),
        "each record once, in order, across the restart"
    );
}

#[test]
fn bad_export_sinks_are_refused_at_start() {
    // A directory others can write: they could plant a symlink or a file.
    let shared = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (err, _, _dir) = crate::support::start_fails(Options {
        config: Some(format!(
            "[[audit_export]]\nname = \"x\"\nkind = \"file\"\npath = \"{}/audit.jsonl\"\n",
            shared.path().display()
        )),
        ..Default::default()
    });
    assert!(err.contains("can be written by others"), "{err}");
    for (sink, want) in [
        ("kind = \"file\"", "needs `path`"),
        ("kind = \"tape\"", "unknown"),
        ("kind = \"http\"\nurl = \"http://example.com/x\"", "https"),
        ("kind = \"syslog\"\naddress = \"udp://nowhere\"", "ip:port"),
        (
            "kind = \"file\"\npath = \"/tmp/x\"\nurl = \"https://x\"",
            "does not apply",
        ),
        (
            "kind = \"http\"\nurl = \"https://x.example\"\nbearer_token_env = \"NOT_SET_ANYWHERE\"",
            "not set",
        ),
    ] {
        let (err, _, _dir) = crate::support::start_fails(Options {
            config: Some(format!("[[audit_export]]\nname = \"x\"\n{sink}\n")),
            ..Default::default()
        });
        assert!(err.contains(want), "{sink}: {err}");
    }
}
