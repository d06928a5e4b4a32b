//! Several brokers on one PostgreSQL store: what one changes, every other
//! enforces; one audit trail; exactly one winner across brokers.

use std::time::{Duration, Instant};

use warrant_testkit::postgres::Database;
use warrant_testkit::{Broker, Options};

use crate::support::*;

/// A test KEK every broker of a cluster shares (32 bytes, base64).
const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Cluster {
    nodes: Vec<Broker>,
    _db: Database,
}

/// A broker on the store at `url`, with the cluster's KEK and issuer and
/// the delegation policy in its policy directory (not yet loaded).
fn node(url: &str) -> Broker {
    let b = Broker::start_with(
        bin(),
        Options {
            // One issuer for all, as behind a load balancer.
            args: vec![
                "--store".into(),
                url.to_owned(),
                "--issuer".into(),
                "http://warrant.cluster.test".into(),
            ],
            env: vec![("WARRANT_KEK".into(), KEK.into())],
            ..Default::default()
        },
    );
    std::fs::write(
        b.data_dir.join("policies/delegation.cedar"),
        DELEGATION_POLICY,
    )
    .unwrap();
    b
}

fn cluster(n: usize) -> Cluster {
    let db = Database::new();
    let nodes = (0..n).map(|_| node(&db.url)).collect();
    Cluster { nodes, _db: db }
}

fn policy_digest(b: &Broker) -> String {
    b.cli(&["status", "--output", "json"]).json()["policy_digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `f` every 2 ms until it holds; the time it took.
fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

#[test]
fn what_one_broker_changes_every_other_enforces() {
    let c = cluster(3);
    let (a, b, x) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);

    // A reload on one broker reloads the others (each from its own files).
    let empty = policy_digest(b);
    a.cli(&["policy", "reload"]).ok();
    let want = policy_digest(a);
    assert_ne!(want, empty);
    until("B follows A's reload", Duration::from_secs(10), || {
        policy_digest(b) == want
    });
    until("X follows A's reload", Duration::from_secs(10), || {
        policy_digest(x) == want
    });

    // An agent registered on A is known to B at once; its join token,
    // made on A, is redeemed at B.
    a.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let id = identity_across(a, b, "orch");
    // X grants it a task token; B and A both see it active.
    let r = client_credentials(x, &id, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(b, &id, &task)["active"], true);

    // Revoked on A: B refuses it, without a restart or a reload.
    let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
    a.cli(&["revoke", "--jti", &jti]).ok();
    let took = until("B refuses the revoked task", Duration::from_secs(2), || {
        introspect(b, &id, &task)["active"] == false
    });
    eprintln!("revocation reached B in {took:?}");
    assert_eq!(introspect(x, &id, &task)["active"], false);

    // Disabled on A: X issues it nothing more.
    a.cli(&["agent", "disable", "orch"]).ok();
    until(
        "X refuses the disabled agent",
        Duration::from_secs(2),
        || client_credentials(x, &id, "tickets:read", "https://tickets.example").status != 200,
    );

    // One trail: every broker verifies the whole of it, records from all.
    let v = x.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    let records = audit(b, None);
    assert!(
        records.len() as u64 >= v["verified"].as_u64().unwrap(),
        "B lists at least what X verified"
    );
    let starts = audit(a, Some("broker.start"));
    assert_eq!(starts.len(), 3, "each broker's start is in the one trail");
}

/// An identity for `agent` by a join token made on `made` and redeemed at `at`.
fn identity_across(made: &Broker, at: &Broker, agent: &str) -> String {
    let jt = made
        .cli(&["agent", "join-token", agent])
        .ok()
        .trim()
        .to_owned();
    let r = post_json(at, "/v1/attest/join", &serde_json::json!({ "token": jt }));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["identity_token"].as_str().unwrap().to_owned()
}

#[test]
fn a_join_token_redeemed_through_three_brokers_admits_one_instance() {
    let c = cluster(3);
    let a = &c.nodes[0];
    a.cli(&["policy", "reload"]).ok();
    a.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let jt = a
        .cli(&["agent", "join-token", "orch"])
        .ok()
        .trim()
        .to_owned();
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.api).collect();
    let tries: Vec<_> = (0..12)
        .map(|i| {
            let (addr, jt) = (addrs[i % 3], jt.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({ "token": jt }).to_string();
                warrant_testkit::http(
                    addr,
                    "POST",
                    "/v1/attest/join",
                    &[("content-type", "application/json")],
                    Some(&body),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = tries.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        audit(a, Some("attest.join"))
            .iter()
            .filter(|r| r["decision"] == "allow")
            .count(),
        1
    );
}

/// A cluster whose node `i` reaches the database through its own relay,
/// so a test can cut one broker off.
struct Relayed {
    nodes: Vec<Broker>,
    relays: Vec<warrant_testkit::postgres::Relay>,
    db: Database,
}

fn relayed(n: usize) -> Relayed {
    let db = Database::new();
    let mut nodes = Vec::new();
    let mut relays = Vec::new();
    for _ in 0..n {
        let relay = warrant_testkit::postgres::Relay::to(&db.url);
        let b = node(&relay.url(&db.url));
        nodes.push(b);
        relays.push(relay);
    }
    nodes[0].cli(&["policy", "reload"]).ok();
    for b in &nodes[1..] {
        b.cli(&["policy", "reload"]).ok();
    }
    nodes[0]
        .cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    Relayed { nodes, relays, db }
}

fn self_token(b: &Broker, id: &str) -> warrant_testkit::Response {
    client_credentials(b, id, "tickets:read", "https://tickets.example")
}

/// Cut off from the store, a broker grants nothing, vouches for no task
/// token (it could miss a revocation made elsewhere) and says it is not
/// ready; reconnected, it catches up by itself, revocations made meanwhile
/// included.
#[test]
fn a_broker_cut_off_from_the_store_fails_closed_and_recovers() {
    let c = relayed(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let id = identity_across(a, b, "orch");
    let r = self_token(b, &id);
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(b, &id, &task)["active"], true);

    c.relays[1].cut();
    until("B says it is not ready", Duration::from_secs(10), || {
        b.http("GET", "/readyz", &[], None).status == 503
    });
    let refused = self_token(b, &id);
    assert!(refused.status >= 500, "{} {}", refused.status, refused.body);
    let seen = form(
        b,
        "/oauth2/introspect",
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &id),
            ("token", &task),
        ],
    );
    assert!(
        seen.status != 200 || seen.json()["active"] == false,
        "a broker that cannot hear revocations vouches for no task: {}",
        seen.body
    );
    // Meanwhile, through A.
    let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
    a.cli(&["revoke", "--jti", &jti]).ok();

    c.relays[1].restore();
    until("B grants again", Duration::from_secs(20), || {
        self_token(b, &id).status == 200
    });
    assert_eq!(
        introspect(b, &id, &task)["active"],
        false,
        "the revocation made while B was cut off holds on B"
    );
    let v = b.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
}

/// While a broker catches up after being cut off, no answer vouches for a
/// task revoked meanwhile: not one whose revocation check ran before the
/// broker had applied what it heard (introspection, the edge and exchange
/// check revocation again once the feed is known to be fresh).
#[test]
fn no_answer_vouches_for_a_task_revoked_while_the_broker_was_cut_off() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let c = relayed(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let id = identity_across(a, b, "orch");
    for _ in 0..4 {
        let mut task = String::new();
        until("B grants", Duration::from_secs(20), || {
            let r = self_token(b, &id);
            if r.status == 200 {
                task = r.json()["access_token"].as_str().unwrap().to_owned();
            }
            r.status == 200
        });
        c.relays[1].cut();
        until("B says it is not ready", Duration::from_secs(10), || {
            b.http("GET", "/readyz", &[], None).status == 503
        });
        let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
        a.cli(&["revoke", "--jti", &jti]).ok();
        let (stop, vouched) = (AtomicBool::new(false), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while !stop.load(Ordering::Acquire) {
                        let r = form(
                            b,
                            "/oauth2/introspect",
                            &[
                                (
                                    "client_assertion_type",
                                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                ),
                                ("client_assertion", &id),
                                ("token", &task),
                            ],
                        );
                        if r.status == 200 && r.json()["active"] == true {
                            vouched.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                });
            }
            c.relays[1].restore();
            until("B grants again", Duration::from_secs(20), || {
                self_token(b, &id).status == 200
            });
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Release);
        });
        assert_eq!(
            vouched.load(Ordering::Acquire),
            0,
            "B vouched for a task revoked while it was cut off"
        );
    }
}

/// Six clients asking task tokens of `addrs` in turn (a broker that is
/// down is simply the next one's turn) while `during` runs; every token
/// they received.
fn grant_load(addrs: &[std::net::SocketAddr], id: &str, during: impl FnOnce()) -> Vec<String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (addrs, stop) = (addrs.to_vec(), stop.clone());
            let body = format!(
                "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={id}&scope=tickets%3Aread&audience=https%3A%2F%2Ftickets.example"
            );
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut n = i;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let addr = addrs[n % addrs.len()];
                    n += 1;
                    if std::net::TcpStream::connect(addr).is_err() {
                        continue;
                    }
                    let r = std::panic::catch_unwind(|| {
                        warrant_testkit::http(
                            addr,
                            "POST",
                            "/oauth2/token",
                            &[("content-type", "application/x-www-form-urlencoded")],
                            Some(&body),
                        )
                    });
                    if let Ok(r) = r
                        && r.status == 200
                    {
                        got.push(r.json()["access_token"].as_str().unwrap().to_owned());
                    }
                }
                got
            })
        })
        .collect();
    during();
    stop.store(true, std::sync::atomic::Ordering::Release);
    clients
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Once `b` grants again: every token in `tokens` has its allow record in
/// the one trail, which verifies.
fn every_token_was_recorded(b: &Broker, id: &str, tokens: &[String]) {
    assert!(tokens.len() > 20, "the load ran: {} tokens", tokens.len());
    until("the broker grants again", Duration::from_secs(30), || {
        self_token(b, id).status == 200
    });
    let recorded: std::collections::HashSet<String> = audit(b, Some("token"))
        .iter()
        .filter(|r| r["decision"] == "allow")
        .filter_map(|r| r["task"].as_str().map(str::to_owned))
        .collect();
    for t in tokens {
        let task = jwt_claims(t)["task"].as_str().unwrap().to_owned();
        assert!(
            recorded.contains(&task),
            "token for task {task} was released without its record"
        );
    }
    let v = b.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
}

/// Every task token a client received, from any broker, has its durable
/// audit record, though one broker is killed (-9) and every database
/// connection is dropped at once under load.
#[test]
fn no_token_without_its_record_when_a_broker_dies_or_connections_drop() {
    let mut c = relayed(3);
    let id = identity_across(&c.nodes[0], &c.nodes[1], "orch");
    let addrs: Vec<_> = c.nodes.iter().map(|n| n.api).collect();
    let tokens = grant_load(&addrs, &id, || {
        std::thread::sleep(Duration::from_millis(700));
        c.nodes[2].signal(warrant_testkit::Signal::KILL);
        std::thread::sleep(Duration::from_millis(500));
        c.db
            .sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    });
    let _ = c.nodes[2].wait();
    every_token_was_recorded(&c.nodes[0], &id, &tokens);
    c.relays.clear();
}

/// A PostgreSQL server of this test's own, stopped when dropped.
struct OwnServer {
    name: String,
    url: String,
}

impl OwnServer {
    fn start() -> Self {
        let name = format!("restart-{}", std::process::id());
        let out = std::process::Command::new(repo().join("scripts/postgres"))
            .arg("start")
            .env("WARRANT_PG_NAME", &name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("WARRANT_TEST_POSTGRES=")
            .unwrap()
            .to_owned();
        Self { name, url }
    }

    fn run(&self, what: &str) {
        let out = std::process::Command::new(repo().join("scripts/postgres"))
            .arg(what)
            .env("WARRANT_PG_NAME", &self.name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// PostgreSQL itself restarted under grant load: brokers refuse while it is
/// down, reconnect by themselves, and no token is released without its
/// record.
#[test]
fn no_token_without_its_record_when_postgres_restarts() {
    let server = OwnServer::start();
    let nodes: Vec<Broker> = (0..2)
        .map(|_| {
            let b = node(&server.url);
            b.cli(&["policy", "reload"]).ok();
            b
        })
        .collect();
    nodes[0]
        .cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let id = identity_across(&nodes[0], &nodes[1], "orch");
    let addrs: Vec<_> = nodes.iter().map(|n| n.api).collect();
    let tokens = grant_load(&addrs, &id, || {
        std::thread::sleep(Duration::from_millis(700));
        server.run("restart");
        std::thread::sleep(Duration::from_millis(1500));
    });
    every_token_was_recorded(&nodes[1], &id, &tokens);
    for b in &nodes {
        until("the broker is ready again", Duration::from_secs(30), || {
            b.http("GET", "/readyz", &[], None).status == 200
        });
    }
}

/// Revoked through A while agents hammer B with the task: B refuses it
/// within the bound, and never accepts it again.
#[test]
fn a_revocation_on_one_broker_stops_use_on_another_under_load() {
    let c = relayed(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    let id = identity_across(a, b, "orch");
    let r = self_token(a, &id);
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["access_token"].as_str().unwrap().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer: Vec<_> = (0..4)
        .map(|_| {
            let (addr, id, task, stop) = (b.api, id.clone(), task.clone(), stop.clone());
            std::thread::spawn(move || {
                // (when the request started, whether B said active)
                let mut seen = Vec::new();
                let body = format!(
                    "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={id}&token={task}"
                );
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let at = Instant::now();
                    let r = warrant_testkit::http(
                        addr,
                        "POST",
                        "/oauth2/introspect",
                        &[("content-type", "application/x-www-form-urlencoded")],
                        Some(&body),
                    );
                    seen.push((at, r.status == 200 && r.json()["active"] == true));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
    a.cli(&["revoke", "--jti", &jti]).ok();
    let revoked = Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Release);
    let seen: Vec<(Instant, bool)> = hammer.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(
        seen.iter().any(|(at, ok)| *ok && *at < revoked),
        "B accepted it before"
    );
    let first_refusal = seen
        .iter()
        .filter(|(at, ok)| !ok && *at >= revoked)
        .map(|(at, _)| *at)
        .min()
        .expect("B refused it after");
    let late: Vec<_> = seen
        .iter()
        .filter(|(at, ok)| *ok && *at > first_refusal + Duration::from_millis(50))
        .collect();
    assert!(
        late.is_empty(),
        "B accepted the task again after refusing it: {} times",
        late.len()
    );
    let bound = Duration::from_millis(500);
    assert!(
        seen.iter().all(|(at, ok)| !*ok || *at < revoked + bound),
        "B accepted the revoked task more than {bound:?} after the revocation returned"
    );
}

/// `warrant status --all` lists every broker; a policy change applied on
/// one node only cannot be missed: it is named there, in the exit code and
/// in /metrics.
#[test]
fn a_half_applied_policy_change_is_impossible_to_miss() {
    let c = cluster(3);
    c.nodes[0].cli(&["policy", "reload"]).ok();
    let all = |b: &Broker| b.cli(&["status", "--all", "--output", "json"]);
    until(
        "all three report the same set",
        Duration::from_secs(10),
        || {
            let r = all(&c.nodes[1]);
            r.code == 0 && r.json()["members"].as_array().unwrap().len() == 3
        },
    );
    // Only X's directory has the new policy.
    let x = &c.nodes[2];
    std::fs::write(
        x.data_dir.join("policies/extra.cedar"),
        "@id(\"extra\")\npermit(principal in Agent::\"orch\", action == Action::\"token:self\", resource == Audience::\"https://other.example\");\n",
    )
    .unwrap();
    x.cli(&["policy", "reload"]).ok();
    until("the divergence shows", Duration::from_secs(10), || {
        all(&c.nodes[0]).code == 1
    });
    let r = all(&c.nodes[0]);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let said = j["diverged"][0].as_str().unwrap();
    assert!(said.starts_with("policy digests differ"), "{said}");
    let human = c.nodes[1].cli(&["status", "--all"]);
    assert_eq!(human.code, 1);
    assert!(
        human.stdout.contains("DIVERGED: policy digests differ"),
        "{}",
        human.stdout
    );
    let m = c.nodes[1].http("GET", "/metrics", &[], None).body;
    assert!(m.contains("warrant_cluster_policy_digests 2"), "{m}");
    assert!(m.contains("warrant_cluster_brokers 3"), "{m}");
    assert!(m.contains("warrant_store_feed_connected 1"), "{m}");
}

fn warrant(args: &[&str], env: &[(&str, &str)]) -> warrant_testkit::Run {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARRANT_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    warrant_testkit::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A single node moves to PostgreSQL with its inventory, keys, revocations
/// and whole audit trail, which verifies there; a broker on the copy
/// carries on where the old one stopped.
#[test]
fn a_single_node_moves_to_postgres_with_its_trail() {
    let w = world(4);
    let id = identity(&w.b, "orch");
    let r = client_credentials(&w.b, &id, "tickets:read", "https://tickets.example");
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["access_token"].as_str().unwrap().to_owned();
    let jti = jwt_claims(&task)["jti"].as_str().unwrap().to_owned();
    w.b.cli(&["revoke", "--jti", &jti]).ok();
    let records = audit(&w.b, None).len();
    let data = w.b.data_dir.clone();
    let kek = std::fs::read_to_string(data.join("kek"))
        .unwrap()
        .trim()
        .to_owned();
    let mut b = w.b;
    b.stop();

    let db = Database::new();
    let data_s = data.display().to_string();
    let copied = warrant(&["store", "copy", "--from", &data_s, "--to", &db.url], &[]);
    let out = copied.ok();
    assert!(out.contains("audit records copied and verified"), "{out}");
    assert!(
        !out.contains(db.url.rsplit_once('@').unwrap().0),
        "no credentials shown"
    );
    // A second copy into the same database is refused, changing nothing.
    let again = warrant(&["store", "copy", "--from", &data_s, "--to", &db.url], &[]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);

    let node = Broker::start_with(
        bin(),
        Options {
            args: vec!["--store".into(), db.url.clone()],
            env: vec![("WARRANT_KEK".into(), kek)],
            ..Default::default()
        },
    );
    std::fs::write(
        node.data_dir.join("policies/delegation.cedar"),
        DELEGATION_POLICY,
    )
    .unwrap();
    node.cli(&["policy", "reload"]).ok();
    let v = node.cli(&["audit", "verify", "--output", "json"]).json();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["verified"].as_u64().unwrap() as usize > records,
        "the old trail and the new start"
    );
    let agents = node.cli(&["agent", "list", "--output", "json"]).json();
    assert_eq!(agents.as_array().unwrap().len(), 3, "{agents}");
    // The copied signing keys still verify the old broker's tokens, and
    // the revocation holds.
    let orch = identity(&node, "orch");
    assert_eq!(introspect(&node, &orch, &task)["active"], false);
    let fresh = client_credentials(&node, &orch, "tickets:read", "https://tickets.example");
    assert_eq!(fresh.status, 200, "{}", fresh.body);
}

#[test]
fn a_copy_with_another_key_changes_nothing() {
    let w = world(4);
    let data = w.b.data_dir.clone();
    let mut b = w.b;
    b.stop();
    let db = Database::new();
    let data_s = data.display().to_string();
    let wrong = warrant(
        &["store", "copy", "--from", &data_s, "--to", &db.url],
        &[(
            "WARRANT_KEK",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )],
    );
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("does not verify"), "{}", wrong.stderr);
    assert_eq!(
        db.one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .as_deref(),
        Some("0"),
        "the source is verified before anything is written"
    );
}

fn jwks_kids(b: &Broker) -> Vec<String> {
    let r = b.http("GET", "/.well-known/jwks.json", &[], None);
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// A key rotated through A is published by B before any broker signs with
/// it, however short the activation asked for; once it signs, tokens it
/// signed through A verify at B.
#[test]
fn a_rotated_key_is_published_everywhere_before_it_signs() {
    let c = cluster(2);
    let (a, b) = (&c.nodes[0], &c.nodes[1]);
    a.cli(&["policy", "reload"]).ok();
    a.cli(&["agent", "create", "orch", "--owner", "o", "--env", "dev"])
        .ok();
    let asked = Instant::now();
    let new = a
        .cli(&["keys", "rotate", "--activate-in", "0s", "--output", "json"])
        .json();
    let kid = new["kid"].as_str().unwrap().to_owned();
    assert_eq!(new["state"], "next", "it does not sign at once: {new}");
    let published = until("B publishes the new key", Duration::from_secs(2), || {
        jwks_kids(b).contains(&kid)
    });
    eprintln!("B published the new key {published:?} after the rotation");
    until("the new key signs", Duration::from_secs(15), || {
        let id = identity_across(a, a, "orch");
        jwt_header(&id)["kid"] == kid.as_str()
    });
    assert!(
        asked.elapsed() >= Duration::from_secs(4),
        "a shared store holds a new key back before it signs"
    );
    let id = identity_across(a, a, "orch");
    let r = self_token(b, &id);
    assert_eq!(
        r.status, 200,
        "B accepts what A signed with the new key: {}",
        r.body
    );
}

/// Issue 14 review: broker reports come from the database, so a database
/// writer's control characters reach no terminal through `status --all`.
#[test]
fn broker_reports_are_shown_safely() {
    let c = cluster(1);
    let a = &c.nodes[0];
    until("the broker reports itself", Duration::from_secs(10), || {
        c._db.one("SELECT count(*) FROM brokers").as_deref() == Some("1")
    });
    c._db
        .sql("INSERT INTO brokers VALUES ('brk_evil\u{1b}[2J', 'v\u{1b}[8m', 'x\u{1b}[8m', E'\\x1b[8mpolicy', E'\\x1b[8mconfig', 0, 0, true, 0, (extract(epoch from now()) * 1000)::bigint)")
        .unwrap();
    let out = a.cli(&["status", "--all"]);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert!(out.stdout.contains("DIVERGED"), "{}", out.stdout);
}

/// Issue 14 review: the CLI does not send an admin token over plain HTTP to
/// another machine.
#[test]
fn the_cli_sends_no_admin_token_in_the_clear_beyond_loopback() {
    let b = broker();
    for url in [
        "http://192.0.2.1:8700",
        "http://warrant.example.org",
        "http://user:pw@10.0.0.1:1",
    ] {
        let r = b.cli_env(
            &["--url", url, "status"],
            &[("WARRANT_ADMIN_TOKEN", "wadm_x")],
        );
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("use https://"), "{}", r.stderr);
        assert!(!r.stderr.contains("pw@"), "{}", r.stderr);
    }
    let local = format!("http://localhost:{}", b.api.port());
    let r = b.cli_env(
        &["--url", &local, "status"],
        &[("WARRANT_ADMIN_TOKEN", "wadm_x")],
    );
    assert!(
        !r.stderr.contains("use https://"),
        "loopback by name is fine: {}",
        r.stderr
    );
}
