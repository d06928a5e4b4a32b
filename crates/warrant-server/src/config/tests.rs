use super::*;

fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: "w.toml".into(),
        message: e.to_string(),
    })?;
    Config::build(
        &Settings {
            config: Some("/etc/warrant/warrant.toml".into()),
            ..Default::default()
        },
        raw,
    )
}

#[test]
fn defaults_are_loopback_and_documented() {
    let c = Config::build(&Settings::default(), RawConfig::default()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("./warrant-data"));
    assert_eq!(c.api_addr.to_string(), "127.0.0.1:8700");
    assert_eq!(c.edge_addr.to_string(), "127.0.0.1:8701");
    assert!(c.api_addr.ip().is_loopback() && c.edge_addr.ip().is_loopback());
    assert_eq!(c.trust_domain.as_str(), "warrant.local");
    assert_eq!(c.issuer, None);
    assert_eq!(c.policy_dir, PathBuf::from("./warrant-data/policies"));
    assert_eq!(c.max_delegation_depth, 4);
    assert_eq!(c.signing_alg, Alg::Es256);
}

#[test]
fn unknown_keys_are_refused_naming_the_key() {
    let err = from_toml("api_addr = \"127.0.0.1:1\"\napi_adr = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `api_adr`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let raw: RawConfig = toml::from_str("api_addr = \"127.0.0.1:9000\"\nedge_addr = \"127.0.0.1:9001\"\npolicy_dir = \"pol\"\ndata_dir = \"/var/lib/warrant\"").unwrap();
    let s = Settings {
        config: Some("/etc/warrant/warrant.toml".into()),
        api_addr: Some("127.0.0.1:7000".into()),
        ..Default::default()
    };
    let c = Config::build(&s, raw).unwrap();
    assert_eq!(c.api_addr.port(), 7000);
    assert_eq!(c.edge_addr.port(), 9001);
    assert_eq!(
        c.policy_dir,
        PathBuf::from("/etc/warrant/pol"),
        "relative to the config file"
    );
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/warrant"));
}

#[test]
fn bad_values_name_the_key_and_origin() {
    let e = from_toml("api_addr = \"localhost:8700\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("api_addr (from config file `/etc/warrant/warrant.toml`)"),
        "{e}"
    );
    assert!(e.contains("127.0.0.1:8700"), "{e}");

    let s = Settings {
        trust_domain: Some("Example.ORG".into()),
        ..Default::default()
    };
    let e = Config::build(&s, RawConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("trust_domain (from --trust-domain or WARRANT_TRUST_DOMAIN)"),
        "{e}"
    );

    for (toml, want) in [
        ("issuer = \"ftp://x\"", "https://"),
        ("issuer = \"https://x/?a=b\"", "query or fragment"),
        ("issuer = \"not a url\"", "not a URL"),
        ("max_delegation_depth = 0", "out of range"),
        ("signing_alg = \"RS256\"", "ES256 or EdDSA"),
        (
            "api_addr = \"127.0.0.1:9\"\nedge_addr = \"127.0.0.1:9\"",
            "different ports",
        ),
    ] {
        let e = from_toml(toml).unwrap_err().to_string();
        assert!(e.contains(want), "{toml}: {e}");
    }
}

#[test]
fn issuer_is_normalised() {
    let c = from_toml("issuer = \"https://broker.example.org/\"").unwrap();
    assert_eq!(c.issuer.as_deref(), Some("https://broker.example.org"));
}

/// The example in docs/proxy.md is a configuration the broker accepts.
#[test]
fn the_documented_routes_are_valid() {
    let page = include_str!("../../../../docs/proxy.md");
    let toml_block = page
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .unwrap();
    let c = from_toml(toml_block).unwrap();
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["openai", "anthropic", "github", "jira", "crm", "internal"]
    );
    assert_eq!(
        c.routes[3].ca_file.as_deref(),
        Some(Path::new("/etc/warrant/private-ca.pem")),
        "relative to the config file"
    );
    let kinds: Vec<&str> = c.routes.iter().map(|r| r.credential.kind()).collect();
    assert_eq!(
        kinds,
        [
            "secret",
            "secret",
            "per_user_secret",
            "basic",
            "oauth2_client_credentials",
            "warrant_jwt"
        ]
    );
}

#[test]
fn routes_are_checked_with_their_place_in_the_file() {
    let e = from_toml(
        "[[route]]\nname = \"a\"\nupstream = \"https://a.example\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n[[route]]\nname = \"a\"\nupstream = \"https://b.example\"\nallow = [ { methods = [\"GET\"], paths = [\"/\"] } ]\ncredential = { kind = \"secret\", secret = \"k\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("[[route]] #2") && e.contains("used twice"),
        "{e}"
    );
}

/// The example in docs/mcp.md is a configuration the broker accepts.
#[test]
fn the_documented_mcp_servers_are_valid() {
    let page = include_str!("../../../../docs/mcp.md");
    let block = page
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .unwrap();
    let c = from_toml(block).unwrap();
    let names: Vec<&str> = c.mcp_servers.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["files", "github"]);
    assert_eq!(
        c.mcp_servers[0].scope.as_ref().unwrap().to_string(),
        "files:use"
    );
}

/// Every `warrant.toml` example in docs/configuration.md is a configuration
/// the broker accepts, and says what the page says it does.
#[test]
fn the_documented_configuration_examples_are_valid() {
    let page = include_str!("../../../../docs/configuration.md");
    let blocks: Vec<&str> = page
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .collect();
    assert!(blocks.len() >= 4, "{}", blocks.len());
    for b in &blocks {
        if let Err(e) = from_toml(b) {
            panic!("{e}\n{b}");
        }
    }
    let limits = blocks.iter().find(|b| b.contains("[limits]")).unwrap();
    assert_eq!(
        from_toml(limits).unwrap().limits,
        ListenerLimits::default(),
        "the page shows the defaults"
    );
    let issuer = blocks
        .iter()
        .find(|b| b.contains("[[user_issuer]]"))
        .unwrap();
    let c = from_toml(issuer).unwrap();
    assert_eq!(c.user_issuers[0].namespace.as_str(), "corp");
}

#[test]
fn the_store_is_sqlite_by_default_or_a_postgres_url_never_shown_whole() {
    assert_eq!(from_toml("").unwrap().store, StoreChoice::Sqlite);
    assert_eq!(
        from_toml("store = \"sqlite\"").unwrap().store,
        StoreChoice::Sqlite
    );
    let c = from_toml(
        "store = \"postgres://warrant:hunter2@db.internal:5432/warrant?sslmode=require\"",
    )
    .unwrap();
    assert!(matches!(c.store, StoreChoice::Postgres(_)));
    let shown = format!("{c:?} {}", c.store.shown());
    assert!(!shown.contains("hunter2"), "{shown}");
    // Given as a flag or WARRANT_STORE, the settings carry it too.
    let from_flag = Config::build(
        &Settings {
            store: Some("postgres://warrant:hunter2@localhost/warrant".into()),
            ..Default::default()
        },
        RawConfig::default(),
    )
    .unwrap();
    let flagged = format!("{from_flag:?}");
    assert!(!flagged.contains("hunter2"), "{flagged}");
    assert!(flagged.contains("localhost/warrant"), "{flagged}");
    assert!(shown.contains("db.internal:5432/warrant"), "{shown}");
    for bad in [
        "mysql://warrant:hunter2@db/warrant",
        "warrant:hunter2@db",
        "postgres://warrant:hunter2@db:notaport/warrant",
        "host=db user=warrant password=hunter2 dbname=warrant",
        "postgres://warrant:hunter2@db.internal/warrant",
        "postgres://warrant:hunter2@localhost:5432/warrant?hostaddr=192.0.2.2",
    ] {
        let err = from_toml(&format!("store = \"{bad}\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("store (from config file"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn tls_takes_both_files_relative_to_the_config_file() {
    let c =
        from_toml("[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"/etc/keys/key.pem\"").unwrap();
    let tls = c.tls.clone().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/warrant/tls/cert.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/keys/key.pem"));
    assert_eq!(c.scheme(), "https");
    let err = from_toml("[tls]\ncert_file = \"c.pem\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_file"), "{err}");
    let only = Config::build(
        &Settings {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        },
        RawConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        only.contains("give both the certificate and the key"),
        "{only}"
    );
    assert_eq!(from_toml("").unwrap().scheme(), "http");
}

#[test]
fn approvals_are_strict_by_default_and_bad_values_are_refused() {
    let c = from_toml("").unwrap();
    assert_eq!(c.approvals.hold, std::time::Duration::ZERO);
    assert!(c.approvals.separation_of_duties);
    assert!(c.approvals.webhooks.is_empty());
    let c = from_toml(
        "[approvals]\nhold = \"30s\"\npending_ttl = \"2h\"\nmax_pending_per_agent = 5\n[[approvals.webhook]]\nurl = \"https://hooks.example/x\"\nformat = \"slack\"\n",
    )
    .unwrap();
    assert_eq!(c.approvals.hold, std::time::Duration::from_secs(30));
    assert_eq!(c.approvals.pending_ttl.as_secs(), 7200);
    assert_eq!(c.approvals.max_pending_per_agent, 5);
    assert_eq!(c.approvals.webhooks.len(), 1);
    for (bad, want) in [
        ("[approvals]\nhold = \"10m\"\n", "hold"),
        ("[approvals]\nhold = \"soon\"\n", "hold"),
        ("[approvals]\npending_ttl = \"5s\"\n", "pending_ttl"),
        (
            "[approvals]\nmax_pending_per_agent = 0\n",
            "max_pending_per_agent",
        ),
        (
            "[approvals]\nseparation_of_dutys = false\n",
            "unknown field",
        ),
        (
            "[[approvals.webhook]]\nurl = \"http://hooks.example/x\"\n",
            "plain http beyond loopback",
        ),
        (
            "[[approvals.webhook]]\nurl = \"https://hooks.example/x\"\nformat = \"teams\"\n",
            "format",
        ),
        (
            "[[approvals.webhook]]\nurl = \"not a url\"\n",
            "does not parse",
        ),
    ] {
        let e = from_toml(bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn a_parse_error_names_the_line_but_never_quotes_it() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.toml");
    std::fs::write(
        &f,
        "[approvals]\n[[approvals.webhook]]\nurl = \"https://hooks.example/T0/B0/SECRET-TOKEN\"\nurl = \"https://hooks.example/T0/B0/SECRET-TOKEN\"\n",
    )
    .unwrap();
    let e = Config::load(&Settings {
        config: Some(f),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 4"), "{e}");
    assert!(e.contains("duplicate key"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
}

#[test]
fn the_console_is_on_by_default_with_bounded_sessions() {
    let c = from_toml("").unwrap();
    assert!(c.console.enabled);
    assert_eq!(c.console.session_ttl.as_secs(), 8 * 3600);
    assert_eq!(c.console.idle_timeout.as_secs(), 30 * 60);
    let c = from_toml(
        "[console]\nenabled = false\nsession_ttl = \"1h\"\nidle_timeout = \"10m\"\nhealth_sample = \"5s\"\n",
    )
    .unwrap();
    assert!(!c.console.enabled);
    assert_eq!(c.console.session_ttl.as_secs(), 3600);
    assert_eq!(c.console.idle_timeout.as_secs(), 600);
    assert_eq!(c.console.health_sample.as_secs(), 5);
    for (bad, want) in [
        ("[console]\nsession_ttl = \"2d\"\n", "session_ttl"),
        ("[console]\nsession_ttl = \"1s\"\n", "session_ttl"),
        ("[console]\nidle_timeout = \"forever\"\n", "idle_timeout"),
        ("[console]\nhealth_sample = \"0s\"\n", "health_sample"),
        ("[console]\nenable = true\n", "unknown field"),
    ] {
        let e = from_toml(bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn console_single_sign_on_goes_through_a_user_issuer_and_names_its_groups() {
    let issuer = "[[user_issuer]]\nissuer = \"https://login.test\"\njwks_uri = \"https://login.test/jwks\"\naudience = \"warrant\"\n";
    let c = from_toml(&format!(
        "{issuer}[console.oidc]\nissuer = \"https://login.test\"\nclient_id = \"console\"\nscopes = [\"groups\", \"openid\"]\napprover_groups = [\"approvers\"]\n"
    ))
    .unwrap();
    let o = c.console.oidc.unwrap();
    assert_eq!(o.scopes, vec!["openid", "groups"]);
    assert_eq!(o.approver_groups, vec!["approvers"]);
    for (bad, want) in [
        (
            format!(
                "{issuer}[console.oidc]\nissuer = \"https://other.test\"\nclient_id = \"c\"\nadmin_groups = [\"a\"]\n"
            ),
            "no [[user_issuer]]",
        ),
        (
            format!("{issuer}[console.oidc]\nissuer = \"https://login.test\"\nclient_id = \"c\"\n"),
            "name the groups",
        ),
        (
            format!(
                "{issuer}[console.oidc]\nissuer = \"https://login.test\"\nclient_id = \"\"\nadmin_groups = [\"a\"]\n"
            ),
            "client_id",
        ),
        (
            format!(
                "{issuer}[console.oidc]\nissuer = \"https://login.test\"\nclient_id = \"c\"\nadmin_groups = [\"a\"]\ntoken_endpoint = \"http://login.test/token\"\n"
            ),
            "token_endpoint",
        ),
        (
            format!(
                "{issuer}[console.oidc]\nissuer = \"https://login.test\"\nclient_id = \"c\"\nadmin_groups = [\"a\"]\nclient_secret_env = \"A B\"\n"
            ),
            "client_secret_env",
        ),
    ] {
        let e = from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// Every `warrant.toml` example in docs/credentials.md is a configuration
/// the broker accepts, with the kind the page says.
#[test]
fn the_documented_credentials_are_valid() {
    let page = include_str!("../../../../docs/credentials.md");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("aws")).unwrap();
    std::fs::write(
        dir.path().join("aws/reports-rw.json"),
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}"#,
    )
    .unwrap();
    let mut kinds = Vec::new();
    for b in page
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
    {
        let raw: RawConfig = toml::from_str(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        let c = Config::build(
            &Settings {
                config: Some(dir.path().join("warrant.toml")),
                ..Default::default()
            },
            raw,
        )
        .unwrap_or_else(|e| panic!("{e}\n{b}"));
        kinds.extend(c.routes.iter().map(|r| r.credential.kind()));
    }
    assert_eq!(
        kinds,
        [
            "aws_sts",
            "aws_sts",
            "token_exchange",
            "oauth2_private_key_jwt",
            "oauth2_private_key_jwt"
        ]
    );
}
