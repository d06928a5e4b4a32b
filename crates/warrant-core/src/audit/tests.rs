use super::*;

fn chain(n: u64) -> Vec<StoredRow> {
    let mut prev = ChainHash::GENESIS;
    (1..=n)
        .map(|seq| {
            let ev = AuditEvent::new("admin.agent.create", Outcome::Allow)
                .agent(format!("agent-{seq}"))
                .actor("local:uid=1000")
                .detail(serde_json::json!({"owner": "team", "selectors": ["k8s:ns=a"]}));
            let sealed = AuditRecord::seal(
                seq,
                Timestamp::from_millis(1_000 + seq as i64),
                ev,
                prev,
                None,
            )
            .unwrap();
            prev = sealed.record.hash;
            StoredRow {
                seq,
                indexed: sealed.record.indexed(),
                body: sealed.body,
                prev_hash: sealed.record.prev_hash.0.to_vec(),
                hash: sealed.record.hash.0.to_vec(),
            }
        })
        .collect()
}

fn verify(rows: &[StoredRow]) -> Result<u64, ChainBreak> {
    let mut v = ChainVerifier::default();
    for r in rows {
        v.push(r)?;
    }
    Ok(v.verified())
}

#[test]
fn an_intact_chain_verifies() {
    assert_eq!(verify(&chain(5)), Ok(5));
}

#[test]
fn body_is_canonical_and_omits_empty_fields() {
    let rows = chain(1);
    assert!(rows[0].body.starts_with(r#"{"seq":1,"time":"1970-01-01T00:00:01.001Z","event":"admin.agent.create","decision":"allow","actor":"#));
    assert!(!rows[0].body.contains("null"));
    assert!(!rows[0].body.contains("reasons"));
    let rec = rows[0].to_record().unwrap();
    assert_eq!(rec.event.agent.as_deref(), Some("agent-1"));
}

#[test]
fn an_altered_body_is_named() {
    let mut rows = chain(5);
    rows[2].body = rows[2].body.replace("agent-3", "agent-X");
    assert_eq!(verify(&rows).unwrap_err().seq, 3);
    assert!(verify(&rows).unwrap_err().why.contains("altered"));
}

#[test]
fn a_recomputed_hash_breaks_the_next_link() {
    // An attacker who edits record 3 and recomputes its hash still breaks record 4.
    let mut rows = chain(5);
    rows[2].body = rows[2].body.replace("agent-3", "agent-X");
    let prev = ChainHash(rows[2].prev_hash.clone().try_into().unwrap());
    rows[2].hash = ChainHash::link(&prev, rows[2].body.as_bytes()).0.to_vec();
    rows[2].indexed.agent = Some("agent-X".into());
    let err = verify(&rows).unwrap_err();
    assert_eq!(err.seq, 4);
    assert!(err.why.contains("prev_hash"), "{}", err.why);
}

#[test]
fn an_altered_indexed_column_is_named() {
    let mut rows = chain(3);
    rows[1].indexed.agent = Some("someone-else".into());
    let err = verify(&rows).unwrap_err();
    assert_eq!(err.seq, 2);
    assert!(err.why.contains("column"), "{}", err.why);
}

#[test]
fn a_deleted_record_is_named() {
    let mut rows = chain(5);
    rows.remove(1);
    let err = verify(&rows).unwrap_err();
    assert_eq!(err.seq, 2);
    assert!(err.why.contains("missing"), "{}", err.why);
}

#[test]
fn a_moved_body_is_detected() {
    let mut rows = chain(3);
    let body1 = rows[0].body.clone();
    rows[1].body = body1;
    assert_eq!(verify(&rows).unwrap_err().seq, 2);
}

#[test]
fn new_optional_fields_do_not_change_old_hashes() {
    // Old bodies are verified from their stored bytes, so a body without a field
    // that a later release adds still verifies.
    let rows = chain(2);
    let mut v = ChainVerifier::default();
    for r in &rows {
        v.push(r).unwrap();
    }
    assert_eq!(v.head().0.to_vec(), rows[1].hash);
}

#[test]
fn the_sealed_record_is_what_its_body_says() {
    let ev = AuditEvent::new("x", Outcome::Deny)
        .detail(serde_json::Value::Null)
        .reason("r");
    let sealed =
        AuditRecord::seal(1, Timestamp::from_millis(5), ev, ChainHash::GENESIS, None).unwrap();
    let row = StoredRow {
        seq: 1,
        indexed: sealed.record.indexed(),
        prev_hash: sealed.record.prev_hash.0.to_vec(),
        hash: sealed.record.hash.0.to_vec(),
        body: sealed.body.clone(),
    };
    assert_eq!(row.to_record().unwrap(), sealed.record);
}

/// Issue 12, item 13: caller-supplied strings (a 200 KB JSON-RPC method)
/// were stored untruncated.
#[test]
fn records_are_bounded_whatever_the_caller_sent() {
    let huge = "m".repeat(200_000);
    let e = AuditEvent::new(huge.clone(), Outcome::Deny)
        .resource(format!("McpServer::\"{huge}\""))
        .reason(huge.clone())
        .detail(serde_json::json!({
            "method": huge.clone(),
            "list": vec![huge.clone(); 1000],
            huge.clone(): 1,
            "deep": [[[[[[[[[[[["x"]]]]]]]]]]]],
        }));
    let sealed =
        AuditRecord::seal(1, Timestamp::from_millis(1), e, ChainHash::GENESIS, None).unwrap();
    assert!(sealed.body.len() < 64 * 1024, "{}", sealed.body.len());
    let r = &sealed.record.event;
    assert!(r.event.len() < 200 && r.event.contains("more bytes]"));
    assert!(r.resource.as_ref().unwrap().len() < 1100);
    assert!(r.reasons[0].len() < 2100);
    // The record read back is the record sealed.
    let back: serde_json::Value = serde_json::from_str(&sealed.body).unwrap();
    assert_eq!(back["event"], r.event.as_str());
    // A small event is untouched.
    let small =
        AuditEvent::new("mcp.request", Outcome::Allow).detail(serde_json::json!({"a": "b"}));
    let mut same = small.clone();
    same.bound();
    assert_eq!(same, small);
}

/// A keyed linker for tests: SHA-256 over a secret, the previous hash and
/// the body (the broker's is HMAC-SHA-256 with a key from the KEK).
#[derive(Debug)]
struct TestKey(&'static [u8]);

impl ChainLinker for TestKey {
    fn link(&self, prev: &ChainHash, body: &[u8]) -> ChainHash {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(prev.0);
        h.update(body);
        ChainHash(h.finalize().into())
    }
}

/// Rows `from..=to` after `prev`, keyed by `key` (or not).
fn rows(from: u64, to: u64, mut prev: ChainHash, key: Option<&dyn ChainLinker>) -> Vec<StoredRow> {
    (from..=to)
        .map(|seq| {
            let ev = AuditEvent::new("x", Outcome::Allow).agent(format!("agent-{seq}"));
            let sealed =
                AuditRecord::seal(seq, Timestamp::from_millis(seq as i64), ev, prev, key).unwrap();
            prev = sealed.record.hash;
            StoredRow {
                seq,
                indexed: sealed.record.indexed(),
                body: sealed.body,
                prev_hash: sealed.record.prev_hash.0.to_vec(),
                hash: sealed.record.hash.0.to_vec(),
            }
        })
        .collect()
}

fn verify_keyed(rows: &[StoredRow], legacy_until: u64) -> Result<u64, ChainBreak> {
    let mut v = ChainVerifier::keyed(std::sync::Arc::new(TestKey(b"k")), legacy_until);
    for r in rows {
        v.push(r)?;
    }
    Ok(v.verified())
}

/// Issue 12 (low): with an unkeyed chain, someone with write access to the
/// database could delete a record mid-chain and re-link the rest. Keyed,
/// they cannot, nor rewrite the whole chain unkeyed.
#[test]
fn a_keyed_chain_detects_deletion_relinking_and_unkeyed_rewrites() {
    let key = TestKey(b"k");
    let good = rows(1, 6, ChainHash::GENESIS, Some(&key));
    assert_eq!(verify_keyed(&good, 0), Ok(6));
    assert!(good[0].body.contains(r#""keyed":true"#));
    // Delete record 3 and re-link 4.. without the key (with a guessed one).
    let forged_tail = rows(
        3,
        5,
        ChainHash(good[1].hash.clone().try_into().unwrap()),
        Some(&TestKey(b"guess")),
    );
    let relinked: Vec<StoredRow> = good[..2].iter().cloned().chain(forged_tail).collect();
    let e = verify_keyed(&relinked, 0).unwrap_err();
    assert_eq!(e.seq, 3, "{e}");
    // Rewrite everything unkeyed (what plain SHA-256 allowed).
    let unkeyed = rows(1, 5, ChainHash::GENESIS, None);
    assert_eq!(verify(&unkeyed), Ok(5), "verifies without the key");
    let e = verify_keyed(&unkeyed, 0).unwrap_err();
    assert!(e.why.contains("not keyed"), "{e}");
    // An upgraded chain: unkeyed up to the marker, keyed after.
    let legacy = rows(1, 3, ChainHash::GENESIS, None);
    let head = ChainHash(legacy[2].hash.clone().try_into().unwrap());
    let mixed: Vec<StoredRow> = legacy
        .into_iter()
        .chain(rows(4, 6, head, Some(&key)))
        .collect();
    assert_eq!(verify_keyed(&mixed, 3), Ok(6));
    // The unkeyed prefix is protected by the first keyed link.
    let fixed = rows(
        2,
        3,
        ChainHash(mixed[0].hash.clone().try_into().unwrap()),
        None,
    );
    let relinked: Vec<StoredRow> = mixed[..1]
        .iter()
        .cloned()
        .chain(fixed)
        .chain(mixed[3..].iter().cloned())
        .collect();
    assert_eq!(
        verify_keyed(&relinked, 3).map_err(|e| e.seq),
        Ok(6),
        "same records, same links"
    );
    let mut tampered = relinked.clone();
    tampered[2].body = tampered[2].body.replace("agent-3", "agent-Y");
    // Its own hash recomputed (unkeyed records can be), yet the keyed
    // record after it no longer links.
    let prev = ChainHash(tampered[1].hash.clone().try_into().unwrap());
    tampered[2].hash = ChainHash::link(&prev, tampered[2].body.as_bytes())
        .0
        .to_vec();
    let e = verify_keyed(&tampered, 3).unwrap_err();
    assert!(e.seq == 3 || e.seq == 4, "{e}");
    // Without the key, a keyed record cannot be checked, and says so.
    let e = verify(&good).unwrap_err();
    assert!(e.why.contains("only the broker"), "{e}");
}

/// The field names a type's derived `Deserialize` asks for.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Fields(std::cell::Cell<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &Fields {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("only a struct's field names"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(fields);
            Err(Self::Error::custom("only a struct's field names"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let f = Fields(std::cell::Cell::new(&[]));
    let _ = T::deserialize(&f);
    f.0.get()
}

#[test]
fn a_record_body_reads_every_field_an_event_has() {
    // A field added to AuditEvent but not to Body would be dropped from
    // every record read back, and the record would no longer match its body.
    let event = field_names::<AuditEvent>();
    let body = field_names::<Body>();
    assert!(event.len() > 10, "{event:?}");
    for f in event {
        assert!(body.contains(f), "Body does not read `{f}`");
    }
    let mut rest: Vec<_> = body.iter().filter(|f| !event.contains(f)).collect();
    rest.sort();
    assert_eq!(rest, [&"keyed", &"seq", &"time"]);
}

#[test]
fn a_record_with_every_field_set_reads_back_as_written() {
    let mut ev = AuditEvent::new("proxy.request", Outcome::Pending)
        .actor("a")
        .agent("b")
        .instance("c")
        .user("d")
        .task("e")
        .parent("f")
        .txn("g")
        .protocol("h")
        .scope("i j")
        .resource("Route::\"k\"")
        .action("l")
        .source("127.0.0.1:9")
        .reasons(["m".to_owned(), "n".to_owned()])
        .detail(serde_json::json!({"o": [1, {"p": null}], "q": "\u{e9}\"\\"}));
    ev.chain = vec!["r".into(), "s".into()];
    ev.credential_type = Some("t".into());
    ev.credential_id = Some("u".into());
    ev.expires_at = Some(Timestamp::from_millis(77));
    for linker in [None, Some(&TestLinker as &dyn ChainLinker)] {
        let sealed = AuditRecord::seal(
            9,
            Timestamp::from_millis(5),
            ev.clone(),
            ChainHash::GENESIS,
            linker,
        )
        .unwrap();
        let row = StoredRow {
            seq: 9,
            body: sealed.body.clone(),
            prev_hash: sealed.record.prev_hash.0.to_vec(),
            hash: sealed.record.hash.0.to_vec(),
            indexed: sealed.record.indexed(),
        };
        assert_eq!(row.to_record().unwrap(), sealed.record);
        assert_eq!(sealed.record.event, ev);
        let line = row.export_line();
        let back = StoredRow::from_export_line(&line).unwrap();
        assert_eq!(back.body, sealed.body);
        assert_eq!(back.to_record().unwrap(), sealed.record);
    }
}

#[derive(Debug)]
struct TestLinker;

impl ChainLinker for TestLinker {
    fn link(&self, prev: &ChainHash, body: &[u8]) -> ChainHash {
        let mut h = ChainHash::link(prev, body);
        h.0[0] ^= 0x5a;
        h
    }
}
