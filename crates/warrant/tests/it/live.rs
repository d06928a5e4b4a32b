//! Live configuration: routes, MCP servers, user issuers and trust
//! providers change without a restart (`warrant reload`, SIGHUP); a bad file
//! changes nothing and says where it is wrong; `warrant status`, `route
//! list` and `mcp servers` show what is in force.

use crate::support::{
    Upstream, World, audit, client_credentials, identity, put_secret, world_with,
};
use serde_json::Value;

const POLICY: &str = r#"
@id("identities")
permit(principal, action == Action::"identity:issue", resource);
@id("self")
permit(principal, action == Action::"token:self", resource);
@id("egress")
permit(principal, action == Action::"http:request", resource);
"#;

fn route(name: &str, upstream: &Upstream, paths: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\nupstream = \"{}\"\naudience = \"https://{name}.test\"\nallow = [ {{ methods = [\"GET\"], paths = [{paths}] }} ]\ncredential = {{ kind = \"secret\", secret = \"live-key\" }}\n",
        upstream.origin("http")
    )
}

fn config_path(w: &World) -> std::path::PathBuf {
    w.b.tmp().join("warrant.toml")
}

fn write_config(w: &World, text: &str) {
    std::fs::write(config_path(w), text).unwrap();
}

fn route_names(w: &World) -> Vec<String> {
    w.b.cli(&["route", "list", "--output", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A task token of agent `orch` acting for itself, for `route`.
fn self_token(w: &World, route: &str) -> String {
    let id = identity(&w.b, "orch");
    let audience = format!("https://{route}.test");
    let r = client_credentials(&w.b, &id, "read", &audience);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn get(w: &World, path: &str, token: &str) -> warrant_testkit::Response {
    let auth = format!("Bearer {token}");
    warrant_testkit::http(
        w.b.edge,
        "GET",
        path,
        &[("authorization", auth.as_str())],
        None,
    )
}

#[test]
fn a_route_added_by_reload_carries_traffic_at_once() {
    let up = Upstream::start(false);
    let w = world_with(4, &route("early", &up, "\"/**\""), POLICY);
    put_secret(&w, "live-key", "sk-live-reload-0123456789abcdef", None);
    assert_eq!(route_names(&w), ["early"]);
    let token = self_token(&w, "late");
    assert_eq!(get(&w, "/late/x", &token).status, 404, "not configured yet");

    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    write_config(&w, &format!("{base}{}", route("late", &up, "\"/x\"")));
    let r = w.b.cli(&["reload", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["routes"]["added"], serde_json::json!(["late"]), "{j}");
    assert!(j["routes"].get("removed").is_none(), "{j}");
    assert_eq!(j["policy"]["policies"].as_array().unwrap().len(), 3, "{j}");

    let r = get(&w, "/late/x", &token);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.seen();
    let last = seen.last().unwrap();
    assert_eq!(last["path"], "/x", "{last}");
    assert_eq!(
        last["headers"]["authorization"], "Bearer sk-live-reload-0123456789abcdef",
        "{last}"
    );
    // Its `allow` rules are the new file's.
    assert_eq!(get(&w, "/late/y", &token).status, 403);
    // The reload is in the trail, with what it changed.
    let rec = audit(&w.b, Some("config.reload"));
    let last = rec.last().unwrap();
    assert_eq!(last["decision"], "allow", "{last}");
    assert_eq!(last["detail"]["routes"]["added"][0], "late", "{last}");
}

#[test]
fn a_removed_route_stops_at_once_and_sighup_reloads_too() {
    let up = Upstream::start(false);
    let keep = route("keep", &up, "\"/**\"");
    let gone = route("gone", &up, "\"/**\"");
    let w = world_with(4, &format!("{keep}{gone}"), POLICY);
    put_secret(&w, "live-key", "sk-live-reload-0123456789abcdef", None);
    let token = self_token(&w, "gone");
    assert_eq!(get(&w, "/gone/a", &token).status, 200);

    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    write_config(&w, &base.replace(&gone, ""));
    w.b.signal(rustix::process::Signal::HUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while route_names(&w).len() != 1 {
        assert!(std::time::Instant::now() < deadline, "{}", w.b.logs());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(route_names(&w), ["keep"]);
    let r = get(&w, "/gone/a", &token);
    assert_eq!(r.status, 404, "{}", r.body);
    let rec = audit(&w.b, Some("config.reload"));
    let last = rec.last().unwrap();
    assert_eq!(last["actor"], "signal:SIGHUP", "{last}");
    assert_eq!(last["detail"]["routes"]["removed"][0], "gone", "{last}");
}

#[test]
fn a_bad_file_changes_nothing_and_names_file_line_and_reason() {
    let up = Upstream::start(false);
    let w = world_with(4, &route("early", &up, "\"/**\""), POLICY);
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    let file = config_path(&w).display().to_string();
    let lines = base.lines().count();
    let before = audit(&w.b, Some("config.reload")).len();

    // Not TOML.
    write_config(&w, &format!("{base}\n[[route]\nname = \"x\"\n"));
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&file), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("line {}", lines + 2)),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("running one stays"), "{}", r.stderr);

    // An unknown key, as JSON.
    write_config(&w, &format!("{base}\nsurprise = 1\n"));
    let r = w.b.cli(&["reload", "--output", "json"]);
    assert_ne!(r.code, 0);
    let e: Value = serde_json::from_str(&r.stderr).unwrap();
    assert_eq!(e["error"]["code"], "invalid_config", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("surprise"),
        "{e}"
    );

    // A bad value in the second [[route]]: its table and line.
    let second = route("ftp", &up, "\"/**\"").replace("http://", "ftp://");
    write_config(&w, &format!("{base}{second}"));
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    let header = lines + 2;
    assert!(
        r.stderr
            .contains(&format!("[[route]] #2 at {file}:{header}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("https://"), "{}", r.stderr);

    // A duplicate name, and a CA file that cannot be read.
    write_config(&w, &format!("{base}{}", route("early", &up, "\"/**\"")));
    let r = w.b.cli(&["reload"]);
    assert!(r.stderr.contains("used twice"), "{}", r.stderr);
    let ca = route("tls", &up, "\"/**\"").replace(
        "credential",
        "ca_file = \"/nonexistent/ca.pem\"\ncredential",
    );
    write_config(&w, &format!("{base}{}", ca.replace("http://", "https://")));
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("ca.pem"), "{}", r.stderr);

    // Nothing changed, and every refusal is in the trail.
    assert_eq!(route_names(&w), ["early"]);
    let rec = audit(&w.b, Some("config.reload"));
    assert_eq!(rec.len(), before + 5, "{rec:?}");
    assert!(rec[before..].iter().all(|r| r["decision"] == "error"));
}

#[test]
fn status_routes_and_servers_say_what_is_in_force() {
    let up = Upstream::start(false);
    let w = world_with(4, &route("early", &up, "\"/v1/*\", \"/x\""), POLICY);
    let s = w.b.cli(&["status", "--output", "json"]).json();
    assert_eq!(s["api_addr"], w.b.api.to_string(), "{s}");
    assert_eq!(s["edge_addr"], w.b.edge.to_string(), "{s}");
    assert_eq!(s["routes"], 1);
    assert_eq!(s["policies"], 3);
    let text = std::fs::read(config_path(&w)).unwrap();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&text))
    };
    assert_eq!(s["config"]["digest"], digest, "{s}");
    let policy = w.b.cli(&["policy", "show", "--output", "json"]).json();
    assert_eq!(s["policy_digest"], policy["digest"], "{s}");
    let keys = w.b.cli(&["keys", "list", "--output", "json"]).json();
    let active = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .unwrap();
    assert_eq!(s["key_ids"][0], active["kid"], "{s}");
    assert!(s["store"].as_str().unwrap().starts_with("sqlite:"), "{s}");
    let human = w.b.cli(&["status"]);
    assert!(human.ok().contains(&digest), "{}", human.stdout);

    let r = w.b.cli(&["route", "list", "--output", "json"]).json();
    assert_eq!(r[0]["allow"][0], "GET /v1/* /x", "{r}");
    assert_eq!(r[0]["credential"], "secret", "{r}");
    assert_eq!(r[0]["audience"], "https://early.test", "{r}");

    // An MCP server added by reload is listed (its tools once reached).
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    write_config(
        &w,
        &format!(
            "{base}\n[[mcp_server]]\nname = \"files\"\nurl = \"{}/mcp\"\n",
            up.origin("http")
        ),
    );
    let j = w.b.cli(&["reload", "--output", "json"]).json();
    assert_eq!(j["mcp_servers"]["added"][0], "files", "{j}");
    let m = w.b.cli(&["mcp", "servers", "--output", "json"]).json();
    assert_eq!(m[0]["name"], "files", "{m}");
    assert_eq!(m[0]["transport"], "http", "{m}");
    let human = w.b.cli(&["mcp", "servers"]);
    assert!(human.ok().contains("files"), "{}", human.stdout);
    let s = w.b.cli(&["status", "--output", "json"]).json();
    assert_eq!(s["mcp_servers"], 1, "{s}");
    assert_ne!(s["config"]["digest"], digest, "{s}");
}

/// Entity ids that name nothing known are valid Cedar and match nothing:
/// `policy validate` and every reload say so, with the line and the name
/// probably meant, and still load the set.
#[test]
fn policy_names_that_match_nothing_are_warned_about() {
    let up = Upstream::start(false);
    let w = world_with(4, &route("early", &up, "\"/**\""), POLICY);
    let dir = w.b.data_dir.join("policies");
    std::fs::write(
        dir.join("typos.cedar"),
        "@id(\"typo-agent\")\npermit(principal in Agent::\"orhc\", action == Action::\"http:request\", resource == Route::\"erly\");\n",
    )
    .unwrap();
    let v = w.b.cli(&["policy", "validate"]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    let all = format!("{}{}", v.stdout, v.stderr);
    assert!(
        all.contains("typos.cedar:2:") && all.contains(r#"Agent::"orhc""#),
        "{all}"
    );
    assert!(all.contains("did you mean `orch`"), "{all}");
    assert!(
        all.contains(r#"Route::"erly""#) && all.contains("did you mean `early`"),
        "{all}"
    );
    let r = w.b.cli(&["policy", "reload", "--output", "json"]).json();
    let warnings: Vec<String> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains(r#"Agent::"orhc""#)),
        "{warnings:?}"
    );
    assert!(
        r["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "typo-agent")
    );
    // Fixed, nothing to say.
    std::fs::write(
        dir.join("typos.cedar"),
        "@id(\"typo-agent\")\npermit(principal in Agent::\"orch\", action == Action::\"http:request\", resource == Route::\"early\");\n",
    )
    .unwrap();
    let r = w.b.cli(&["policy", "reload", "--output", "json"]).json();
    assert!(r.get("warnings").is_none(), "{r}");
}

/// A CA file decides where a credential may be sent: the one an OAuth
/// credential trusts for its token endpoint is held to the same trust as
/// every other file the configuration names, at reload and at start.
#[test]
fn a_credentials_ca_file_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let up = Upstream::start(false);
    let w = world_with(4, "", POLICY);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not even a certificate\n").unwrap();
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o666)).unwrap();
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    write_config(
        &w,
        &format!(
            "{base}\n[[route]]\nname = \"oc\"\nupstream = \"{}\"\naudience = \"https://oc.test\"\nallow = [ {{ methods = [\"GET\"], paths = [\"/**\"] }} ]\ncredential = {{ kind = \"oauth2_client_credentials\", token_url = \"https://127.0.0.1:9/token\", client_id = \"w\", client_secret = \"live-key\", ca_file = \"{}\" }}\n",
            up.origin("http"),
            ca.display()
        ),
    );
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("credential.ca_file"), "{}", r.stderr);
    assert!(r.stderr.contains(&ca.display().to_string()), "{}", r.stderr);
    assert!(route_names(&w).is_empty());
    // The same file stops a start.
    let (e, _, _tmp) = crate::support::start_fails(crate::support::Options {
        config: Some(std::fs::read_to_string(config_path(&w)).unwrap()),
        ..Default::default()
    });
    assert!(e.contains("credential.ca_file"), "{e}");
}

/// A refused reload is recorded with where and why, never with what the
/// file says: a password in a URL, or the line a parser quotes.
#[test]
fn a_refused_reload_records_no_value_from_the_file() {
    let w = world_with(4, "", POLICY);
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    let before = audit(&w.b, Some("config.reload")).len();
    for bad in [
        "\n[[route]]\nname = \"a\"\nupstream = \"http://user:p4ssw0rd@127.0.0.1:9\"\naudience = \"https://a.test\"\nallow = [ { methods = [\"GET\"], paths = [\"/**\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        "\n[[mcp_server]]\nname = \"m\"\ncommand = \"true\"\nenv = { API_KEY = \"sk-p4ssw0rd-literal\", MODE = ro }\n",
        "\n[[route]]\nname = \"q\"\nupstream = \"http://127.0.0.1:9/?api_key=p4ssw0rd\"\naudience = \"https://q.test\"\nallow = [ { methods = [\"GET\"], paths = [\"/**\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        // Found in the second review: a password holding `/` or `?`, and
        // the URLs of issuers and key sets.
        "\n[[route]]\nname = \"s\"\nupstream = \"https://user:p4ssw0rd/x@h.example/\"\naudience = \"https://s.test\"\nallow = [ { methods = [\"GET\"], paths = [\"/**\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
        "\n[[trust_provider]]\nname = \"k8s\"\nissuer = \"https://admin:p4ssw0rd@k8s.example\"\njwks_uri = \"https://k8s.example/jwks\"\naudience = \"warrant\"\n",
        "\n[[trust_provider]]\nname = \"k8s\"\nissuer = \"https://k8s.example\"\njwks_uri = \"ftp://admin:p4ssw0rd@k8s.example/jwks?x=p4ssw0rd\"\naudience = \"warrant\"\n",
        "\n[[user_issuer]]\nissuer = \"https://admin:p4ssw0rd@idp.example?x=1\"\njwks_uri = \"https://idp.example/jwks\"\naudience = \"warrant\"\n",
    ] {
        write_config(&w, &format!("{base}{bad}"));
        let r = w.b.cli(&["reload"]);
        assert_ne!(r.code, 0, "{bad}");
        if !bad.contains("MODE = ro") {
            assert!(!r.stderr.contains("p4ssw0rd"), "{}", r.stderr);
        }
    }
    let rec = audit(&w.b, Some("config.reload"));
    assert_eq!(rec.len(), before + 7, "{rec:#?}");
    for r in &rec[before..] {
        assert!(!r.to_string().contains("p4ssw0rd"), "{r}");
    }
}

/// Two routes, or a route and an MCP server, with one audience would take
/// each other's task tokens: refused at reload and at start.
#[test]
fn two_resources_never_share_an_audience() {
    let up = Upstream::start(false);
    let w = world_with(4, &route("early", &up, "\"/**\""), POLICY);
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    let twin = route("twin", &up, "\"/**\"").replace("https://twin.test", "https://EARLY.test/");
    write_config(&w, &format!("{base}{twin}"));
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("route `early` and route `twin` have the same audience"),
        "{}",
        r.stderr
    );
    let mcp = format!(
        "{base}\n[[mcp_server]]\nname = \"files\"\nurl = \"{}/mcp\"\naudience = \"https://early.test\"\n",
        up.origin("http")
    );
    write_config(&w, &mcp);
    let r = w.b.cli(&["reload"]);
    assert!(r.stderr.contains("MCP server `files`"), "{}", r.stderr);
    assert_eq!(route_names(&w), ["early"]);
    let (e, _, _tmp) = crate::support::start_fails(crate::support::Options {
        config: Some(format!("{base}{twin}")),
        ..Default::default()
    });
    assert!(e.contains("have the same audience"), "{e}");
}

/// A configuration goes in force only with policies that load: a route
/// added with the `forbid` meant to restrict it never goes live without it.
#[test]
fn a_reload_is_all_or_nothing_across_configuration_and_policies() {
    let up = Upstream::start(false);
    let w = world_with(4, "", POLICY);
    let base = std::fs::read_to_string(config_path(&w)).unwrap();
    write_config(&w, &format!("{base}{}", route("late", &up, "\"/**\"")));
    let bad = w.b.data_dir.join("policies/restrict.cedar");
    std::fs::write(
        &bad,
        "forbid(principal, action == Action::\"nope\", resource);\n",
    )
    .unwrap();
    let r = w.b.cli(&["reload"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("nothing was reloaded"), "{}", r.stderr);
    assert!(r.stderr.contains("restrict.cedar"), "{}", r.stderr);
    assert!(
        route_names(&w).is_empty(),
        "the route waits for its policies"
    );
    std::fs::write(
        &bad,
        "forbid(principal, action == Action::\"http:request\", resource == Route::\"late\");\n",
    )
    .unwrap();
    let r = w.b.cli(&["reload", "--output", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(route_names(&w), ["late"]);
}

/// An OAuth token endpoint that cannot be reached is named to the agent by
/// its route only: not its address, not a library's words.
#[test]
fn an_unreachable_token_endpoint_is_not_described_to_the_agent() {
    let up = Upstream::start(false);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let oc = format!(
        "\n[[route]]\nname = \"oc\"\nupstream = \"{}\"\naudience = \"https://oc.test\"\nallow = [ {{ methods = [\"GET\"], paths = [\"/**\"] }} ]\ncredential = {{ kind = \"oauth2_client_credentials\", token_url = \"http://127.0.0.1:{port}/token\", client_id = \"w\", client_secret = \"live-key\" }}\n",
        up.origin("http")
    );
    let w = world_with(4, &oc, POLICY);
    put_secret(&w, "live-key", "sk-live-reload-0123456789abcdef", None);
    let token = self_token(&w, "oc");
    let r = get(&w, "/oc/x", &token);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("`oc`") && r.body.contains("could not be reached"),
        "{}",
        r.body
    );
    assert!(!r.body.contains(&port.to_string()), "{}", r.body);
    assert!(!r.body.contains("client error"), "{}", r.body);
    assert!(
        w.b.logs().contains(&port.to_string()),
        "the log keeps the address"
    );
}

/// A request refused for its shape (an escaping path, a foreign Host) by an
/// agent holding a good task token is recorded as that agent's, at the
/// proxy and the MCP gateway; a token that does not verify names no one.
#[test]
fn probing_with_a_good_token_is_recorded_as_the_agents() {
    let up = Upstream::start(false);
    let mcp = format!(
        "\n[[mcp_server]]\nname = \"files\"\nurl = \"{}/mcp\"\n",
        up.origin("http")
    );
    let w = world_with(
        4,
        &format!("{}{mcp}", route("early", &up, "\"/**\"")),
        POLICY,
    );
    let token = self_token(&w, "early");
    let last = |event: &str| audit(&w.b, Some(event)).last().unwrap().clone();

    let r = get(&w, "/early/a/%2e%2e/admin", &token);
    assert_eq!(r.status, 400, "{}", r.body);
    let rec = last("proxy.request");
    assert_eq!(rec["agent"], "orch", "{rec}");
    assert_eq!(
        rec["task"],
        crate::support::jwt_claims(&token)["task"],
        "{rec}"
    );
    let r = get(&w, "/early/a/%2e%2e/admin", "not-a-token");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(last("proxy.request").get("agent").is_none());

    // At the gateway: a Host that is not the edge's.
    let id = identity(&w.b, "orch");
    let audience = format!("http://{}/mcp/files", w.b.edge);
    let r = client_credentials(&w.b, &id, "read", &audience);
    let mcp_token = r.json()["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {mcp_token}");
    let r = warrant_testkit::http(
        w.b.edge,
        "POST",
        "/mcp/files",
        &[
            ("authorization", auth.as_str()),
            ("host", "evil.example"),
            ("content-type", "application/json"),
        ],
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let rec = last("mcp.request");
    assert_eq!(rec["agent"], "orch", "{rec}");
    // Below the server's path (found in the second review).
    let r = warrant_testkit::http(
        w.b.edge,
        "POST",
        "/mcp/files/%2e%2e/files",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let rec = last("mcp.request");
    assert_eq!(rec["agent"], "orch", "{rec}");
}
