use super::*;

#[test]
fn accepts_slugs() {
    for ok in ["a", "triage", "support-triage", "agent-007", "x1"] {
        assert_eq!(AgentName::new(ok).unwrap().as_str(), ok);
    }
    let max = "a".repeat(63);
    assert!(AgentName::new(max).is_ok());
}

#[test]
fn refuses_non_slugs_with_the_rule() {
    for bad in [
        "", "Triage", "1agent", "-a", "a-", "a--b", "a_b", "a b", "agent.x", "ágent", "a/b",
    ] {
        let err = AgentName::new(bad).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("agent name"), "{msg}");
        if !bad.is_empty() {
            assert!(msg.contains("lower-case letters"), "{msg}");
        }
    }
    let long = AgentName::new("a".repeat(64)).unwrap_err();
    assert!(matches!(
        long,
        NameError::TooLong {
            len: 64,
            max: 63,
            ..
        }
    ));
}

#[test]
fn control_characters_are_escaped_in_errors() {
    let err = AgentName::new("a\u{1b}[31mred").unwrap_err().to_string();
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn serde_validates() {
    let ok: EnvName = serde_json::from_str("\"prod\"").unwrap();
    assert_eq!(ok.as_str(), "prod");
    assert!(serde_json::from_str::<EnvName>("\"PROD\"").is_err());
}
