//! The agent side without the SDK: `warrant token` for shell agents, and
//! `warrant sidecar` in front of an unmodified OpenAI-SDK agent.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warrant_testkit::{Broker, Options};

use crate::support::{Upstream, audit, audit_until, bin, free_port, jwt_claims, python, repo};

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);

@id("shell-self")
permit(principal in Agent::"shell", action == Action::"token:self",
       resource == Audience::"https://api.openai.example");

@id("shell-for-support")
permit(principal in Agent::"shell", action == Action::"token:exchange",
       resource == Audience::"https://api.openai.example")
when { context has user && context.user in Group::"dev/support" };

@id("openai-route")
permit(principal in Agent::"shell", action == Action::"http:request", resource == Route::"openai");
"#;

/// A broker with the `openai` route to a local upstream and the `shell`
/// agent: the `warrant` binary run by this uid (a shell agent's tool).
fn world() -> (Broker, Upstream) {
    let up = Upstream::start(false);
    let b = Broker::start_with(
        bin(),
        Options {
            args: vec!["--dev".into()],
            config: Some(format!(
                "[[route]]\nname = \"openai\"\nupstream = \"http://127.0.0.1:{}\"\naudience = \"https://api.openai.example\"\nallow = [ {{ methods = [\"POST\"], paths = [\"/v1/chat/completions\"] }} ]\ncredential = {{ kind = \"secret\", secret = \"openai-key\", header = \"authorization\", format = \"Bearer {{secret}}\" }}\n",
                up.port
            )),
            ..Default::default()
        },
    );
    std::fs::write(b.data_dir.join("policies/agents.cedar"), POLICY).unwrap();
    b.cli(&["policy", "reload"]).ok();
    let exe = std::fs::canonicalize(bin()).unwrap();
    let uid = rustix::process::getuid().as_raw().to_string();
    b.cli(&[
        "agent",
        "create",
        "shell",
        "--owner",
        "t",
        "--env",
        "dev",
        "--selector",
        &format!("unix:uid={uid}"),
        "--selector",
        &format!("unix:path={}", exe.display()),
    ])
    .ok();
    let mut put = Command::new(bin())
        .args([
            "--data-dir",
            b.data_dir.to_str().unwrap(),
            "secret",
            "put",
            "openai-key",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    put.stdin
        .take()
        .unwrap()
        .write_all(b"sk-upstream-0123456789\n")
        .unwrap();
    assert!(put.wait().unwrap().success());
    (b, up)
}

#[test]
fn warrant_token_gets_inspects_and_refuses_clearly() {
    let (b, _up) = world();
    let id = b.cli(&["token", "identity"]);
    let c = jwt_claims(id.ok().trim());
    assert!(c["sub"].as_str().unwrap().contains("/agent/shell/"), "{c}");

    let t = b.cli(&[
        "token",
        "self",
        "--audience",
        "https://api.openai.example",
        "--scope",
        "llm:chat",
    ]);
    let task = t.ok().trim().to_owned();
    assert_eq!(jwt_claims(&task)["scope"], "llm:chat");

    // Acting for a user, the user's token read from standard input.
    let user = b.cli(&["dev", "user-token", "alice", "--groups", "support"]);
    let mut ex = Command::new(bin())
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .args([
            "token",
            "exchange",
            "--user-token",
            "-",
            "--audience",
            "https://api.openai.example",
            "--scope",
            "llm:chat",
            "--output",
            "json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    ex.stdin
        .take()
        .unwrap()
        .write_all(user.ok().as_bytes())
        .unwrap();
    let out = ex.wait_with_output().unwrap();
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let delegated = answer["access_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_claims(&delegated)["sub"], "user:dev/alice");

    // A policy's refusal: exit code 3, and what decided and how to get access.
    let r = b.cli(&[
        "token",
        "self",
        "--audience",
        "https://api.github.example",
        "--scope",
        "repo",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("access_denied"), "{}", r.stderr);
    assert!(r.stderr.contains("policies: default deny"), "{}", r.stderr);
    assert!(r.stderr.contains("to get access:"), "{}", r.stderr);
    // Handing a task back to an agent already in its chain: refused as the
    // broker said, nothing printed on stdout.
    let r = b.cli(&[
        "token",
        "exchange",
        "--task-token",
        &delegated,
        "--audience",
        "https://api.openai.example",
        "--scope",
        "llm:chat",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("invalid_grant"), "{}", r.stderr);
    assert!(
        r.stderr.contains("already in this delegation chain"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    // Two attestations at once are refused before anything is asked.
    let r = b.cli_env(
        &["token", "identity", "--join-token", "wjt_x"],
        &[("WARRANT_OIDC_TOKEN_FILE", "/nonexistent")],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("exactly one"), "{}", r.stderr);

    // inspect: the chain, and whether the broker still vouches for it.
    let i = b.cli(&["token", "inspect", &delegated]);
    let text = i.ok();
    assert!(text.contains("kind:     task token"), "{text}");
    assert!(text.contains("subject:  user:dev/alice"), "{text}");
    assert!(text.contains("acting:   spiffe://"), "{text}");
    assert!(text.contains("active:   yes"), "{text}");
    let task_id = jwt_claims(&delegated)["task"].as_str().unwrap().to_owned();
    b.cli(&["revoke", "--task", &task_id]).ok();
    let i = b.cli(&["token", "inspect", &delegated, "--output", "json"]);
    assert_eq!(i.code, 3, "{}", i.stderr);
    let v: Value = serde_json::from_str(&i.stdout).unwrap();
    assert_eq!(v["active"], false);
    assert_eq!(v["chain"].as_array().unwrap().len(), 1);
    // A forged token (any key but the broker's) is reported as such, exit 3
    // (attacker round: unverified claims were shown as facts, exit 0).
    let forged = {
        let parts: Vec<&str> = delegated.split('.').collect();
        format!("{}.{}.{}", parts[0], parts[1], "A".repeat(86))
    };
    let r = b.cli(&["token", "inspect", &forged]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("signature: NOT the broker's"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("active:   no"), "{}", r.stdout);
    // Not a JWT.
    let r = b.cli(&["token", "inspect", "not-a-token"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not a JWT"), "{}", r.stderr);
    // Nothing secret in the refusal records.
    for rec in audit(&b, Some("token")) {
        assert!(
            !rec.to_string().contains(&task),
            "a token in the audit trail"
        );
    }
}

struct Sidecar(Child, u16);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidecar(b: &Broker, extra: &[&str]) -> Sidecar {
    let port = free_port();
    let child = Command::new(bin())
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .args(["sidecar", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the sidecar did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sidecar(child, port)
}

/// A raw request to the sidecar: the status line and the body.
fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn an_unmodified_openai_agent_works_through_the_sidecar() {
    let (b, up) = world();
    let sc = sidecar(&b, &["--route", "openai=llm:chat"]);
    // The official OpenAI SDK, changed only in its base URL; its API key is
    // a placeholder the sidecar drops.
    let out = Command::new(python())
        .arg(repo().join("tests/interop/openai_client.py"))
        .arg(format!("http://127.0.0.1:{}/openai/v1", sc.1))
        .arg("sk-placeholder")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["content"], "Hello from upstream");
    assert_eq!(v["streamed"].as_array().unwrap().len(), 3);
    // The embeddings path is not in the route's allow list: the edge's
    // refusal reaches the SDK as a PermissionDeniedError with its reasons.
    assert_eq!(v["denied"]["status"], 403);
    assert_eq!(v["denied"]["body"]["refused_by"], "route allow list");
    let seen = up.seen();
    assert!(seen.len() >= 2);
    for r in &seen {
        assert_eq!(
            r["headers"]["authorization"],
            "Bearer sk-upstream-0123456789"
        );
        assert!(!r.to_string().contains("sk-placeholder"));
    }
    let grants: Vec<Value> = audit(&b, Some("token.self"))
        .into_iter()
        .filter(|r| r["decision"] == "allow")
        .collect();
    assert_eq!(grants.len(), 1, "one task token, cached across requests");

    // Acting for a user: their token in a header, exchanged and never forwarded.
    let user = b.cli(&["dev", "user-token", "alice", "--groups", "support"]);
    let user = user.ok().trim().to_owned();
    let body = r#"{"model":"m","messages":[]}"#;
    let resp = raw(
        sc.1,
        &format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-warrant-user-token: {user}\r\nauthorization: Bearer placeholder\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            sc.1,
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let last = up.seen().pop().unwrap();
    assert!(
        !last.to_string().contains(&user),
        "the user's token reached the upstream"
    );
    let for_alice = audit_until(&b, Some("proxy.request"), 1, |r| {
        r["decision"] == "allow" && r["user"].as_str().is_some_and(|u| u.contains("dev/alice"))
    });
    assert_eq!(for_alice.len(), 1, "the proxied request was made for alice");
    // A user outside the policy: a clear refusal from the sidecar.
    let mallory = b.cli(&["dev", "user-token", "mallory", "--groups", "sales"]);
    let resp = raw(
        sc.1,
        &format!(
            "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-warrant-user-token: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            sc.1,
            mallory.ok().trim()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("\"refused_by\":\"policy\""), "{resp}");
}

#[test]
fn the_sidecar_serves_only_its_own_host_and_routes_and_no_browser() {
    let (b, _up) = world();
    let sc = sidecar(&b, &["--route", "openai=llm:chat"]);
    let get = |host: &str, extra: &str, path: &str| {
        raw(
            sc.1,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}connection: close\r\n\r\n"),
        )
    };
    let here = format!("127.0.0.1:{}", sc.1);
    // DNS rebinding: a name that resolves to loopback is still not this host.
    let r = get(&format!("evil.example:{}", sc.1), "", "/openai/v1/models");
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    // A browser's request (a web page on this host) is refused.
    let r = get(
        &here,
        "Origin: https://evil.example\r\n",
        "/openai/v1/models",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = get(&here, "Sec-Fetch-Site: cross-site\r\n", "/openai/v1/models");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // A route it was not started with.
    let r = get(&here, "", "/github/user");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("forwards openai"), "{r}");
    // Two user tokens.
    let r = get(
        &here,
        "x-warrant-user-token: a\r\nx-warrant-user-token: b\r\n",
        "/openai/v1/models",
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // It will not listen beyond loopback, nor start without a route.
    let r = Command::new(bin())
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .args([
            "sidecar",
            "--listen",
            "0.0.0.0:0",
            "--route",
            "openai=llm:chat",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("loopback only"));
    let r = Command::new(bin())
        .env("WARRANT_DATA_DIR", &b.data_dir)
        .args(["sidecar", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("at least one --route"));
}

/// Attacker round: `warrant token` and `warrant sidecar` believed any
/// `./warrant-data/run.json`, so a local user who planted one in a shared
/// directory received join tokens, users' tokens and identity tokens. A run
/// file is believed only where its broker is trusted; otherwise the broker
/// must be named, and nothing is sent anywhere.
#[test]
fn a_planted_run_file_learns_no_token() {
    use std::io::Read as _;
    let dir = tempfile::Builder::new()
        .prefix("wplant")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("warrant-data");
    std::fs::create_dir(&data).unwrap();
    // A listener standing in for the attacker's fake broker.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fake.set_nonblocking(true).unwrap();
    let port = fake.local_addr().unwrap().port();
    std::fs::write(
        data.join("run.json"),
        format!(
            r#"{{"pid":1,"api_addr":"127.0.0.1:{port}","edge_addr":"127.0.0.1:{port}","issuer":"x","admin_socket":"x","started_at":"x","version":"x"}}"#
        ),
    )
    .unwrap();
    let nobody = Some(rustix::fs::Uid::from_raw(65534));
    let nogroup = Some(rustix::fs::Gid::from_raw(65534));
    rustix::fs::chown(&data, nobody, nogroup).unwrap();
    rustix::fs::chown(data.join("run.json"), nobody, nogroup).unwrap();
    let secret = "wjt_planted_join_token_0123456789";
    // Second round: a symlink to a directory this user owns (the window a
    // symlink swap races through), and an absolute --data-dir owned by
    // another user, are not believed either.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::copy(data.join("run.json"), mine.join("run.json")).unwrap();
    let linked = tempfile::Builder::new()
        .prefix("wlink")
        .tempdir_in("/tmp")
        .unwrap();
    std::os::unix::fs::symlink(&mine, linked.path().join("warrant-data")).unwrap();
    let absolute = data.to_str().unwrap().to_owned();
    let runs: Vec<(&std::path::Path, Vec<&str>)> = vec![
        (
            linked.path(),
            vec!["token", "identity", "--join-token", secret],
        ),
        (
            std::path::Path::new("/"),
            vec![
                "--data-dir",
                &absolute,
                "token",
                "identity",
                "--join-token",
                secret,
            ],
        ),
    ];
    for (cwd, args) in runs {
        let out = Command::new(bin())
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("say where the broker is"), "{args:?}: {err}");
    }
    for args in [
        vec!["token", "identity", "--join-token", secret],
        vec![
            "token",
            "exchange",
            "--user-token",
            secret,
            "--audience",
            "https://a.example",
            "--scope",
            "s",
        ],
        vec![
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--route",
            "r=s",
            "--join-token",
            secret,
        ],
    ] {
        let out = Command::new(bin())
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("say where the broker is"), "{args:?}: {err}");
    }
    // Nothing connected to the fake broker, so it learnt nothing.
    match fake.accept() {
        Ok((mut s, _)) => {
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            panic!("the planted broker was contacted: {got}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}
